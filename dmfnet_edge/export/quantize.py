"""Precision recipes written into the ONNX graph (how TensorRT 11, and strongly typed TensorRT 10, build).

* fp16: NVIDIA Model Optimizer AutoCast; normalisation, reductions, softmax and tanh stay FP32, I/O stays FP32.
* int8-tensorrt: Model Optimizer explicit Q/DQ (entropy or max calibration), for TensorRT engines. Runs on
  ONNX Runtime for accuracy checks only (it is slower there than FP32).
* int8-onnxruntime: ONNX Runtime's static quantizer (QOperator, per-channel 7-bit weights, entropy, minmax or
  percentile calibration), the INT8 graph for the CPU. The weights use 7 of their 8 bits because x86 CPUs without
  VNNI (AVX2, AVX-512 before Cascade Lake, AMD before Zen 4) multiply uint8 activations by int8 weights with
  VPMADDUBSW, which saturates the sum of each pair of products at 16 bits: with full-range weights the same graph
  gives a different, worse result there (measured on the edge model: 34.5 dB instead of 46 dB against FP32). With
  |w| <= 64 a pair sum stays below 2 * 255 * 64 = 32640 < 32767, so every CPU computes the same integers.
  Convolutions with fewer than 4 input channels per group stay FP32 (`thin_convolutions`).
Both INT8 flavours calibrate on the same manifest of real slices (see calibration.py), and both are mixed
precision by default: a sensitivity search on calibration pairs (never validation pairs) finds the layer groups
whose 8-bit activations cost the most accuracy and keeps them in FP32 (see `plan_mixed_precision`).
"""

from __future__ import annotations

import io
import itertools
import logging
import multiprocessing
import re
import shutil
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from dmfnet_edge._optional import require
from dmfnet_edge._quiet import third_party_output
from dmfnet_edge.artifacts import write_json_atomic
from dmfnet_edge.errors import InputError
from dmfnet_edge.contract import IOContract, contract_of, layer_group, manifest_path, read_manifest
from dmfnet_edge.export.onnx_export import build_manifest, op_inventory
from dmfnet_edge.evaluation.verify import psnr_db
from dmfnet_edge.files import atomic_write_bytes

log = logging.getLogger(__name__)
FP16_KEEP_FP32 = ["LayerNormalization", "InstanceNormalization", "GroupNormalization", "ReduceMean", "ReduceMax",
                  "GlobalAveragePool", "Softmax", "Tanh", "Sqrt", "Pow", "Div"]
ORT_METHODS = {"entropy": "Entropy", "max": "MinMax", "percentile": "Percentile"}
MODELOPT_METHODS = {"entropy": "entropy", "max": "max"}


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


class _Reader:
    """onnxruntime.quantization CalibrationDataReader over a list of input dicts, readable in strides."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self._batches = batches
        self.set_range(0, len(batches))

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._items = iter(self._batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


CALIBRATION_STRIDE = 2  # pairs whose activations are held at once before they are folded into the statistics
KEEP_FP32_AUTO, KEEP_FP32_NONE = "auto", "none"
# What the mixed-precision search aims for on its probes. The INT8 gate asks for >= 35 dB and Qabf/VIF/SSIM within
# 2 %; the metrics are the binding part: on the edge model a plan at 42.7 dB still moved SPECT's VIF by 2.5 %.
TARGET_PROBE_PSNR_DB = 46.0
THIN_CONV_CHANNELS = 4  # fewer input channels per group: INT8 slower than FP32 on ONNX Runtime's CPU kernels
SATURATION_SAFE_WEIGHT = 64  # largest |int8 weight| whose uint8 x int8 pair sums fit VPMADDUBSW's int16
PROBE_PAIRS = 6  # calibration pairs (evenly spaced, so every modality) the search measures PSNR on
SHAPE_OPS = {"Gather", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Split", "Pad"}  # quantizable, but move data


def layer_groups(model: Any, leave_out: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Group -> names of its nodes that INT8 would quantize (compute ops; data-movement ops and the nodes in
    `leave_out` left out)."""
    from onnxruntime.quantization.registry import QLinearOpsRegistry

    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type in QLinearOpsRegistry and node.op_type not in SHAPE_OPS and node.name not in leave_out:
            groups.setdefault(layer_group(node.name), []).append(node.name)
    return groups


