"""TensorRT backend: name-based I/O (set_tensor_address + execute_async_v3), device and pinned host buffers
allocated once, one CUDA graph for the static path, warm-up, and the engine manifest checked against this GPU,
TensorRT flavour (TensorRT 10/11 or TensorRT for RTX, whichever built the engine) and version before anything is
deserialised.

The device-side work goes through a small `DeviceMemory` interface (cuda-python here), so the buffer logic is
tested with a fake engine and fake memory where no GPU and no TensorRT exist. Torch-free.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np

from dmfnet_edge.contract import INPUT_NAMES, OUTPUT_NAME, IOContract
from dmfnet_edge.errors import ModelFileError
from dmfnet_edge.runtime.base import check_network_inputs, run_with_contract
from dmfnet_edge.runtime.engine_manifest import EngineManifest, check_compatible, read_engine_manifest
from dmfnet_edge.runtime.toolchain import cudart, current_device, load_toolchain


@dataclass(frozen=True)
class IOTensor:
    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


def engine_io(engine: Any, trt: Any) -> list[IOTensor]:
    """The engine's I/O tensors by name (shapes must be static: the engine is built with a static profile)."""
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise ModelFileError(f"engine tensor '{name}' has a dynamic shape {shape}; build with a static profile")
        tensors.append(IOTensor(name, engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                                np.dtype(trt.nptype(engine.get_tensor_dtype(name))), shape))
    names = {t.name for t in tensors}
    if not set(INPUT_NAMES) | {OUTPUT_NAME} <= names:
        raise ModelFileError(f"engine I/O {sorted(names)} does not follow the contract {INPUT_NAMES} -> {OUTPUT_NAME}")
    return tensors


class DeviceMemory(Protocol):
    def alloc(self, nbytes: int) -> int: ...
    def host(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray: ...
    def to_device(self, dst: int, src: np.ndarray) -> None: ...
    def to_host(self, dst: np.ndarray, src: int) -> None: ...
    def stream(self) -> int: ...
    def synchronize(self) -> None: ...
    def capture(self, work: Any) -> Any: ...
    def launch(self, graph: Any) -> None: ...


class TensorRTRunner:
    backend = "tensorrt"

    def __init__(self, tensors: list[IOTensor], context: Any, memory: DeviceMemory, manifest: EngineManifest,
                 cuda_graph: bool = True) -> None:
        self.tensors = {t.name: t for t in tensors}
        self.context, self.memory, self.manifest = context, memory, manifest
        self.contract = IOContract.from_shape(list(self.tensors["mri"].shape))
        self.device_ptrs = {t.name: memory.alloc(t.nbytes) for t in tensors}
        self.host = {t.name: memory.host(t.shape, t.dtype) for t in tensors}
        for name, ptr in self.device_ptrs.items():
            context.set_tensor_address(name, ptr)
        self.model_name = manifest.model or "?"
        self._lock = threading.Lock()  # one set of preallocated buffers: calls from several threads take turns
        self._run_once()  # warm-up (and lazy initialisation) outside any capture
        self.graph = memory.capture(self._enqueue) if cuda_graph else None

    @classmethod
    def load(cls, engine_path: str | Path, cuda_graph: bool = True) -> TensorRTRunner:
        """Check the manifest against this GPU and TensorRT (flavour, version, target), then deserialise."""
        path = Path(engine_path)
        manifest = read_engine_manifest(path)
        toolchain = load_toolchain(manifest.toolchain.flavour)
        check_compatible(manifest, toolchain.name, toolchain.version, current_device(toolchain.version))
        for plugin in manifest.plugins:
            if plugin.library is not None:  # AOT plugins are embedded in the engine and need nothing here
                ctypes.CDLL(plugin.library, mode=ctypes.RTLD_GLOBAL)
        plan = path.read_bytes()
        runtime = toolchain.trt.Runtime(toolchain.trt.Logger(toolchain.trt.Logger.WARNING))
        toolchain.check_engine(runtime, plan, path.name)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise ModelFileError(f"{path}: {toolchain.describe()} could not deserialise the engine (see the log above)")
        return cls(engine_io(engine, toolchain.trt), engine.create_execution_context(), CudaMemory(), manifest,
                   cuda_graph)

    def _enqueue(self) -> None:
        for name in INPUT_NAMES:
            self.memory.to_device(self.device_ptrs[name], self.host[name])
        if not self.context.execute_async_v3(self.memory.stream()):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        self.memory.to_host(self.host[OUTPUT_NAME], self.device_ptrs[OUTPUT_NAME])

    def _run_once(self) -> None:
        if getattr(self, "graph", None) is not None:
            self.memory.launch(self.graph)
        else:
            self._enqueue()
        self.memory.synchronize()

    def _run(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray:
        with self._lock:
            self.host["mri"][...] = mri
            self.host["other"][...] = other
            self._run_once()
            return self.host[OUTPUT_NAME].astype(np.float32, copy=True)

    def fuse(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray:
        check_network_inputs(mri, other)
        return run_with_contract(self.contract, self._run, mri, other, self.manifest.engine_file)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model_name, "precision": self.manifest.precision,
                "engine": self.manifest.engine_file, "engine_sha256": self.manifest.engine_sha256,
                "device": msgspec.to_builtins(self.manifest.device), "cuda_graph": self.graph is not None,
                "weights_sha256": self.manifest.weights_sha256}


class CudaMemory:
    """DeviceMemory on cuda-python: device buffers, page-locked host buffers, one stream, CUDA graphs."""

    def __init__(self) -> None:
        self.rt = cudart()
        self._stream = self._check(self.rt.cudaStreamCreate())

    def _check(self, result: tuple) -> Any:
        err, *value = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA runtime error {int(err)}")
        return value[0] if value else None

    def alloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(nbytes)))

    def host(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        ptr = int(self._check(self.rt.cudaMallocHost(nbytes)))
        buffer = (ctypes.c_byte * nbytes).from_address(ptr)
        return np.frombuffer(buffer, dtype=dtype).reshape(shape)

    def to_device(self, dst: int, src: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, self._stream))

    def to_host(self, dst: np.ndarray, src: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, self._stream))

    def stream(self) -> int:
        return int(self._stream)

    def synchronize(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self._stream))

    def capture(self, work: Any) -> Any:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        self._check(self.rt.cudaStreamBeginCapture(self._stream, mode))
        work()
        graph = self._check(self.rt.cudaStreamEndCapture(self._stream))
        return self._check(self.rt.cudaGraphInstantiate(graph, 0))

    def launch(self, graph: Any) -> None:
        self._check(self.rt.cudaGraphLaunch(graph, self._stream))
