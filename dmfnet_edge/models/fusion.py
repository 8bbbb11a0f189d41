"""Stage-II fusion network: the three fusion modules and the image head.

* `TimestepFeatureMerge` (M1): merges one source's features at the three noise levels (concatenated along
  channels in the order of the timesteps); one per scale, shared by the MRI and the other branch.
* `CrossModalAttention` (M2): content-guided channel, spatial and pixel attention on s = x + y, returning the
  attended sum w = s * P2; the fused feature is F = w x + (1 - w) y + x + y.
* `MultiScaleAggregation` (M3): coarse-to-fine residual path; every level adds the upsampled output of the
  previous level and a re-processed, upsampled copy of the level before it.
* `FusionHead`: Conv3x3 -> LeakyReLU(0.2) -> Conv3x3 -> tanh, giving the fused luma in (-1, 1). With
  `sources=2` (the edge preset's `source_skip`) the two source images are two more input channels of the first
  convolution, zero-initialised, so a network trained without them starts out unchanged. With `max_gate` (the
  edge preset's second deviation) a third convolution of the hidden layer gives a per-pixel gate
  g = sigmoid(.) in (0, 1) and the output is tanh(.) + g (max(A, B) - tanh(.)): a learned blend towards the
  brighter source, which the hybrid loss's intensity term targets. The gate starts nearly closed (zero weights,
  bias GATE_CLOSED: g = 0.018 everywhere), so a network trained without it starts out almost unchanged.

Feature lists are coarse to fine; level l has (N, c_l, H_l, W_l) with H_{l+1} = 2 H_l.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv_relu_pair(cin: int, cout: int) -> nn.Sequential:
    """Conv1x1 (cin -> cout) -> ReLU -> Conv3x3 (cout -> cout) -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 with align_corners=True, as the method does."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


