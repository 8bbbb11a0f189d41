"""ONNX export, manifests, the ONNX Runtime backend, calibration sets, precision recipes and the verify gate."""

import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from dmfnet_edge.cli.main import export_main
from dmfnet_edge.contract import IOContract, read_manifest
from dmfnet_edge.errors import InputError, ModelFileError
from dmfnet_edge.evaluation.verify import verify_runner
from dmfnet_edge.export.calibration import load_calibration, network_batches, select_calibration_set
from dmfnet_edge.export.onnx_export import export_onnx
from dmfnet_edge.export.quantize.int8_onnxruntime import SATURATION_SAFE_WEIGHT, largest_int8_weight
from dmfnet_edge.io.images import write_image
from dmfnet_edge.io.pairs import find_pairs
from dmfnet_edge.models.checkpoint import build_model
from dmfnet_edge.runtime.onnxruntime_backend import SIMULATE_QDQ, OnnxRuntimeRunner
from dmfnet_edge.runtime.torch_backend import TorchRunner
from tests.conftest import smooth_image

# the TensorRT Q/DQ and FP16 recipes run NVIDIA Model Optimizer (the [quantize] extra): skipped without it
needs_modelopt = pytest.mark.skipif(importlib.util.find_spec("modelopt") is None,
                                    reason="needs the [quantize] extra (nvidia-modelopt)")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("pairs")
    for task, modality, colour in [("MRI-CT", "CT", False), ("MRI-PET", "PET", True)]:
        for name in ("1", "2", "3"):
            write_image(root / task / "MRI" / f"{name}.png", smooth_image(rng, 64, 64))
            write_image(root / task / modality / f"{name}.png", smooth_image(rng, 64, 64, colour))
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    assert export_main(["onnx", "--model", "tiny", "-o", str(out), "--size", "64"]) == 0
    assert export_main(["onnx", "--model", "tiny", "-o", str(out), "--dynamic"]) == 0
    return {"static": out / "dmfnet-tiny-fp32.onnx", "dynamic": out / "dmfnet-tiny-fp32-dynamic.onnx"}


def test_graph_follows_the_contract(exported):
    manifest = read_manifest(exported["static"])
    assert manifest.inputs == {"mri": [1, 1, 64, 64], "other": [1, 1, 64, 64]} and manifest.output == "fused"
    assert manifest.opset >= 18 and manifest.parity_max_abs_vs_torch <= 1e-4
    graph = onnx.load(str(exported["dynamic"]))
    ops = {n.op_type for n in graph.graph.node}
    assert "Einsum" not in ops and {"MatMul", "Softmax", "LayerNormalization"} <= ops
    assert "InstanceNormalization" not in ops  # rewritten for accuracy (accurate_group_norms)
    assert not ops & {"RandomNormal", "RandomNormalLike"}  # the noise is baked in
    dims = [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "", "H", "W"]


def test_onnxruntime_matches_torch_for_any_size(exported, rng):
    reference = TorchRunner(build_model("tiny"))
    runner = OnnxRuntimeRunner(exported["dynamic"])
    for shape in [(1, 1, 64, 64), (3, 1, 80, 112)]:
        mri, other = (rng.random(shape, dtype=np.float32) * 2 - 1 for _ in range(2))
        assert np.abs(runner.fuse(mri, other) - reference.fuse(mri, other)).max() <= 1e-4


def test_static_graph_pads_smaller_images_and_refuses_larger(exported, rng):
    runner = OnnxRuntimeRunner(exported["static"])
    mri, other = (rng.random((2, 1, 64, 64), dtype=np.float32) for _ in range(2))
    assert runner.fuse(mri, other).shape == (2, 1, 64, 64)
    with pytest.raises(InputError, match="--dynamic"):
        runner.fuse(np.zeros((1, 1, 80, 64), np.float32), np.zeros((1, 1, 80, 64), np.float32))


def test_static_batch_is_filled_and_trimmed(tmp_path, rng):
    export_onnx(build_model("tiny"), tmp_path / "b2.onnx", IOContract(2, 64, 64))
    runner, reference = OnnxRuntimeRunner(tmp_path / "b2.onnx"), TorchRunner(build_model("tiny"))
    mri, other = (rng.random((3, 1, 64, 64), dtype=np.float32) for _ in range(2))
    assert np.abs(runner.fuse(mri, other) - reference.fuse(mri, other)).max() <= 1e-4


