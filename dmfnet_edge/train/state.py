"""Resumable training state as safetensors + JSON: trainable weights, optimizer moments, step, RNG states."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from dmfnet_edge.artifacts import read_json, write_json_atomic
from dmfnet_edge.errors import ModelFileError
from dmfnet_edge.models.checkpoint import save_tensors_atomic


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = opt.state_dict()
    tensors = {f"opt.{idx}.{key}": value for idx, slots in state["state"].items()
               for key, value in slots.items() if torch.is_tensor(value)}
    return tensors, {"param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": groups["param_groups"]}


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
    write_json_atomic(folder / "last.json", {"step": step, "optimizer": opt_meta,
                                             "numpy_rng": rng.bit_generator.state, **info})


def load_state(folder: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, rng: np.random.Generator,
               torch_gen: torch.Generator, ema: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Restore what `save_state` wrote (the EMA weights into `ema`, where both have them); returns the JSON."""
    meta = read_json(folder / "last.json")
    try:
        tensors = load_file(str(folder / "last.safetensors"))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise ModelFileError(f"{folder / 'last.safetensors'}: cannot be read ({exc})") from None
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    module.load_state_dict(model_state, strict=True)
    opt.load_state_dict(_unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("opt.")},
                                             meta["optimizer"]))
    torch_gen.set_state(tensors["rng.torch"])
    if ema is not None:
        saved = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
        if saved and set(saved) != set(ema):
            raise ModelFileError(f"{folder / 'last.safetensors'}: its EMA weights do not match this network")
        for name, value in saved.items():
            ema[name].copy_(value)
    rng.bit_generator.state = meta["numpy_rng"]
    return meta
