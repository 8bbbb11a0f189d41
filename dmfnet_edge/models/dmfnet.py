"""The complete, deterministic DM-FNet: frozen UNet features at fixed noise levels + fusion network.

`DMFNet(mri, other)` takes two (N, 1, H, W) float32 images in [-1, 1] (H, W multiples of 16) and returns the
fused luma (N, 1, H, W) in (-1, 1). The 2 sources x T timesteps UNet passes run as one batch of 2*T*N, the UNet
tail the fusion network never reads is not computed, and the noise levels and noise field are buffers stored
with the weights, so the same input always gives the same output.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dmfnet_edge.config import ModelConfig
from dmfnet_edge.models.diffusion import frozen_noise, tile_noise, timestep_gammas
from dmfnet_edge.models.fusion import FusionNet
from dmfnet_edge.models.unet import DiffusionUNet


class DMFNet(nn.Module):
    """Stage I (frozen diffusion UNet) + Stage II (fusion network) with frozen noise."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        steps = len(cfg.fusion.timesteps)
        self.unet = DiffusionUNet(cfg.unet)
        self.fusion = FusionNet(self.unet.feature_channels(), steps, cfg.fusion.head_channels,
                                cfg.fusion.attention_reduction, cfg.fusion.source_skip,
                                cfg.fusion.max_gate)
        gammas = timestep_gammas(cfg.diffusion, cfg.fusion.timesteps)
        self.register_buffer("gammas", torch.tensor(gammas, dtype=torch.float32))
        self.register_buffer("sigmas", torch.tensor(np.sqrt(1.0 - gammas**2), dtype=torch.float32))
        self.register_buffer("noise", frozen_noise(cfg.fusion.noise_seed, 2, steps, cfg.fusion.noise_tile))

    def noised_batch(self, mri: torch.Tensor, other: torch.Tensor, noise: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The 2*T noised copies of every pair as one batch (N*2*T, 1, H, W), ordered (pair, source, t).

        `noise` (2, T, H, W) replaces the frozen field (Stage-II training draws fresh noise).
        """
        n, _, h, w = mri.shape
        steps = self.gammas.shape[0]
        eps = tile_noise(self.noise, h, w) if noise is None else noise
        x = torch.stack([mri, other], dim=1)  # (N, 2, 1, H, W)
        g = self.gammas.view(1, 1, steps, 1, 1)
        s = self.sigmas.view(1, 1, steps, 1, 1)
        xt = g * x + s * eps.unsqueeze(0)  # (N, 2, T, H, W)
        gamma = self.gammas.repeat(n * 2)
        return xt.reshape(n * 2 * steps, 1, h, w), gamma

    def features(self, mri: torch.Tensor, other: torch.Tensor, noise: torch.Tensor | None = None
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-level timestep-concatenated UNet features of both sources: [(N, T*c_l, H_l, W_l)] x 2."""
        n = mri.shape[0]
        steps = self.gammas.shape[0]
        xt, gamma = self.noised_batch(mri, other, noise)
        mri_feats, other_feats = [], []
        for f in self.unet.decoder_features(xt, gamma):
            _, c, h, w = f.shape
            f = f.reshape(n, 2, steps * c, h, w)
            mri_feats.append(f[:, 0])
            other_feats.append(f[:, 1])
        return mri_feats, other_feats

    def fuse(self, feats: tuple[list[torch.Tensor], list[torch.Tensor]], mri: torch.Tensor, other: torch.Tensor
             ) -> torch.Tensor:
        """The fusion network on `features(mri, other)` (the sources too, where the head reads them)."""
        sources = torch.cat([mri, other], dim=1) if self.cfg.fusion.source_skip else None
        return self.fusion(*feats, sources)

    def forward(self, mri: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.features(mri, other), mri, other)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
