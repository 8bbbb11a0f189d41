"""Pre-optimised ONNX Runtime graphs, cached per graph, ONNX Runtime version and CPU.

Building a session from a plain graph runs ONNX Runtime's graph optimisers (constant folding, fusions, the
blocked-layout rewrite of every convolution) in every new process. The first session of a graph saves the
optimised graph to the cache (`DMFNET_CACHE_DIR`, else `$XDG_CACHE_HOME/dmfnet-edge`, else
`~/.cache/dmfnet-edge`; `DMFNET_ORT_CACHE=off` switches it off), and every session, the first included, runs
the saved graph with the optimisers off: the same kernels on the same graph, so the outputs are bit-identical
with and without the cache (tests/runtime/test_ort_cache.py checks it).

The entry's key is the SHA-256 of the source graph (its manifest's), the ONNX Runtime version, the CPU's model
and instruction-set flags (the blocked layout is CPU-specific) and the session settings that change the graph.
An entry is `KEY.onnx` beside `KEY.json` (an `OrtCacheRecord`: what it was made from and its own SHA-256). It
is used only when the record reads through the one door, names the same key and the graph's bytes (read
bounded, regular files only) hash to the recorded value; anything else (a truncated or edited graph, a foreign
record) is ignored and replaced, never trusted. A FIFO, socket or device at an entry's name is ignored but not
replaced (outputs are never written over special files), so that entry stays unused. A cache that cannot be
written (read-only home, full disk, a file-size limit) costs only the optimisation time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from dmfnet_edge.errors import DmfnetError, RecordError
from dmfnet_edge.files import publish_staged, stage_file, staging_path
from dmfnet_edge.records import SHA256, Record, read_bounded

log = logging.getLogger(__name__)

ENV_DIR = "DMFNET_CACHE_DIR"
ENV_SWITCH = "DMFNET_ORT_CACHE"
GRAPH_LIMIT = 256 << 20  # a cached graph larger than this is not one of ours (edge: 6 MB, paper: about 100 MB)


class OrtCacheRecord(Record, kw_only=True):
    """CACHE/onnxruntime/KEY.json beside KEY.onnx: an optimised ONNX Runtime graph and what it was made from."""

    KIND: ClassVar[str] = "ONNX Runtime cache record"
    LIMIT: ClassVar[int] = 64 << 10
    ALWAYS: ClassVar[tuple[str, ...]] = ("format", "version")
    FIX: ClassVar[str] = "it is rebuilt"

    format: Literal["dmfnet-edge-ort-cache"] = "dmfnet-edge-ort-cache"
    version: Literal[1] = 1
    key: Annotated[str, SHA256]
    source_sha256: Annotated[str, SHA256]
    onnxruntime: Annotated[str, msgspec.Meta(max_length=64)]
    cpu: Annotated[str, msgspec.Meta(max_length=512)]
    settings: Annotated[str, msgspec.Meta(max_length=1024)]
    graph_sha256: Annotated[str, SHA256]
    graph_bytes: Annotated[int, msgspec.Meta(ge=1, le=GRAPH_LIMIT)]


def cache_root() -> Path | None:
    """The cache folder, or None when switched off."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() in ("0", "off", "no", "false"):
        return None
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dmfnet-edge"


def cpu_fingerprint() -> str:
    """CPU model and a digest of its flag list (what the optimised graph's kernels were chosen for)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            text = handle.read(1 << 20)
    except OSError:
        return platform.machine() or "unknown"
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() not in fields:
            fields[name.strip()] = value.strip()
    flags = " ".join(sorted(fields.get("flags", fields.get("Features", "")).split()))
    digest = hashlib.sha256(flags.encode()).hexdigest()[:16]
    return f"{fields.get('model name', platform.machine())}; flags {digest}"[:512]


def _describe(ort: Any, source_sha256: str, settings: str) -> dict[str, str]:
    fields = {"source_sha256": source_sha256, "onnxruntime": ort.__version__, "cpu": cpu_fingerprint(),
              "settings": settings}
    fields["key"] = hashlib.sha256("\n".join(fields[k] for k in sorted(fields)).encode()).hexdigest()
    return fields


def _cached(folder: Path, fields: dict[str, str]) -> bytes | None:
    graph, record_path = folder / f"{fields['key']}.onnx", folder / f"{fields['key']}.json"
    if not record_path.exists() and not record_path.is_symlink():
        return None
    try:
        record = OrtCacheRecord.read(record_path)
        if any(getattr(record, name) != value for name, value in fields.items()):
            raise RecordError(f"{record_path}: made for another graph, runtime or CPU")
        data = read_bounded(graph, record.graph_bytes, "cached ONNX Runtime graph")
        if len(data) != record.graph_bytes or hashlib.sha256(data).hexdigest() != record.graph_sha256:
            raise RecordError(f"{graph}: does not match its record")
    except (DmfnetError, OSError) as exc:
        log.info("ONNX Runtime cache entry ignored, rebuilding it: %s", exc)
        return None
    return data


def _optimise_into_cache(ort: Any, source: Path, options: Any, providers: list[str], folder: Path,
                         fields: dict[str, str]) -> bytes:
    """Run ONNX Runtime's optimisers on `source` once, writing the optimised graph straight into a staged file
    beside its entry; publish it with its record (the completeness marker last) and return its bytes."""
    graph, record_path = folder / f"{fields['key']}.onnx", folder / f"{fields['key']}.json"
    staged = [(staging_path(graph), graph)]
    try:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(staged[0][0])
        options.log_severity_level = 3  # not the warning that the saved graph is CPU-specific: the key says so
        ort.InferenceSession(str(source), options, providers=providers)
        data = staged[0][0].read_bytes()
        record = OrtCacheRecord(graph_sha256=hashlib.sha256(data).hexdigest(), graph_bytes=len(data), **fields)
        staged.append((stage_file(record_path, record.encode()), record_path))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    publish_staged(staged)
    return data


def optimised_session(ort: Any, source: Path, source_sha256: str, make_options: Any, providers: list[str],
                      settings: str) -> Any:
    """An InferenceSession for `source` that runs its cached optimised graph (built and saved when missing).
    `make_options()` returns fresh SessionOptions with the caller's settings; `settings` names those of them
    that change the optimised graph (part of the key). Falls back to optimising in this process, exactly as
    without a cache, when the cache is off or cannot be written."""
    root = cache_root()

    def plain() -> Any:
        options = make_options()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(source), options, providers=providers)

    if root is None or providers != ["CPUExecutionProvider"]:
        return plain()
    folder = root / "onnxruntime"
    fields = _describe(ort, source_sha256, settings)
    data = _cached(folder, fields)
    if data is None:
        try:
            data = _optimise_into_cache(ort, source, make_options(), providers, folder, fields)
        except Exception as exc:  # noqa: BLE001 - also ONNX Runtime's own errors: it fails writing into a full disk
            # with INVALID_PROTOBUF; any failure to cache falls back (a graph that is itself bad fails again there)
            log.info("ONNX Runtime cache not written (%s); optimising in this process", exc)
            return plain()
    options = make_options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(data, options, providers=providers)
