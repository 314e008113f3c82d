"""scikit-learn's bundled digits, read from the file that ships with scikit-learn, without importing it.

`sklearn.datasets.load_digits` costs about a second of CPU per process (scikit-learn pulls in
scipy.stats on import), more than the digits tasks then spend on a short run. The data is one
gzipped CSV inside the installed package (`sklearn/datasets/data/digits.csv.gz`: 64 pixel columns
and the label, one image a row), which `load_digits` itself reads with `np.loadtxt`; this module
reads the same file the same way. When the file is not where scikit-learn 1.3-1.9 keeps it, it falls
back to `load_digits`. tests/engine/test_sklearn_digits.py compares both against each other.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

SIDE = 8  # the digits are 8x8 images


def digits_csv() -> Path | None:
    """Where the installed scikit-learn keeps digits.csv.gz (found without importing scikit-learn)."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The images (float64 [1797, 8, 8], values 0-16) and labels (int [1797]), as `load_digits` gives them."""
    path = digits_csv()
    if path is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(path, mode="rt", encoding="utf-8") as rows:
        data = np.loadtxt(rows, delimiter=",")
    return data[:, :-1].reshape(-1, SIDE, SIDE), data[:, -1].astype(int, copy=False)
