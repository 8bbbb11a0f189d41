import numpy as np
import pytest
import torch
from scipy.ndimage import correlate

from dmfnet_edge.train.losses import HybridFusionLoss, diffusion_loss, gaussian_window


@pytest.fixture(scope="module")
def loss():
    return HybridFusionLoss()


def test_fused_equal_to_max_has_zero_intensity_loss(loss):
    a, b = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    _, parts = loss(a, b, torch.maximum(a, b))
    assert float(parts["int"]) == 0.0


def test_gradient_is_sum_of_absolute_sobel_responses(loss):
    img = torch.zeros(1, 1, 8, 8)
    img[..., 4:] = 1.0  # vertical edge between columns 3 and 4
    g = loss.gradient(img)[0, 0]
    assert float(g[3, 3]) == pytest.approx(4.0) and float(g[3, 4]) == pytest.approx(4.0)
    assert float(g[3, 1]) == 0.0


def test_ssim_term_matches_an_independent_computation(loss, rng):
    a, b, f = (rng.random((1, 1, 24, 24)).astype(np.float32) * 2 - 1 for _ in range(3))
    window = gaussian_window().numpy()[0, 0].astype(np.float64)

    def local(x):
        return correlate(x.astype(np.float64), window, mode="constant")

    c2 = 0.03**2
    A, B, F = a[0, 0], b[0, 0], f[0, 0]
    va, vb, vf = (local(x * x) - local(x) ** 2 for x in (A, B, F))
    saf = (2 * (local(A * F) - local(A) * local(F)) + c2) / (va + vf + c2)
    sbf = (2 * (local(B * F) - local(B) * local(F)) + c2) / (vb + vf + c2)
    expected = 1 - np.where(va >= vb, saf, sbf).mean()
    _, parts = loss(*(torch.from_numpy(x) for x in (a, b, f)))
    assert float(parts["ssim"]) == pytest.approx(expected, abs=1e-5)


def test_total_is_the_weighted_sum(loss):
    a, b, f = (torch.rand(1, 1, 16, 16) * 2 - 1 for _ in range(3))
    total, parts = loss(a, b, f)
    assert float(total) == pytest.approx(1.5 * float(parts["int"]) + float(parts["grad"]) + 0.5 * float(parts["ssim"]),
                                         rel=1e-5)


def test_loss_backpropagates_to_the_fused_image(loss):
    a, b = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    f = torch.zeros(1, 1, 16, 16, requires_grad=True)
    total, _ = loss(a, b, f)
    total.backward()
    assert f.grad is not None and f.grad.abs().sum() > 0


def test_grad_gain_scales_the_gradient_target():
    a = torch.zeros(1, 1, 16, 16)
    a[..., 8:] = 1.0
    b = torch.zeros_like(a)
    plain, gained = HybridFusionLoss(), HybridFusionLoss(grad_gain=1.5)
    assert float(plain(a, b, a)[1]["grad"]) == 0.0  # the fused image has the stronger source's edges
    stronger = a * 1.5
    assert float(gained(a, b, stronger)[1]["grad"]) == pytest.approx(0.0, abs=1e-6)
    assert float(gained(a, b, a)[1]["grad"]) > 0  # the edge at the source's strength falls short of k times it


def test_contrast_term_is_one_sided_and_weighted(rng):
    a, b = (torch.from_numpy(rng.random((1, 1, 24, 24)).astype(np.float32)) * 2 - 1 for _ in range(2))
    loss = HybridFusionLoss(w_contrast=2.0)
    flat = torch.zeros_like(a)
    total, parts = loss(a, b, flat)
    assert float(parts["contrast"]) > 0.3  # no local contrast at all: the whole shortfall
    rest = 1.5 * float(parts["int"]) + float(parts["grad"]) + 0.5 * float(parts["ssim"])
    assert float(total) == pytest.approx(rest + 2.0 * float(parts["contrast"]), rel=1e-5)
    louder = loss(a, b, 3 * a)[1]["contrast"]  # more contrast than either source: no penalty, no reward
    assert float(louder) == pytest.approx(0.0, abs=1e-6)
    assert "contrast" not in HybridFusionLoss()(a, b, flat)[1]  # off: the paper's loss, unchanged


def test_diffusion_loss_is_mse():
    x = torch.zeros(2, 1, 4, 4)
    assert float(diffusion_loss(x + 2, x)) == pytest.approx(4.0)