def test_damaged_or_unmanifested_graphs_are_refused(exported, tmp_path):
    copy = tmp_path / "x.onnx"
    shutil.copy(exported["static"], copy)
    with pytest.raises(ModelFileError, match="manifest missing"):
        OnnxRuntimeRunner(copy)
    shutil.copy(exported["static"].with_name(exported["static"].name + ".json"), tmp_path / "x.onnx.json")
    copy.write_bytes(copy.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelFileError, match="does not match"):
        OnnxRuntimeRunner(copy)


def test_export_rejects_bad_sizes(tmp_path, capsys):
    assert export_main(["onnx", "--model", "tiny", "-o", str(tmp_path), "--size", "100"]) == 2
    assert "multiple of 16" in capsys.readouterr().err


def test_calibration_set_is_hashed_deterministic_and_disjoint(pairs, tmp_path):
    a = select_calibration_set(pairs, 2, None)
    assert a == select_calibration_set(pairs, 2, None)
    assert a.per_modality == {"MRI-CT": 2, "MRI-PET": 2}
    with pytest.raises(InputError, match="also appear"):
        select_calibration_set(pairs, 2, pairs)
    a.write(tmp_path / "cal.json")
    meta, chosen = load_calibration(tmp_path / "cal.json")
    batches = list(network_batches(chosen))
    assert len(batches) == 4 and batches[0]["mri"].shape == (1, 1, 64, 64)
    edited = json.loads(a.encode())
    edited["pairs"][0]["mri_sha256"] = "0" * 64  # the list edited without its set hash
    (tmp_path / "bad.json").write_text(json.dumps(edited))
    with pytest.raises(ModelFileError, match="set_sha256 does not match"):
        load_calibration(tmp_path / "bad.json")
    edited = json.loads(a.encode())
    edited["pairs"][0]["mri"] = "../" + edited["pairs"][0]["mri"]  # a path that leaves the set's folder
    (tmp_path / "out.json").write_text(json.dumps(edited))
    with pytest.raises(ModelFileError, match=r"in the form its JSON Schema gives .* - at `\$.pairs\[0\].mri`"):
        load_calibration(tmp_path / "out.json")
    copy = tmp_path / "copy"
    shutil.copytree(pairs, copy)
    image = copy / a.pairs[0].other
    image.write_bytes(image.read_bytes() + b"\0")  # an image changed after the set was selected
    with pytest.raises(ModelFileError, match="does not match the calibration manifest's SHA-256"):
        load_calibration(tmp_path / "cal.json", copy)


@pytest.fixture(scope="module")
def calibration(pairs, tmp_path_factory):
    path = tmp_path_factory.mktemp("cal") / "cal.json"
    assert export_main(["calibrate", "--pairs", str(pairs), "--per-modality", "2", "-o", str(path)]) == 0
    return path


@pytest.mark.parametrize("target, marker_op", [pytest.param("onnxruntime", "QLinearConv", marks=pytest.mark.slow),
                                               pytest.param("tensorrt", "QuantizeLinear",
                                                            marks=[needs_modelopt, pytest.mark.slow])])
def test_int8_recipes(exported, calibration, tmp_path, target, marker_op):
    out = tmp_path / f"int8-{target}.onnx"
    source = exported["dynamic"]
    before = (source.stat().st_mtime_ns, source.read_bytes())
    assert export_main(["quantize", "--onnx", str(source), "--precision", "int8", "--target", target,
                        "--calibration", str(calibration), "--method", "max", "-o", str(out)]) == 0
    assert (source.stat().st_mtime_ns, source.read_bytes()) == before  # the input graph is not even rewritten
    manifest = read_manifest(out)
    assert manifest.precision == f"int8-{target}" and manifest.calibration.per_modality["MRI-CT"] == 2
    assert manifest.ops.get(marker_op, 0) > 0
    plan = manifest.recipe.mixed_precision  # the default sensitivity search ran and is on record
    assert plan.mode == "auto" and plan.probes == 4 and "ups.0" in plan.sensitivity_psnr_db
    assert plan.probe_psnr_db >= 46.0 or plan.quantized_groups == 0
    if target == "onnxruntime":  # 7-bit weights: no uint8 x int8 pair-sum saturation on CPUs without VNNI
        graph = onnx.load(str(out))
        assert 32 < largest_int8_weight(graph) <= SATURATION_SAFE_WEIGHT
        thin = manifest.recipe.fp32_thin_convolutions  # slower in INT8 on ONNX Runtime's CPU kernels
        assert any(name.startswith("/init_conv/") for name in thin) and any("/pixel/" in name for name in thin)
        assert {n.op_type for n in graph.graph.node if n.name in thin} == {"Conv"}
    rng = np.random.default_rng(0)
    mri, other = (rng.random((1, 1, 64, 64), dtype=np.float32) * 2 - 1 for _ in range(2))
    diff = np.abs(OnnxRuntimeRunner(out).fuse(mri, other) - TorchRunner(build_model("tiny")).fuse(mri, other))
    assert diff.max() < 0.1


