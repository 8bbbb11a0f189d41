"""ONNX Runtime backend (the embedded default): torch-free, CPU by default.

A static graph (fixed N x H x W) still serves smaller images and any batch (runtime.base.run_with_contract).
An int8-tensorrt graph (explicit Q/DQ, made for TensorRT engines) runs here for accuracy checks only, with ONNX
Runtime's Q/DQ fusion switched off (`SIMULATE_QDQ`): every QuantizeLinear/DequantizeLinear pair then rounds and
rescales in float around an FP32 layer, which is the arithmetic TensorRT's INT8 kernels carry out exactly (int32
accumulation). With the fusion on, ONNX Runtime would run its own integer kernels instead, whose results depend
on the CPU (uint8 x int8 products saturate on x86 CPUs without VNNI) and say little about the engine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.contract import INPUT_NAMES, OUTPUT_NAME, read_manifest
from dmfnet_edge.errors import DmfnetError, ModelFileError
from dmfnet_edge.precisions import PRECISIONS
from dmfnet_edge.runtime.base import Closing, check_network_inputs, run_with_contract
from dmfnet_edge.runtime.ort_cache import optimised_session

SIMULATE_QDQ = ("session.disable_quant_qdq", "1")


class OnnxRuntimeRunner(Closing):
    backend = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike[str], threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        ort = require("onnxruntime", purpose="the onnxruntime backend")
        self.path = Path(onnx_path)
        self.manifest = read_manifest(self.path)
        if not self.manifest.runs_on_onnxruntime:
            raise ModelFileError(f"{self.path.name} holds TensorRT plugin nodes; build an engine from it with "
                                 "'dmfnet-export build', or run the plain graph on ONNX Runtime")
        self.contract = self.manifest.contract
        self.simulate_qdq = PRECISIONS[self.manifest.precision].onnxruntime == "simulated"

        def options() -> Any:
            made = ort.SessionOptions()
            if self.simulate_qdq:
                made.add_session_config_entry(*SIMULATE_QDQ)
            if threads:
                made.intra_op_num_threads = threads
                made.inter_op_num_threads = 1
            return made

        try:
            self.session = optimised_session(ort, self.path, self.manifest.onnx_sha256, options,
                                             providers or ["CPUExecutionProvider"],
                                             f"simulate_qdq={int(self.simulate_qdq)}")
        except DmfnetError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for invalid graphs
            raise ModelFileError(f"{self.path}: ONNX Runtime cannot load the graph ({exc})") from None
        names = tuple(i.name for i in self.session.get_inputs())
        if names != INPUT_NAMES or self.session.get_outputs()[0].name != OUTPUT_NAME:
            raise ModelFileError(f"{self.path}: graph I/O {names} does not follow the contract {INPUT_NAMES}")
        self.model_name = self.manifest.model or "?"
        self.precision = self.manifest.precision
        self.threads = threads
        self._ort_version = ort.__version__

    def _run(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {"mri": mri, "other": other})[0]

    def fuse(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray:
        check_network_inputs(mri, other)
        return run_with_contract(self.contract, self._run, mri, other, self.path.name)

    def close(self) -> None:
        """Drop the session (ONNX Runtime frees its arena with it)."""
        self.session = None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "device": "cpu", "model": self.model_name, "precision": self.precision,
                "onnx": self.path.name, "onnx_sha256": self.manifest.onnx_sha256,
                "weights_sha256": self.manifest.weights_sha256, "onnxruntime": self._ort_version,
                "threads": self.threads, "providers": self.session.get_providers(),
                "qdq_simulated_in_float": self.simulate_qdq}
