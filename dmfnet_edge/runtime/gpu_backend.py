"""GPU fast path: PyTorch on CUDA with FP16/BF16 autocast, channels_last, the batched UNet passes (2 sources x
T noise levels) with the pruned tail, the fused cross-modal attention kernel (a prebuilt extension:
models/cuda_extension.py) and a CUDA graph per input shape (the eight used last are kept; older ones are
released with their static buffers).

Inputs and outputs follow the Runner contract (float32 numpy arrays); the graph replays on static device
buffers, so a call is: host -> device copy, replay, device -> host copy. `fuse_tensors` takes and returns CUDA
tensors (no host copies), for callers whose data already lives on the GPU and for like-for-like timings.
The runner works on one device (`--device cuda:N`), made current for each call; `close()` (or the end of a `with`
block) releases its graphs, model and cached memory.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge.errors import EnvironmentProblem, InputError
from dmfnet_edge.runtime.base import check_network_inputs
from dmfnet_edge.runtime.graph_cache import GraphCache
from dmfnet_edge.runtime.toolchain import check_device

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
        self._torch = torch
        self.device = _cuda_device(torch, device)
        if fused_kernels:
            from dmfnet_edge.models import cuda_extension

            cuda_extension.load()  # prebuilt, or refused here in one line (never compiled at run time)
        for layer in module.modules():
            if isinstance(layer, CrossModalAttention):
                layer.use_fused_kernel = fused_kernels
        with torch.cuda.device(self.device):
            self.model = module.eval().to(self.device).to(memory_format=torch.channels_last)
        self.model_name, self.precision = module.cfg.name, precision
        self.dtype = getattr(torch, DTYPES[precision])
        self.fused_kernels, self.cuda_graphs, self.closed = fused_kernels, cuda_graphs, False
        self._graphs: GraphCache[tuple[Any, Any, Any, Any]] = GraphCache(lambda entry: entry[0].reset())
        self._lock = threading.Lock()  # CUDA graphs replay on shared static buffers: one call at a time

    def _forward(self, a, b):
        torch = self._torch
        with torch.inference_mode(), torch.autocast("cuda", dtype=self.dtype, enabled=self.precision != "fp32"):
            return self.model(a.contiguous(memory_format=torch.channels_last),
                              b.contiguous(memory_format=torch.channels_last))

    def _capture(self, shape: tuple[int, ...]) -> tuple[Any, Any, Any, Any]:
        """A CUDA graph of the forward pass on static buffers of `shape`. Captured in thread-local mode (another
        thread's CUDA calls neither break it nor are broken by it); a capture that fails is released, not kept."""
        torch = self._torch
        a = torch.zeros(shape, device=self.device)
        b = torch.zeros(shape, device=self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up: cuDNN autotuning and lazy initialisation happen outside capture
                self._forward(a, b)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                out = self._forward(a, b)
        except BaseException:
            graph.reset()
            raise
        return graph, a, b, out

    def fuse_tensors(self, a, b):
        """(N, 1, H, W) float32 CUDA tensors on this runner's device -> the fused luma, a CUDA tensor (float32)."""
        torch = self._torch
        with self._lock, torch.cuda.device(self.device):
            if self.closed:
                raise RuntimeError("this gpu runner is closed")
            if not self.cuda_graphs:
                return self._forward(a, b).float()
            graph, static_a, static_b, out = self._graphs.get(tuple(a.shape), lambda: self._capture(tuple(a.shape)))
            static_a.copy_(a)
            static_b.copy_(b)
            graph.replay()
            result = out.float()
            return result.clone() if result is out else result  # never the static buffer the next replay overwrites

    def fuse(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray:
        check_network_inputs(mri, other)
        torch = self._torch
        a = torch.from_numpy(mri).to(self.device)
        b = torch.from_numpy(other).to(self.device)
        return self.fuse_tensors(a, b).cpu().numpy()

    def close(self) -> None:
        """Release the CUDA graphs (and their static buffers), the model and the memory torch keeps cached."""
        torch = self._torch
        with self._lock:
            if self.closed:
                return
            self.closed = True
            with torch.cuda.device(self.device):
                self._graphs.clear()
                self.model = None
                torch.cuda.synchronize(self.device)
                torch.cuda.empty_cache()

    def __enter__(self) -> GpuRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        torch = self._torch
        return {"backend": self.backend, "device": torch.cuda.get_device_name(self.device), "model": self.model_name,
                "precision": self.precision, "fused_kernels": self.fused_kernels, "cuda_graphs": self.cuda_graphs,
                "weights_sha256": self.meta.weights_sha256, "torch": str(torch.__version__)}


def _cuda_device(torch: Any, device: str) -> Any:
    """torch.device for `device` (cuda or cuda:N), refused in one line where this machine has no such GPU."""
    index = torch.device(device).index or 0
    if not torch.cuda.is_available():
        raise EnvironmentProblem("--backend gpu needs a CUDA GPU visible to PyTorch; use onnxruntime or torch")
    check_device(index, count=torch.cuda.device_count())
    return torch.device("cuda", index)
