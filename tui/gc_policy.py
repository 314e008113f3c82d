"""The UI process's garbage-collector settings.

Fewer collector passes while the first listing of a root is read and painted. The first listing
keeps nearly everything it allocates (a summary, a row and eight cells a run, DataTable's row
records): with the default thresholds (700, 10, 10) the collector runs some twenty young and two
full passes over those live objects before 1,000 runs are painted, about a fifth of the process's
CPU time until then. A higher first threshold for that span lets the young generation grow before
it is collected; the thresholds go back once the table is painted.

No full passes over the engine's imports while a run trains in this process. With torch imported
the UI process holds some 340,000 objects, nearly all of them for as long as the process lives;
every full collection walked them all, and each stopped the UI thread for about 200 ms (twice in
35 s of digits_mlp training in the run view: the worst key -> screen latencies of
bench/bench_ui.py). Once an in-process run has started, the objects alive then go to the
collector's permanent generation (`gc.freeze`), once per process: later full passes walk only
what was made after.
"""

from __future__ import annotations

import gc

# Allocations between two young-generation collections while the first listing is read.
FIRST_PAINT_THRESHOLD = 25_000

_saved: tuple[int, ...] | None = None
_engine_heap_frozen = False


def hold_collections() -> None:
    """Raise the young generation's threshold (once; a second call changes nothing). A threshold
    of 0 (collection turned off) or one already higher is left alone."""
    global _saved
    current = gc.get_threshold()
    if _saved is None and 0 < current[0] < FIRST_PAINT_THRESHOLD:
        _saved = current
        gc.set_threshold(FIRST_PAINT_THRESHOLD, *current[1:])


def release_collections() -> None:
    """Put the thresholds back as they were before `hold_collections` (a no-op without it)."""
    global _saved
    if _saved is not None:
        gc.set_threshold(*_saved)
        _saved = None


def freeze_engine_imports() -> None:
    """Move every object alive now to the permanent generation: call it once an in-process run has
    started (torch and the engine are imported, the model is built). Only the first call freezes:
    a cyclic garbage object alive at that instant is kept for good, and one such snapshot is the
    bound on that."""
    global _engine_heap_frozen
    if not _engine_heap_frozen:
        _engine_heap_frozen = True
        gc.freeze()
