"""The loop's semantics, in process: step counting, final/periodic/best checkpoints, eval, logging,
grad accumulation, EMA, curriculum, non-finite losses, crashes, control from another thread."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
import torch
from runctl.engine import api
from runctl.engine.control import Control, ControlFolder, write_command
from runctl.engine.runtime import make_runtime
from runctl.engine.schedule import Schedule
from runctl.runs.errors import RunctlError
from runctl.runs.lock import RunLock
from support.checkpoints import assert_bit_identical, final_checkpoint, load_state
from support.configs import overrides
from support.run_files import events, manifest_files, read_jsonl, status

FAULT_TASK = "support.tasks:factory"





def _run(tmp_path: Path, *extra: str, family: str = "digits_mlp", name: str = "r", **kwargs) -> tuple[Path, api.TrainResult]:
    run_dir = api.new_run(family, tmp_path, name=name, overrides=overrides(family, *extra))
    return run_dir, api.train(run_dir, **kwargs)


@pytest.mark.parametrize(("max_steps", "every"), [(20, 10), (23, 10)])
def test_run_ends_with_final_checkpoint_at_exactly_max_steps(tmp_path: Path, max_steps: int, every: int) -> None:
    run_dir, result = _run(tmp_path, f"max_steps={max_steps}", f"checkpoint.every={every}",
                           "checkpoint.keep_last=10", "eval.every=100")
    assert (result.state, result.step) == ("finished", max_steps)
    files = manifest_files(run_dir)
    steps = {entry["step"]: entry["kind"] for entry in files.values()}
    expected = {s: "periodic" for s in range(every, max_steps, every)} | {max_steps: "final"}
    assert steps == expected
    assert final_checkpoint(run_dir, max_steps)["step"] == max_steps
    assert status(run_dir)["state"] == "finished" and status(run_dir)["step"] == max_steps
    train_lines = [m for m in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in m]
    assert train_lines[-1]["step"] == max_steps          # logged at the last step
    eval_lines = [m for m in read_jsonl(run_dir / "metrics.jsonl") if "val/loss" in m]
    assert [m["step"] for m in eval_lines] == [max_steps]  # eval at the end
    assert [e["event"] for e in events(run_dir)][0] == "started"
    assert events(run_dir)[-1]["event"] == "finished"


def test_metrics_lines_carry_the_contract_fields(tmp_path: Path) -> None:
    run_dir, _ = _run(tmp_path, "max_steps=12", "log.every=4")
    train_lines = [m for m in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in m]
    assert [m["step"] for m in train_lines] == [4, 8, 12]
    for line in train_lines:
        assert {"step", "time", "train/loss", "lr", "grad_norm", "step_time", "samples_per_s"} <= line.keys()
        assert math.isfinite(line["train/loss"]) and line["grad_norm"] > 0
    schedule = Schedule.from_config(api.read_run_config(run_dir))
    assert [m["lr"] for m in train_lines] == [schedule.lr(s - 1) for s in (4, 8, 12)]


def test_char_gpt_logs_tokens_per_second(tmp_path: Path) -> None:
    run_dir, result = _run(tmp_path, "max_steps=5", family="char_gpt")
    assert result.state == "finished"
    assert "tokens_per_s" in read_jsonl(run_dir / "metrics.jsonl")[0]


def test_best_checkpoint_tracks_the_eval_metric(tmp_path: Path) -> None:
    run_dir, _ = _run(tmp_path, "max_steps=40", "eval.every=5", "checkpoint.every=1000",
                      "checkpoint.keep_last=1", "optim.lr=0.01")
    evals = [m for m in read_jsonl(run_dir / "metrics.jsonl") if "val/loss" in m]
    best = min(evals, key=lambda m: m["val/loss"])
    manifest = (run_dir / "checkpoints" / "manifest.json").read_text()
    import json

    recorded = json.loads(manifest)["best"]
    assert recorded["step"] == best["step"] and recorded["value"] == best["val/loss"]
    assert (run_dir / "checkpoints" / recorded["file"]).is_file()
    assert load_state(run_dir / "checkpoints" / recorded["file"])["best"]["value"] == best["val/loss"]


def test_grad_accum_draws_accum_batches_per_step_and_ema_is_saved(tmp_path: Path) -> None:
    run_dir, _ = _run(tmp_path, "max_steps=10", "optim.grad_accum=3", "ema.enabled=true", "ema.decay=0.9")
    state = final_checkpoint(run_dir, 10)
    # 10 steps x 3 micro-batches x 16 examples, all within the first epoch (~1400 examples)
    assert state["data"] == {"epoch": 0, "position": 480, "world_size": 1}
    model, ema = state["model"], state["ema"]
    assert model.keys() == ema.keys()
    assert any(not torch.equal(model[k], ema[k]) for k in model)


def test_staged_async_checkpoints_hold_exactly_their_steps_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Async checkpoints copy weights and moments while the next step's forward/backward runs.
    With that copy slowed down, every checkpoint must still equal the synchronous run's, bit for
    bit: weights, AdamW moments, EMA, and BatchNorm statistics (which the forward pass changes)."""
    from runctl.engine.snapshot import PendingCopies

    staged = []
    copy = PendingCopies.run

    def slow_copy(self: PendingCopies) -> None:
        staged.append(len(self))
        time.sleep(0.05)  # the training thread is well into the next forward/backward by now
        copy(self)

    monkeypatch.setattr(PendingCopies, "run", slow_copy)
    common = ["task=support.tasks:factory", "model.batchnorm=true", "max_steps=8", "checkpoint.every=1",
              "checkpoint.keep_last=100", "ema.enabled=true", "ema.decay=0.9", "eval.every=100"]
    runs = {}
    for mode in ("true", "false"):
        runs[mode], result = _run(tmp_path, *common, f"checkpoint.async={mode}", name=f"async-{mode}")
        assert (result.state, result.step) == ("finished", 8)
    assert len(staged) == 7 and all(staged)  # steps 1-7 staged; the final one is written inline
    for step in range(1, 9):
        staged_state, sync_state = (final_checkpoint(runs[mode], step) for mode in ("true", "false"))
        assert any("running_mean" in key for key in staged_state["model"])
        assert_bit_identical(staged_state, sync_state)


