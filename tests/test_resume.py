"""Resume: a training process killed with SIGKILL mid-epoch continues from last.ckpt with its
optimizer, EMA, schedules and data position, and reaches the same final step."""
import json
import os
import signal
import subprocess
import sys

import torch
from lightning.pytorch import Callback

from helpers import ROOT, TINY
from meanflowse.data.datamodule import EpochDataLoader, EpochRandomSampler


class RecordBatches(Callback):
    """Appends ``{"step", "epoch", "names", "progress"}`` per trained batch to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"step": trainer.global_step, "epoch": trainer.current_epoch,
                                 "names": list(batch["name"]),
                                 "progress": pl_module.progress()}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


class SigkillAtStep(Callback):
    """Kills its own process (no cleanup, like a preempted node) once ``step`` is trained,
    before that step's checkpoint is written (Lightning runs ModelCheckpoint last)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def _train(run_dir, data_dir, log, *extra):
    # 4 files, batch 2: 2 steps per epoch; a last.ckpt after every step
    cmd = [sys.executable, "train.py", *TINY, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}",
           "trainer.max_steps=6", "trainer.max_epochs=-1", "trainer.limit_val_batches=0",
           "trainer.enable_progress_bar=false", "callbacks.progress=null",
           "callbacks.last_checkpoint.every_n_train_steps=1",
           "+callbacks.record._target_=test_resume.RecordBatches", f"+callbacks.record.path={log}",
           "mf.weight_final=1.0", "curriculum.mf_warmup_frac=0.5", "curriculum.mf_skip_below=0",
           *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"), WANDB_MODE="offline")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_sigkill_mid_epoch_then_resume_reaches_the_same_final_step(tmp_path):
    runs, data, log = tmp_path / "runs", tmp_path / "data", tmp_path / "batches.jsonl"
    killed = _train(runs / "first", data, log, "+callbacks.kill._target_=test_resume.SigkillAtStep",
                    "+callbacks.kill.step=4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = runs / "first" / "checkpoints" / "last.ckpt"
    before = torch.load(last, map_location="cpu", weights_only=True)
    assert before["global_step"] == 3 and before["epoch"] == 1  # mid-epoch: 1 of 2 batches done
    # `last` finds the newest last.ckpt among the sibling runs; the run continues in its folder
    resumed = _train(runs / "second", data, log, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr  # Lightning's warning for a loader without state
    after = torch.load(last, map_location="cpu", weights_only=True)
    assert after["global_step"] == 6
    # the optimizer, the EMA and the validation-metric state continued rather than restarted
    assert all(int(s["step"]) == 6 for s in after["optimizer_states"][0]["state"].values())
    assert after["callbacks"]["EMA"]["num_updates"] == 6
    assert not any(torch.equal(after["callbacks"]["EMA"]["shadow"][k],
                               before["callbacks"]["EMA"]["shadow"][k])
                   for k in before["callbacks"]["EMA"]["shadow"])
    # data position: the resumed run trains step 4 on the batch the killed run had drawn for
    # it, so each epoch still visits every file exactly once
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [r["step"] for r in rows]
    assert steps == [1, 2, 3, 4, 4, 5, 6]
    assert rows[3] == rows[4]
    trained = {r["step"]: r for r in rows}  # the resumed run's record wins for step 4
    for epoch in range(3):
        names = [n for r in trained.values() if r["epoch"] == epoch for n in r["names"]]
        assert len(names) == 4 and len(set(names)) == 4
    # the schedules (w_mf, gamma) follow the restored global step, not a restarted count
    assert [round(r["progress"] * 6) for r in rows] == steps


def test_loader_state_skips_the_batches_already_trained():
    data = list(range(10))
    make = lambda: EpochDataLoader(data, batch_size=2, sampler=EpochRandomSampler(data, seed=3),
                                   epoch_fn=lambda: 1)
    full = [b.tolist() for b in make()]
    first = make()
    it = iter(first)
    seen = [next(it).tolist() for _ in range(2)]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 2} and seen == full[:2]
    again = make()
    again.load_state_dict(state)
    assert [b.tolist() for b in again] == full[2:]
    assert [b.tolist() for b in again] == full  # only the first pass after a resume skips
    other_epoch = EpochDataLoader(data, batch_size=2, sampler=EpochRandomSampler(data, seed=3),
                                  epoch_fn=lambda: 2)
    other_epoch.load_state_dict(state)
    assert len(list(other_epoch)) == 5  # a state from another epoch skips nothing