@needs_modelopt
def test_tensorrt_int8_graph_runs_as_simulated_qdq_on_onnxruntime(exported, calibration, tmp_path):
    """The TensorRT flavour is checked with float Q/DQ arithmetic (what the engine computes exactly), not with
    ONNX Runtime's CPU-dependent integer kernels."""
    import onnxruntime as ort

    out = tmp_path / "int8-tensorrt.onnx"
    assert export_main(["quantize", "--onnx", str(exported["dynamic"]), "--precision", "int8", "--target", "tensorrt",
                        "--calibration", str(calibration), "--method", "max", "--keep-fp32", "none",
                        "-o", str(out)]) == 0
    runner = OnnxRuntimeRunner(out)
    assert runner.describe()["qdq_simulated_in_float"]
    rng = np.random.default_rng(3)
    feed = {name: rng.random((1, 1, 64, 64), dtype=np.float32) * 2 - 1 for name in ("mri", "other")}

    def session_output(simulate: bool) -> np.ndarray:
        options = ort.SessionOptions()
        if simulate:
            options.add_session_config_entry(*SIMULATE_QDQ)
        return ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"]).run(None, feed)[0]

    simulated, fused = session_output(True), session_output(False)
    assert np.array_equal(runner.fuse(feed["mri"], feed["other"]), simulated)
    assert not np.array_equal(simulated, fused)  # so the comparison above can tell the two apart


@needs_modelopt
@pytest.mark.parametrize("method", [pytest.param("percentile", marks=pytest.mark.slow), "entropy"])
def test_onnxruntime_int8_after_a_tensorrt_recipe_in_the_same_process(exported, calibration, tmp_path, method):
    """Model Optimizer patches onnxruntime.quantization process-wide; ONNX Runtime's recipe must not notice. (No
    layer-group search: the patch is in the calibrators, which both recipes run either way.)"""
    common = ["--onnx", str(exported["dynamic"]), "--precision", "int8", "--calibration", str(calibration),
              "--keep-fp32", "none"]
    assert export_main(["quantize", *common, "--target", "tensorrt", "--method", "max",
                        "-o", str(tmp_path / "trt.onnx")]) == 0
    assert export_main(["quantize", *common, "--target", "onnxruntime", "--method", method,
                        "-o", str(tmp_path / "ort.onnx")]) == 0
    assert read_manifest(tmp_path / "ort.onnx").ops.get("QLinearConv", 0) > 0


