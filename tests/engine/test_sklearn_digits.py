"""The digits read from scikit-learn's data file are `sklearn.datasets.load_digits`'s, value for value,
and reading them does not import scikit-learn (which the training subprocesses would pay for)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from runctl.engine.tasks.sklearn_digits import digits_csv, load_digits_arrays
from sklearn.datasets import load_digits


def test_the_file_is_where_the_installed_scikit_learn_keeps_it() -> None:
    assert digits_csv() is not None, "digits.csv.gz moved: runctl falls back to load_digits (slower)"


def test_images_and_labels_equal_load_digits() -> None:
    images, labels = load_digits_arrays()
    reference = load_digits()
    assert images.dtype == reference.images.dtype and images.shape == reference.images.shape == (1797, 8, 8)
    assert np.array_equal(images, reference.images)
    assert labels.dtype == reference.target.dtype and np.array_equal(labels, reference.target)


def test_reading_them_does_not_import_scikit_learn() -> None:
    code = ("import sys\nfrom runctl.engine.tasks.sklearn_digits import load_digits_arrays\n"
            "images, labels = load_digits_arrays()\n"
            "print(len(labels), sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1797 []", done.stdout
