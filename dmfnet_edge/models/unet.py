"""Stage-I diffusion UNet: predicts the clean image x0 from a noised image and its noise level gamma.

Topology follows the method (SR3 lineage): an encoder of `levels` levels with `res_blocks` residual blocks each
and a stride-2 downsample between levels, a middle block (ResBlock + self-attention, ResBlock), a decoder with
`res_blocks + 1` blocks per level fed by LIFO skips, and a final GroupNorm-Swish-Conv to one channel. Self
attention sits in the middle block only, which is how the published checkpoint was trained.

The fusion network reads the output of the *first* decoder block of every level. `decoder_features` computes
exactly what those need and stops after the finest one: the rest of the last level and the final conv are
never evaluated.
"""

from __future__ import annotations

import torch
from torch import nn

from dmfnet_edge.config import UNetConfig
from dmfnet_edge.models.layers import Downsample, NoiseLevelEncoding, NormActConv, ResBlock, Swish, Upsample


class DiffusionUNet(nn.Module):
    """x0-predicting UNet. Input (N, 1, H, W) float32 in about [-1, 1], gamma (N,) in [0, 1]; H, W % 2^(L-1) == 0."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, e, g = cfg.base_channels, cfg.emb_channels, cfg.norm_groups
        self.noise_mlp = nn.Sequential(NoiseLevelEncoding(e), nn.Linear(e, e * 4), Swish(), nn.Linear(e * 4, e))
        self.init_conv = nn.Conv2d(cfg.in_channels, c, 3, padding=1)
        skip_channels = [c]
        downs: list[nn.Module] = []
        width = c
        for level in range(cfg.levels):
            out = cfg.level_channels(level)
            for _ in range(cfg.res_blocks):
                downs.append(ResBlock(width, out, e, g, cfg.dropout))
                width = out
                skip_channels.append(width)
            if level < cfg.levels - 1:
                downs.append(Downsample(width))
                skip_channels.append(width)
        self.downs = nn.ModuleList(downs)
        self.mid = nn.ModuleList([ResBlock(width, width, e, g, cfg.dropout, attention=True),
                                  ResBlock(width, width, e, g, cfg.dropout)])
        ups: list[nn.Module] = []
        for level in reversed(range(cfg.levels)):
            out = cfg.level_channels(level)
            for _ in range(cfg.res_blocks + 1):
                ups.append(ResBlock(width + skip_channels.pop(), out, e, g, cfg.dropout))
                width = out
            if level > 0:
                ups.append(Upsample(width))
        self.ups = nn.ModuleList(ups)
        self.final = NormActConv(width, cfg.out_channels, g)

    def feature_channels(self) -> list[int]:
        """Channels of the decoder features, coarse to fine (one per level)."""
        return [self.cfg.level_channels(level) for level in reversed(range(self.cfg.levels))]

    def _encode(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.init_conv(x)
        skips = [h]
        for layer in self.downs:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        return h, skips

    def _decode(self, h: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor, prune: bool
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the decoder; return the last hidden state and the first-block output of every level."""
        features: list[torch.Tensor] = []
        first_of_level = True
        for layer in self.ups:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
                if first_of_level:
                    features.append(h)
                    first_of_level = False
                    if prune and len(features) == self.cfg.levels:
                        break
            else:
                h = layer(h)
                first_of_level = True
        return h, features

    def forward(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """Predicted x0, (N, 1, H, W), not squashed."""
        emb = self.noise_mlp(gamma)
        h, skips = self._encode(x, emb)
        h, _ = self._decode(h, skips, emb, prune=False)
        return self.final(h)

    def decoder_features(self, x: torch.Tensor, gamma: torch.Tensor, prune: bool = True) -> list[torch.Tensor]:
        """First decoder block output of every level, coarse to fine: [(N, c_l, H / 2^l, W / 2^l)] for l = L-1..0.

        With `prune` the decoder stops after the finest feature (the tail is never computed); the values are
        identical either way.
        """
        emb = self.noise_mlp(gamma)
        h, skips = self._encode(x, emb)
        _, features = self._decode(h, skips, emb, prune=prune)
        return features
