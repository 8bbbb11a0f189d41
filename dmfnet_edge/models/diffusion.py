"""Noise schedules, the Stage-I training objective and the frozen Stage-II noise.

gamma = sqrt(alpha_bar) is the continuous noise level the UNet is conditioned on; x_t = gamma x0 +
sqrt(1 - gamma^2) eps. Stage I predicts x0 (MSE). Stage II reads features at fixed timesteps; for deterministic
inference the noise level per timestep (the midpoint of its gamma interval) and the noise field are frozen and
stored with the weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dmfnet_edge.config import DiffusionConfig


def beta_schedule(cfg: DiffusionConfig) -> np.ndarray:
    """Betas (T,) float64 for the 'linear' (betas linear from start to end) or 'cosine' (s = 0.008) schedule."""
    if cfg.schedule == "linear":
        return np.linspace(cfg.linear_start, cfg.linear_end, cfg.timesteps, dtype=np.float64)
    if cfg.schedule == "cosine":
        s = 0.008
        steps = np.arange(cfg.timesteps + 1, dtype=np.float64) / cfg.timesteps
        alphas_bar = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        alphas_bar = alphas_bar / alphas_bar[0]
        return np.clip(1 - alphas_bar[1:] / alphas_bar[:-1], 0, 0.999)
    raise ValueError(f"unknown noise schedule '{cfg.schedule}' (expected 'linear' or 'cosine')")


def gamma_grid(cfg: DiffusionConfig) -> np.ndarray:
    """sqrt([1, abar_1, ..., abar_T]) (T+1,) float64; timestep t covers gamma in [grid[t], grid[t-1]]."""
    alphas_bar = np.cumprod(1.0 - beta_schedule(cfg))
    return np.sqrt(np.concatenate([[1.0], alphas_bar]))


def timestep_gammas(cfg: DiffusionConfig, timesteps: tuple[int, ...]) -> np.ndarray:
    """The frozen noise level per timestep: the midpoint of its gamma interval, (len(timesteps),) float64."""
    grid = gamma_grid(cfg)
    for t in timesteps:
        if not 1 <= t <= cfg.timesteps:
            raise ValueError(f"timestep {t} outside 1..{cfg.timesteps}")
    return np.array([(grid[t - 1] + grid[t]) / 2 for t in timesteps])


def frozen_noise(seed: int, sources: int, steps: int, tile: int) -> torch.Tensor:
    """Standard-normal noise field (sources, steps, tile, tile) float32 from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(sources, steps, tile, tile, generator=gen, dtype=torch.float32)


def tile_noise(noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Periodically extend a (S, T, k, k) noise field to (S, T, height, width).

    Written as index arithmetic (arange % k, gather) without Python branches, so that an ONNX export with
    dynamic height and width stays exact for every size.
    """
    rows = torch.arange(height, device=noise.device) % noise.shape[-2]
    cols = torch.arange(width, device=noise.device) % noise.shape[-1]
    return noise.index_select(-2, rows).index_select(-1, cols)


T_SAMPLING = ("uniform", "low-noise")
LOW_NOISE_T = 100  # Stage II reads features at t <= 20; "low-noise" draws half of the timesteps from 1..100


class DiffusionObjective:
    """Stage-I training step helper: random timestep, gamma within its interval, noise, x0 target.

    `t_sampling="uniform"` is the method's t ~ U{1..T}. "low-noise" draws each t with probability 1/2 from
    U{1..LOW_NOISE_T} and otherwise from U{1..T}: the same objective, importance-sampled towards the noise levels
    Stage II uses, for short (CPU) training budgets in which uniform sampling leaves them under-trained.
    """

    def __init__(self, cfg: DiffusionConfig, t_sampling: str = "uniform") -> None:
        if t_sampling not in T_SAMPLING:
            raise ValueError(f"t_sampling must be one of {T_SAMPLING}, got {t_sampling!r}")
        self.grid = torch.from_numpy(gamma_grid(cfg)).float()
        self.timesteps = cfg.timesteps
        self.t_sampling = t_sampling

    def sample_t(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        t = torch.randint(1, self.timesteps + 1, (n,), generator=generator)
        if self.t_sampling == "low-noise":
            low = torch.randint(1, min(LOW_NOISE_T, self.timesteps) + 1, (n,), generator=generator)
            t = torch.where(torch.rand(n, generator=generator) < 0.5, low, t)
        return t

    def noised(self, x0: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x_t, gamma) for a batch x0 (N, 1, H, W): t from sample_t, gamma ~ U(grid[t], grid[t-1])."""
        n = x0.shape[0]
        t = self.sample_t(n, generator)
        lo, hi = self.grid[t], self.grid[t - 1]
        gamma = lo + (hi - lo) * torch.rand(n, generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        gamma = gamma.to(x0.device)
        g = gamma.view(-1, 1, 1, 1)
        return g * x0 + torch.sqrt(1 - g * g) * eps.to(x0.device), gamma
