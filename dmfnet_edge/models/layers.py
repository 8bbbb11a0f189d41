"""UNet building blocks (SR3 style) used by the Stage-I denoiser.

All tensors are float32 (N, C, H, W) unless stated; H and W are multiples of 16 where the UNet is used.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class Swish(nn.Module):
    """x * sigmoid(x), written out as the method does (exports as Sigmoid + Mul)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class NoiseLevelEncoding(nn.Module):
    """WaveGrad sinusoidal encoding of the continuous noise level gamma in [0, 1].

    Input (N,) gamma; output (N, dim) = [sin(gamma * f_k), cos(gamma * f_k)], f_k = 1e4^(-k / (dim/2)).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(1e4) * torch.arange(half, dtype=torch.float64) / half)
        self.register_buffer("freqs", freqs.float(), persistent=False)

    def forward(self, gamma: torch.Tensor) -> torch.Tensor:
        phase = gamma.reshape(-1, 1) * self.freqs.reshape(1, -1)
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)


class NormActConv(nn.Module):
    """GroupNorm -> Swish -> [Dropout] -> Conv3x3 (the method's "Block")."""

    def __init__(self, cin: int, cout: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, cin)
        self.act = Swish()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.drop(self.act(self.norm(x))))


class SelfAttention(nn.Module):
    """Single-head spatial self-attention with a residual add, as MatMul -> Softmax -> MatMul.

    (N, C, H, W) -> (N, C, H, W); scores are q^T k / sqrt(C) over all H*W positions.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).unbind(1)
        scores = torch.matmul(q.transpose(1, 2), k) * (1.0 / math.sqrt(c))  # (N, HW, HW)
        attn = torch.softmax(scores, dim=-1)
        mixed = torch.matmul(v, attn.transpose(1, 2))  # (N, C, HW)
        return x + self.out(mixed.reshape(n, c, h, w))


class ResBlock(nn.Module):
    """Residual block conditioned additively on the noise-level embedding, optional self-attention after it."""

    def __init__(self, cin: int, cout: int, emb: int, groups: int, dropout: float, attention: bool = False) -> None:
        super().__init__()
        self.block1 = NormActConv(cin, cout, groups)
        self.emb = nn.Linear(emb, cout)
        self.block2 = NormActConv(cout, cout, groups, dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.attn = SelfAttention(cout, groups) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x) + self.emb(emb)[:, :, None, None]
        h = self.block2(h) + self.skip(x)
        return self.attn(h) if self.attn is not None else h


class Downsample(nn.Module):
    """Conv3x3 stride 2: (N, C, H, W) -> (N, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then Conv3x3: (N, C, H, W) -> (N, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
