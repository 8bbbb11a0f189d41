"""Training objectives.

Stage II hybrid loss (all images (N, 1, H, W) in [-1, 1], A = MRI, B = other, F = fused):
    L = 1.5 L_int + L_grad + 0.5 (1 - mean SSIM_cs,sel)
* L_int = mean |F - max(A, B)|
* L_grad = mean | grad F - max(grad A, grad B) |, grad = |Sobel_x| + |Sobel_y| (zero padding)
* SSIM_cs,sel: contrast-structure SSIM with an 11x11 Gaussian window (sigma 1.5, zero padding), C2 = 0.03^2,
  taking S_AF where the local std of A >= that of B, else S_BF.

Two detail levers (off by default, which is the paper's loss; `dmfnet train stage2 --grad-gain --w-contrast`):
* grad_gain k: the gradient target becomes k max(grad A, grad B), asking for edges k times as strong as the
  stronger source's;
* w_contrast w: adds w L_con, L_con = mean max(0, max(sigma_A, sigma_B) - sigma_F), sigma the local standard
  deviation in the SSIM window: a one-sided penalty where the fused image has less local contrast than the
  more contrasted source (never a reward for noise beyond it).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 2D Gaussian (1, 1, size, size)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).float()[None, None]


class HybridFusionLoss(nn.Module):
    """The Stage-II loss; returns (total, {"int": ..., "grad": ..., "ssim": ...}) with 0-dim tensors."""

    def __init__(self, w_int: float = 1.5, w_grad: float = 1.0, w_ssim: float = 0.5, grad_gain: float = 1.0,
                 w_contrast: float = 0.0) -> None:
        super().__init__()
        self.w_int, self.w_grad, self.w_ssim = w_int, w_grad, w_ssim
        self.grad_gain, self.w_contrast = grad_gain, w_contrast
        self.register_buffer("sobel", torch.tensor([SOBEL_X, SOBEL_Y])[:, None])
        self.register_buffer("window", gaussian_window())

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        g = F.conv2d(x, self.sobel, padding=1)
        return g.abs().sum(dim=1, keepdim=True)

    def _local(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.window, padding=self.window.shape[-1] // 2)

    def local_std(self, x: torch.Tensor) -> torch.Tensor:
        mu = self._local(x)
        return (self._local(x * x) - mu**2).clamp_min(0).add(1e-6).sqrt()

    def ssim_cs_selected(self, a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        c2 = 0.03**2
        mu_a, mu_b, mu_f = self._local(a), self._local(b), self._local(f)
        var_a = self._local(a * a) - mu_a**2
        var_b = self._local(b * b) - mu_b**2
        var_f = self._local(f * f) - mu_f**2
        cov_af = self._local(a * f) - mu_a * mu_f
        cov_bf = self._local(b * f) - mu_b * mu_f
        s_af = (2 * cov_af + c2) / (var_a + var_f + c2)
        s_bf = (2 * cov_bf + c2) / (var_b + var_f + c2)
        return torch.where(var_a >= var_b, s_af, s_bf).mean()

    def forward(self, a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, dict]:
        l_int = (f - torch.maximum(a, b)).abs().mean()
        target = torch.maximum(self.gradient(a), self.gradient(b))
        l_grad = (self.gradient(f) - self.grad_gain * target).abs().mean()
        l_ssim = 1 - self.ssim_cs_selected(a, b, f)
        total = self.w_int * l_int + self.w_grad * l_grad + self.w_ssim * l_ssim
        parts = {"int": l_int.detach(), "grad": l_grad.detach(), "ssim": l_ssim.detach()}
        if self.w_contrast:
            shortfall = torch.maximum(self.local_std(a), self.local_std(b)) - self.local_std(f)
            l_con = shortfall.clamp_min(0).mean()
            total = total + self.w_contrast * l_con
            parts["contrast"] = l_con.detach()
        return total, parts


def diffusion_loss(prediction: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Stage-I objective: mean squared error of the x0 prediction."""
    return F.mse_loss(prediction, x0)
