"""GPU fast path: PyTorch on CUDA with FP16/BF16 autocast, channels_last, the batched six passes with the
pruned tail, the fused cross-modal attention kernel and one CUDA graph per input shape.

Inputs and outputs follow the Runner contract (float32 numpy arrays); the graph replays on static device
buffers, so a call is: pinned host -> device copy, replay, device -> host copy.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.errors import EnvironmentProblem, InputError
from dmfnet_edge.runtime.base import check_network_inputs

DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


class GpuRunner:
    backend = "gpu"

    def __init__(self, model: str = "edge", device: str = "cuda", precision: str = "fp16",
                 fused_kernels: bool = True, cuda_graphs: bool = True, allow_random: bool = False) -> None:
        """`allow_random`: a preset name other than the shipped one gives seeded random weights (benchmarks of
        the paper size); without it a preset name is refused, as every other backend refuses it."""
        torch = require("torch", purpose="the gpu backend")
        if precision not in DTYPES:
            raise InputError(f"--precision {precision}: the gpu backend runs {', '.join(DTYPES)}")
        from dmfnet_edge.models.checkpoint import load_or_build
        from dmfnet_edge.models.fusion import CrossModalAttention

        module, self.meta = load_or_build(model, allow_random)  # input errors before environment ones
        if not torch.cuda.is_available():
            raise EnvironmentProblem("--backend gpu needs a CUDA GPU visible to PyTorch; use onnxruntime or torch")
        self._torch = torch
        self.device = torch.device(device)
        for layer in module.modules():
            if isinstance(layer, CrossModalAttention):
                layer.use_fused_kernel = fused_kernels
        self.model = module.eval().to(self.device).to(memory_format=torch.channels_last)
        self.model_name, self.precision = module.cfg.name, precision
        self.dtype = getattr(torch, DTYPES[precision])
        self.fused_kernels, self.cuda_graphs = fused_kernels, cuda_graphs
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any, Any]] = {}
        self._lock = threading.Lock()  # CUDA graphs replay on shared static buffers: one call at a time

    def _forward(self, a, b):
        torch = self._torch
        with torch.inference_mode(), torch.autocast("cuda", dtype=self.dtype, enabled=self.precision != "fp32"):
            return self.model(a.contiguous(memory_format=torch.channels_last),
                              b.contiguous(memory_format=torch.channels_last))

    def _graph(self, shape: tuple[int, ...]):
        """Capture (once per shape) a CUDA graph of the forward pass on static buffers."""
        if shape not in self._graphs:
            torch = self._torch
            a = torch.zeros(shape, device=self.device)
            b = torch.zeros(shape, device=self.device)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up: cuDNN autotuning and lazy initialisation happen outside capture
                    self._forward(a, b)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._forward(a, b)
            self._graphs[shape] = (graph, a, b, out)
        return self._graphs[shape]

    def fuse(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray:
        check_network_inputs(mri, other)
        torch = self._torch
        a = torch.from_numpy(mri).pin_memory().to(self.device, non_blocking=True)
        b = torch.from_numpy(other).pin_memory().to(self.device, non_blocking=True)
        if not self.cuda_graphs:
            return self._forward(a, b).float().cpu().numpy()
        with self._lock:
            graph, static_a, static_b, out = self._graph(tuple(mri.shape))
            static_a.copy_(a)
            static_b.copy_(b)
            graph.replay()
            return out.float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        torch = self._torch
        return {"backend": self.backend, "device": torch.cuda.get_device_name(self.device), "model": self.model_name,
                "precision": self.precision, "fused_kernels": self.fused_kernels, "cuda_graphs": self.cuda_graphs,
                "weights_sha256": self.meta.weights_sha256, "torch": str(torch.__version__)}
