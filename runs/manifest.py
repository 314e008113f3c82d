"""checkpoints/manifest.json: what the engine wrote, so readers can verify without trusting names.

{
  "format": "runctl-manifest/1",
  "files": {"step_00000500.pt": {"step": 500, "bytes": 123, "sha256": "...",
                                  "saved_at": 1700000000.0, "kind": "periodic"}},
  "best": {"file": "step_00000500.pt", "metric": "val/loss", "value": 0.12, "step": 500} | null
}
Rewritten atomically after each checkpoint file is renamed into place. A step folder (a sharded
checkpoint, `step_00000500/`) has an entry too, written before the folder is renamed into place:
`bytes` is the folder's total, `sha256` that of its `.metadata`, and `files` gives
{"bytes", "sha256"} for every file in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runctl.runs import safe_files
from runctl.runs.atomic import atomic_write_json
from runctl.runs.layout import MANIFEST_JSON

MANIFEST_FORMAT = "runctl-manifest/1"


@dataclass
class ManifestEntry:
    step: int
    bytes: int
    sha256: str
    saved_at: float
    kind: str
    files: dict[str, dict[str, Any]] | None = None  # a step folder's files: {name: {"bytes", "sha256"}}

    def to_json(self) -> dict[str, Any]:
        out = {"step": self.step, "bytes": self.bytes, "sha256": self.sha256,
               "saved_at": self.saved_at, "kind": self.kind}
        if self.files is not None:
            out["files"] = self.files
        return out


@dataclass
class Manifest:
    files: dict[str, ManifestEntry] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    # Set when the file exists but cannot be parsed: readers report it and treat files as unverified.
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT,
                "files": {name: e.to_json() for name, e in sorted(self.files.items())},
                "best": self.best}


def read_manifest(checkpoint_dir: Path) -> Manifest:
    """Never raises: a missing manifest is empty, a broken one carries `error`."""
    path = Path(checkpoint_dir) / MANIFEST_JSON
    try:
        raw = safe_files.read_json(path)
    except FileNotFoundError:
        return Manifest()
    except (safe_files.NotRegularFile, safe_files.FileTooLarge) as exc:
        return Manifest(error=f"{path}: unreadable manifest ({exc.strerror})")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return Manifest(error=f"{path}: unreadable manifest ({exc.__class__.__name__})")
    if not isinstance(raw, dict) or not isinstance(raw.get("files", {}), dict):
        return Manifest(error=f"{path}: not a runctl manifest")
    files = {}
    for name, entry in raw.get("files", {}).items():
        try:
            files[name] = ManifestEntry(step=int(entry["step"]), bytes=int(entry["bytes"]),
                                        sha256=str(entry["sha256"]), saved_at=float(entry["saved_at"]),
                                        kind=str(entry["kind"]), files=_folder_files(entry.get("files")))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    best = raw.get("best") if isinstance(raw.get("best"), dict) else None
    return Manifest(files=files, best=best)


def _folder_files(raw: Any) -> dict[str, dict[str, Any]] | None:
    if raw is None:
        return None
    return {str(name): {"bytes": int(f["bytes"]), "sha256": str(f["sha256"])} for name, f in raw.items()}


def write_manifest(checkpoint_dir: Path, manifest: Manifest) -> None:
    atomic_write_json(Path(checkpoint_dir) / MANIFEST_JSON, manifest.to_json())
