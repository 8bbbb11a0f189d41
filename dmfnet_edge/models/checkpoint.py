"""Saving and loading models as safetensors + JSON sidecar (no pickle anywhere)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from dmfnet_edge import __version__
from dmfnet_edge.artifacts import WeightsSidecar, load_sidecar, resolve_weights, sha256_file
from dmfnet_edge.config import ModelConfig, preset
from dmfnet_edge.errors import InputError, ModelFileError
from dmfnet_edge.files import FILE_MODE
from dmfnet_edge.models.dmfnet import DMFNet
from dmfnet_edge.models.unet import DiffusionUNet


def save_tensors_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
                        ) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.chmod(tmp, FILE_MODE)  # safetensors writes a new file of its own (0600), not through our descriptor
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def save_model(module: nn.Module, cfg: ModelConfig, base: str | Path, kind: str, info: dict[str, Any]) -> Path:
    """Write BASE.safetensors and BASE.json for a DMFNet (kind 'dmfnet') or a Stage-I UNet (kind 'unet')."""
    base = Path(base)
    tensors = base.with_name(base.name + ".safetensors")
    save_tensors_atomic(module.state_dict(), tensors, {"kind": kind, "format": "dmfnet-edge"})
    sidecar = base.with_name(base.name + ".json")
    WeightsSidecar.convert({"kind": kind, "config": cfg.to_dict(), "weights_sha256": sha256_file(tensors),
                            "package_version": __version__, **info}, str(sidecar)).write(sidecar)
    return tensors


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from None


def _load_into(module: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelFileError(f"{source}: tensors do not match the config (missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]}); the weights belong to another model")
    for name, value in tensors.items():
        if value.shape != expected[name].shape:
            raise ModelFileError(f"{source}: tensor '{name}' has shape {tuple(value.shape)}, the config needs "
                                 f"{tuple(expected[name].shape)}")
    module.load_state_dict(tensors, strict=True)


def _config(meta: WeightsSidecar, sidecar: Path) -> ModelConfig:
    try:
        return ModelConfig.from_dict(meta.config)
    except ModelFileError as exc:
        raise ModelFileError(f"{sidecar}: {exc}") from None


def load_model(spec: str | os.PathLike[str], verify: bool = True) -> tuple[DMFNet, WeightsSidecar]:
    """Load a complete model ('edge' or a path) in eval mode; returns (model, sidecar metadata)."""
    tensors, sidecar = resolve_weights(spec)
    meta = load_sidecar(tensors, sidecar, verify=verify)
    if meta.kind != "dmfnet":
        raise ModelFileError(f"{sidecar}: holds a '{meta.kind}' checkpoint, expected a complete 'dmfnet' "
                             "model (a Stage-I UNet alone cannot fuse)")
    model = DMFNet(_config(meta, sidecar))
    _load_into(model, _read_tensors(tensors), tensors)
    return model.eval(), meta


def load_unet(spec: str | os.PathLike[str]) -> tuple[DiffusionUNet, ModelConfig, WeightsSidecar]:
    """Load a Stage-I UNet checkpoint (kind 'unet') or the UNet part of a complete model."""
    tensors, sidecar = resolve_weights(spec)
    meta = load_sidecar(tensors, sidecar)
    cfg = _config(meta, sidecar)
    unet = DiffusionUNet(cfg.unet)
    state = _read_tensors(tensors)
    if meta.kind == "dmfnet":
        state = {k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")}
    _load_into(unet, state, tensors)
    return unet, cfg, meta


RANDOM_WEIGHTS = "seeded random initialisation (preset)"


def load_or_build(spec: str | os.PathLike[str], allow_random: bool = False) -> tuple[DMFNet, WeightsSidecar]:
    """The one rule for a model spec: the shipped name or a weights path loads trained weights; any other preset
    name (paper, tiny) builds seeded random weights, but only when the caller asks for them (`allow_random`:
    sizes, FLOPs, graphs and timings); otherwise it is refused, so nothing fuses with random weights by accident."""
    from dmfnet_edge.artifacts import SHIPPED
    from dmfnet_edge.config import ModelSpec

    text = str(spec)
    if ModelSpec.parse(text).kind == "preset":
        if not allow_random:
            raise InputError(f"model '{text}': a preset has no trained weights (only {', '.join(SHIPPED)} ships); "
                             "give a weights PATH (NAME.safetensors + NAME.json)")
        model = build_model(text)
        return model, WeightsSidecar(kind="dmfnet", config=model.cfg.to_dict(), package_version=__version__,
                                     weights=RANDOM_WEIGHTS)
    return load_model(spec)


def build_model(spec: str, seed: int = 0) -> DMFNet:
    """A model from a preset name with seeded random weights: the same seed always gives the same model."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return DMFNet(preset(spec)).eval()