class TimestepFeatureMerge(nn.Module):
    """(N, T*c, H, W) features of one source at T noise levels -> (N, c, H, W)."""

    def __init__(self, channels: int, steps: int) -> None:
        super().__init__()
        self.body = conv_relu_pair(channels * steps, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CrossModalAttention(nn.Module):
    """Attention-guided fusion of an MRI feature x and another-modality feature y, both (N, c, H, W)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.use_fused_kernel = False  # route the pixel stage through dmfnet::pixel_attention_fuse
        hidden = max(channels // reduction, 1)
        self.channel = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(),
                                     nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3, padding_mode="reflect")
        self.pixel = nn.Conv2d(2 * channels, channels, 3, padding=1, padding_mode="reflect", groups=channels)

    def weight(self, s: torch.Tensor) -> torch.Tensor:
        """w = s * sigmoid(pixel_conv(interleave(s, A_s + A_c))); unbounded, (N, c, H, W)."""
        n, c, h, w = s.shape
        spatial_in = torch.cat([s.mean(dim=1, keepdim=True), s.amax(dim=1, keepdim=True)], dim=1)
        p1 = self.spatial(spatial_in) + self.channel(s)
        interleaved = torch.stack([s, p1], dim=2).reshape(n, 2 * c, h, w)  # [s_0, p1_0, s_1, p1_1, ...]
        return s * torch.sigmoid(self.pixel(interleaved))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.use_fused_kernel:
            from dmfnet_edge.models.kernels import attention_maps, pixel_attention_fuse

            a_s, a_c = attention_maps(self, x + y)
            return pixel_attention_fuse(x, y, a_s, a_c, self.pixel.weight, self.pixel.bias)
        w = self.weight(x + y)
        return w * x + (1 - w) * y + x + y


class MultiScaleAggregation(nn.Module):
    """One level of the coarse-to-fine residual path (M3).

    out = block(F [+ msf_prev] [+ up2(reprocess(msf_prev2))]) where msf_* are the upsampled outputs of the two
    previous levels; `block` maps c -> c_out (the next level's width, or c at the last level).
    """

    def __init__(self, channels: int, out_channels: int, prev2_channels: int | None) -> None:
        super().__init__()
        self.block = conv_relu_pair(channels, out_channels)
        self.reprocess = conv_relu_pair(prev2_channels, channels) if prev2_channels is not None else None

    def forward(self, fused: torch.Tensor, msf: list[torch.Tensor]) -> torch.Tensor:
        h = fused
        if msf:
            h = h + msf[-1]
        if self.reprocess is not None:
            h = h + upsample2(self.reprocess(msf[-2]))
        return self.block(h)


GATE_CLOSED = -4.0  # initial bias of the max gate: sigmoid(-4) = 0.018


class FusionHead(nn.Module):
    """(N, c, H, W) [+ (N, sources, H, W) source images] -> fused luma (N, 1, H, W) in [-1, 1]."""

    def __init__(self, channels: int, hidden: int, sources: int = 0, max_gate: bool = False) -> None:
        super().__init__()
        if max_gate and not sources:
            raise ValueError("a fusion head's max gate needs the source images (the source skip)")
        self.sources = sources
        self.conv1 = nn.Conv2d(channels + sources, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, 1, 3, padding=1)
        self.gate = nn.Conv2d(hidden, 1, 3, padding=1) if max_gate else None

    def forward(self, x: torch.Tensor, sources: torch.Tensor | None = None) -> torch.Tensor:
        if self.sources:
            if sources is None or sources.shape[1] != self.sources:
                raise ValueError(f"this fusion head reads {self.sources} source images beside its features")
            sources = sources.to(x.dtype)
            x = torch.cat([x, sources], dim=1)
        hidden = F.leaky_relu(self.conv1(x), 0.2)
        fused = torch.tanh(self.conv2(hidden))
        if self.gate is None:
            return fused
        brighter = sources.amax(dim=1, keepdim=True)
        return fused + torch.sigmoid(self.gate(hidden)) * (brighter - fused)

    def close_gate(self) -> None:
        """Start the max gate nearly closed: zero weights and bias GATE_CLOSED."""
        if self.gate is not None:
            with torch.no_grad():
                self.gate.weight.zero_()
                self.gate.bias.fill_(GATE_CLOSED)

    def zero_source_weights(self) -> None:
        """Zero the weights of the source-image inputs (they start out ignored)."""
        if self.sources:
            with torch.no_grad():
                self.conv1.weight[:, -self.sources:] = 0


class FusionNet(nn.Module):
    """The Stage-II fusion network over multi-scale, multi-timestep features of the two sources."""

    def __init__(self, channels: list[int], steps: int, head_channels: int, reduction: int,
                 source_skip: bool = False, max_gate: bool = False) -> None:
        super().__init__()
        levels = len(channels)
        self.merge = nn.ModuleList(TimestepFeatureMerge(c, steps) for c in channels)
        self.attention = nn.ModuleList(CrossModalAttention(c, reduction) for c in channels)
        self.aggregate = nn.ModuleList(
            MultiScaleAggregation(c, channels[i + 1] if i + 1 < levels else c, channels[i - 1] if i >= 2 else None)
            for i, c in enumerate(channels))
        self.head = FusionHead(channels[-1], head_channels, 2 if source_skip else 0, max_gate)

    def forward(self, mri: list[torch.Tensor], other: list[torch.Tensor], sources: torch.Tensor | None = None
                ) -> torch.Tensor:
        """mri, other: per level (coarse to fine) (N, T*c_l, H_l, W_l) timestep-concatenated features;
        sources: (N, 2, H, W) MRI and other image, read by a head with a source skip only."""
        msf: list[torch.Tensor] = []
        out = mri[0]
        for level, (fm, fo) in enumerate(zip(mri, other)):
            x, y = self.merge[level](fm), self.merge[level](fo)
            out = self.aggregate[level](self.attention[level](x, y), msf)
            if level < len(mri) - 1:
                msf.append(upsample2(out))
        return self.head(out, sources)
