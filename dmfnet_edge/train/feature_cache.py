"""Cached Stage-II features: the frozen UNet's multi-scale features of every training pair, computed once.

Inference is deterministic (fixed noise levels, a fixed noise field stored with the weights), so the features
the fusion network reads for a given image never change while the UNet is frozen. A cache holds them for one
split, per level (coarse to fine) as `level<L>.npy`, shape (pairs, 2 sources, T*c_l, H_l, W_l) float16,
memory-mapped (the edge preset needs about 21 MB per 256x256 pair), and the sources' luma as `luma.npy`
(pairs, 2, H, W) uint8. Training then samples crops of the full-image maps on the grid of the coarsest level,
which is what inference sees (whole images), instead of running the UNet on crops.

A cache is keyed by `cache.json`: a fingerprint of the UNet weights with the noise levels and field, and a
manifest of the data (every source file's SHA-256). Opening a cache whose key differs from the model and data
at hand is refused (never silently reused, never overwritten). A cache is built in a hidden sibling folder
and renamed into place when complete, so an interrupted build leaves no half cache behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import msgspec
import numpy as np
import torch
from msgspec import Meta, Struct

from dmfnet_edge.artifacts import sha256_file
from dmfnet_edge.errors import InputError, describe_exception
from dmfnet_edge.files import staged_folder
from dmfnet_edge.io.images import read_image
from dmfnet_edge.io.pairs import ImagePair
from dmfnet_edge.models.dmfnet import DMFNet
from dmfnet_edge.preprocess.color import split_luma
from dmfnet_edge.preprocess.tensor import to_network
from dmfnet_edge.records import SHA256, Record

log = logging.getLogger(__name__)
CACHE_VERSION = 1
MANIFEST = "cache.json"


def unet_fingerprint(model: DMFNet) -> str:
    """SHA-256 of everything the cached features depend on: UNet weights, noise levels and noise field."""
    digest = hashlib.sha256()
    tensors = {f"unet.{k}": v for k, v in model.unet.state_dict().items()}
    tensors.update({"gammas": model.gammas, "sigmas": model.sigmas, "noise": model.noise})
    for name in sorted(tensors):
        value = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.numpy().tobytes() if value.dtype != torch.bfloat16 else value.float().numpy().tobytes())
    return digest.hexdigest()


def data_manifest(pairs: list[ImagePair]) -> list[dict[str, str]]:
    """One entry per pair, in cache order: task, name and the SHA-256 of both source files."""
    return [{"task": p.task, "name": p.name, "mri": sha256_file(p.mri), "other": sha256_file(p.other)}
            for p in pairs]


def _manifest_digest(entries: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


class CacheEntry(Struct, forbid_unknown_fields=True, frozen=True):
    """One cached pair: its task and name and the SHA-256 of both source files."""

    task: str
    name: str
    mri: Annotated[str, SHA256]
    other: Annotated[str, SHA256]


Side = Annotated[int, Meta(ge=1, le=1 << 16)]


class FeatureCacheKey(Record, kw_only=True):
    """FOLDER/cache.json: what a feature cache was built from (UNet fingerprint, noise levels and seed, every
    source's hash) and what it holds (array shapes); a cache is reused only when all of it matches."""

    KIND: ClassVar[str] = "feature cache key"
    LIMIT: ClassVar[int] = 64 << 20
    ALWAYS: ClassVar[tuple[str, ...]] = ("format", "cache_version")
    FIX: ClassVar[str] = "give another --feature-cache folder (or delete this one yourself)"

    format: Literal["dmfnet-edge-feature-cache"] = "dmfnet-edge-feature-cache"
    cache_version: Literal[1] = CACHE_VERSION
    unet_sha256: Annotated[str, SHA256]
    timesteps: list[Annotated[int, Meta(ge=0)]]
    noise_seed: Annotated[int, Meta(ge=0)]
    model: str
    dtype: Literal["float16"]
    image_size: Annotated[list[Side], Meta(min_length=2, max_length=2)]
    level_shapes: Annotated[list[Annotated[list[Side], Meta(min_length=4, max_length=4)]], Meta(min_length=1)]
    bytes: Annotated[int, Meta(ge=0)]
    data_sha256: Annotated[str, SHA256]
    data: Annotated[list[CacheEntry], Meta(min_length=1)]

    def __post_init__(self) -> None:
        if self.data_sha256 != _manifest_digest([msgspec.to_builtins(e) for e in self.data]):
            raise ValueError("data_sha256 does not match its data entries (the key was edited)")


def _open_array(path: Path, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A cache array, memory-mapped, after checking it is a regular .npy file of the shape the key records."""
    if not path.is_file() or path.is_symlink():
        raise InputError(f"{path}: missing or not a regular file; the feature cache is damaged: give another "
                         "--feature-cache folder (or delete this one yourself)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable array ({describe_exception(exc)}); the feature cache is "
                         "damaged: give another --feature-cache folder") from None
    if array.shape != shape or array.dtype != np.dtype(dtype):
        raise InputError(f"{path}: holds {array.dtype} {array.shape}, the cache key says {dtype} {shape}; the "
                         "feature cache is damaged: give another --feature-cache folder")
    return array


@dataclass
class CachedBatch:
    """Crops of the sources (N, 1, h, w) in [-1, 1] and their cached features, per level (N, T*c_l, h_l, w_l)."""

    mri: torch.Tensor
    other: torch.Tensor
    mri_feats: list[torch.Tensor]
    other_feats: list[torch.Tensor]


class FeatureCache:
    """A complete, verified cache of one split (open with `FeatureCache.open_or_build`)."""

    def __init__(self, folder: Path, meta: FeatureCacheKey) -> None:
        self.folder = folder
        self.meta = meta
        pairs = len(meta.data)
        self.levels = [_open_array(folder / f"level{i}.npy", (pairs, *shape), meta.dtype)
                       for i, shape in enumerate(meta.level_shapes)]
        self.luma = _open_array(folder / "luma.npy", (pairs, 2, *meta.image_size), "uint8")
        self.height, self.width = self.luma.shape[-2:]
        self.grid = self.height // self.levels[0].shape[-2]  # pixels per cell of the coarsest level

    def __len__(self) -> int:
        return int(self.luma.shape[0])

    @property
    def names(self) -> list[tuple[str, str]]:
        return [(e.task, e.name) for e in self.meta.data]

    # ---- opening and building ------------------------------------------------------------------------------
    @classmethod
    def open_or_build(cls, folder: str | Path, model: DMFNet, pairs: list[ImagePair],
                      progress: Callable[[], None] | None = None) -> FeatureCache:
        """Reuse the cache at `folder` if it was built from this UNet and these files; build it if `folder` does
        not exist (or is empty); refuse anything else."""
        folder = Path(folder)
        if not pairs:
            raise InputError("no pairs to cache")
        key = {"unet_sha256": unet_fingerprint(model), "timesteps": list(model.cfg.fusion.timesteps),
               "noise_seed": model.cfg.fusion.noise_seed}
        entries = data_manifest(pairs)
        if folder.is_dir() and any(folder.iterdir()):
            return cls._open_checked(folder, key, entries)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder}: is a file, not a feature cache folder")
        return cls._build(folder, model, pairs, key, entries, progress)

    @classmethod
    def _open_checked(cls, folder: Path, key: dict[str, Any], entries: list[dict[str, str]]) -> FeatureCache:
        if not os.path.lexists(folder / MANIFEST):
            raise InputError(f"{folder}: not a feature cache (no {MANIFEST}) and not empty; give an empty or new "
                             "folder")
        meta = FeatureCacheKey.read(folder / MANIFEST)
        for name, value in key.items():
            if getattr(meta, name) != value:
                shown = (lambda v: str(v)[:12]) if name == "unet_sha256" else str
                raise InputError(f"{folder}: stale feature cache: built for {name} {shown(getattr(meta, name))}, "
                                 f"this model has {shown(value)}; give another --feature-cache folder (or delete "
                                 "this one yourself)")
        if meta.data_sha256 != _manifest_digest(entries):
            cached = {(e.task, e.name): msgspec.to_builtins(e) for e in meta.data}
            changed = [f"{e['task']}/{e['name']}" for e in entries if cached.get((e["task"], e["name"])) != e]
            detail = f"{len(changed)} pairs differ, e.g. {changed[0]}" if changed else \
                f"it holds {len(cached)} pairs, the data has {len(entries)}"
            raise InputError(f"{folder}: stale feature cache: built from other data ({detail}); give another "
                             "--feature-cache folder (or delete this one yourself)")
        log.info("feature cache %s: %d pairs, reused", folder, len(entries))
        return cls(folder, meta)

    @classmethod
    def _build(cls, folder: Path, model: DMFNet, pairs: list[ImagePair], key: dict[str, Any],
               entries: list[dict[str, str]], progress: Callable[[], None] | None) -> FeatureCache:
        luma = [_luma_pair(p) for p in pairs]
        shape = luma[0].shape
        if any(x.shape != shape for x in luma):
            odd = next(p for p, x in zip(pairs, luma) if x.shape != shape)
            raise InputError(f"{odd.mri}: {odd.task}/{odd.name} is {luma[pairs.index(odd)].shape[2]}x"
                             f"{luma[pairs.index(odd)].shape[1]}, the first pair {shape[2]}x{shape[1]}: a feature "
                             "cache holds one image size")
        height, width = shape[1:]
        multiple = 2 ** (model.cfg.unet.levels - 1)
        if height % multiple or width % multiple:
            raise InputError(f"{pairs[0].mri}: {width}x{height} is not a multiple of {multiple}; a feature cache "
                             "needs unpadded images")
        with staged_folder(folder) as work:
            model = model.eval()
            arrays: list[np.ndarray] = []
            np.save(work / "luma.npy", np.stack(luma))
            with torch.inference_mode():
                for k, pair_luma in enumerate(luma):
                    x = torch.from_numpy(to_network(pair_luma))[:, None]  # (2, 1, H, W)
                    mri_feats, other_feats = model.features(x[:1], x[1:])
                    if not arrays:
                        arrays = [np.lib.format.open_memmap(work / f"level{i}.npy", mode="w+", dtype=np.float16,
                                                            shape=(len(pairs), 2, *f.shape[1:]))
                                  for i, f in enumerate(mri_feats)]
                    for array, fm, fo in zip(arrays, mri_feats, other_feats):
                        array[k, 0] = fm[0].numpy()
                        array[k, 1] = fo[0].numpy()
                    if progress:
                        progress()
            meta = FeatureCacheKey.convert({
                **key, "model": model.cfg.name, "dtype": "float16", "image_size": [height, width],
                "level_shapes": [list(a.shape[1:]) for a in arrays], "bytes": int(sum(a.nbytes for a in arrays)),
                "data_sha256": _manifest_digest(entries), "data": entries}, str(folder / MANIFEST))
            for array in arrays:
                array.flush()
            del arrays
            meta.write(work / MANIFEST)
            if folder.is_dir():
                folder.rmdir()  # empty: checked by the caller
            os.replace(work, folder)
        log.info("feature cache %s: %d pairs built (%.1f GB)", folder, len(pairs), meta.bytes / 1e9)
        return cls(folder, meta)

    # ---- reading ----------------------------------------------------------------------------------------------
    def full(self, index: int) -> CachedBatch:
        """The whole image `index` as a batch of one."""
        return self._batch([index], [(0, 0)], self.height, self.width)

    def sample(self, rng: np.random.Generator, batch: int, crop: int) -> CachedBatch:
        """`batch` random pairs, each a random crop x crop window whose corner lies on the coarsest level's grid
        (so every level is cropped exactly)."""
        smallest = 4 * self.grid  # the coarsest level's 7x7 reflection padding needs 4 cells a side
        if crop % self.grid or not smallest <= crop <= min(self.height, self.width):
            raise InputError(f"--crop {crop}: a cached crop must be a multiple of {self.grid}, at least {smallest} "
                             f"and at most {min(self.height, self.width)}")
        picks = [int(rng.integers(len(self))) for _ in range(batch)]
        corners = [(self.grid * int(rng.integers((self.height - crop) // self.grid + 1)),
                    self.grid * int(rng.integers((self.width - crop) // self.grid + 1))) for _ in range(batch)]
        return self._batch(picks, corners, crop, crop)

    def _batch(self, picks: list[int], corners: list[tuple[int, int]], h: int, w: int) -> CachedBatch:
        luma = np.stack([self.luma[k, :, y:y + h, x:x + w] for k, (y, x) in zip(picks, corners)])
        images = torch.from_numpy(to_network(luma))  # (N, 2, h, w)
        feats: list[torch.Tensor] = []
        for array in self.levels:
            f = self.height // array.shape[-2]
            cells = np.stack([array[k, :, :, y // f:(y + h) // f, x // f:(x + w) // f]
                              for k, (y, x) in zip(picks, corners)])
            feats.append(torch.from_numpy(cells.astype(np.float32)))  # (N, 2, C, h_l, w_l)
        return CachedBatch(images[:, :1], images[:, 1:], [f[:, 0] for f in feats], [f[:, 1] for f in feats])


def _luma_pair(pair: ImagePair) -> np.ndarray:
    """(2, H, W) uint8: the MRI's and the other image's luma, as the pipeline computes them."""
    mri, other = split_luma(read_image(pair.mri))[0], split_luma(read_image(pair.other))[0]
    if mri.shape != other.shape:
        raise InputError(f"{pair.mri} {mri.shape} and {pair.other} {other.shape} differ in size")
    return np.stack([mri, other])
