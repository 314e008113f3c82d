"""Kill -9 campaign: SIGKILL a training run at seeded random moments, resume, repeat, finish.

The moments include the inside of a checkpoint's temp write and the window between its rename and
the manifest update (RUNCTL_TEST_SLOW_WRITE holds both open), a random time after training
resumed, and a random time during start-up (while resume reads the newest checkpoint).

After every kill: `runctl ls --json` shows the run as interrupted (its lock died with it), every
checkpoint under its final name verifies, and the next resume starts from a valid file. At the
end: the final checkpoint is bit-identical to an uninterrupted run's (model, optimizer, scheduler),
no temp file is left, and metrics.jsonl reads back as the uninterrupted run's curve, once.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.checkpoints import load_state, state_differences
from support.cli import Engine, cli_env, run_cli, start_cli, verify_json, wait_run_dir
from support.configs import TINY_MLP
from support.run_files import (
    checkpoint_files,
    events,
    find_run_dir,
    manifest,
    one_curve,
    records_by_name,
    status,
    strict_json,
    temp_files,
    temp_pid,
)
from support.waiting import WaitTimeout, wait_for

EVERY = 3
SLOW_WRITE_SECONDS = "0.15"
MOMENTS = ("temp_write", "manifest_update", "after_resume", "startup")


def campaign_overrides(max_steps: int) -> list[str]:
    return [*TINY_MLP, f"max_steps={max_steps}", f"checkpoint.every={EVERY}", "checkpoint.async=true",
            "checkpoint.keep_last=4", "eval.every=12", "eval.batches=2"]


def set_args(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


@dataclass
class Campaign:
    """The bookkeeping of one run's kills, for the assertions and the README figures."""

    kills: int = 0
    moments: Counter[str] = field(default_factory=Counter)
    inside_window: Counter[str] = field(default_factory=Counter)  # kills that landed inside the write
    resumes: int = 0
    skipped_seen: int = 0
    pids: list[int] = field(default_factory=list)


def newest_final_step(run_dir: Path) -> int:
    steps = [int(p.name[5:13]) for p in checkpoint_files(run_dir)]
    return max(steps, default=0)


def wait_for_moment(moment: str, engine: Engine, run_dir: Path, rng: random.Random,
                    resumed_from: int, is_first: bool) -> Callable[[], bool] | None:
    """Block until the engine is at `moment` (bounded), so the caller can SIGKILL it there.

    For the two write windows, returns the condition that shows the window is open: still true
    after the kill means the kill landed inside it.
    """
    # The save to hit: 1-3 saves after this attempt's starting point, so runs make progress.
    target = resumed_from + EVERY * rng.randint(1, 3)
    folder = run_dir / "checkpoints"
    if moment == "temp_write":
        def in_temp_write() -> bool:
            return any(int(p.name[5:13]) >= target for p in temp_files(run_dir)
                       if p.name.startswith("step_") and temp_pid(p) == engine.pid)
        wait_for(in_temp_write, timeout=90, what=f"a temp write of step >= {target}", alive=engine)
        return in_temp_write
    elif moment == "manifest_update":
        def renamed_not_listed() -> bool:
            listed = manifest(run_dir).get("files", {})
            return any(int(p.name[5:13]) >= target and p.name not in listed for p in checkpoint_files(run_dir))
        wait_for(renamed_not_listed, timeout=90, what=f"step >= {target} renamed but not in the manifest",
                 alive=engine, interval=0.005)
        return renamed_not_listed
    elif moment == "after_resume":
        if is_first:
            wait_for(lambda: (folder / "manifest.json").exists(), timeout=90,
                     what="the first checkpoint", alive=engine)
        else:
            wait_for(lambda: len(events(run_dir, "resumed")) > 0 and engine_resumed(run_dir, engine),
                     timeout=90, what="the resumed event", alive=engine)
        time.sleep(rng.uniform(0.0, 1.0))
    else:  # startup: somewhere in imports, lock, verification and loading of the checkpoint
        time.sleep(rng.uniform(0.2, 2.5))
    return None


def engine_resumed(run_dir: Path, engine: Engine) -> bool:
    started = engine_started_at.get(engine.pid, 0.0)
    return any(e.get("time", 0) >= started for e in events(run_dir, "resumed"))


engine_started_at: dict[int, float] = {}


def start_attempt(args: list[str], cwd: Path, logs: Path, slow: bool) -> Engine:
    env = cli_env({"RUNCTL_TEST_SLOW_WRITE": SLOW_WRITE_SECONDS} if slow else None)
    started = time.time()
    engine = start_cli(args, cwd=cwd, log_dir=logs, env=env)
    engine_started_at[engine.pid] = started
    return engine


