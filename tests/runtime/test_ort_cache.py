"""The ONNX Runtime cache of optimised graphs: bit-identical outputs with and without it, reuse, and entries that
are not to be trusted (the catalogue runs the same kinds through `dmfnet fuse`: tests/hostile_records.py)."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from dmfnet_edge.runtime import ort_cache, shipped_onnx
from dmfnet_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner

pytestmark = pytest.mark.runtime


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(ort_cache.ENV_DIR, str(tmp_path / "cache"))
    monkeypatch.delenv(ort_cache.ENV_SWITCH, raising=False)
    return tmp_path / "cache" / "onnxruntime"


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(3)
    return tuple((rng.random((1, 1, 96, 80), dtype=np.float32) * 2 - 1) for _ in range(2))


def _fuse(precision, pair):
    with OnnxRuntimeRunner(shipped_onnx("edge", precision), threads=1) as runner:
        return runner.fuse(*pair)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_outputs_are_bit_identical_with_and_without_the_cache(precision, cache, pair, monkeypatch):
    first = _fuse(precision, pair)  # builds the entry
    assert len(list(cache.glob("*.onnx"))) == 1 and len(list(cache.glob("*.json"))) == 1
    again = _fuse(precision, pair)  # reads it
    monkeypatch.setenv(ort_cache.ENV_SWITCH, "off")
    plain = _fuse(precision, pair)
    assert np.array_equal(first, again) and np.array_equal(first, plain)


def test_a_valid_entry_is_reused_without_optimising_again(cache, pair, monkeypatch):
    _fuse("fp32", pair)
    graph = next(cache.glob("*.onnx"))
    stamp = graph.stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("optimised again although the entry is valid")

    monkeypatch.setattr(ort_cache, "_optimise_into_cache", refuse)
    _fuse("fp32", pair)
    assert graph.stat().st_mtime_ns == stamp


def test_off_writes_nothing(cache, pair, monkeypatch):
    monkeypatch.setenv(ort_cache.ENV_SWITCH, "off")
    _fuse("fp32", pair)
    assert not cache.exists()


def _entry(cache):
    return next(cache.glob("*.onnx")), next(cache.glob("*.json"))


@pytest.mark.parametrize("damage", ["edited graph", "truncated graph", "fifo graph", "zero graph", "foreign record",
                                    "garbage record", "deep record"])
def test_an_untrusted_entry_is_ignored_and_replaced(damage, cache, pair):
    reference = _fuse("fp32", pair)
    graph, record = _entry(cache)
    good = graph.read_bytes()
    if damage == "edited graph":
        graph.write_bytes(good[:-100] + bytes(100))
    elif damage == "truncated graph":
        graph.write_bytes(good[: len(good) // 2])
    elif damage == "fifo graph":
        graph.unlink()
        os.mkfifo(graph)
    elif damage == "zero graph":
        graph.unlink()
        graph.symlink_to("/dev/zero")
    elif damage == "foreign record":
        text = record.read_text().replace('"onnxruntime": "', '"onnxruntime": "0.0.')
        record.write_text(text)
    elif damage == "garbage record":
        record.write_bytes(b"\xff\x00 not json")
    else:
        record.write_text("[" * 20000 + "]" * 20000)
    out = _fuse("fp32", pair)  # no hang, no error: the entry is rebuilt (or, where it cannot be, skipped)
    assert np.array_equal(out, reference)
    if damage not in ("fifo graph", "zero graph"):  # a FIFO or a device is never written over (refused as an
        # output target: the entry is skipped from then on, never read); the rest is replaced
        # by a valid entry (ONNX Runtime's saved bytes vary from one optimisation to the next; the outputs do not)
        saved = ort_cache.OrtCacheRecord.read(record)
        assert hashlib.sha256(graph.read_bytes()).hexdigest() == saved.graph_sha256


def test_an_unwritable_cache_costs_only_the_optimisation(tmp_path, pair, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv(ort_cache.ENV_DIR, str(blocker))
    assert np.array_equal(_fuse("fp32", pair), _fuse("fp32", pair))
    assert blocker.read_text() == "a file where the cache folder would be"


def test_the_key_names_graph_runtime_cpu_and_settings():
    import onnxruntime as ort

    a = ort_cache._describe(ort, "a" * 64, "simulate_qdq=0")
    assert a["key"] != ort_cache._describe(ort, "b" * 64, "simulate_qdq=0")["key"]
    assert a["key"] != ort_cache._describe(ort, "a" * 64, "simulate_qdq=1")["key"]
    assert a["onnxruntime"] == ort.__version__ and a["cpu"] == ort_cache.cpu_fingerprint()
