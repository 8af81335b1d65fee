"""Samplers call the network exactly NFE times; NFE 1 is one displacement (issue 3, point 4)."""

import pytest
import torch

from meanflowse.method.path import PathConfig, complex_noise_like, prior_sample
from meanflowse.method.samplers import resolve_sampler, sample, time_grid


def count_calls(net):
    calls = []
    net.register_forward_hook(lambda mod, args, out: calls.append((args[2].clone(), args[3].clone())))
    return calls


@pytest.mark.parametrize("name", ["euler_mf", "euler"])
@pytest.mark.parametrize("nfe", [1, 2, 5, 10])
def test_network_is_called_nfe_times(tiny_net, name, nfe):
    calls = count_calls(tiny_net)
    y = torch.randn(2, 2, 8, 4)
    sample(
        lambda x, y_, t, r: tiny_net(x, y_, t, t - r),
        y=y,
        z=complex_noise_like(y),
        name=name,
        nfe=nfe,
        t_end=0.0,
        path=PathConfig(),
    )
    assert len(calls) == nfe
    grid = time_grid(nfe=nfe, t_start=1.0, t_end=0.0)
    for k, (t, d) in enumerate(calls):
        assert torch.allclose(t, torch.full_like(t, grid[k]))
        expected_d = grid[k] - grid[k + 1] if name == "euler_mf" else 0.0
        assert torch.allclose(d, torch.full_like(d, expected_d), atol=1e-7)


def test_one_step_is_one_displacement(tiny_net):
    path = PathConfig()
    y = torch.randn(3, 2, 8, 4)
    z = complex_noise_like(y)
    out = sample(
        lambda x, y_, t, r: tiny_net(x, y_, t, t - r), y=y, z=z, name="euler_mf", nfe=1, t_end=0.0, path=path
    )
    x1 = prior_sample(y=y, z=z, cfg=path)
    with torch.no_grad():
        u = tiny_net(x1, y, torch.ones(3), torch.ones(3))
    assert torch.allclose(out, x1 - 1.0 * u, atol=1e-6)


def test_auto_picks_by_training_objective():
    assert resolve_sampler("auto", trained_with_meanflow=True) == "euler_mf"
    assert resolve_sampler("auto", trained_with_meanflow=False) == "euler"
    with pytest.raises(ValueError, match="sampler.name"):
        resolve_sampler("rk4", trained_with_meanflow=True)
    with pytest.raises(ValueError, match="sampler.nfe"):
        time_grid(nfe=0, t_start=1.0, t_end=0.0)


