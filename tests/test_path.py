import torch

from meanflowse.method.path import (
    PathConfig,
    complex_noise_like,
    conditional_velocity,
    prior_sample,
    sample_xt,
)


def test_velocity_is_the_time_derivative_of_the_path():
    cfg = PathConfig()
    x, y = torch.randn(3, 2, 8, 5, dtype=torch.float64), torch.randn(3, 2, 8, 5, dtype=torch.float64)
    z = complex_noise_like(x)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    h = 1e-6
    fd = (sample_xt(x=x, y=y, z=z, t=t + h, cfg=cfg) - sample_xt(x=x, y=y, z=z, t=t - h, cfg=cfg)) / (2 * h)
    assert torch.allclose(fd, conditional_velocity(x=x, y=y, z=z, cfg=cfg), atol=1e-8)


def test_end_points():
    cfg = PathConfig()
    x, y = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4)
    z = complex_noise_like(x)
    assert torch.allclose(sample_xt(x=x, y=y, z=z, t=torch.zeros(2), cfg=cfg), x)  # sigma_min = 0
    assert torch.allclose(sample_xt(x=x, y=y, z=z, t=torch.ones(2), cfg=cfg), prior_sample(y=y, z=z, cfg=cfg))


def test_complex_noise_has_half_variance_per_part():
    z = complex_noise_like(torch.empty(200, 2, 64, 64))
    assert abs(z[:, 0].var().item() - 0.5) < 0.01 and abs(z[:, 1].var().item() - 0.5) < 0.01
