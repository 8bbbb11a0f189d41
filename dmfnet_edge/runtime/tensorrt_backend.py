"""TensorRT backend: name-based I/O (set_tensor_address + execute_async_v3), device and pinned host buffers
allocated once for the largest shape the engine's profile takes, a CUDA graph per input shape (least recently
used released beyond eight), warm-up, and the engine manifest checked against this GPU, TensorRT flavour (TensorRT
10/11 or TensorRT for RTX, whichever built the engine) and version before anything is deserialised.

Static engines run every call at their one shape (smaller images mirror-padded up to it, batches filled); dynamic
ones at each call's own shape within the profile. A runner holds its CUDA resources until `close()`, or the end of
a `with` block (as Polygraphy's runners activate and deactivate), also when a call raised. It runs on one device
(`--device cuda:N`): every entry point makes that device current in the calling thread and restores the previous
one. Plugin libraries the engine was built with are loaded by name from beside the engine (or DMFNET_PLUGIN_PATH),
never from the build machine's path, and only with the SHA-256 the manifest records.

The device-side work goes through a small `DeviceMemory` interface (cuda-python here), so the buffer logic is
tested with a fake engine and fake memory where no GPU and no TensorRT exist. Torch-free.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np

from dmfnet_edge.artifacts import sha256_file
from dmfnet_edge.contract import INPUT_NAMES, OUTPUT_NAME
from dmfnet_edge.errors import InputError, ModelFileError, one_line
from dmfnet_edge.runtime.base import check_network_inputs
from dmfnet_edge.runtime.engine_manifest import EngineManifest, check_compatible, read_engine_manifest
from dmfnet_edge.runtime.graph_cache import GraphCache
from dmfnet_edge.runtime.toolchain import check_device, cudart, current_device, load_toolchain, use_device

PLUGIN_PATH = "DMFNET_PLUGIN_PATH"  # folders (os.pathsep-separated) searched for plugin libraries before the engine's
Shape = tuple[int, ...]


@dataclass(frozen=True)
class IOTensor:
    name: str
    is_input: bool
    dtype: np.dtype
    shape: Shape  # a static tensor's shape, or the largest the engine's profile takes
    min_shape: Shape | None = None  # the smallest the profile takes (None: static)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @property
    def smallest(self) -> Shape:
        return self.min_shape or self.shape


def _dims(dims: Any) -> Shape:
    return tuple(int(d) for d in dims)


def _profile(engine: Any, name: str) -> tuple[Shape, Shape]:
    """(MIN, MAX) of an input: its static shape twice, or profile 0's range for a dynamic one."""
    shape = _dims(engine.get_tensor_shape(name))
    if all(d >= 0 for d in shape):
        return shape, shape
    low, _, high = (_dims(s) for s in engine.get_tensor_profile_shape(name, 0))
    return low, high