def test_curriculum_stage_applies_at_its_step_and_is_saved(tmp_path: Path) -> None:
    run_dir, _ = _run(tmp_path, "max_steps=20", "checkpoint.every=10",
                      "curriculum=[{at_step: 12, set: {optim.weight_decay: 0.5, loss.aux_weight: 0.1}}]")
    at_10 = load_state(run_dir / "checkpoints" / "step_00000010.pt")
    at_20 = final_checkpoint(run_dir, 20)
    assert at_10["curriculum_stage"] == 0 and at_20["curriculum_stage"] == 1
    assert at_10["optimizer"]["param_groups"][0]["weight_decay"] == pytest.approx(0.01)
    assert at_20["optimizer"]["param_groups"][0]["weight_decay"] == pytest.approx(0.5)
    assert at_20["optimizer"]["param_groups"][1]["weight_decay"] == 0.0  # biases never decay


def test_sgd_and_bf16_autocast_run_on_cpu(tmp_path: Path) -> None:
    _, result = _run(tmp_path, "max_steps=6", "optim.name=sgd", "precision=bf16", "device=cpu")
    assert result.state == "finished"


def test_fp16_needs_cuda_and_the_scaler_is_off_on_cpu() -> None:
    from runctl.engine.config import load_config

    cfg = load_config("digits_mlp", ["device=cpu"])
    assert not make_runtime(cfg).scaler.is_enabled()
    with pytest.raises(RunctlError, match="fp16 needs a CUDA device"):
        make_runtime({**cfg, "precision": "fp16"})
    if not torch.cuda.is_available():
        with pytest.raises(RunctlError, match="CUDA is not available"):
            make_runtime({**cfg, "device": "cuda:0"})


def _fault_run(tmp_path: Path, *extra: str, name: str = "f") -> Path:
    return api.new_run("digits_mlp", tmp_path, name=name, overrides=[
        f"task={FAULT_TASK}", "model={}", *[o for o in overrides("digits_mlp") if not o.startswith("model.")],
        *extra])


def test_nan_loss_stops_with_checkpoint_of_last_finite_step(tmp_path: Path) -> None:
    run_dir = _fault_run(tmp_path, "curriculum=[{at_step: 7, set: {loss.poison: 1}}]",
                         "loss={poison: 0}")
    seen: list[dict] = []
    result = api.train(run_dir, on_event=seen.append)
    assert result.state == "crashed" and "non-finite" in result.error and result.step == 7
    nan_events = events(run_dir, "nan")
    assert len(nan_events) == 1 and nan_events[0]["step"] == 8 and math.isnan(nan_events[0]["value"])
    last = final_checkpoint(run_dir, 7)  # the last finite step, its weights untouched by the nan
    assert all(torch.isfinite(t).all() for t in last["model"].values())
    st = status(run_dir)
    assert st["state"] == "crashed" and "non-finite" in st["error"]
    assert [e["event"] for e in seen] == [e["event"] for e in events(run_dir)]


def test_nan_warn_keeps_training(tmp_path: Path) -> None:
    run_dir = _fault_run(tmp_path, "curriculum=[{at_step: 7, set: {loss.poison: 1}}]",
                         "loss={poison: 0}", "nan.action=warn", "max_steps=12")
    result = api.train(run_dir)
    assert result.state == "finished" and result.step == 12
    assert events(run_dir, "nan")


def test_exception_marks_the_run_crashed_with_traceback(tmp_path: Path) -> None:
    run_dir = _fault_run(tmp_path, "curriculum=[{at_step: 4, set: {loss.poison: 3}}]",
                         "loss={poison: 0}")
    result = api.train(run_dir)
    assert result.state == "crashed" and result.step == 4
    assert result.error == "RuntimeError: poisoned batch"
    assert status(run_dir)["error"] == result.error
    crashed = events(run_dir, "crashed")
    assert len(crashed) == 1 and "Traceback" in crashed[0]["traceback"] and "poisoned" in crashed[0]["traceback"]


