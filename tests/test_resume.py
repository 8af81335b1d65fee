"""Resume: a training process killed with SIGKILL mid-epoch continues from last.ckpt with its
optimizer, EMA, schedules and data position, and reaches the same final step; `ckpt_path` only
resumes a run trained with the same model and objective (unless resume_force=true)."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from lightning.pytorch import Callback
from omegaconf import OmegaConf

from helpers import ROOT, TINY, compose_cfg
from meanflowse.data.epoch_loader import EpochDataLoader, EpochRandomSampler
from meanflowse.training.checkpointing import ResumeError, resume_checkpoint
from meanflowse.training.fit import _resume_target, train


class RecordBatches(Callback):
    """Appends ``{"step", "epoch", "names", "progress"}`` per trained batch to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with open(self.path, "a") as fh:
            fh.write(
                json.dumps(
                    {
                        "step": trainer.global_step,
                        "epoch": trainer.current_epoch,
                        "names": list(batch["name"]),
                        "progress": pl_module.progress(),
                    }
                )
                + "\n"
            )
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
    cmd = [
        sys.executable,
        "train.py",
        *TINY,
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
        "trainer.max_steps=6",
        "trainer.max_epochs=-1",
        "trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        "callbacks.progress=null",
        "callbacks.last_checkpoint.every_n_train_steps=1",
        "+callbacks.record._target_=test_resume.RecordBatches",
        f"+callbacks.record.path={log}",
        "mf.weight_final=1.0",
        "curriculum.mf_warmup_frac=0.5",
        "curriculum.mf_skip_below=0",
        *extra,
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"), WANDB_MODE="offline")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_sigkill_mid_epoch_then_resume_reaches_the_same_final_step(tmp_path):
    runs, data, log = tmp_path / "runs", tmp_path / "data", tmp_path / "batches.jsonl"
    killed = _train(
        runs / "first",
        data,
        log,
        "+callbacks.kill._target_=test_resume.SigkillAtStep",
        "+callbacks.kill.step=4",
    )
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
    assert not any(
        torch.equal(after["callbacks"]["EMA"]["shadow"][k], before["callbacks"]["EMA"]["shadow"][k])
        for k in before["callbacks"]["EMA"]["shadow"]
    )
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
    make = lambda: EpochDataLoader(
        data, batch_size=2, sampler=EpochRandomSampler(data, seed=3), epoch_fn=lambda: 1
    )
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
    other_epoch = EpochDataLoader(
        data, batch_size=2, sampler=EpochRandomSampler(data, seed=3), epoch_fn=lambda: 2
    )
    other_epoch.load_state_dict(state)
    assert len(list(other_epoch)) == 5  # a state from another epoch skips nothing


# -- which run `ckpt_path` may resume (issue 13) ------------------------------------------------
def _fake_run(runs, name, cfg, stamp):
    """A run folder whose last.ckpt stores ``cfg`` as train.py does (no weights needed here)."""
    ckpt = runs / name / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"hyper_parameters": {"config": OmegaConf.to_container(cfg, resolve=True)}}, ckpt)
    os.utime(ckpt, (stamp, stamp))
    return ckpt


def _cfg(tmp_path, run, *overrides):
    return compose_cfg("train", [*TINY, f"paths.output_dir={run}", *overrides], tmp_path)


def test_last_refuses_a_run_trained_with_another_objective(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs, "a", _cfg(tmp_path, runs / "a", "mf.first_order_coef=0.5"), 1000)
    new = _cfg(tmp_path, runs / "b", "mf.first_order_coef=1.0", "ckpt_path=last")
    with pytest.raises(ResumeError) as err:
        train(new)  # refused before any data or model is built
    message = str(err.value)
    assert "mf.first_order_coef: 0.5 in the run, 1.0 now" in message, message
    assert str(runs / "a") in message and "resume_force=true" in message
    assert new.paths.output_dir == str(runs / "b")  # not redirected into the other run


def test_resume_force_resumes_the_newest_run_anyway(tmp_path):
    runs = tmp_path / "runs"
    old = _fake_run(runs, "a", _cfg(tmp_path, runs / "a", "mf.first_order_coef=0.5"), 1000)
    new = _cfg(tmp_path, runs / "b", "mf.first_order_coef=1.0", "ckpt_path=last", "resume_force=true")
    ckpt, diffs = resume_checkpoint("last", config=new, run_dir=runs / "b", force=True)
    assert ckpt == old and diffs == ["mf.first_order_coef: 0.5 in the run, 1.0 now"]
    assert _resume_target(new) == old and new.paths.output_dir == str(runs / "a")


