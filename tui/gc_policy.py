"""runctl's garbage-collector settings: in the UI process, and in a training command's.

Fewer collector passes while the first listing of a root is read and painted. The first listing
keeps nearly everything it allocates (a summary, a row and eight cells a run, DataTable's row
records): with the default thresholds (700, 10, 10) the collector runs some twenty young and two
full passes over those live objects before 1,000 runs are painted, about a fifth of the process's
CPU time until then. A higher first threshold for that span lets the young generation grow before
it is collected; the thresholds go back once the table is painted.

Fewer collector passes while a command that trains (`runctl train`, `resume`, `branch`, `extend`)
imports torch and the engine and builds its run: those imports keep some 300,000 objects, and the
default thresholds ran about 650 young and 5 full passes over them, 0.4 s of a `runctl train`
process's 2.2 s start-up on a 2-core VM. With a first threshold of 100,000 until the run has
started, the whole 1-step `runctl train digits_mlp` took 2.13 s against 2.49 s without (medians of
6 alternating processes).

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
# ... and while a training command starts its engine.
ENGINE_START_THRESHOLD = 100_000

_saved: tuple[int, ...] | None = None
_engine_heap_frozen = False


def hold_collections(threshold: int = FIRST_PAINT_THRESHOLD) -> None:
    """Raise the young generation's threshold to `threshold` (once; a second call changes nothing).
    A threshold of 0 (collection turned off) or one already higher is left alone."""
    global _saved
    current = gc.get_threshold()
    if _saved is None and 0 < current[0] < threshold:
        _saved = current
        gc.set_threshold(threshold, *current[1:])


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


def engine_started() -> None:
    """A run has started in this process (its `started` or `resumed` event): its imports go to the
    permanent generation and the thresholds go back to what they were."""
    freeze_engine_imports()
    release_collections()
