"""Training data: all pairs of a split held in memory as uint8 luma, sampled as jointly cropped, flipped
batches in [-1, 1]."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from dmfnet_edge.errors import InputError
from dmfnet_edge.io.images import read_image
from dmfnet_edge.io.pairs import ImagePair, find_pairs
from dmfnet_edge.preprocess.color import split_luma

log = logging.getLogger(__name__)


class PairBank:
    """Luma pairs (uint8 (H, W) each) of a dataset split."""

    def __init__(self, pairs: list[ImagePair]) -> None:
        self.pairs = pairs
        self.mri: list[np.ndarray] = []
        self.other: list[np.ndarray] = []
        for pair in pairs:
            mri, other = split_luma(read_image(pair.mri))[0], split_luma(read_image(pair.other))[0]
            if mri.shape != other.shape:
                raise InputError(f"{pair.mri} {mri.shape} and {pair.other} {other.shape} differ in size")
            self.mri.append(mri)
            self.other.append(other)
        log.info("loaded %d pairs", len(pairs))

    @classmethod
    def from_folder(cls, root: str | Path) -> PairBank:
        return cls(find_pairs(root))

    def __len__(self) -> int:
        return len(self.pairs)

    def sample(self, rng: np.random.Generator, batch: int, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch (batch, 1, crop, crop) float32 in [-1, 1] of MRI and other, same crop and flips per pair."""
        mri_out = np.empty((batch, 1, crop, crop), np.float32)
        other_out = np.empty_like(mri_out)
        for i in range(batch):
            k = int(rng.integers(len(self)))
            mri, other = self.mri[k], self.other[k]
            h, w = mri.shape
            if h < crop or w < crop:
                raise InputError(f"{self.pairs[k].mri}: {h}x{w} is smaller than the crop {crop}")
            y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
            a, b = mri[y:y + crop, x:x + crop], other[y:y + crop, x:x + crop]
            if rng.random() < 0.5:
                a, b = a[:, ::-1], b[:, ::-1]
            if rng.random() < 0.5:
                a, b = a[::-1], b[::-1]
            mri_out[i, 0], other_out[i, 0] = a, b
        scale = np.float32(2.0 / 255.0)
        return torch.from_numpy(mri_out * scale - 1), torch.from_numpy(other_out * scale - 1)