def thin_convolutions(model: Any) -> list[str]:
    """Conv nodes with fewer than THIN_CONV_CHANNELS input channels per group.

    ONNX Runtime's CPU INT8 convolution runs these slower than FP32. Measured per node on the edge model (2 cores,
    AVX2): the grouped pixel-attention convolutions (2 inputs per group) took 1.1-22.2 ms in INT8 against 0.2-2.1
    ms in FP32 (10x), the first convolution on the 1-channel image 10.6 ms against 4.8 ms, while ordinary
    convolutions ran 1.7-2.2x faster in INT8. The ONNX Runtime recipe leaves them in FP32; they are a negligible
    share of the arithmetic.
    """
    weights = {t.name: t for t in model.graph.initializer}
    return [node.name for node in model.graph.node if node.op_type == "Conv" and node.input[1] in weights
            and weights[node.input[1]].dims[1] < THIN_CONV_CHANNELS]


def largest_int8_weight(model: Any) -> int:
    """Largest |value| of the int8 weights of a QOperator graph's QLinearConv/QLinearMatMul nodes (0: none)."""
    from onnx import numpy_helper

    weights = {t.name: t for t in model.graph.initializer}
    largest = 0
    for node in model.graph.node:  # input 3 of both ops is the weight
        tensor = weights.get(node.input[3]) if node.op_type in ("QLinearConv", "QLinearMatMul") else None
        if tensor is not None and tensor.data_type == tensor.INT8:
            largest = max(largest, int(np.abs(numpy_helper.to_array(tensor).astype(np.int16)).max()))
    return largest


