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
        resolve_sampler("heun", trained_with_meanflow=True)
    with pytest.raises(ValueError, match="sampler.nfe"):
        time_grid(nfe=0, t_start=1.0, t_end=0.0)