def check_after_kill(run_dir: Path, cwd: Path, campaign: Campaign) -> dict[str, dict]:
    """The run as a user finds it after a kill: interrupted, lock free, every final file intact."""
    done = run_cli(["ls", run_dir.parent, "--json"], cwd=cwd)
    assert done.returncode == 0, done.stderr
    listing = strict_json(done.stdout)
    runs = listing if isinstance(listing, list) else listing.get("runs", [])
    mine = [r for r in runs if Path(r["path"]).name == run_dir.name]
    assert mine and mine[0]["state"] == "interrupted", f"after kill -9, ls says {mine}"

    code, document = verify_json(run_dir, cwd=cwd)
    records = records_by_name(document)
    for name, record in records.items():
        if ".tmp." in name:
            assert record["status"] == "partial", record
        else:
            assert record["status"] in ("ok", "unverified", "missing"), \
                f"after kill #{campaign.kills}: {name} is {record['status']} ({record.get('reason')})"
            # missing: retention deleted it and was killed before rewriting the manifest
    return records


def run_campaign(tmp: Path, seed: int, kills: int, max_steps: int) -> tuple[Path, Campaign]:
    """Train, kill `kills` times at seeded moments, resume after each, then let it finish."""
    rng = random.Random(seed)
    root, logs = tmp / "runs", tmp / "logs"
    campaign = Campaign()
    train = ["train", "digits_mlp", "--root", root, "--name", f"campaign-{seed}",
             *set_args(campaign_overrides(max_steps))]
    engine = start_attempt([str(a) for a in train], tmp, logs, slow=True)
    run_dir = wait_run_dir(root, engine)
    plan = [m for _ in range(kills) for m in rng.sample(MOMENTS, len(MOMENTS))][:kills]
    # The first kill waits for the first save: before it, status.json may not exist yet (the run
    # never started, as far as a reader can tell). A kill inside that save is fine: resume restarts.
    plan[0] = plan[0] if plan[0] in ("temp_write", "manifest_update") else "temp_write"
    resumed_from, is_first = 0, True
    # What verify said before the current attempt started, to judge the file it resumes from.
    pending: tuple[dict[str, dict], int] | None = None
    try:
        for moment in plan:
            campaign.pids.append(engine.pid)
            try:
                window_open = wait_for_moment(moment, engine, run_dir, rng, resumed_from, is_first)
            except WaitTimeout:
                if engine.running():
                    raise
                break  # the run finished before this moment came: no more kills for this run
            code = engine.kill9()
            if code == 0:
                break  # it finished just before the kill landed
            assert code == -signal.SIGKILL, f"the attempt exited {code} on its own: {engine.stderr()[-2000:]}"
            campaign.kills += 1
            campaign.moments[moment] += 1
            if window_open is not None and window_open():
                campaign.inside_window[moment] += 1
            if pending is not None:
                check_resume_choice(run_dir, *pending, campaign)
            records = check_after_kill(run_dir, tmp, campaign)
            check_stale_temps(run_dir, campaign)

            resumed_from = newest_final_step(run_dir)
            is_first = False
            pending = (records, len(events(run_dir, "resumed")))
            engine = start_attempt(["resume", str(run_dir)], tmp, logs, slow=True)
        else:
            campaign.pids.append(engine.pid)
        code = engine.wait(timeout=180)
        assert code == 0, f"the last attempt failed ({code}): {engine.stderr()[-2000:]}"
        if pending is not None:
            check_resume_choice(run_dir, *pending, campaign, required=True)
    finally:
        engine.ensure_dead()
    return run_dir, campaign


def check_resume_choice(run_dir: Path, records_before: dict[str, dict], resumed_before: int,
                        campaign: Campaign, required: bool = False) -> None:
    """The attempt's resume (if it got that far) chose a file `verify` called intact before it began."""
    new = events(run_dir, "resumed")[resumed_before:]
    if not new:
        assert not required, "a resume that finished the run wrote no resumed event"
        return  # killed during start-up, before it chose
    if new[0].get("from") is None:  # killed inside the very first save: nothing to resume from
        intact = [n for n, r in records_before.items() if ".tmp." not in n and r["status"] in ("ok", "unverified")]
        assert not intact and new[0].get("step") == 0, f"restarted from scratch although {intact} were intact"
        campaign.resumes += 1
        return
    chosen = Path(str(new[0].get("from"))).name
    assert chosen in records_before, f"resumed from {chosen}, which verify did not list: {sorted(records_before)}"
    assert records_before[chosen]["status"] in ("ok", "unverified"), \
        f"resume chose {chosen}, which verify called {records_before[chosen]['status']}"
    assert new[0].get("step") == int(chosen[5:13]), f"resumed event {new[0]} does not match {chosen}"
    campaign.resumes += 1


def check_stale_temps(run_dir: Path, campaign: Campaign) -> None:
    """A temp file of a killed attempt is gone once a later attempt has completed a save."""
    saves = events(run_dir, "checkpoint")
    for path in temp_files(run_dir):
        owner = temp_pid(path)
        if owner is None or owner not in campaign.pids[:-1]:
            continue
        later_attempts = campaign.pids[campaign.pids.index(owner) + 1:]
        saved_since = any(engine_started_at.get(pid, 1e18) <= e.get("time", 0) for pid in later_attempts
                          for e in saves)
        assert not saved_since, f"{path.name} (pid {owner}, killed) survived a later successful save"