def test_last_takes_the_newest_matching_run_and_names_every_mismatch(tmp_path):
    runs = tmp_path / "runs"
    a = _fake_run(runs, "a", _cfg(tmp_path, runs / "a", "mf.first_order_coef=0.5"), 1000)
    b = _fake_run(runs, "b", _cfg(tmp_path, runs / "b", "mf.first_order_coef=1.0"), 2000)
    (runs / "c" / "checkpoints").mkdir(parents=True)
    (runs / "c" / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    resume = lambda *o: resume_checkpoint(
        "last", config=_cfg(tmp_path, runs / "new", *o), run_dir=runs / "new"
    )
    # the older run when it is the one that matches; keys outside the model and objective
    # (the schedule, mf.nan_policy, the JVP implementation) may change on a resume
    assert resume(
        "mf.first_order_coef=0.5", "trainer.max_steps=99", "mf.nan_policy=skip", "mf.jvp_impl=fd"
    ) == (a, [])
    assert resume("mf.first_order_coef=1.0") == (b, [])
    with pytest.raises(ResumeError) as err:
        resume("mf.first_order_coef=0.75")
    message = str(err.value)
    assert f"{runs / 'a'}: mf.first_order_coef: 0.5 in the run, 0.75 now" in message, message
    assert f"{runs / 'b'}: mf.first_order_coef: 1.0 in the run, 0.75 now" in message
    assert f"{runs / 'c'}: no stored config" in message
    with pytest.raises(ResumeError, match="backbone.nf: 8 in the run, 16 now"):
        resume("mf.first_order_coef=0.5", "backbone.nf=16")


def _damage(src, dst, stamp):
    """A copy of ``src`` with bytes flipped inside its data, metadata left intact."""
    data = bytearray(src.read_bytes())
    start = data.index(b"data/0") + 200  # inside the first tensor's record
    data[start : start + 16] = bytes(255 - b for b in data[start : start + 16])
    dst.parent.mkdir(parents=True)
    dst.write_bytes(bytes(data))
    os.utime(dst, (stamp, stamp))
    return dst


def test_last_skips_a_newer_damaged_checkpoint_and_a_named_one_is_refused(tmp_path, caplog):
    runs = tmp_path / "runs"
    cfg = _cfg(tmp_path, runs / "a")
    good = runs / "a" / "checkpoints" / "last.ckpt"
    good.parent.mkdir(parents=True)
    weights = {"w": torch.arange(4096, dtype=torch.float32)}
    torch.save({"state_dict": weights, "hyper_parameters": {"config": OmegaConf.to_container(cfg)}}, good)
    os.utime(good, (1000, 1000))
    bad = _damage(good, runs / "b" / "checkpoints" / "last.ckpt", 2000)  # newer, same config
    truncated = runs / "c" / "checkpoints" / "last.ckpt"
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes(good.read_bytes()[:-300])
    os.utime(truncated, (3000, 3000))
    assert torch.load(bad, mmap=True, weights_only=True)["hyper_parameters"]  # metadata reads fine

    assert resume_checkpoint("last", config=cfg, run_dir=runs / "new") == (good, [])
    assert str(bad) in caplog.text  # the damaged match is reported, not resumed
    # (the truncated one has no readable config, so it is a mismatch, never read in full)
    for damaged in (bad, truncated):
        with pytest.raises(ResumeError, match=f"ckpt_path={damaged}: .* pass another checkpoint"):
            resume_checkpoint(str(damaged), config=cfg, run_dir=runs / "new")
    good.unlink()
    with pytest.raises(ResumeError) as err:  # nothing readable: refused, even with force
        resume_checkpoint("last", config=cfg, run_dir=runs / "new", force=True)
    assert "fails its CRC check" in str(err.value) and "not a complete checkpoint" in str(err.value)


def test_a_named_run_is_checked_too_and_hydra_config_is_the_fallback(tmp_path):
    runs = tmp_path / "runs"
    old = _cfg(tmp_path, runs / "a", "mf.first_order_coef=0.5")
    ckpt = runs / "a" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {}}, ckpt)  # a checkpoint without a stored config
    (runs / "a" / ".hydra").mkdir()
    OmegaConf.save(old, runs / "a" / ".hydra" / "config.yaml")
    new = _cfg(tmp_path, runs / "b", "mf.first_order_coef=1.0")
    with pytest.raises(ResumeError, match=r"ckpt_path=.*mf\.first_order_coef: 0\.5 in the run, 1\.0 now"):
        resume_checkpoint(str(runs / "a"), config=new, run_dir=runs / "b")
    assert resume_checkpoint(str(runs / "a"), config=new, run_dir=runs / "b", force=True)[0] == ckpt
    assert resume_checkpoint(str(ckpt), config=old, run_dir=runs / "b") == (ckpt, [])


def _final_step_of_last_ckpt(tmp_path, callback_cls) -> int:
    """A 5-step run that saves every 2 steps and never validates: the final step, 5, is on
    neither schedule, so only the end of training can put it in last.ckpt."""
    from lightning.pytorch import LightningModule, Trainer

    class Tiny(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return (self.w - batch).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.ones(10, 1), batch_size=1)

    ckpt = callback_cls(dirpath=tmp_path, every_n_train_steps=2, save_top_k=0, save_last=True)
    trainer = Trainer(
        max_steps=5,
        callbacks=[ckpt],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        limit_val_batches=0,
    )
    trainer.fit(Tiny())
    return torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]


def test_last_ckpt_holds_the_final_step_when_training_ends_off_schedule(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from meanflowse.training.checkpointing import LastCheckpoint

    assert _final_step_of_last_ckpt(tmp_path / "ours", LastCheckpoint) == 5
    # why LastCheckpoint exists: Lightning's own keeps the step-4 save (if this fails, Lightning
    # fixed it and LastCheckpoint can go)
    assert _final_step_of_last_ckpt(tmp_path / "stock", ModelCheckpoint) == 4
