"""PyTorch backend (the reference): eager FP32 on CPU or CUDA."""

from __future__ import annotations

from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.artifacts import WeightsSidecar
from dmfnet_edge.errors import InputError
from dmfnet_edge.runtime.base import Closing, check_network_inputs


class TorchRunner(Closing):
    """Runs a DMFNet module; `TorchRunner.load('edge')` reads shipped or saved weights."""

    backend = "torch"

    def __init__(self, module: Any, meta: WeightsSidecar | None = None, device: str = "cpu") -> None:
        torch = require("torch", purpose="the torch backend")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"device '{device}' is not available here; use --device cpu")
        self._torch = torch
        self.device = torch.device(device)
        self.model = module.eval().to(self.device)
        self.meta = meta
        self.model_name = module.cfg.name
        self.weights_sha256 = (meta.weights_sha256 if meta else None) or ""

    @classmethod
    def load(cls, model: str = "edge", device: str = "cpu", threads: int | None = None) -> TorchRunner:
        torch = require("torch", purpose="the torch backend")
        from dmfnet_edge.models.checkpoint import load_or_build

        if threads:
            torch.set_num_threads(threads)
        module, meta = load_or_build(model)
        return cls(module, meta, device)

    def fuse(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray:
        check_network_inputs(mri, other)
        torch = self._torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(mri).to(self.device), torch.from_numpy(other).to(self.device))
        return out.float().cpu().numpy()

    def close(self) -> None:
        self.model = None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "device": str(self.device), "model": self.model_name,
                "weights_sha256": self.weights_sha256, "torch": str(self._torch.__version__),
                "threads": self._torch.get_num_threads()}
