"""Triton model repositories: every generated config.pbtxt parses with Triton's own ModelConfig schema
(tritonclient's model_config_pb2) and agrees with the graph it serves."""

import hashlib
import json
from pathlib import Path

import pytest

from dmfnet_edge.cli.main import export_main
from dmfnet_edge.runtime import shipped_onnx
from tests.conftest import needs

needs("tritonclient.grpc", "serve")
from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2 as mc  # noqa: E402

ENGINE_MANIFEST = Path(__file__).resolve().parents[2] / "docs" / "engines" / "dmfnet-edge-fp32.engine.json"


def _config(repo: Path, name: str = "dmfnet_edge"):
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), mc.ModelConfig())


def _graph_io(path: Path) -> dict[str, list[int]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dims = {}
    for value in list(graph.input) + list(graph.output):
        dims[value.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
    return dims


def test_the_shipped_dynamic_graph_as_a_batched_cpu_model(tmp_path, capsys):
    source = shipped_onnx("edge", "fp32")
    assert export_main(["triton", "--onnx", str(source), "-o", str(tmp_path / "repo"), "--threads", "2"]) == 0
    assert "checked against Triton's ModelConfig schema" in capsys.readouterr().out
    cfg = _config(tmp_path / "repo")
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 8
    assert [i.name for i in cfg.input] == ["mri", "other"] and [o.name for o in cfg.output] == ["fused"]
    graph = _graph_io(source)
    for tensor in [*cfg.input, *cfg.output]:  # Triton's dims leave out the batch dimension it manages
        assert tensor.data_type == mc.TYPE_FP32 and [1, *tensor.dims] == [1, *graph[tensor.name][1:]]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU and cfg.instance_group[0].count == 1
    assert cfg.parameters["intra_op_thread_count"].string_value == "2"
    assert list(cfg.model_warmup[0].inputs["mri"].dims) == [1, 256, 256]
    version = tmp_path / "repo" / "dmfnet_edge" / "1"
    assert (version / "model.onnx").read_bytes() == source.read_bytes()
    meta = json.loads((tmp_path / "repo" / "repository.json").read_text())
    assert meta["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert meta["config_checked_against_triton_schema"] is True


def test_a_static_graph_is_served_unbatched_on_gpu_instances(tmp_path):
    assert export_main(["onnx", "--model", "tiny", "-o", str(tmp_path), "--size", "64"]) == 0
    source = next(tmp_path.glob("*.onnx"))
    assert export_main(["triton", "--onnx", str(source), "-o", str(tmp_path / "repo"), "--kind", "gpu",
                        "--instances", "2", "--name", "fusion.tiny"]) == 0
    cfg = _config(tmp_path / "repo", "fusion.tiny")
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == _graph_io(source)["mri"] == [1, 1, 64, 64]
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU and cfg.instance_group[0].count == 2
    assert cfg.model_warmup[0].batch_size == 1 and list(cfg.model_warmup[0].inputs["other"].dims) == [1, 1, 64, 64]


def _engine(tmp_path: Path, flavour: str, batch: tuple[int, int]) -> Path:
    """An engine manifest as `dmfnet-export build` writes it, over placeholder plan bytes (never loaded here)
    that start with a full-TensorRT plan's tag."""
    meta = json.loads(ENGINE_MANIFEST.read_text())
    plan = b"ftrt placeholder plan bytes: the repository test never loads an engine"
    meta["toolchain"] = {"flavour": flavour, "version": "11.4.0"}
    meta["build"]["profile"] = {"min": [batch[0], 1, 256, 256], "opt": [batch[1], 1, 256, 256],
                                "max": [batch[1], 1, 256, 256]}
    meta["engine_sha256"] = hashlib.sha256(plan).hexdigest()
    engine = tmp_path / "model.engine"
    engine.write_bytes(plan)
    (tmp_path / "model.engine.json").write_text(json.dumps(meta))
    return engine


def test_a_full_tensorrt_engine_is_a_tensorrt_plan_capped_by_its_profile(tmp_path):
    engine = _engine(tmp_path, "tensorrt", (1, 4))
    assert export_main(["triton", "--engine", str(engine), "-o", str(tmp_path / "repo"), "--max-batch", "16",
                        "--preferred-batch", "2", "4", "8"]) == 0
    cfg = _config(tmp_path / "repo")
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 4
    assert list(cfg.input[0].dims) == [1, 256, 256] and list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert (tmp_path / "repo" / "dmfnet_edge" / "1" / "model.plan").read_bytes() == engine.read_bytes()


def test_refusals_write_nothing(tmp_path, capsys):
    rtx = _engine(tmp_path, "tensorrt-rtx", (1, 1))
    assert export_main(["triton", "--engine", str(rtx), "-o", str(tmp_path / "r1")]) == 2
    assert "Triton's tensorrt backend runs full-TensorRT engines only" in capsys.readouterr().err
    source = shipped_onnx("edge", "fp32")
    assert export_main(["triton", "--onnx", str(source), "-o", str(tmp_path / "r2"), "--name", "no/slash"]) == 2
    assert "a Triton model name" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    assert export_main(["triton", "--onnx", str(source), "-o", str(busy)]) == 2
    assert "not empty" in capsys.readouterr().err and (busy / "mine.txt").read_text() == "keep"
    assert export_main(["triton", "--engine", str(rtx), "--threads", "2", "-o", str(tmp_path / "r3")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "model.engine", "model.engine.json"]


def test_a_config_that_breaks_the_schema_is_caught():
    from dmfnet_edge.serving.triton_repo import validate_config

    with pytest.raises(text_format.ParseError, match="max_batch"):
        validate_config('name: "x"\nplatform: "onnxruntime_onnx"\nmax_batch: 8\n')


def test_unknown_model_is_retried_only_for_a_model_already_served():
    """A restarted server answers "unknown model" until it has loaded its repository: retried (with backoff) for a
    model this client has been served before, an immediate error for a name it never served (a typo)."""
    from tritonclient.utils import InferenceServerException

    from dmfnet_edge.runtime.triton_client import TritonRunner

    runner = object.__new__(TritonRunner)
    loading = InferenceServerException("[404] Request for unknown model: 'dmfnet_edge' is not found", status="404")
    runner._served = False
    assert not runner._transient(loading)
    runner._served = True
    assert runner._transient(loading)
    assert not runner._transient(InferenceServerException("[400] unexpected shape for input 'mri'", status="400"))
    assert runner._transient(InferenceServerException("failed to connect to all addresses", status=None))
