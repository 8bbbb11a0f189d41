"""Resumable training state as safetensors + JSON: trainable weights, optimizer moments, step, RNG states."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from msgspec import Meta, Struct
from safetensors.torch import load_file

from dmfnet_edge.errors import ModelFileError
from dmfnet_edge.models.checkpoint import save_tensors_atomic
from dmfnet_edge.records import Record

Count = Annotated[int, Meta(ge=0)]


class OptimizerGroups(Struct, forbid_unknown_fields=True, frozen=True):
    param_groups: list[dict[str, Any]]  # torch's own settings per parameter group (lr, betas, ...)


class Segment(Struct, forbid_unknown_fields=True, frozen=True):
    """One run of `dmfnet train` in the folder: the step it started from and its settings."""

    from_step: Count
    settings: dict[str, Any]


class Best(Struct, forbid_unknown_fields=True, frozen=True):
    step: Count
    score: float
    margin: float = 0.0


class TrainingState(Record, kw_only=True):
    """RUN/last.json beside RUN/last.safetensors: where a resumable training run stands (step, optimizer
    settings, random state) and its record (settings, segments, loss history, validations, the best step)."""

    KIND: ClassVar[str] = "training checkpoint"
    LIMIT: ClassVar[int] = 64 << 20  # the loss history grows by one entry per --log-every steps
    ALWAYS: ClassVar[tuple[str, ...]] = ("format", "version")
    FIX: ClassVar[str] = "it is damaged; start the run again in a new folder"

    format: Literal["dmfnet-edge-training-state"] = "dmfnet-edge-training-state"
    version: Literal[1] = 1
    step: Count
    optimizer: OptimizerGroups
    numpy_rng: dict[str, Any]  # numpy's own bit-generator state
    stage: Literal["unet", "dmfnet"]
    settings: dict[str, Any]
    segments: list[Segment] = []
    ema_saved: bool = False
    train_seconds: Annotated[float, Meta(ge=0)] = 0.0
    history: list[dict[str, float]] = []
    validation: list[dict[str, Any]] = []
    best: Best | None = None
    data: str | None = None
    pairs: Count | None = None
    hardware: str | None = None
    torch: str | None = None
    unet_checkpoint: str | None = None
    init: str | None = None
    features: str | None = None
    selection: str | None = None


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = opt.state_dict()
    tensors = {f"opt.{idx}.{key}": value for idx, slots in state["state"].items()
               for key, value in slots.items() if torch.is_tensor(value)}
    return tensors, {"param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: OptimizerGroups) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": groups.param_groups}


def save_state(folder: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
               rng: np.random.Generator, torch_gen: torch.Generator, info: dict[str, Any],
               ema: dict[str, torch.Tensor] | None = None) -> None:
    """Write folder/last.safetensors and folder/last.json (the JSON last, so a complete pair is always valid)."""
    opt_tensors, opt_meta = _flatten_optimizer(opt)
    tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
    tensors.update(opt_tensors)
    tensors.update({f"ema.{k}": v for k, v in (ema or {}).items()})
    tensors["rng.torch"] = torch_gen.get_state()
    save_tensors_atomic(tensors, folder / "last.safetensors")
    path = folder / "last.json"
    TrainingState.convert({"step": step, "optimizer": opt_meta, "numpy_rng": rng.bit_generator.state, **info},
                          str(path)).write(path)


def load_state(folder: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, rng: np.random.Generator,
               torch_gen: torch.Generator, ema: dict[str, torch.Tensor] | None = None) -> TrainingState:
    """Restore what `save_state` wrote (the EMA weights into `ema`, where both have them); returns the record."""
    meta = TrainingState.read(folder / "last.json")
    try:
        tensors = load_file(str(folder / "last.safetensors"))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise ModelFileError(f"{folder / 'last.safetensors'}: cannot be read ({exc})") from None
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    module.load_state_dict(model_state, strict=True)
    opt.load_state_dict(_unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("opt.")},
                                             meta.optimizer))
    torch_gen.set_state(tensors["rng.torch"])
    if ema is not None:
        saved = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
        if saved and set(saved) != set(ema):
            raise ModelFileError(f"{folder / 'last.safetensors'}: its EMA weights do not match this network")
        for name, value in saved.items():
            ema[name].copy_(value)
    try:
        rng.bit_generator.state = meta.numpy_rng
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{folder / 'last.json'}: its numpy_rng is not a {type(rng.bit_generator).__name__} "
                             f"state ({exc})") from None
    return meta