def _output_psnr(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """PSNR in dB of network outputs ([-1, 1], scaled to 8 bits) against the FP32 graph's, over all probes."""
    return psnr_db(float(np.mean([np.mean(((o - r) * 127.5).astype(np.float64) ** 2)
                                  for o, r in zip(outputs, reference)])))


def _session_outputs(path: Path, probes: list[dict[str, np.ndarray]], simulate_qdq: bool = False
                     ) -> list[np.ndarray]:
    import onnxruntime as ort

    from dmfnet_edge.runtime.onnxruntime_backend import SIMULATE_QDQ

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if simulate_qdq:
        options.add_session_config_entry(*SIMULATE_QDQ)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [session.run(None, probe)[0] for probe in probes]


def _probes(batches: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    picks = np.unique(np.round(np.linspace(0, len(batches) - 1, min(PROBE_PAIRS, len(batches)))).astype(int))
    return [batches[i] for i in picks]


def plan_mixed_precision(groups: dict[str, list[str]], quantize_only, measure, target_db: float = TARGET_PROBE_PSNR_DB
                         ) -> dict[str, Any]:
    """Choose the layer groups to keep in FP32 so that the INT8 graph reaches `target_db` on the probes.

    `quantize_only(names)` writes a graph in which only `names` are quantized (None: all but nothing excluded)
    and returns its path; `measure(path)` returns its probe PSNR. Sensitivity of a group = the PSNR with only that
    group quantized. Quantization errors of separate groups add roughly as independent noise, so their MSEs are
    summed: the most sensitive groups are kept in FP32 until the predicted PSNR reaches the target; the plan is
    then checked on the real mixed graph and widened one group at a time while it falls short.
    """
    sensitivity = {g: measure(quantize_only(names)) for g, names in groups.items()}
    mse = {g: 255.0**2 * 10 ** (-db / 10) for g, db in sensitivity.items()}
    order = sorted(groups, key=lambda g: -mse[g])
    keep: list[str] = []
    while order[len(keep):]:
        predicted = sum(mse[g] for g in order[len(keep):])
        if psnr_db(predicted) >= target_db:
            break
        keep.append(order[len(keep)])
    while True:
        names = [n for g in order if g not in keep for n in groups[g]]
        achieved = measure(quantize_only(names)) if names else 99.0
        if achieved >= target_db or len(keep) == len(order):
            break
        keep.append(order[len(keep)])
    return {"mode": KEEP_FP32_AUTO, "target_probe_psnr_db": target_db, "kept_fp32": keep,
            "quantized_groups": len(order) - len(keep), "probe_psnr_db": round(achieved, 2),
            "sensitivity_psnr_db": {g: round(sensitivity[g], 2) for g in order}}


def _given_plan(groups: dict[str, list[str]], keep_fp32: str | list[str]) -> dict[str, Any]:
    keep = [] if keep_fp32 == KEEP_FP32_NONE else list(keep_fp32)
    unknown = sorted(set(keep) - set(groups))
    if unknown:
        raise InputError(f"--keep-fp32 {','.join(unknown)}: no such layer group; the groups are {', '.join(groups)}")
    return {"mode": "given" if keep else KEEP_FP32_NONE, "kept_fp32": keep, "quantized_groups": len(groups) - len(keep),
            "excluded_nodes": [n for g in keep for n in groups[g]]}


def _ort_int8(src: Path, dst: Path | None, batches: list[dict[str, np.ndarray]], method: str,
              keep_fp32: str | list[str], target_db: float = TARGET_PROBE_PSNR_DB) -> dict[str, Any]:
    if "modelopt.onnx.quantization.ort_patching" in sys.modules:
        # Model Optimizer patches onnxruntime.quantization's calibrators for the whole process once it is imported
        # (after an int8-tensorrt recipe); ONNX Runtime's own quantizer then runs in a fresh, unpatched process.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(_ort_int8_here, (src, dst, batches, method, keep_fp32, target_db))
    return _ort_int8_here(src, dst, batches, method, keep_fp32, target_db)


def _ort_int8_here(src: Path, dst: Path | None, batches: list[dict[str, np.ndarray]], method: str,
                   keep_fp32: str | list[str], target_db: float = TARGET_PROBE_PSNR_DB) -> dict[str, Any]:
    """ONNX Runtime static INT8 of `src` into `dst` with the mixed-precision plan `keep_fp32` (auto, none or
    group names); with `dst` None only the plan is made (for the TensorRT flavour)."""
    require("onnxruntime", purpose="INT8 quantization for ONNX Runtime")
    onnx = require("onnx", purpose="INT8 quantization")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    stride = CALIBRATION_STRIDE if len(batches) % CALIBRATION_STRIDE == 0 else 1
    with tempfile.TemporaryDirectory() as tmp:
        prepared, cache = Path(tmp) / "prepared.onnx", Path(tmp) / "calibration-cache.json"
        with third_party_output():
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        prepared_model = onnx.load(str(prepared))
        thin = thin_convolutions(prepared_model)
        groups = layer_groups(prepared_model, frozenset(thin))
        given = None if keep_fp32 == KEEP_FP32_AUTO else _given_plan(groups, keep_fp32)  # bad names fail early
        counter = itertools.count()

        def quantize(names: list[str] | None, exclude: list[str] | None = None) -> Path:
            out = Path(tmp) / f"q{next(counter)}.onnx"
            # the first call calibrates and writes the cache; every later one reuses those ranges
            with third_party_output():
                quantize_static(str(prepared), str(out), None if cache.is_file() else _Reader(batches),
                                quant_format=QuantFormat.QOperator, per_channel=True, reduce_range=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=getattr(CalibrationMethod, ORT_METHODS[method]),
                                nodes_to_quantize=names, nodes_to_exclude=[*thin, *(exclude or [])],
                                calibration_cache_path=str(cache),
                                # collect in strides: the calibrators otherwise keep every intermediate tensor
                                # of every calibration pair (hundreds of MB per pair) at once
                                extra_options={"CalibTensorRangeSymmetric": False, "CalibStridedMinMax": stride})
            return out

        probes = _probes(batches)
        reference = _session_outputs(src, probes)

        def measure(path: Path) -> float:
            value = _output_psnr(_session_outputs(path, probes), reference)
            path.unlink()
            return value

        full = quantize(None)  # calibrates
        all_int8_db = _output_psnr(_session_outputs(full, probes), reference)
        if given is None:
            plan = plan_mixed_precision(groups, quantize, measure, target_db)
            plan["excluded_nodes"] = [n for g in plan["kept_fp32"] for n in groups[g]]
        else:
            plan = given
        plan["all_int8_probe_psnr_db"] = round(all_int8_db, 2)
        plan["probes"] = len(probes)
        if dst is not None:
            final = quantize(None, plan["excluded_nodes"]) if plan["kept_fp32"] else full
            plan["probe_psnr_db"] = round(_output_psnr(_session_outputs(final, probes), reference), 2)
            largest = largest_int8_weight(onnx.load(str(final)))
            if largest > SATURATION_SAFE_WEIGHT:
                raise RuntimeError(f"quantized weights reach {largest}; the recipe promises "
                                   f"<= {SATURATION_SAFE_WEIGHT}")
            atomic_write_bytes(dst, final.read_bytes())
    recipe = {"tool": "onnxruntime.quantization.quantize_static", "tool_version": _version("onnxruntime"),
              "format": "QOperator", "per_channel": True, "activations": "uint8 asymmetric",
              "weights": f"int8 symmetric per-channel, 7-bit range (|w| <= {SATURATION_SAFE_WEIGHT})",
              "method": method, "fp32_thin_convolutions": thin}
    return {**recipe, "mixed_precision": plan}


def _modelopt_int8(src: Path, dst: Path, batches: list[dict[str, np.ndarray]], method: str,
                   high_precision: str, keep_fp32: str | list[str], target_db: float) -> dict[str, Any]:
    require("modelopt.onnx.quantization", extra="quantize", purpose="INT8 Q/DQ for TensorRT")
    if keep_fp32 == KEEP_FP32_AUTO:
        # the layer groups to keep come from the same search on ONNX Runtime's quantizer (same calibration set;
        # Model Optimizer's Q/DQ placement differs, which the accuracy gate then checks on the result)
        plan = _ort_int8(src, None, batches, method, keep_fp32, target_db)["mixed_precision"]
        plan["planned_on"] = "onnxruntime.quantization (QOperator), the same calibration set"
    else:
        require("onnxruntime", purpose="INT8 layer groups")
        plan = _given_plan(layer_groups(require("onnx", purpose="INT8").load(str(src))), keep_fp32)
    from modelopt.onnx.quantization import quantize

    data = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    exclude = [f"^{re.escape(name)}$" for name in plan["excluded_nodes"]] or None
    with tempfile.TemporaryDirectory() as tmp:
        out, private = Path(tmp) / "q.onnx", Path(tmp) / "src.onnx"
        # Model Optimizer runs onnx.shape_inference.infer_shapes_path on its input in place: it would rewrite the
        # user's (or the shipped) graph, non-atomically, under concurrent readers; it gets a private copy
        shutil.copyfile(src, private)
        with third_party_output():
            quantize(str(private), quantize_mode="int8", calibration_data=data,
                     calibration_method=MODELOPT_METHODS[method], calibration_eps=["cpu"],
                     high_precision_dtype=high_precision, output_path=str(out), nodes_to_exclude=exclude,
                     log_level="WARNING")
        probes = _probes(batches)
        plan["probe_psnr_db"] = round(_output_psnr(_session_outputs(out, probes, simulate_qdq=True),
                                                   _session_outputs(src, probes)), 2)
        atomic_write_bytes(dst, out.read_bytes())
    return {"tool": "modelopt.onnx.quantization.quantize", "tool_version": _version("nvidia-modelopt"),
            "format": "QDQ (explicit, TensorRT)", "method": method, "high_precision_dtype": high_precision,
            "mixed_precision": plan}


def _autocast_fp16(src: Path, dst: Path, sample: dict[str, np.ndarray]) -> dict[str, Any]:
    require("modelopt.onnx.autocast", extra="quantize", purpose="FP16 conversion (AutoCast)")
    from modelopt.onnx.autocast import convert_to_mixed_precision

    with tempfile.TemporaryDirectory() as tmp:
        # a real input pair, so that AutoCast's range check runs with consistent shapes on dynamic graphs
        np.savez(Path(tmp) / "sample.npz", **sample)
        with third_party_output():
            model = convert_to_mixed_precision(str(src), low_precision_type="fp16", keep_io_types=True,
                                               op_types_to_exclude=FP16_KEEP_FP32,
                                               calibration_data=str(Path(tmp) / "sample.npz"))
    atomic_write_bytes(dst, model.SerializeToString())
    return {"tool": "modelopt.onnx.autocast.convert_to_mixed_precision", "tool_version": _version("nvidia-modelopt"),
            "low_precision": "fp16", "kept_fp32_op_types": FP16_KEEP_FP32, "keep_io_types": True}


def _synthetic_pair(contract: IOContract) -> dict[str, np.ndarray]:
    h, w = contract.static_size or (256, 256)
    n = contract.static_batch or 1
    ramp = np.linspace(-1, 1, h * w, dtype=np.float32).reshape(1, 1, h, w)
    return {"mri": np.repeat(ramp, n, axis=0), "other": np.repeat(-ramp, n, axis=0)}


def recipe_name(precision: str, target: str) -> str:
    if precision == "fp16":
        return "fp16"
    if precision == "int8":
        return f"int8-{target}"
    raise InputError(f"--precision {precision}: choose fp16 or int8")


def quantize_onnx(src: Path, dst: Path, precision: str, target: str, method: str = "entropy",
                  batches: list[dict[str, np.ndarray]] | None = None, calibration: dict[str, Any] | None = None,
                  high_precision: str = "fp32", keep_fp32: str | list[str] = KEEP_FP32_AUTO,
                  target_db: float = TARGET_PROBE_PSNR_DB) -> dict[str, Any]:
    """Write the `precision`/`target` recipe of the FP32 graph `src` to `dst` with its manifest."""
    onnx = require("onnx", purpose="quantization")
    parent = read_manifest(src)
    if parent["precision"] != "fp32":
        raise InputError(f"{src}: is already {parent['precision']}; quantize the fp32 export")
    name = recipe_name(precision, target)
    if precision == "int8":
        valid = ORT_METHODS if target == "onnxruntime" else MODELOPT_METHODS
        if method not in valid:
            raise InputError(f"--method {method}: {target} supports {', '.join(valid)}")
        if not batches:
            raise InputError("INT8 needs a calibration set: pass --calibration calibration/<set>.json")
        if not 20 <= target_db <= 99:
            raise InputError(f"--target-psnr {target_db:g}: choose a value between 20 and 99 dB")
        recipe = (_ort_int8(src, dst, batches, method, keep_fp32, target_db) if target == "onnxruntime"
                  else _modelopt_int8(src, dst, batches, method, high_precision, keep_fp32, target_db))
    else:
        recipe = _autocast_fp16(src, dst, batches[0] if batches else _synthetic_pair(contract_of(parent)))
    contract: IOContract = contract_of(parent)
    info = {k: parent[k] for k in ("model", "model_config", "weights_sha256", "opset") if k in parent}
    info.update({"recipe": recipe, "calibration": calibration, "parent_onnx_sha256": parent["onnx_sha256"],
                 "ops": op_inventory(onnx.load(str(dst)))})
    manifest = build_manifest(dst, contract, name, info)
    write_json_atomic(manifest_path(dst), manifest)
    return manifest


def plot_mixed_precision(plan: dict[str, Any], path: Path, title: str = "INT8 sensitivity") -> None:
    """Bar chart of a mixed-precision plan: probe PSNR with only each layer group quantized, kept groups marked."""
    matplotlib = require("matplotlib", extra="dev", purpose="the sensitivity plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sensitivity = plan.get("sensitivity_psnr_db")
    if not sensitivity:
        raise InputError("the sensitivity plot needs --keep-fp32 auto (no search was run)")
    groups = sorted(sensitivity, key=lambda g: sensitivity[g])
    kept = set(plan["kept_fp32"])
    fig, ax = plt.subplots(figsize=(7.5, 0.22 * len(groups) + 1.4))
    ax.barh(groups, [sensitivity[g] for g in groups], color=["#c0392b" if g in kept else "#5d8aa8" for g in groups])
    target = plan["target_probe_psnr_db"]
    ax.axvline(target, color="k", ls="--", lw=0.8, label=f"target {target:g} dB")
    ax.invert_yaxis()
    ax.set_xlabel("probe PSNR vs FP32 with only this group in INT8 (dB; higher = less sensitive)")
    ax.set_xlim(min(30.0, min(sensitivity.values()) - 2), 80)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(handles=[*ax.get_legend_handles_labels()[0],
                       plt.Rectangle((0, 0), 1, 1, color="#c0392b", label="kept in FP32"),
                       plt.Rectangle((0, 0), 1, 1, color="#5d8aa8", label="INT8")], fontsize=7, loc="lower right")
    ax.set_title(f"{title}: all-INT8 {plan['all_int8_probe_psnr_db']:.1f} dB -> mixed {plan['probe_psnr_db']:.1f} dB "
                 f"({len(kept)} of {len(groups)} groups in FP32)", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