def uninterrupted(tmp: Path, max_steps: int) -> Path:
    root = tmp / "reference"
    done = run_cli(["train", "digits_mlp", "--root", root, "--name", "reference",
                    *set_args(campaign_overrides(max_steps))], cwd=tmp, timeout=180)
    assert done.returncode == 0, done.stderr
    run_dir = find_run_dir(root)
    assert run_dir is not None
    return run_dir


def check_nothing_lost(run_dir: Path, reference: Path, max_steps: int, cwd: Path) -> None:
    final = run_dir / "checkpoints" / f"step_{max_steps:08d}.pt"
    expected = reference / "checkpoints" / f"step_{max_steps:08d}.pt"
    assert final.is_file(), f"no final checkpoint; files: {[p.name for p in checkpoint_files(run_dir)]}"
    assert status(run_dir).get("state") == "finished"
    differences = state_differences(load_state(final), load_state(expected))
    assert not differences, f"killed-and-resumed run differs from the uninterrupted one: {differences[:10]}"
    assert not temp_files(run_dir), f"temp files left: {temp_files(run_dir)}"
    code, document = verify_json(run_dir, cwd=cwd)
    # unverified: complete, but renamed just before a kill, so never listed (see check_after_kill)
    bad = {name: r["status"] for name, r in records_by_name(document).items()
           if r["status"] not in ("ok", "unverified")}
    assert code == 0 and not bad, f"verify after the campaign: exit {code}, {bad}"
    for key in ("train/loss", "val/loss"):
        assert one_curve(run_dir, key) == one_curve(reference, key), f"{key} curve differs from the reference"
    check_metrics_reader(run_dir, reference)


def check_metrics_reader(run_dir: Path, reference: Path) -> None:
    """runctl's own reader (runs.metrics, what `ls` and the UI plot) agrees: one curve, no repeats."""
    try:
        from runctl.runs import metrics
    except ImportError:  # not written yet: one_curve above already checked the contract
        return
    curves = []
    for folder in (run_dir, reference):
        reader = metrics.MetricsReader(folder / "metrics.jsonl")
        reader.poll()
        steps, values = reader.series("train/loss")
        curves.append((list(map(int, steps)), list(map(float, values))))
    (steps, values), (ref_steps, ref_values) = curves
    assert len(steps) == len(set(steps)), "runs.metrics reads duplicated steps"
    assert (steps, values) == (ref_steps, ref_values)


def campaign_test(tmp: Path, seeds: list[int], kills_per_run: int, max_steps: int,
                  parallel: int) -> list[Campaign]:
    """The reference run and the campaigns, `parallel` at a time (they mostly wait on each other).

    Every run is checked even when another fails, so one failure does not hide the others.
    """
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        reference_future = pool.submit(uninterrupted, tmp, max_steps)
        futures = [pool.submit(run_campaign, tmp / f"seed{seed}", seed, kills_per_run, max_steps)
                   for seed in seeds]
        reference = reference_future.result()
        results, failures = [], []
        for seed, future in zip(seeds, futures, strict=True):
            try:
                run_dir, campaign = future.result()
                check_nothing_lost(run_dir, reference, max_steps, tmp)
            except AssertionError as exc:
                failures.append(f"seed {seed}: {exc}")
                print(f"seed {seed}: FAILED: {str(exc)[:500]}")
                continue
            results.append(campaign)
            print(f"seed {seed}: {campaign.kills} kills survived {dict(campaign.moments)}, "
                  f"inside the write windows: {dict(campaign.inside_window)}", flush=True)
    assert not failures, "\n".join(failures)
    return results


@pytest.mark.timeout(600)  # several minutes only on a heavily shared machine
def test_kill9_campaign_quick(tmp_path: Path) -> None:
    """CI tier: 2 runs x 5 kills, both slow-write windows hit in each run."""
    results = campaign_test(tmp_path, seeds=[1, 2], kills_per_run=5, max_steps=51, parallel=3)
    assert sum(c.kills for c in results) >= 10
    for c in results:
        assert c.moments["temp_write"] >= 1 and c.moments["manifest_update"] >= 1, c.moments
    landed = sum((c.inside_window for c in results), Counter())
    assert landed["temp_write"] >= 1 and landed["manifest_update"] >= 1, f"no kill landed inside a window: {landed}"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_kill9_campaign_long(tmp_path: Path) -> None:
    """Long tier (--long): 10 runs x 20 kills = 200 kills."""
    results = campaign_test(tmp_path, seeds=list(range(100, 110)), kills_per_run=20, max_steps=150,
                            parallel=3)
    total = sum(c.kills for c in results)
    moments = sum((c.moments for c in results), Counter())
    landed = sum((c.inside_window for c in results), Counter())
    print(f"long tier: {total} kills survived across {len(results)} runs; moments {dict(moments)}; "
          f"inside the write windows: {dict(landed)}")
    assert total >= 200

