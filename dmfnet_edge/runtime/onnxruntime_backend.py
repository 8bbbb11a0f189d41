"""ONNX Runtime backend (the embedded default): torch-free, CPU by default.

A static graph (fixed N x H x W) still serves smaller images: they are mirror-padded up to the graph's size
and cropped back; larger ones are refused with the fix (export with --dynamic). A static batch is filled by
running the batch in slices.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.errors import InputError, ModelFileError
from dmfnet_edge.export.contract import INPUT_NAMES, OUTPUT_NAME, contract_of, read_manifest
from dmfnet_edge.runtime.base import check_network_inputs


class OnnxRuntimeRunner:
    backend = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike[str], threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        ort = require("onnxruntime", purpose="the onnxruntime backend")
        self.path = Path(onnx_path)
        self.manifest = read_manifest(self.path)
        self.contract = contract_of(self.manifest)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for invalid graphs
            raise ModelFileError(f"{self.path}: ONNX Runtime cannot load the graph ({exc})") from None
        names = tuple(i.name for i in self.session.get_inputs())
        if names != INPUT_NAMES or self.session.get_outputs()[0].name != OUTPUT_NAME:
            raise ModelFileError(f"{self.path}: graph I/O {names} does not follow the contract {INPUT_NAMES}")
        self.model_name = self.manifest.get("model", "?")
        self.precision = self.manifest["precision"]
        self.threads = threads
        self._ort_version = ort.__version__

    def _run(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {"mri": mri, "other": other})[0]

    def _fit_static(self, mri: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sh, sw = self.contract.static_size
        h, w = mri.shape[2:]
        if h > sh or w > sw:
            raise InputError(f"{self.path.name} was exported for {sw}x{sh} images, this one needs {w}x{h}; "
                             "export with 'dmfnet-export onnx --dynamic' for larger images")
        pad = ((0, 0), (0, 0), (0, sh - h), (0, sw - w))
        return np.pad(mri, pad, mode="reflect"), np.pad(other, pad, mode="reflect")

    def fuse(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray:
        check_network_inputs(mri, other)
        h, w = mri.shape[2:]
        if self.contract.static_size is not None:
            mri, other = self._fit_static(mri, other)
        n = mri.shape[0]
        step = self.contract.static_batch or n
        outputs = []
        for i in range(0, n, step):
            a, b = mri[i:i + step], other[i:i + step]
            short = step - a.shape[0]
            if short:  # fill a static batch with copies of the last pair, then drop their outputs
                a, b = (np.concatenate([x, np.repeat(x[-1:], short, axis=0)]) for x in (a, b))
            outputs.append(self._run(a, b)[:step - short])
        return np.concatenate(outputs)[:, :, :h, :w]

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "device": "cpu", "model": self.model_name, "precision": self.precision,
                "onnx": self.path.name, "onnx_sha256": self.manifest["onnx_sha256"],
                "weights_sha256": self.manifest.get("weights_sha256"), "onnxruntime": self._ort_version,
                "threads": self.threads, "providers": self.session.get_providers()}
