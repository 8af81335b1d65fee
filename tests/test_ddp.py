"""Multi-GPU correctness on CPU: two DDP processes (gloo) compute the same MeanFlow gradients as
one process on the same global batch, a real two-rank training run agrees across ranks (its
validation metrics scored by both ranks, a disjoint share each), and a NaN on one rank only is
skipped by both (mf.nan_policy=skip) instead of hanging the other."""

import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch import Callback
from torch import nn

from helpers import TINY, run_bounded
from meanflowse.method.objective import MeanFlowConfig, single_pass_loss

IMPLS = ("func", "autograd", "fd")
GLOBAL_BATCH = 4


class MeanFlowLoss(nn.Module):
    """The loss as the wrapped module's forward, the way Lightning calls ``training_step``
    through DDP (the backbone itself is called inside, once or several times)."""

    def __init__(self, net: nn.Module, cfg: MeanFlowConfig) -> None:
        super().__init__()
        self.net, self.cfg = net, cfg

    def forward(self, batch: dict) -> torch.Tensor:
        net_fn = lambda x, y, t, r: self.net(x, y, t, t - r)
        return single_pass_loss(net_fn, cfg=self.cfg, **batch).loss


def _batch() -> dict:
    # float64: the fd JVP divides by 2 eps (eps ~ 1e-3), which would lift float32 round-off of
    # batch-size-dependent kernels (a rank's shard vs the global batch) to ~1e-4 relative
    g = torch.Generator().manual_seed(1)
    x_t, y, v = (torch.randn(GLOBAL_BATCH, 2, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    t = 0.1 + 0.9 * torch.rand(GLOBAL_BATCH, generator=g, dtype=torch.float64)
    r = torch.stack([t[0], t[1] * 0.3, t[2] * 0.7, t[3] * 0.0])  # one r = t, three r < t
    return dict(x_t=x_t, y=y, v=v, t=t, r=r)


def _grads(loss_module: nn.Module, batch: dict) -> dict:
    loss_module.zero_grad(set_to_none=True)
    loss_module(batch).backward()
    return {n: p.grad.detach().clone() for n, p in loss_module.named_parameters()}


def _net():
    from conftest import TinyNet

    torch.manual_seed(0)
    return TinyNet().double()


def _worker(rank: int, world: int, store_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    store = dist.FileStore(store_file, world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    try:
        per_rank = GLOBAL_BATCH // world
        shard = {k: v[rank * per_rank : (rank + 1) * per_rank] for k, v in _batch().items()}
        for impl in IMPLS:
            ddp = nn.parallel.DistributedDataParallel(MeanFlowLoss(_net(), MeanFlowConfig(jvp_impl=impl)))
            grads = _grads(ddp, shard)
            torch.save(
                {n.removeprefix("module."): g for n, g in grads.items()},
                os.path.join(out_dir, f"{impl}_{rank}.pt"),
            )
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_match_one_process_on_the_global_batch(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, str(tmp_path / "store"), str(tmp_path)), nprocs=world, join=True)
    for impl in IMPLS:
        reference = _grads(MeanFlowLoss(_net(), MeanFlowConfig(jvp_impl=impl)), _batch())
        assert any(g.abs().sum() > 0 for g in reference.values())
        for rank in range(world):
            got = torch.load(tmp_path / f"{impl}_{rank}.pt", weights_only=True)
            assert set(got) == set(reference)
            for name, g in reference.items():
                torch.testing.assert_close(
                    got[name],
                    g,
                    rtol=1e-5,
                    atol=1e-6,
                    msg=lambda m: f"{impl}, rank {rank}, {name}: {m}",  # noqa: B023 (called here)
                )


def _level(deg, sr):
    """A registry-style metric: the RMS of the signal; a silent one cannot be scored."""
    from meanflowse.metrics.base import MetricError

    rms = float((torch.as_tensor(deg) ** 2).mean().sqrt())
    if rms == 0:
        raise MetricError("silent")
    return rms


# file levels per rank: rank 0 has a silent (failed) file, rank 2 has no file at all
LEVELS = {0: [1.0, 2.0, 0.0], 1: [4.0], 2: []}


def _file_metric_worker(rank: int, world: int, store_file: str, out_dir: str) -> None:
    from meanflowse.metrics import registry
    from meanflowse.metrics.file_metric import FileMetric

    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store_file, world), rank=rank, world_size=world)
    try:
        state = FileMetric(registry.Metric("level", _level, "level", needs_reference=False))
        for level in LEVELS[rank]:
            state.update(torch.full((16,), level, dtype=torch.float64), None, 16000)
        mean = float(state.compute()["level"])
        torch.save({"mean": mean, "values": state.values("level")}, os.path.join(out_dir, f"fm{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_file_metric_states_gather_every_rank_s_files(tmp_path):
    """Three gloo ranks, one with no file and one with a file it cannot score: every rank
    computes the mean over the finite values of all files, and keeps its own files' values."""
    world = len(LEVELS)
    mp.spawn(_file_metric_worker, args=(world, str(tmp_path / "store"), str(tmp_path)), nprocs=world)
    for rank in range(world):
        got = torch.load(tmp_path / f"fm{rank}.pt", weights_only=True)
        assert got["mean"] == pytest.approx((1.0 + 2.0 + 4.0) / 3)
        values = got["values"].tolist()  # the silent file: NaN, counted in no mean
        assert [v if v == v else "nan" for v in values] == [v or "nan" for v in LEVELS[rank]]


def test_half_batch_gradients_differ_from_the_global_batch():
    """The control for the test above: one rank's shard alone gives other gradients."""
    half = {k: v[:2] for k, v in _batch().items()}
    full = _grads(MeanFlowLoss(_net(), MeanFlowConfig()), _batch())
    part = _grads(MeanFlowLoss(_net(), MeanFlowConfig()), half)
    assert not all(torch.allclose(full[n], part[n], rtol=1e-3) for n in full)


# -- a real two-rank run through train.py -------------------------------------------------------
class RankReport(Callback):
    """Saves, per rank, the initial weights' checksum, the noise seed in use and the final EMA."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.report = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.report["init"] = sum(float(p.double().sum()) for p in pl_module.parameters())

    def on_train_batch_start(self, trainer, *args) -> None:
        self.report.setdefault("seed", torch.initial_seed())

    def on_train_end(self, trainer, pl_module) -> None:
        ema = next(c for c in trainer.callbacks if type(c).__name__ == "EMA")
        self.report["ema"] = {k: v.cpu() for k, v in ema.shadow.items()}
        self.report["metrics"] = {k: float(v) for k, v in trainer.callback_metrics.items()}
        torch.save(self.report, os.path.join(self.out_dir, f"rank{trainer.global_rank}.pt"))


class ValidationReport(Callback):
    """Per rank, at each validation end (EMA weights in): the files the rank scored, what the
    validation callback logged, and the means of one process scoring every evaluation file with
    the same weights and settings through the same path, with no collective."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir, self.epochs = out_dir, []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        from meanflowse.inference.enhancer import Enhancer
        from meanflowse.inference.measured import enhance_and_score, memory_item
        from meanflowse.metrics import registry
        from meanflowse.training.validation import ValidationMetrics, eval_indices

        if trainer.sanity_checking:
            return
        cb = next(c for c in trainer.callbacks if isinstance(c, ValidationMetrics))
        dataset = trainer.datamodule.dataset("valid")
        pairs = [dataset.load_pair(i) for i in eval_indices(len(dataset), cb.num_eval_files)]
        enhancer = Enhancer(
            module=pl_module.inference,
            spec=dataset.spec,
            sample_rate=dataset.sample_rate,
            device=pl_module.device,
            seed=cb.seed,
            batch_size=cb.batch_size,
        )
        items = [memory_item(p["name"], p["noisy"], p["sample_rate"], p["clean"]) for p in pairs]
        alone = enhance_and_score(enhancer, items, metrics=registry.reference_metrics(), score_noisy=False)
        self.epochs.append(
            {
                "scored": list(cb.scored),
                "logged": dict(cb.last),
                "all_files": [p["name"] for p in pairs],
                "one_process": {f"val/{k}": alone.summary[k] for k in registry.reference_keys()},
            }
        )
        torch.save(self.epochs, os.path.join(self.out_dir, f"val_rank{trainer.global_rank}.pt"))


def _two_rank_cmd(tmp_path, *extra):
    return [
        sys.executable,
        "train.py",
        *TINY,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "trainer.max_epochs=-1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "callbacks.progress=null",
        *extra,
    ]


class NanOnOneRank(Callback):
    """Rank ``rank``'s network gives NaN for its ``batch``-th batch (the other rank stays finite);
    per rank, records which batches changed the weights, and saves the final weights."""

    def __init__(self, rank: int, batch: int, out_dir: str) -> None:
        self.rank, self.batch, self.out_dir = rank, batch, out_dir
        self.changed, self.seen, self.before = [], 0, []

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        self.before = [p.detach().clone() for p in pl_module.parameters()]
        if trainer.global_rank == self.rank and self.seen == self.batch:
            clean = type(pl_module).net_fn
            pl_module.net_fn = lambda *a: clean(pl_module, *a) * float("nan")

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        vars(pl_module).pop("net_fn", None)
        self.changed.append(
            any(not torch.equal(b, p.detach()) for b, p in zip(self.before, pl_module.parameters()))
        )
        self.seen += 1

    def on_train_end(self, trainer, pl_module) -> None:
        torch.save(
            {
                "changed": self.changed,
                "weights": {k: v.cpu() for k, v in pl_module.state_dict().items()},
                "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            },
            os.path.join(self.out_dir, f"nan_rank{trainer.global_rank}.pt"),
        )


def test_two_rank_training_run_agrees_across_ranks_and_skips_a_nan_on_one(tmp_path):
    """One two-rank run through train.py (each launch costs two processes' start-up): ranks agree,
    validation is shared, and a NaN on rank 1's second batch is skipped by both ranks
    (mf.nan_policy=skip) instead of leaving rank 0 waiting in the all-reduce."""
    cmd = _two_rank_cmd(
        tmp_path,
        "trainer.max_steps=3",
        "+callbacks.report._target_=test_ddp.RankReport",
        f"+callbacks.report.out_dir={tmp_path}",
        "+callbacks.val_report._target_=test_ddp.ValidationReport",
        f"+callbacks.val_report.out_dir={tmp_path}",
        "callbacks.val_metrics.batch_size=1",  # a file per network call, on a rank or in one process
        "callbacks.val_metrics.num_media=0",
        "mf.nan_policy=skip",
        "+callbacks.nan._target_=test_ddp.NanOnOneRank",
        "+callbacks.nan.rank=1",
        "+callbacks.nan.batch=1",
        f"+callbacks.nan.out_dir={tmp_path}",
    )
    code, out = run_bounded(cmd, timeout=900)  # without a collective skip rank 0 would wait
    assert code == 0, out[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["init"] == r1["init"]  # same initial weights on every rank
    assert r0["seed"] != r1["seed"]  # but each rank draws its own t, r, z
    for k in r0["ema"]:  # the EMA is the same everywhere
        assert torch.equal(r0["ema"][k], r1["ema"][k])
    for key in ("val/pesq", "val/si_sdr"):  # both ranks measured, both logged the same number
        assert r0["metrics"][key] == r1["metrics"][key]
    v0, v1 = (torch.load(tmp_path / f"val_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert len(v0) == len(v1) >= 1
    for e0, e1 in zip(v0, v1):
        # each rank scored a share of its own, together every evaluation file
        assert e0["scored"] and e1["scored"] and not set(e0["scored"]) & set(e1["scored"])
        assert sorted(e0["scored"] + e1["scored"]) == sorted(e0["all_files"])
        for key, alone in e0["one_process"].items():
            # the mean over all files, on both ranks, equal to one process scoring them all
            assert e0["logged"][key] == e1["logged"][key]
            # (to round-off: ESTOI's float sums may differ in the last bit between processes)
            assert e0["logged"][key] == pytest.approx(alone, rel=1e-12), key
            assert e1["one_process"][key] == pytest.approx(alone, rel=1e-12), key
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    r0, r1 = (torch.load(tmp_path / f"nan_rank{r}.pt", weights_only=True) for r in (0, 1))
    # both ranks skipped batch 1 (rank 0's loss was finite), and only that one
    assert r0["changed"] == r1["changed"] == [True, False, True]
    assert "step 1: a NaN or Inf on another rank; skipping" in out, out[-3000:]
    for k in r0["weights"]:
        assert torch.equal(r0["weights"][k], r1["weights"][k]), k
        assert torch.isfinite(r0["weights"][k]).all(), k