def test_second_engine_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    run_dir = api.new_run("digits_mlp", tmp_path, name="locked", overrides=overrides("digits_mlp"))
    holder = RunLock(run_dir)
    holder.acquire()
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    try:
        with pytest.raises(RunctlError, match=r"locked by another engine \(pid \d+ on host"):
            api.train(run_dir)
    finally:
        holder.release()
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def test_train_from_a_worker_thread_with_control(tmp_path: Path) -> None:
    """The in-process UI's way: a thread, a Control, every event through on_event."""
    run_dir = api.new_run("digits_mlp", tmp_path, name="ui", overrides=overrides(
        "digits_mlp", "max_steps=1000", "checkpoint.every=1000", "log.every=1"))
    control = Control()
    seen: list[dict] = []
    results: list[api.TrainResult] = []

    def on_metrics(line: dict) -> None:
        if line.get("step") == 3 and "train/loss" in line:
            control.request_checkpoint()
        if line.get("step") == 6 and "train/loss" in line:
            control.request_extend(1500)
        if line.get("step") == 9 and "train/loss" in line:
            control.request_stop()

    worker = threading.Thread(target=lambda: results.append(
        api.train(run_dir, control=control, on_event=seen.append, on_metrics=on_metrics)))
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive()
    result = results[0]
    assert (result.state, result.step) == ("stopped", 9)
    kinds = {e["step"]: e["kind"] for e in seen if e["event"] == "checkpoint"}
    assert kinds == {3: "periodic", 9: "interrupt"}
    extended = [e for e in seen if e["event"] == "extended"]
    assert extended and extended[0]["from_max"] == 1000 and extended[0]["to_max"] == 1500
    cfg = api.read_run_config(run_dir)
    assert cfg["max_steps"] == 1500 and cfg["extensions"][0]["at_step"] == 6
    assert [e["event"] for e in seen] == [e["event"] for e in events(run_dir)]
    assert seen[-1]["event"] == "stopped" and status(run_dir)["state"] == "stopped"


def test_a_failing_task_factory_ends_the_run_crashed(tmp_path: Path) -> None:
    run_dir = _fault_run(tmp_path, "model.hidden=-1", name="factory")
    result = api.train(run_dir)
    assert result.state == "crashed" and "negative dimension" in result.error
    assert status(run_dir)["state"] == "crashed" and events(run_dir, "crashed")


def test_control_take_between_requests() -> None:
    from runctl.engine.control import NO_COMMANDS

    control = Control()
    assert control.take() is NO_COMMANDS  # nothing asked: no lock, no new object
    control.request_checkpoint()
    assert control.take().checkpoint
    assert control.take() is NO_COMMANDS  # one-shot
    control.request_extend(50)
    control.request_stop()
    first = control.take()
    assert (first.stop, first.extend_to) == ("stopped", 50)
    again = control.take()
    assert again.stop == "stopped" and again.extend_to is None  # stop stays asked


def test_logged_loss_is_the_same_whether_read_every_step_or_at_the_log(tmp_path: Path) -> None:
    """nan.action=stop reads each loss as a float; warn sums them on the device at the log line."""
    lines = {}
    for action in ("stop", "warn"):
        run_dir, result = _run(tmp_path, "max_steps=20", "log.every=5", f"nan.action={action}", name=action)
        assert result.state == "finished"
        lines[action] = [line for line in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in line]
    assert [line["step"] for line in lines["stop"]] == [5, 10, 15, 20]
    for stop, warn in zip(lines["stop"], lines["warn"], strict=True):
        assert stop["train/loss"] == pytest.approx(warn["train/loss"], rel=1e-6)
        assert stop["grad_norm"] == warn["grad_norm"] and stop["lr"] == warn["lr"]


def test_control_folder_commands_and_their_mistakes(tmp_path: Path) -> None:
    import json
    import time

    control = Control()
    folder = ControlFolder(tmp_path, control, ignore_before=time.time())
    stale = write_command(tmp_path, "stop")
    stale.rename(stale.with_name(f"{time.time_ns() - 10**10}-old.json"))  # written 10 s before the start
    write_command(tmp_path, "checkpoint")
    write_command(tmp_path, "extend", max_steps=500)
    (tmp_path / "control" / f"{time.time_ns()}-bad.json").write_text(json.dumps({"command": "explode"}))
    (tmp_path / "control" / f"{time.time_ns()}-torn.json").write_text("{")
    warnings = folder.poll(force=True)
    commands = control.take()
    assert commands.stop is None and commands.checkpoint and commands.extend_to == 500
    assert len(warnings) == 3
    assert any("before this attempt" in w for w in warnings) and any("explode" in w for w in warnings)
    assert not list((tmp_path / "control").iterdir())
    write_command(tmp_path, "stop")
    folder.poll(force=True)
    assert control.take().stop == "stopped" and control.stop_requested  # stop stays asked