# ------------------------------------------------------------------------------ Heun
@pytest.mark.parametrize("nfe", [2, 4, 10])
def test_heun_calls_the_network_nfe_times_at_both_ends_of_each_step(tiny_net, nfe):
    calls = count_calls(tiny_net)
    y = torch.randn(2, 2, 8, 4)
    path = PathConfig()
    sample(
        lambda x, y_, t, r: tiny_net(x, y_, t, t - r),
        y=y,
        z=complex_noise_like(y),
        name="heun",
        nfe=nfe,
        t_end=0.0,
        path=path,
    )
    assert len(calls) == nfe
    grid = time_grid(nfe=nfe // 2, t_start=1.0, t_end=0.0)
    for k in range(nfe // 2):  # (t_k, then t_{k+1}; the last one floored at t_eps), r = t
        (t0, d0), (t1, d1) = calls[2 * k], calls[2 * k + 1]
        assert torch.allclose(t0, torch.full_like(t0, grid[k]))
        assert torch.allclose(t1, torch.full_like(t1, max(grid[k + 1], path.t_eps)))
        assert not d0.any() and not d1.any()


def test_heun_refuses_an_odd_nfe():
    y = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="sampler.nfe=3: heun evaluates the network 2 time"):
        sample(lambda x, y_, t, r: x, y=y, z=y, name="heun", nfe=3, t_end=0.0, path=PathConfig())


def test_heun_is_second_order_where_euler_is_first():
    """dx/dt = x (solution x(t_end) = x(1) e^{t_end - 1}), integrated from t = 1 to 0.5 (above
    t_eps, so no floor): halving the step divides Euler's error by about 2, Heun's by about 4."""
    path = PathConfig()
    y = torch.ones(1, 2, 1, 1, dtype=torch.float64)
    z = torch.zeros_like(y)
    x1 = prior_sample(y=y, z=z, cfg=path)
    exact = x1 * torch.exp(torch.tensor(-0.5, dtype=torch.float64))
    velocity = lambda x, y_, t, r: x  # noqa: E731 - the field dx/dt = x, as the samplers use it

    def error(name, nfe):
        out = sample(velocity, y=y, z=z, name=name, nfe=nfe, t_end=0.5, path=path)
        return float((out - exact).abs().max())

    assert 1.8 < error("euler", 4) / error("euler", 8) < 2.2
    assert 3.6 < error("heun", 8) / error("heun", 16) < 4.4
    assert error("heun", 8) < error("euler", 8) / 10


def test_a_sampler_s_params_reach_its_step_function(monkeypatch):
    from meanflowse.method import samplers

    seen = []

    def scaled(net_fn, x, y, t_k, t_next, *, gain, **_):
        seen.append(gain)
        return gain * x

    monkeypatch.setitem(samplers.SAMPLERS, "scaled", samplers.Sampler(scaled))
    y = torch.ones(1, 2, 2, 2)
    out = sample(
        lambda *a: None,
        y=y,
        z=torch.zeros_like(y),
        name="scaled",
        nfe=3,
        t_end=0.0,
        path=PathConfig(),
        params={"gain": 0.5},
    )
    assert seen == [0.5] * 3 and torch.allclose(
        out, prior_sample(y=y, z=torch.zeros_like(y), cfg=PathConfig()) / 8
    )


def test_a_registered_sampler_runs_through_eval_py_with_its_params_recorded(tmp_path, monkeypatch):
    """A sampler is a step function in SAMPLERS and a YAML: eval.py runs it by name, its params
    reach the function and eval.py's provenance record, and no other file knows of it."""
    import json

    import soundfile as sf

    from eval_helpers import SR, eval_cfg, signal, write_tiny_checkpoint
    from meanflowse.inference.evaluation import evaluate
    from meanflowse.inference.provenance import PROVENANCE_FILE
    from meanflowse.method import samplers

    seen = []

    def damped(net_fn, x, y, t_k, t_next, *, damping, **_):
        seen.append(damping)
        return samplers.euler_step(net_fn, x, y, t_k, t_next) * (1 - damping)

    monkeypatch.setitem(samplers.SAMPLERS, "damped", samplers.Sampler(damped))
    ckpt = write_tiny_checkpoint(tmp_path)
    sf.write(tmp_path / "in.wav", signal(0.5)[0].numpy(), SR)
    out = tmp_path / "out"
    args = [f"input={tmp_path / 'in.wav'}", f"output={out}", "sampler.name=damped", "sampler.nfe=2"]
    evaluate(eval_cfg(ckpt, tmp_path, *args, "sampler.params={damping:0.25}", "metrics=false"))
    assert seen and set(seen) == {0.25}  # the warm-up call and the file, two steps each
    record = json.loads((out / PROVENANCE_FILE).read_text().splitlines()[-1])
    assert record["settings"]["sampler"] == "damped"
    assert record["settings"]["sampler_params"] == {"damping": 0.25}


def test_validation_takes_a_registered_sampler_by_name(tmp_path, monkeypatch):
    """train.py with sampler=heun: validation's val/* come from heun steps (counted)."""
    import math

    from helpers import SHORT_TRAIN, compose_cfg
    from meanflowse.method import samplers
    from meanflowse.training.fit import train

    steps = []

    def counted(*args, **kwargs):
        steps.append(1)
        return samplers.heun_step(*args, **kwargs)

    monkeypatch.setitem(samplers.SAMPLERS, "heun", samplers.Sampler(counted, evals_per_step=2))
    cfg = compose_cfg("train", [*SHORT_TRAIN, "sampler=heun", "sampler.nfe=2"], tmp_path)
    metrics, _ = train(cfg)
    assert math.isfinite(metrics["val/si_sdr"]) and math.isfinite(metrics["val/one_step_mse"])
    assert steps  # validation (its one-step MSE and the enhanced files) ran heun
