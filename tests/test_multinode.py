"""Two nodes on one machine: ``scripts/loopback_nodes.sh`` starts ``train.py`` as 2 nodes x 1
process (MASTER_ADDR=127.0.0.1, MASTER_PORT, WORLD_SIZE, NODE_RANK; gloo), the way a cluster
launcher does. The nodes read disjoint shards of the training set; the all-reduced gradient of the
first step is the mean of the two nodes' own gradients (the gradient of the global batch); only
global rank 0 writes checkpoints and metric logs; and both nodes resume from that checkpoint."""

from __future__ import annotations

import os
import shlex
import socket
import sys

import torch
from lightning.pytorch import Callback

from helpers import ROOT, TINY, run_bounded

SCRIPT = ROOT / "scripts" / "loopback_nodes.sh"


class NodeReport(Callback):
    """Per global rank: the training indices it reads in epoch 0, the first step's all-reduced
    gradient and its own local gradient (the same step recomputed from the same random state,
    outside DDP), the final weights and step."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir, self.report, self.first = out_dir, {"rank": None}, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first is None:  # the run's first step
            self.report["indices"] = list(iter(trainer.train_dataloader.sampler))
            self.first = (torch.get_rng_state(), batch, batch_idx)

    def on_after_backward(self, trainer, pl_module) -> None:
        if self.first is None or "reduced" in self.report:
            return
        params = [p for p in pl_module.parameters() if p.requires_grad]
        self.report["reduced"] = [p.grad.detach().clone() for p in params]
        after = torch.get_rng_state()
        state, batch, batch_idx = self.first
        torch.set_rng_state(state)  # the same t, r, z as the step DDP just reduced
        quiet = {"log": lambda *a, **k: None, "log_dict": lambda *a, **k: None}
        vars(pl_module).update(quiet)
        try:
            loss = pl_module.training_step(batch, batch_idx)  # the bare module: no DDP hooks
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        finally:
            for name in quiet:
                vars(pl_module).pop(name)
            torch.set_rng_state(after)
        self.report["local"] = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]

    def on_train_end(self, trainer, pl_module) -> None:
        self.report.update(
            rank=trainer.global_rank,
            world=trainer.world_size,
            step=trainer.global_step,
            weights={k: v.detach().clone() for k, v in pl_module.state_dict().items()},
        )
        torch.save(
            self.report,
            os.path.join(self.out_dir, f"node_rank{trainer.global_rank}_{trainer.global_step}.pt"),
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(run, out_dir, *extra, timeout=600):
    cmd = [
        "bash",
        str(SCRIPT),
        "2",
        str(_free_port()),
        str(run),
        *TINY,
        f"paths.data_dir={out_dir / 'data'}",
        "logger=csv",
        "trainer.log_every_n_steps=1",
        "data.synthetic.num_train=8",
        "trainer.max_epochs=-1",
        "trainer.num_sanity_val_steps=0",
        "trainer.limit_val_batches=0",
        "callbacks.val_metrics=null",
        "callbacks.progress=null",
        "trainer.enable_progress_bar=false",
        "+callbacks.node_report._target_=test_multinode.NodeReport",
        f"+callbacks.node_report.out_dir={out_dir}",
        *extra,
    ]
    node_logs = lambda: "".join(
        f"\n--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(run.glob("node*.log"))
    )
    code, logs = run_bounded(cmd, timeout, env={"PY": sys.executable}, logs=node_logs)
    assert code == 0, f"the two-node run exited {code}:\n{logs}"
    return logs


def test_two_nodes_on_loopback_train_as_one_global_batch_and_resume(tmp_path):
    run = tmp_path / "run"
    _launch(run, tmp_path, "trainer.max_steps=2")
    r0, r1 = (torch.load(tmp_path / f"node_rank{r}_2.pt", weights_only=True) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    # disjoint shards that together are the training set (8 files, 4 per node)
    assert len(r0["indices"]) == len(r1["indices"]) == 4
    assert sorted(r0["indices"] + r1["indices"]) == list(range(8))
    # the reduced gradient is the same on both nodes and is the mean of the nodes' own gradients
    # (equal shard sizes: the gradient of the global batch's mean loss); the control: the nodes'
    # own gradients differ, so the check could fail
    assert any(not torch.allclose(a, b) for a, b in zip(r0["local"], r1["local"]))
    for red0, red1, g0, g1 in zip(r0["reduced"], r1["reduced"], r0["local"], r1["local"]):
        assert torch.equal(red0, red1)
        torch.testing.assert_close(red0, (g0 + g1) / 2, rtol=1e-4, atol=1e-7)
    for k in r0["weights"]:
        assert torch.equal(r0["weights"][k], r1["weights"][k]), k
    # only global rank 0 writes checkpoints and metric logs; node 1 keeps Hydra's own record only
    node0, node1 = run / "node0", run / "node1"
    assert (node0 / "checkpoints" / "last.ckpt").is_file() and list(node0.glob("csv/**/metrics.csv"))
    written = sorted(str(p.relative_to(node1)) for p in node1.rglob("*") if p.is_file())
    assert all(p.startswith(".hydra/") or p == "train.log" for p in written), written

    # resume: both nodes load rank 0's checkpoint, same world size, and go on to step 4
    _launch(run, tmp_path, "trainer.max_steps=4", f"ckpt_path={node0 / 'checkpoints' / 'last.ckpt'}")
    s0, s1 = (torch.load(tmp_path / f"node_rank{r}_4.pt", weights_only=True) for r in (0, 1))
    assert s0["step"] == s1["step"] == 4
    for k in s0["weights"]:
        assert torch.equal(s0["weights"][k], s1["weights"][k]), k
    assert any(not torch.equal(s0["weights"][k], r0["weights"][k]) for k in s0["weights"])
    ckpt = torch.load(node0 / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4
    assert not (node1 / "checkpoints").exists()


def test_slurm_check_trains_the_same_tiny_network_as_the_tests():
    """scripts/slurm_local.sh keeps its own copy of the tiny-network overrides (a user-facing
    script does not import from tests/): every key of helpers.TINY is there with the same value,
    but for the two it changes on purpose (a csv log to read, 8 files for 2 ranks' shards)."""
    text = (ROOT / "scripts" / "slurm_local.sh").read_text()
    block = text[text.index("\nTINY=(") + len("\nTINY=(") :]
    script = dict(o.split("=", 1) for o in shlex.split(block[: block.index(")\n")]))
    tests = dict(o.split("=", 1) for o in TINY)
    changed = {k for k in tests if script.get(k) != tests[k]}
    assert changed == {"logger", "data.synthetic.num_train"}, {k: (tests[k], script.get(k)) for k in changed}