def engine_io(engine: Any, trt: Any) -> list[IOTensor]:
    """The engine's I/O tensors by name, each with the largest (and for a dynamic profile the smallest) shape it
    takes; the output follows the inputs' shape (N, 1, H, W), as the contract says."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    if not set(INPUT_NAMES) | {OUTPUT_NAME} <= set(names):
        raise ModelFileError(f"engine I/O {sorted(names)} does not follow the contract {INPUT_NAMES} -> {OUTPUT_NAME}")
    ranges = {name: _profile(engine, name) for name in INPUT_NAMES}
    if len(set(ranges.values())) != 1:
        raise ModelFileError(f"engine inputs take different shapes {ranges}; rebuild with 'dmfnet-export build'")
    low, high = ranges[INPUT_NAMES[0]]
    tensors = []
    for name in names:
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        tensors.append(IOTensor(name, is_input, dtype, high, None if low == high else low))
    return tensors


class DeviceMemory(Protocol):
    def alloc(self, nbytes: int) -> int: ...
    def host(self, shape: Shape, dtype: np.dtype) -> np.ndarray: ...
    def to_device(self, dst: int, src: np.ndarray) -> None: ...
    def to_host(self, dst: np.ndarray, src: int) -> None: ...
    def stream(self) -> int: ...
    def synchronize(self) -> None: ...
    def capture(self, work: Any) -> Any: ...
    def launch(self, graph: Any) -> None: ...
    # optional: release(graph), close() (free everything allocated), active() (a context making its device current)


def _view(buffer: np.ndarray, shape: Shape) -> np.ndarray:
    """The first prod(shape) elements of a (largest-shape) buffer, as `shape`: contiguous, same memory."""
    return buffer.reshape(-1)[: int(np.prod(shape))].reshape(shape)


class TensorRTRunner:
    backend = "tensorrt"

    def __init__(self, tensors: list[IOTensor], context: Any, memory: DeviceMemory, manifest: EngineManifest,
                 cuda_graph: bool = True, keep: Sequence[Any] = ()) -> None:
        """`keep`: TensorRT objects the context needs alive (engine, runtime), released after it by close()."""
        self.tensors = {t.name: t for t in tensors}
        self.context, self.memory, self.manifest, self._keep = context, memory, manifest, list(keep)
        mri = self.tensors["mri"]
        self.profile = (mri.smallest, mri.shape)
        self.dynamic = mri.min_shape is not None
        self.model_name = manifest.model or "?"
        self.cuda_graph, self.closed = cuda_graph, False
        self._lock = threading.Lock()  # one set of preallocated buffers: calls from several threads take turns
        self._graphs: GraphCache[Any] = GraphCache(self._release_graph)
        self._input_shape: Shape | None = None
        with self._active():
            self.device_ptrs = {t.name: memory.alloc(t.nbytes) for t in tensors}
            self.host = {t.name: memory.host(t.shape, t.dtype) for t in tensors}
            for name, ptr in self.device_ptrs.items():
                context.set_tensor_address(name, ptr)
            if not self.dynamic:
                self._prepare(mri.shape)  # warm-up (and lazy initialisation) outside any capture, then capture

    @classmethod
    def load(cls, engine_path: str | Path, cuda_graph: bool = True, device: int = 0,
             plugin_dirs: Sequence[Path] = (), weights_from: Path | None = None) -> TensorRTRunner:
        """Check the manifest (and the plugin libraries it records) against this GPU and TensorRT (flavour,
        version, target), then deserialise on `device`; a weight-stripped engine is refitted from the ONNX graph
        it was built from (`weights_from`, default: the manifest's graph beside the engine), hash-checked."""
        path = Path(engine_path)
        manifest = read_engine_manifest(path)
        libraries = plugin_libraries(manifest, path, plugin_dirs)
        toolchain = load_toolchain(manifest.toolchain.flavour)
        check_device(device)
        check_compatible(manifest, toolchain.name, toolchain.version, current_device(toolchain.version, device))
        for library in libraries:
            load_library(library)
        plan = path.read_bytes()
        with use_device(device):
            runtime = toolchain.trt.Runtime(toolchain.trt.Logger(toolchain.trt.Logger.WARNING))
            toolchain.check_engine(runtime, plan, path.name)
            engine = runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise ModelFileError(f"{path}: {toolchain.describe()} could not deserialise the engine (see the log "
                                     "above)")
            if manifest.build.strip_weights:
                refit_from_graph(toolchain.trt, engine, manifest, weights_from or path.with_name(manifest.onnx_file))
            tensors, context = engine_io(engine, toolchain.trt), engine.create_execution_context()
        memory = CudaMemory(device)
        try:
            return cls(tensors, context, memory, manifest, cuda_graph, keep=(engine, runtime))
        except BaseException:
            memory.close()
            raise

    def _active(self) -> contextlib.AbstractContextManager:
        active = getattr(self.memory, "active", None)  # a memory without devices (a fake) has no device to select
        return active() if active is not None else contextlib.nullcontext()

    def _enqueue(self, shape: Shape) -> None:
        for name in INPUT_NAMES:
            self.memory.to_device(self.device_ptrs[name], _view(self.host[name], shape))
        if not self.context.execute_async_v3(self.memory.stream()):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        self.memory.to_host(_view(self.host[OUTPUT_NAME], shape), self.device_ptrs[OUTPUT_NAME])

    def _set_shape(self, shape: Shape) -> None:
        if self.dynamic and shape != self._input_shape:
            for name in INPUT_NAMES:
                if not self.context.set_input_shape(name, shape):
                    raise RuntimeError(f"TensorRT refused the input shape {shape} for '{name}'")
            self._input_shape = shape

    def _prepare(self, shape: Shape) -> Any:
        """The CUDA graph of `shape` (None without graphs): run once uncaptured (TensorRT initialises lazily on
        the first run of a shape), then capture."""
        def make() -> Any:
            self._enqueue(shape)
            self.memory.synchronize()
            return self.memory.capture(lambda: self._enqueue(shape))

        return self._graphs.get(shape, make) if self.cuda_graph else None

    def _release_graph(self, graph: Any) -> None:
        release = getattr(self.memory, "release", None)
        if release is not None:
            release(graph)

    @property
    def graph(self) -> Any:
        """The static engine's CUDA graph (None for a dynamic engine or without graphs)."""
        return None if self.dynamic else self._graphs.peek(self.profile[1])

    def _run(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray:
        shape = mri.shape
        with self._lock, self._active():
            if self.closed:
                raise RuntimeError("this TensorRT runner is closed")
            self._set_shape(shape)
            _view(self.host["mri"], shape)[...] = mri
            _view(self.host["other"], shape)[...] = other
            graph = self._prepare(shape)
            if graph is not None:
                self.memory.launch(graph)
            else:
                self._enqueue(shape)
            self.memory.synchronize()
            return _view(self.host[OUTPUT_NAME], shape).astype(np.float32, copy=True)

    def fuse(self, mri: np.ndarray, other: np.ndarray) -> np.ndarray:
        check_network_inputs(mri, other)
        return run_in_profile(self.profile, self._run, mri, other, self.manifest.engine_file)

    def close(self) -> None:
        """Release the CUDA graphs, the buffers, the stream and the TensorRT objects (idempotent)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                with self._active():
                    self._graphs.clear()
            finally:
                close = getattr(self.memory, "close", None)
                self.context, self._keep = None, []  # the context before the engine and runtime it came from
                if close is not None:
                    close()

    def __enter__(self) -> TensorRTRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model_name, "precision": self.manifest.precision,
                "engine": self.manifest.engine_file, "engine_sha256": self.manifest.engine_sha256,
                "device": msgspec.to_builtins(self.manifest.device), "cuda_graph": self.cuda_graph,
                "profile": {"min": list(self.profile[0]), "max": list(self.profile[1])},
                "weights_sha256": self.manifest.weights_sha256}


def run_in_profile(profile: tuple[Shape, Shape], run: Any, mri: np.ndarray, other: np.ndarray,
                   name: str) -> np.ndarray:
    """Call `run` on inputs an engine's profile (MIN, MAX of (N, 1, H, W)) takes: images smaller than MIN are
    mirror-padded up to it (and cropped back), larger than MAX refused; a batch goes in pieces of at most MAX's N,
    each filled with copies up to MIN's N. A static engine is the profile MIN = MAX."""
    (low_n, _, low_h, low_w), (high_n, _, high_h, high_w) = profile
    n, _, h, w = mri.shape
    if h > high_h or w > high_w:
        fix = ("export with 'dmfnet-export onnx --dynamic' (and rebuild) for larger images" if profile[0] == profile[1]
               else "rebuild with 'dmfnet-export build --shapes MIN:OPT:MAX' covering it")
        raise InputError(f"{name} was built for images up to {high_w}x{high_h}, this one needs {w}x{h}; {fix}")
    pad = ((0, 0), (0, 0), (0, max(h, low_h) - h), (0, max(w, low_w) - w))
    if any(p[1] for p in pad):
        mri, other = np.pad(mri, pad, mode="reflect"), np.pad(other, pad, mode="reflect")
    outputs = []
    for i in range(0, n, high_n):
        a, b = mri[i:i + high_n], other[i:i + high_n]
        short = max(low_n - a.shape[0], 0)
        if short:
            a, b = (np.concatenate([x, np.repeat(x[-1:], short, axis=0)]) for x in (a, b))
        outputs.append(run(np.ascontiguousarray(a), np.ascontiguousarray(b))[:a.shape[0] - short])
    return np.concatenate(outputs)[:, :, :h, :w]


def plugin_libraries(manifest: EngineManifest, engine_path: Path, search: Sequence[Path] = ()) -> list[Path]:
    """The plugin libraries an engine was built with, found by file name in `search`, then in DMFNET_PLUGIN_PATH,
    then beside the engine (the first file of that name is the one), each with the SHA-256 its manifest records.
    The path the build recorded is another machine's, or a build folder: it is never loaded from."""
    folders = [*search, *(Path(p) for p in os.environ.get(PLUGIN_PATH, "").split(os.pathsep) if p), engine_path.parent]
    found = []
    for plugin in manifest.plugins:
        if plugin.library is None:
            continue  # an AOT plugin: embedded in the engine, nothing to load
        name = Path(plugin.library).name
        if name in ("", ".", ".."):
            raise ModelFileError(f"{engine_path}: its manifest names the plugin library '{plugin.library}', which is "
                                 "not a file name; rebuild the engine with 'dmfnet-export build --plugin-lib'")
        path = next((f / name for f in folders if (f / name).is_file()), None)
        if path is None:
            raise ModelFileError(f"{engine_path}: plugin library {name} (built with {plugin.library}) not found beside "
                                 f"the engine or in {PLUGIN_PATH}; put the library the engine was built with there")
        if plugin.sha256 is not None and sha256_file(path) != plugin.sha256:
            raise ModelFileError(f"{path}: SHA-256 differs from the plugin library {engine_path.name} was built with "
                                 f"({plugin.sha256[:12]}...); give that library, or rebuild the engine with this one")
        found.append(path)
    return found


def refit_from_graph(trt: Any, engine: Any, manifest: EngineManifest, graph: Path) -> None:
    """Fill a weight-stripped engine's weights from the ONNX graph it was built from: only that graph (its SHA-256
    is the manifest's), so new weights reach a deployed engine through a new graph and a new manifest, never by
    swapping a file beside it."""
    if not graph.is_file():
        raise ModelFileError(f"{manifest.engine_file}: its weights were stripped; it needs the graph it was built "
                             f"from, {graph}, which is missing (give it beside the engine)")
    actual = sha256_file(graph)
    if actual != manifest.onnx_sha256:
        raise ModelFileError(f"{graph}: SHA-256 {actual[:12]}... is not the graph {manifest.engine_file} was built "
                             f"from ({manifest.onnx_sha256[:12]}...); refit refused: rebuild the engine for this graph")
    logger = trt.Logger(trt.Logger.WARNING)
    refitter = trt.Refitter(engine, logger)
    refit_parser = trt.OnnxParserRefitter(refitter, logger)
    if not refit_parser.refit_from_file(str(graph)) or not refitter.refit_cuda_engine():
        errors = "; ".join(str(refit_parser.get_error(i)) for i in range(refit_parser.num_errors)) or "no detail"
        raise ModelFileError(f"{graph}: refitting {manifest.engine_file} from it failed ({one_line(errors, 160)})")


def load_library(path: Path) -> None:
    try:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be loaded ({one_line(str(exc), 160)}); give a plugin library built for "
                             "this TensorRT and CUDA") from None


class CudaMemory:
    """DeviceMemory on cuda-python for one device: device buffers, page-locked host buffers, one non-blocking
    stream, CUDA graphs captured in thread-local mode. `close()` releases everything it allocated; every call runs
    with its device current. `rt` is the CUDA runtime module (cuda-python's; a fake in the tests)."""

    def __init__(self, device: int = 0, rt: Any | None = None) -> None:
        self.rt, self.device = rt or cudart(), device
        self._buffers: list[int] = []
        self._host: list[int] = []
        self._graphs: list[Any] = []
        self._stream: Any = None
        with self.active():
            self._stream = self._check(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking))

    def active(self) -> contextlib.AbstractContextManager:
        return use_device(self.device, self.rt)

    def _check(self, result: Any) -> Any:
        err, *value = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA runtime error {int(err)} on cuda:{self.device}")
        return value[0] if value else None

    def alloc(self, nbytes: int) -> int:
        with self.active():
            ptr = int(self._check(self.rt.cudaMalloc(nbytes)))
        self._buffers.append(ptr)
        return ptr

    def host(self, shape: Shape, dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        with self.active():
            ptr = int(self._check(self.rt.cudaMallocHost(nbytes)))
        self._host.append(ptr)
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
        """Capture `work` on the stream into an instantiated graph. Thread-local mode: another thread's unsafe
        CUDA call does not break this capture, nor this capture that thread. If `work` raises, the capture is
        ended and its partial graph destroyed before the error goes on (the stream stays usable)."""
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        with self.active():
            self._check(self.rt.cudaStreamBeginCapture(self._stream, mode))
            try:
                work()
            except BaseException:
                _err, partial = self.rt.cudaStreamEndCapture(self._stream)
                if partial:
                    self.rt.cudaGraphDestroy(partial)
                raise
            graph = self._check(self.rt.cudaStreamEndCapture(self._stream))
            try:
                executable = self._check(self.rt.cudaGraphInstantiate(graph, 0))
            finally:
                self.rt.cudaGraphDestroy(graph)  # the instantiated graph no longer needs its template
        self._graphs.append(executable)
        return executable

    def launch(self, graph: Any) -> None:
        self._check(self.rt.cudaGraphLaunch(graph, self._stream))

    def release(self, graph: Any) -> None:
        if graph in self._graphs:
            self._graphs.remove(graph)
            with self.active():
                self._check(self.rt.cudaGraphExecDestroy(graph))

    def close(self) -> None:
        """Release every graph, buffer and the stream (idempotent): all are released even if one release fails,
        whose error is raised afterwards."""
        if self._stream is None:
            return
        releases = [(self.rt.cudaGraphExecDestroy, g) for g in self._graphs]
        releases += [(self.rt.cudaFreeHost, p) for p in self._host] + [(self.rt.cudaFree, p) for p in self._buffers]
        self._graphs, self._host, self._buffers = [], [], []
        stream, self._stream = self._stream, None
        errors = []
        with self.active():
            for release, handle in [(self.rt.cudaStreamSynchronize, stream), *releases,
                                    (self.rt.cudaStreamDestroy, stream)]:
                try:
                    self._check(release(handle))
                except RuntimeError as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]
