"""Where the stages meet: pixels -> luma/chroma -> network range, padded -> Runner -> crop -> chroma -> pixels.

Torch-free: the Runner hides the backend.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from dmfnet_edge.errors import InputError, PairingError
from dmfnet_edge.limits import pairs_per_call
from dmfnet_edge.postprocess.image import crop_to, from_network, merge_luma
from dmfnet_edge.preprocess.color import split_luma
from dmfnet_edge.preprocess.tensor import pad_to_multiple, to_network
from dmfnet_edge.runtime.base import Runner

log = logging.getLogger(__name__)
K = TypeVar("K")  # the caller's key of a pair (its name, a slice index)
MIN_SIDE = 16


@dataclass
class PreparedPair:
    """Network-ready pair: float32 (Hp, Wp) in [-1, 1] each, original size, the other image's chroma."""

    mri: np.ndarray
    other: np.ndarray
    height: int
    width: int
    chroma: np.ndarray | None


@dataclass
class FusedImage:
    """Fused output: `pixels` uint8 grey (H, W) or RGB (H, W, 3); `luma` the fused Y (H, W) uint8."""

    pixels: np.ndarray
    luma: np.ndarray


def _is_colour(image: np.ndarray) -> bool:
    return image.ndim == 3 and bool(np.any(image[..., 0] != image[..., 1]) or np.any(image[..., 1] != image[..., 2]))


def _warn_if_suspicious(mri: np.ndarray, other: np.ndarray, label: str) -> None:
    """Pairings that are legal but most likely a slip; cheap to check, so say so."""
    if _is_colour(mri) and not _is_colour(other):
        log.warning("%s: the MRI is in colour and the other image is grey: were --mri and --other swapped? "
                    "(the MRI's colour is dropped; only the other image's colour is kept)", label)
    if mri.shape == other.shape and np.array_equal(mri, other):
        log.warning("%s: the two images are identical; fusion of an image with itself is that image", label)


def prepare_pair(mri: np.ndarray, other: np.ndarray, label: str = "pair") -> PreparedPair:
    """Check a uint8 pair and turn it into network inputs; the MRI's luma is used if it is colour."""
    if mri.shape[:2] != other.shape[:2]:
        raise PairingError(f"{label}: MRI is {mri.shape[1]}x{mri.shape[0]} but the other image is "
                           f"{other.shape[1]}x{other.shape[0]}; a pair must be co-registered at one size")
    h, w = mri.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"{label}: {w}x{h} is too small; both sides must be at least {MIN_SIDE} pixels")
    _warn_if_suspicious(mri, other, label)
    mri_luma, _ = split_luma(mri)
    other_luma, chroma = split_luma(other)
    return PreparedPair(pad_to_multiple(to_network(mri_luma)), pad_to_multiple(to_network(other_luma)), h, w,
                        chroma)


def finish(prepared: PreparedPair, fused: np.ndarray) -> FusedImage:
    """Fused network output (Hp, Wp) -> cropped uint8 luma with the other image's chroma restored."""
    luma = from_network(crop_to(fused, prepared.height, prepared.width))
    return FusedImage(merge_luma(luma, prepared.chroma), luma)


def run_batch(runner: Runner, batch: list[PreparedPair]) -> list[FusedImage]:
    """Fuse prepared pairs of one padded size in one Runner call."""
    mri = np.stack([p.mri for p in batch])[:, None]
    other = np.stack([p.other for p in batch])[:, None]
    fused = runner.fuse(mri, other)
    return [finish(p, fused[i, 0]) for i, p in enumerate(batch)]


def fuse_pixels(runner: Runner, mri: np.ndarray, other: np.ndarray, label: str = "pair") -> FusedImage:
    """Fuse one uint8 pair (grey or RGB each)."""
    return run_batch(runner, [prepare_pair(mri, other, label)])[0]


def batched(items: Iterable[tuple[K, PreparedPair]], size: int) -> Iterator[list[tuple[K, PreparedPair]]]:
    """Group consecutive prepared pairs of equal padded shape into batches of at most `size`, and of at most the
    pixel budget per call (limits.pairs_per_call), so memory is bounded whatever `size` is."""
    group: list[tuple[K, PreparedPair]] = []
    for key, pair in items:
        if group and (len(group) == pairs_per_call(*group[0][1].mri.shape, size)
                      or group[0][1].mri.shape != pair.mri.shape):
            yield group
            group = []
        group.append((key, pair))
    if group:
        yield group


def timed_batch(runner: Runner, batch: list[PreparedPair]) -> tuple[list[FusedImage], float]:
    start = time.perf_counter()
    out = run_batch(runner, batch)
    return out, time.perf_counter() - start


def fuse_pairs(runner: Runner, items: Iterable[tuple[K, PreparedPair]], batch: int
               ) -> Iterator[tuple[list[K], list[FusedImage], float]]:
    """The one batching loop: prepared pairs (each with its caller's key) fused `batch` at a time, in equal-shape
    groups within the pixel budget (`batched`); yields each group's keys, fused images and seconds, in order.
    `fuse-dir` and the volume pipeline fuse through it."""
    for group in batched(items, batch):
        fused, seconds = timed_batch(runner, [pair for _, pair in group])
        yield [key for key, _ in group], fused, seconds