@needs_modelopt
def test_fp16_recipe_keeps_normalisation_in_fp32(exported, tmp_path, capfd):
    out = tmp_path / "fp16.onnx"
    assert export_main(["quantize", "--onnx", str(exported["dynamic"]), "--precision", "fp16", "-o", str(out)]) == 0
    printed = capfd.readouterr()  # Model Optimizer's ~100 lines per run stay out of the terminal
    assert printed.out.strip().splitlines() == [f"{out}: fp16 (modelopt.onnx.autocast.convert_to_mixed_precision)"]
    assert printed.err == ""
    graph = onnx.load(str(out))
    init_types = {i.name: i.data_type for i in graph.graph.initializer}
    conv_weights = [n.input[1] for n in graph.graph.node if n.op_type == "Conv"]
    assert any(init_types.get(w) == onnx.TensorProto.FLOAT16 for w in conv_weights)
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    norms = [n for n in graph.graph.node if n.op_type == "LayerNormalization"]
    assert norms and all(init_types.get(n.input[1], onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT for n in norms)
    assert read_manifest(out).precision == "fp16"


@pytest.mark.slow  # over 5 s: in make test and CI, out of the edit loop (make test-fast)
def test_int8_layer_groups_can_be_named_or_all_quantized(exported, calibration, tmp_path, capsys):
    common = ["quantize", "--onnx", str(exported["dynamic"]), "--precision", "int8", "--calibration",
              str(calibration), "--method", "max"]
    assert export_main([*common, "--keep-fp32", "none", "-o", str(tmp_path / "all.onnx")]) == 0
    assert read_manifest(tmp_path / "all.onnx").recipe.mixed_precision.kept_fp32 == []
    assert export_main([*common, "--keep-fp32", "ups.0,fusion/head", "-o", str(tmp_path / "two.onnx")]) == 0
    graph = onnx.load(str(tmp_path / "two.onnx"))
    assert all(n.op_type == "Conv" for n in graph.graph.node if n.name.startswith(("/ups.0/", "/fusion/head/"))
               and n.op_type in ("Conv", "QLinearConv"))
    assert any(n.op_type == "QLinearConv" for n in graph.graph.node if n.name.startswith("/ups.1/"))
    capsys.readouterr()
    assert export_main([*common, "--keep-fp32", "ups.0,no.such", "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "no.such" in err and "no such layer group" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_int8_needs_calibration(exported, tmp_path, capsys):
    assert export_main(["quantize", "--onnx", str(exported["dynamic"]), "--precision", "int8", "-o",
                        str(tmp_path / "x.onnx")]) == 2
    assert "calibration" in capsys.readouterr().err


def test_verify_passes_fp32_and_catches_a_wrong_graph(exported, pairs, tmp_path):
    code = export_main(["verify", "--onnx", str(exported["dynamic"]), "--model", "tiny", "--pairs", str(pairs),
                        "--report", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "dmfnet-tiny-fp32-dynamic.verify.json").read_text())
    assert report["passed"] and set(report["tasks"]) == {"MRI-CT", "MRI-PET"}
    assert (tmp_path / "dmfnet-tiny-fp32-dynamic.worst.png").is_file()
    other_weights = TorchRunner(build_model("tiny", seed=1))
    report, _ = verify_runner(OnnxRuntimeRunner(exported["dynamic"]), "fp32", other_weights, find_pairs(pairs))
    assert not report["passed"] and "max abs error" in report["failures"][0]


@pytest.mark.slow
def test_paper_size_model_exports_and_passes_the_fp32_gate(pairs, tmp_path):
    """The published sizes (seeded random weights: no public checkpoint), dynamic, verified like the edge model."""
    assert export_main(["onnx", "--model", "paper", "-o", str(tmp_path), "--dynamic"]) == 0
    graph = tmp_path / "dmfnet-paper-fp32-dynamic.onnx"
    assert read_manifest(graph).parity_max_abs_vs_torch <= 1e-4
    assert export_main(["verify", "--onnx", str(graph), "--model", "paper", "--pairs", str(pairs),
                        "--report", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "dmfnet-paper-fp32-dynamic.verify.json").read_text())
    assert report["passed"] and report["tasks"]["MRI-PET"]["pairs"] == 3
    assert max(t["max_abs"] for t in report["tasks"].values()) <= 1e-4


def test_verify_reference_cache_gives_the_same_reports_with_one_reference_pass(exported, pairs):
    class Counting(TorchRunner):
        calls = 0

        def fuse(self, mri, other):
            Counting.calls += 1
            return super().fuse(mri, other)

    reference, candidate = Counting(build_model("tiny")), OnnxRuntimeRunner(exported["dynamic"])
    found = find_pairs(pairs)
    plain, _ = verify_runner(candidate, "fp32", reference, found)
    Counting.calls, cache = 0, {}
    first, _ = verify_runner(candidate, "fp32", reference, found, cache=cache)
    second, _ = verify_runner(candidate, "fp32", reference, found, cache=cache)
    assert Counting.calls == len(found) and plain == first == second


def test_runtime_works_without_torch(exported, pairs, tmp_path):
    """The ONNX Runtime path runs with torch unimportable, never tries to import torch or a module under it (so
    where torch is installed it stays unloaded), and fuses the same pixels as the same command in this process."""
    from dmfnet_edge.cli.main import main
    from dmfnet_edge.io.images import read_image

    out, reference = tmp_path / "fused.png", tmp_path / "in-process.png"
    argv = ["fuse", "--mri", str(pairs / "MRI-PET/MRI/1.png"), "--other", str(pairs / "MRI-PET/PET/1.png"),
            "--model", str(exported["dynamic"])]
    code = f"""
import importlib.abc
import sys


class NoTorch(importlib.abc.MetaPathFinder):
    # torch as on a machine without it; every attempt to import it, or a module under it, is recorded
    asked = []

    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'torch':
            self.asked.append(name)
            raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)
        return None


sys.meta_path.insert(0, NoTorch())
from dmfnet_edge.cli.main import main
rc = main({[*argv, "-o", str(out)]!r})
loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'torch')
assert not NoTorch.asked and not loaded, f'torch asked for: {{NoTorch.asked}}, loaded: {{loaded}}'
sys.exit(rc)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "onnxruntime" in result.stdout
    assert main([*argv, "-o", str(reference)]) == 0
    assert np.array_equal(read_image(out), read_image(reference))


@pytest.mark.parametrize("field, value, message", [
    ("inputs", ["mri", "other"], r"Expected `object`, got `array` - at `\$.inputs`"),
    ("inputs", {"mri": "N,1,H,W", "other": ["N", 1, "H", "W"]}, r"Expected `array`, got `str` - at `\$.inputs"),
    ("inputs", {"mri": [1, 256], "other": ["N", 1, "H", "W"]}, r"Expected `array` of length >= 4 - at `\$.inputs"),
    ("inputs", {"mri": [1, 2, 64, 64], "other": [1, 2, 64, 64]}, r"input 'mri' has shape \[1, 2, 64, 64\]"),
    ("inputs", {"other": [1, 1, 64, 64], "mri": [1, 1, 64, 64]}, "do not follow the contract"),
    ("model_config", [1], r"Expected `object \| null`, got `array` - at `\$.model_config`"),
    ("recipe", "int8", r"Expected `object \| null`, got `str` - at `\$.recipe`"),
    ("onnxruntime_runnable", "no", r"Expected `bool \| null`, got `str` - at `\$.onnxruntime_runnable`"),
    ("onnx_sha256", 12, r"Expected `str`, got `int` - at `\$.onnx_sha256`"),
    ("onnx_sha256", "ab" * 31, r"Expected `str` matching regex .* - at `\$.onnx_sha256`"),
    ("surprise", 1, "Object contains unknown field `surprise`"),
    ("manifest_version", 2, "an ONNX manifest of manifest_version 2; this release reads manifest_version 1"),
    ("format", "dmfnet-edge-engine", "not an ONNX manifest"),
])
def test_manifests_of_the_wrong_structure_are_one_clear_error(tmp_path, field, value, message):
    """Valid JSON with the wrong structure (these were tracebacks or silently accepted)."""
    import shutil

    from dmfnet_edge.contract import read_manifest
    from dmfnet_edge.errors import ModelFileError
    from dmfnet_edge.runtime import shipped_onnx

    source = shipped_onnx("edge", "fp32")
    graph = tmp_path / "g.onnx"
    shutil.copy(source, graph)
    meta = json.loads(source.with_name(source.name + ".json").read_text())
    meta[field] = value
    (tmp_path / "g.onnx.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=message):
        read_manifest(graph, verify=field != "onnx_sha256")


def _with_manifest(path, data, source, **fields):
    """`data` at `path` beside a manifest copied from `source`, its hash and file name made to match."""
    import hashlib

    path.write_bytes(data)
    meta = json.loads(source.with_name(source.name + ".json").read_text())
    meta.update({"onnx_file": path.name, "onnx_sha256": hashlib.sha256(data).hexdigest(), **fields})
    path.with_name(path.name + ".json").write_text(json.dumps(meta))
    return path


def test_the_onnx_loader_takes_external_data_beside_the_graph_only(exported, tmp_path):
    """Data files named relative to the graph's folder are read (through a link to the graph too); the same
    graph with its data elsewhere, or with data too short for what it declares, is one ModelFileError."""
    from dmfnet_edge.runtime.onnx_file import open_graph, open_with_manifest

    folder = tmp_path / "graph"
    folder.mkdir()
    onnx.save_model(onnx.load(str(exported["static"])), str(folder / "g.onnx"), save_as_external_data=True,
                    location="g.onnx.data", size_threshold=1024)
    graph, manifest = open_with_manifest(_with_manifest(folder / "g.onnx", (folder / "g.onnx").read_bytes(),
                                                        exported["static"]))
    assert graph.external == (folder / "g.onnx.data",) and graph.precision() == manifest.precision == "fp32"
    (tmp_path / "link.onnx").symlink_to(folder / "g.onnx")
    assert open_graph(tmp_path / "link.onnx").external == (folder / "g.onnx.data",)  # beside the real file
    shutil.copy(folder / "g.onnx", tmp_path / "alone.onnx")  # its data file stays behind
    with pytest.raises(ModelFileError, match="keeps its data in 'g.onnx.data', which cannot be opened"):
        open_graph(tmp_path / "alone.onnx")
    data = folder / "g.onnx.data"
    data.write_bytes(data.read_bytes()[:-4])
    with pytest.raises(ModelFileError, match="but the file has .*; the graph and its data files do not belong"):
        open_graph(folder / "g.onnx")


@pytest.mark.parametrize("opset, refused", [(16, True), (18, False), (21, False), (22, True)])
def test_the_onnx_loader_takes_the_opsets_the_toolchains_read(exported, tmp_path, opset, refused):
    from dmfnet_edge.runtime.onnx_file import open_graph

    model = onnx.load(str(exported["static"]))
    next(o for o in model.opset_import if o.domain == "").version = opset
    path = _with_manifest(tmp_path / "g.onnx", model.SerializeToString(), exported["static"])
    if refused:
        with pytest.raises(ModelFileError, match=f"declares ONNX opset {opset}; the toolchains here read opsets 17"):
            open_graph(path)
    else:
        assert open_graph(path).opset == opset


def test_a_manifest_must_describe_its_graph(exported, tmp_path):
    """Shapes and precision as the graph itself has them: the shipped INT8 graph is int8-onnxruntime by its
    operators, the FP32 export fp32; a manifest that says otherwise is refused (exit 2, not an engine check)."""
    from dmfnet_edge.runtime import shipped_onnx
    from dmfnet_edge.runtime.onnx_file import open_graph, open_with_manifest

    assert open_graph(shipped_onnx("edge", "int8")).precision() == "int8-onnxruntime"
    static = exported["static"]
    graph, _ = open_with_manifest(static)
    with pytest.raises(ModelFileError, match=r"input 'mri' is \[1, 1, 64, 64\] in the graph but \[1, 1, 128, 128\]"):
        graph.check_manifest({"mri": [1, 1, 128, 128], "other": [1, 1, 128, 128]}, "fused", "fp32")
    with pytest.raises(ModelFileError, match=r"input 'mri' is \[1, 1, 64, 64\] in the graph but \['N', 1, 'H', 'W'\]"):
        graph.check_manifest({"mri": ["N", 1, "H", "W"], "other": ["N", 1, "H", "W"]}, "fused", "fp32")
    with pytest.raises(ModelFileError, match="says fp16, but the graph is fp32"):
        graph.check_manifest({"mri": [1, 1, 64, 64], "other": [1, 1, 64, 64]}, "fused", "fp16")
    mislabelled = _with_manifest(tmp_path / "g.onnx", static.read_bytes(), static, precision="int8-tensorrt")
    assert export_main(["quantize", "--onnx", str(mislabelled), "--precision", "fp16", "-o",
                        str(tmp_path / "q.onnx")]) == 2
    assert not (tmp_path / "q.onnx").exists()


def test_a_static_export_must_fit_the_pixel_budget(tmp_path, capsys, monkeypatch):
    """Refused before the model is traced at that size; a larger budget lets the same export through."""
    assert export_main(["onnx", "--model", "tiny", "-o", str(tmp_path), "--size", "512", "--batch", "8"]) == 2
    assert "2,097,152 pixels per call exceed the pixel budget of 1,048,576" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    monkeypatch.setenv("DMFNET_MAX_PIXELS", "64")
    assert export_main(["onnx", "--model", "tiny", "-o", str(tmp_path), "--size", "64"]) == 2
    assert export_main(["onnx", "--model", "tiny", "-o", str(tmp_path), "--dynamic"]) == 0  # no fixed size
