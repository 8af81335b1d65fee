"""Training glue: precision, compile, EMA, validation metrics, checkpoints, loggers, seeding."""

import math
import pickle
from types import SimpleNamespace

import pytest
import torch

from helpers import TINY, compose_cfg
from meanflowse.method.objective import MeanFlowConfig, mean_flow_target
from meanflowse.method.stft import SpecConfig
from meanflowse.training.checkpointing import (
    AtomicCheckpointIO,
    FiniteModelCheckpoint,
    ResumeError,
    resolve_ckpt_path,
)
from meanflowse.training.ema import EMA
from meanflowse.training.fit import compile_note, cpu_precision_note, rank_seed, train
from meanflowse.training.validation import ValidationMetrics, eval_indices, spectrogram_image


def _inputs(b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_t, y, v = (torch.randn(b, 2, 8, 8, generator=g) for _ in range(3))
    t = 0.2 + 0.8 * torch.rand(b, generator=g)
    return dict(x_t=x_t, y=y, v=v, t=t, r=t * torch.rand(b, generator=g))


# -- precision and compile ---------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["func", "autograd", "fd"])
def test_jvp_stays_fp32_under_bf16_autocast(tiny_net, monkeypatch, impl):
    import meanflowse.method.objective as objective

    seen = {}

    def spy(name, fn):
        def wrapped(*a, **kw):
            out = fn(*a, **kw)
            seen[name] = (out[1] if isinstance(out, tuple) else out).dtype
            return out

        monkeypatch.setattr(objective, name, wrapped)

    for name in ("jvp_func", "jvp_autograd", "jvp_fd"):
        spy(name, getattr(objective, name))
    net_fn = lambda x, y, t, r: tiny_net(x, y, t, t - r)
    kw = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # the control: the same network outside the guard does run in bf16
        assert net_fn(kw["x_t"], kw["y"], kw["t"], kw["r"]).dtype == torch.bfloat16
        _, target, _ = mean_flow_target(net_fn, **kw, cfg=MeanFlowConfig(jvp_impl=impl))
    assert seen[f"jvp_{impl}"] == torch.float32 and target.dtype == torch.float32


def test_compiled_backbone_gives_the_same_prediction_and_jvp(tiny_net):
    from conftest import TinyNet

    eager = TinyNet()
    eager.load_state_dict(tiny_net.state_dict())
    tiny_net.compile()  # in place: parameter names unchanged
    assert set(tiny_net.state_dict()) == set(eager.state_dict())
    assert tiny_net._compiled_call_impl is not None  # the calls below go through the compiler
    kw = _inputs()
    # jvp_reuse_primal: the prediction u is the JVP's primal output, a real tensor to compare
    cfg = MeanFlowConfig(jvp_impl="func", jvp_clip=None, jvp_reuse_primal=True)
    compiled_fn = lambda x, y, t, r: tiny_net(x, y, t, t - r)
    eager_fn = lambda x, y, t, r: eager(x, y, t, t - r)
    u1, t1, _ = mean_flow_target(compiled_fn, **kw, cfg=cfg)
    u2, t2, _ = mean_flow_target(eager_fn, **kw, cfg=cfg)
    assert u1 is not None and u2 is not None and u1.requires_grad
    torch.testing.assert_close(u1, u2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(t1, t2, rtol=1e-4, atol=1e-5)
    # the ordinary forward (what training uses without reuse_primal) agrees too, and the
    # target is not v: the JVP term is really in the comparison
    with torch.no_grad():
        torch.testing.assert_close(
            compiled_fn(kw["x_t"], kw["y"], kw["t"], kw["r"]),
            eager_fn(kw["x_t"], kw["y"], kw["t"], kw["r"]),
            rtol=1e-4,
            atol=1e-5,
        )
    assert (t1 - kw["v"]).abs().max() > 1e-2


# -- small pure pieces --------------------------------------------------------------------------
def test_bf16_on_the_cpu_gets_a_warning_and_nothing_else_does():
    note = cpu_precision_note("bf16-mixed", on_cpu=True)
    assert "trainer.precision=bf16-mixed" in note and "32-true" in note
    assert cpu_precision_note("bf16-true", on_cpu=True) is not None
    assert cpu_precision_note("32-true", on_cpu=True) is None
    assert cpu_precision_note("bf16-mixed", on_cpu=False) is None  # a GPU: bf16 is the advice


def test_compile_warns_only_where_the_jvp_would_run_eager():
    assert "mf.jvp_impl=fd" in compile_note(True, "func")
    assert compile_note(True, "auto") is not None  # auto tries torch.func.jvp first
    assert compile_note(True, "fd") is None
    assert compile_note(True, None) is None  # CFM: no JVP
    assert compile_note(False, "func") is None


def test_rank_seeds_differ_by_rank_and_step():
    seeds = {rank_seed(0, r, s) for r in range(4) for s in (0, 100)}
    assert len(seeds) == 8 and rank_seed(0, 1, 5) == rank_seed(0, 1, 5)


def test_eval_indices_spread_over_the_split():
    assert eval_indices(100, 3) == [0, 50, 99]
    assert eval_indices(2, 10) == [0, 1] and eval_indices(0, 5) == [] and eval_indices(5, 0) == []


def test_spectrogram_image_stacks_panels_on_one_scale():
    spec = SpecConfig()
    loud, quiet = torch.randn(4000), 1e-3 * torch.randn(4000)
    img = spectrogram_image([loud, quiet], spec)
    bins = spec.num_bins
    assert img.dtype.name == "uint8" and img.shape[0] == 2 * bins + 2
    assert img[:bins].mean() > img[bins + 2 :].mean() + 50  # 60 dB quieter is visibly darker


def test_ema_updates_once_per_optimizer_step():
    net = torch.nn.Linear(2, 2)
    ema = EMA(decay=0.5, warmup=False)
    trainer = SimpleNamespace(global_step=0)
    ema.on_fit_start(trainer, net)
    start = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.on_train_batch_end(trainer, net)  # no step taken (accumulation / skipped NaN step)
    assert ema.num_updates == 0 and torch.equal(ema.shadow["weight"], start["weight"])
    trainer.global_step = 1
    ema.on_train_batch_end(trainer, net)
    ema.on_train_batch_end(trainer, net)  # same step again: no second update
    assert ema.num_updates == 1
    torch.testing.assert_close(ema.shadow["weight"], start["weight"] + 0.5)


def test_val_metrics_measure_on_schedule_and_repeat_the_last_values(monkeypatch):
    cb = ValidationMetrics(num_eval_files=2, every_n_epochs=3, nfe_extra=[2])
    calls = []
    monkeypatch.setattr(
        cb,
        "measure",
        lambda tr, m: calls.append(tr.current_epoch) or {k: float(tr.current_epoch) for k in cb.keys()},
    )
    logged = []
    module = SimpleNamespace(log=lambda k, v, **kw: logged.append((k, v)))
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True)
    per_epoch = {}
    for epoch in range(6):
        trainer.current_epoch = epoch
        logged.clear()
        cb.on_validation_epoch_end(trainer, module)
        per_epoch[epoch] = dict(logged)
    assert calls == [0, 2, 5]  # the first validation, then every third epoch
    assert set(per_epoch[1]) == {
        "val/pesq",
        "val/estoi",
        "val/si_sdr",
        "val/pesq_nfe2",
        "val/estoi_nfe2",
        "val/si_sdr_nfe2",
    }
    assert [per_epoch[e]["val/pesq"] for e in range(6)] == [0, 0, 2, 2, 2, 5]
    # a resumed run repeats the values it measured before the restart
    again = ValidationMetrics(num_eval_files=2, every_n_epochs=3, nfe_extra=[2])
    again.load_state_dict(cb.state_dict())
    assert not again.should_measure(6) and again.last["val/pesq"] == 5


def test_resolve_ckpt_path(tmp_path):
    import os

    old, new, empty = (tmp_path / "runs" / n for n in ("a", "b", "c"))
    for run, stamp in ((old, 1000), (new, 2000)):
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
        os.utime(run / "checkpoints" / "last.ckpt", (stamp, stamp))
    empty.mkdir()
    assert resolve_ckpt_path("last", run_dir=empty) == new / "checkpoints" / "last.ckpt"
    assert resolve_ckpt_path(str(old), run_dir=empty) == old / "checkpoints" / "last.ckpt"
    assert resolve_ckpt_path(None) is None
    with pytest.raises(ResumeError, match="without checkpoints/last.ckpt"):
        resolve_ckpt_path(str(empty))
    with pytest.raises(ResumeError, match="no last.ckpt"):
        resolve_ckpt_path("last", run_dir=tmp_path / "elsewhere" / "x")
    with pytest.raises(ResumeError, match="no such checkpoint"):
        resolve_ckpt_path(str(tmp_path / "nope.ckpt"))


def test_atomic_checkpoint_io_keeps_the_old_file_when_a_save_fails(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    # pickle names a local lambda unpicklable with PicklingError or AttributeError (by version)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        io.save_checkpoint({"step": torch.tensor(2), "bad": lambda: None}, path)  # unpicklable
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind


# -- a short real run with every logger ---------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Four steps, two validations with metrics, logged to W&B (offline), TensorBoard and CSV."""
    from meanflowse.training.fit import train

    out = tmp_path_factory.mktemp("run")
    cfg = compose_cfg(
        "train",
        [
            *TINY,
            "logger=[wandb,tensorboard,csv]",
            "trainer.max_steps=4",
            "trainer.max_epochs=-1",
            "trainer.num_sanity_val_steps=0",
            "trainer.log_every_n_steps=1",
            "callbacks.progress=null",
            "callbacks.val_metrics.num_media=1",
            "mf.weight_final=1.0",
            "curriculum.mf_warmup_frac=0",
            "curriculum.mf_skip_below=0",
        ],
        out,
    )
    metrics, objs = train(cfg)
    return out, metrics, objs


def test_validation_logs_one_step_metrics_and_checkpoints_follow_them(run):
    out, metrics, objs = run
    # measured values, in each metric's range (wideband PESQ: P.862.2's 1.04 .. 4.64; a -1
    # placeholder or a NaN for "not measured" fails this)
    assert 1.0 <= metrics["val/pesq"] <= 4.65, metrics["val/pesq"]
    assert -1.0 <= metrics["val/estoi"] <= 1.0, metrics["val/estoi"]
    assert -100.0 < metrics["val/si_sdr"] < 100.0, metrics["val/si_sdr"]
    for key in ("train/w_mf", "train/gamma", "train/jvp_norm", "train/jvp_clip_rate"):
        assert key in metrics
    # the tiny net's untrained loss is ~1e3: its gradient is well above the clip of 1.0
    assert metrics["train/grad_norm"] > 1.0 and metrics["train/grad_clip_rate"] == 1.0
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "last.ckpt" in names and not any(n.startswith("last-v") for n in names)
    assert any(n.startswith("best-step") for n in names)
    assert any(n.startswith("best_si_sdr-step") for n in names)
    cb = next(
        c
        for c in objs["trainer"].callbacks
        if isinstance(c, FiniteModelCheckpoint) and c.monitor == "val/pesq"
    )
    assert cb.best_model_score is not None and math.isfinite(float(cb.best_model_score))


def test_checkpoints_are_safe_to_load_and_hold_training_weights_and_ema(run):
    out, _, objs = run
    for ckpt_file in (out / "checkpoints").glob("*.ckpt"):
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
        assert ckpt["hyper_parameters"]["config"]["backbone"]["nf"] == 8
        assert ckpt["callbacks"]["EMA"]["num_updates"] == ckpt["global_step"]
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    shadow, raw = last["callbacks"]["EMA"]["shadow"], last["state_dict"]
    module = objs["module"]
    # after validation (EMA swapped in and out) the module holds the training weights again
    for name, p in module.named_parameters():
        torch.testing.assert_close(p.detach().cpu(), raw[name], rtol=0, atol=0)
    assert any(not torch.equal(shadow[k], raw[k]) for k in shadow)


def test_loggers_get_metrics_audio_and_spectrograms(run):
    out, _, _ = run
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent), size_guidance={"audio": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "val/pesq" in tags["scalars"] and "train/jvp_norm" in tags["scalars"]
    assert any(t.startswith("val_audio/") and t.endswith("/enhanced") for t in tags["audio"])
    assert any(t.startswith("val_spec/") for t in tags["images"])
    wandb_runs = list((out / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1  # offline: no account, no network
    media = {p.suffix for p in (wandb_runs[0] / "files" / "media").rglob("*") if p.is_file()}
    assert {".wav", ".png"} <= media
    assert "val/pesq" in (out / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]


def test_bf16_mixed_runs_the_forward_in_bf16_and_the_jvp_in_fp32(tmp_path, monkeypatch, caplog):
    """Under bf16-mixed the training forward runs in bf16 (autocast is on: a convolution's
    output dtype, seen by a forward hook, is bf16 although every parameter and input is fp32),
    while the JVP's network calls run in fp32 (objective.py disables autocast there)."""
    import meanflowse.method.objective as objective
    import meanflowse.training.fit as training

    seen = {"forward": set(), "jvp": set()}
    where = ["forward"]

    def hook(module, args, out):
        seen[where[0]].add(out.dtype)

    original_build = training.build_module

    def build_with_hook(cfg):
        module = original_build(cfg)
        conv = next(m for m in module.backbone.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(hook)
        return module

    real_jvp = objective.jvp_func

    def jvp_marked(*a, **kw):
        where[0] = "jvp"
        try:
            return real_jvp(*a, **kw)
        finally:
            where[0] = "forward"

    monkeypatch.setattr(training, "build_module", build_with_hook)
    monkeypatch.setattr(objective, "jvp_func", jvp_marked)
    cfg = compose_cfg(
        "train",
        [
            *TINY,
            "trainer.precision=bf16-mixed",
            "trainer.max_steps=1",
            "trainer.max_epochs=-1",
            "trainer.limit_val_batches=0",
            "callbacks.progress=null",
            "mf.weight_final=1.0",
            "curriculum.mf_warmup_frac=0",
            "curriculum.mf_skip_below=0",
            "compile=true",
        ],
        tmp_path,
    )
    with caplog.at_level("WARNING", logger="meanflowse.training.fit"):
        metrics, objs = training.train(cfg)
    assert objs["trainer"].global_step == 1 and math.isfinite(metrics["train/loss"])
    assert "train/jvp_norm" in metrics
    assert any("bf16-mixed on the CPU" in r.getMessage() for r in caplog.records)  # the user is told
    assert seen["forward"] == {torch.bfloat16}, seen
    assert seen["jvp"] == {torch.float32}, seen
    assert all(p.dtype == torch.float32 for p in objs["module"].parameters())  # master weights


@pytest.mark.parametrize("preset", ["fdr", "limit", "overfit"])
def test_debug_presets_compose(tmp_path, preset):
    cfg = compose_cfg("train", [*TINY, f"debug={preset}"], tmp_path)
    assert (
        cfg.trainer.get("fast_dev_run")
        or cfg.trainer.get("limit_train_batches")
        or cfg.trainer.get("overfit_batches")
    )


def test_meanflow_with_an_unbounded_budget_is_refused_at_start(tmp_path):
    # max_time only guards the test: without the refusal it would train (as CFM) for 30 s
    cfg = compose_cfg(
        "train",
        [*TINY, "trainer.max_steps=-1", "trainer.max_epochs=-1", "+trainer.max_time=00:00:00:30"],
        tmp_path,
    )
    with pytest.raises(ValueError, match="mf.weight_final=0.25 needs a finite step budget"):
        train(cfg)


def test_unmeasured_metrics_are_nan_and_never_become_the_best_checkpoint(tmp_path, monkeypatch):
    """The real validation path with PESQ failing (as it does on silence or too short a file)
    in validations 1 and 3: validation 1 logs NaN (nothing measured yet, no -1 placeholder),
    validation 2 a measured PESQ in range, validation 3 repeats it; the best checkpoint is
    validation 2's, and nothing was saved as "best" for a value that was never measured."""
    import meanflowse.metrics.scores as M

    real_pesq, real_measure, real_end = (
        M.pesq_wb,
        ValidationMetrics.measure,
        ValidationMetrics.on_validation_epoch_end,
    )
    state = {"validation": 0}
    logged, steps = [], []

    def pesq(ref, deg, sr):
        if state["validation"] in (1, 3):
            raise M.MetricError("PESQ: test failure")
        return real_pesq(ref, deg, sr)

    def measure(self, trainer, module):
        state["validation"] += 1
        steps.append(trainer.global_step)
        return real_measure(self, trainer, module)

    def epoch_end(self, trainer, module):  # what the callback hands to module.log
        got, real_log = {}, module.log
        module.log = lambda k, v, **kw: (got.__setitem__(k, float(v)), real_log(k, v, **kw))
        try:
            real_end(self, trainer, module)
        finally:
            del module.log
        if got:
            logged.append(got)

    monkeypatch.setattr(M, "pesq_wb", pesq)
    monkeypatch.setattr(ValidationMetrics, "measure", measure)
    monkeypatch.setattr(ValidationMetrics, "on_validation_epoch_end", epoch_end)
    cfg = compose_cfg(
        "train",
        [
            *TINY,
            "trainer.max_steps=6",
            "trainer.max_epochs=-1",
            "trainer.num_sanity_val_steps=0",
            "callbacks.progress=null",
            "callbacks.val_metrics.num_media=0",
        ],
        tmp_path,
    )
    _, objs = train(cfg)
    assert len(steps) == 3 and len(logged) == 3
    assert math.isnan(logged[0]["val/pesq"])  # unmeasured: NaN, not a sentinel
    measured = logged[1]["val/pesq"]
    assert 1.0 <= measured <= 4.65  # a real wideband PESQ
    assert logged[2]["val/pesq"] == measured  # repeated, never "better"
    assert all(math.isfinite(v["val/si_sdr"]) for v in logged)  # the other metrics measured
    cb = next(
        c
        for c in objs["trainer"].callbacks
        if isinstance(c, FiniteModelCheckpoint) and c.monitor == "val/pesq"
    )
    assert float(cb.best_model_score) == pytest.approx(measured)
    assert f"step{steps[1]:06d}" in cb.best_model_path
    best = sorted(p.name for p in (tmp_path / "checkpoints").glob("best-step*.ckpt"))
    assert best == [f"best-step{steps[1]:06d}.ckpt"]


def test_finite_model_checkpoint_skips_nan_and_ranks_numbers():
    cb = FiniteModelCheckpoint(monitor="val/pesq", mode="max", save_top_k=1)
    assert not cb.check_monitor_top_k(None, torch.tensor(float("nan")))
    assert not cb.check_monitor_top_k(None, torch.tensor(float("-inf")))
    assert cb.check_monitor_top_k(None, torch.tensor(1.0))  # fewer than top-k saved yet


def test_a_training_run_drops_the_known_noise_and_nothing_else(tmp_path, caplog, capsys):
    """Lightning's LeafSpec FutureWarning and its cloud-logger tip are gone, and its model
    summary with "Total FLOPs: 0" (the log names the backbone's size instead); other warnings and
    log lines of the same kinds still show."""
    import logging
    import warnings

    from helpers import SHORT_TRAIN
    from meanflowse.training.fit import train
    from meanflowse.training.quiet import TIP_LOGGER

    cfg = compose_cfg("train", SHORT_TRAIN, tmp_path)
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        train(cfg)
        warnings.warn("some other deprecation", FutureWarning, stacklevel=1)
        logging.getLogger(TIP_LOGGER).info("another message from Lightning")
    texts = [str(w.message) for w in seen]
    assert not any("LeafSpec" in t for t in texts) and "some other deprecation" in texts
    assert "seamless cloud logging" not in caplog.text
    assert "another message from Lightning" in caplog.text
    assert "FLOPs" not in capsys.readouterr().out and "parameters (" in caplog.text
