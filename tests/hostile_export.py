"""Bad-input cases of the export and build commands (`dmfnet-export onnx/quantize/build/recipe/inspect`) and of the
CLI's error contract: ONNX files opened only through the checked loader (bounded, external data inside the graph's
folder, parse errors as one line), opsets, pixel budgets and compute capabilities the toolchains cannot take,
mislabelled graphs, third-party warnings and line breaks kept out of the one error line, a closed standard
output, symbolic links that lead nowhere at an output path, INT8 convolutions TensorRT runs in FP32 without a
declaration, weight stripping without a GPU, and engines that are not what their manifest says.

The graphs are the shipped FP32 graph (dynamic N, H, W), copied into the case folder and edited there, each with
a manifest whose SHA-256 matches the edited file (so that only the defect under test is wrong)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.bad_inputs import REPO, Case, _grey, _img

SHIPPED = REPO / "dmfnet_edge" / "weights" / "dmfnet-edge-fp32.onnx"
ONNX_CHANGE = Callable[[object], None]  # edits an onnx.ModelProto in place


def _write(path: Path, data: bytes, source: Path = SHIPPED, **manifest: object) -> Path:
    """`data` at `path` with the manifest of `source`, its hash and file name made to match (and `manifest`'s
    fields written over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    meta = json.loads(source.with_name(source.name + ".json").read_text())
    meta.update({"onnx_file": path.name, "onnx_sha256": hashlib.sha256(data).hexdigest(), **manifest})
    path.with_name(path.name + ".json").write_text(json.dumps(meta))
    return path


def _graph(folder: Path, change: ONNX_CHANGE | None = None, **manifest: object) -> Path:
    """The shipped FP32 graph edited by `change`, as folder/g.onnx with a matching manifest."""
    import onnx

    model = onnx.load(str(SHIPPED))
    if change is not None:
        change(model)
    return _write(folder / "g.onnx", model.SerializeToString(), **manifest)


def _garbage(folder: Path) -> Path:
    return _write(folder / "g.onnx", b"not a graph \x00\x01\x02" * 40)


def _int8_labelled_fp32(folder: Path) -> Path:
    """The shipped ONNX Runtime INT8 graph with a manifest that calls it fp32 (no recipe, no calibration)."""
    int8 = SHIPPED.with_name("dmfnet-edge-int8-onnxruntime.onnx")
    return _write(folder / "g.onnx", int8.read_bytes(), precision="fp32")


def _external(location: str, length: int | None = None, tensors: int = 1) -> ONNX_CHANGE:
    """The `tensors` largest initializers moved out to external data at `location` (the bytes are not written:
    each case makes the file it needs)."""
    def change(model) -> None:
        import onnx

        largest = sorted(model.graph.initializer, key=lambda t: -len(t.raw_data))[:tensors]
        for tensor in largest:
            size = len(tensor.raw_data)
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", "0"), ("length", str(length or size))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value

    return change


def _opset(version: int) -> ONNX_CHANGE:
    def change(model) -> None:
        next(o for o in model.opset_import if o.domain == "").version = version

    return change


def _static(side: int) -> ONNX_CHANGE:
    """Inputs and output fixed at 1 x 1 x side x side."""
    def change(model) -> None:
        for value in (*model.graph.input, *model.graph.output):
            dims = value.type.tensor_type.shape.dim
            for index, size in enumerate((1, 1, side, side)):
                dims[index].Clear()
                dims[index].dim_value = size

    return change


def _unsupported_node(model) -> None:
    """A UINT8 constant (TensorRT warns while converting it) feeding an operator no TensorRT has (the parse
    fails after the warning)."""
    import numpy as np
    from onnx import helper, numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(np.arange(4, dtype=np.uint8), "u8"))
    model.graph.node.append(helper.make_node("Cast", ["u8"], ["u8f"], to=1, name="cast_u8"))
    model.graph.node.append(helper.make_node("Bar", ["u8f"], ["bar_out"], domain="example", name="bar"))
    model.opset_import.append(helper.make_opsetid("example", 1))


def _build(folder: Path, graph: Path, out: Path | None = None) -> list[str]:
    return ["build", "--onnx", str(graph), "--out", str(out or folder / "out"), "--toolchain", "tensorrt-rtx",
            "--compute-capability", "sm86"]


def _quantize(folder: Path, graph: Path) -> list[str]:
    return ["quantize", "--onnx", str(graph), "--precision", "fp16", "-o", str(folder / "out" / "q.onnx")]


def _outside(folder: Path) -> Path:
    (folder / "secret.bin").write_bytes(bytes(600_000))
    return _graph(folder / "graph", _external("../secret.bin"))


def _fifo_data(folder: Path) -> Path:
    graph = _graph(folder, _external("weights.bin"))
    os.mkfifo(folder / "weights.bin")
    return graph


def _link_to_zero(folder: Path) -> Path:
    graph = _graph(folder, _external("weights.bin"))
    (folder / "weights.bin").symlink_to("/dev/zero")
    return graph


def _over_2gb(folder: Path) -> Path:
    """200 tensors each declaring the whole of one 16 MiB file: 3.4 GB declared, 16 MiB on disk."""
    with open(folder / "weights.bin", "wb") as handle:
        handle.truncate(16 << 20)
    return _graph(folder, _external("weights.bin", length=16 << 20, tensors=200))


def _rtx_recipe(folder: Path, targets: str) -> Path:
    text = (REPO / "export" / "workstation-rtx-fp16.yaml").read_text()
    path = folder / "workstation-rtx-fp16.yaml"
    path.write_text(text.replace("[sm80, sm86, sm89, sm120]", targets))
    return path


def _looping_link(folder: Path, name: str) -> Path:
    (folder / "out").mkdir(exist_ok=True)
    link = folder / "out" / name
    link.symlink_to(name)  # `ln -s loop loop`
    return link


def _dangling(folder: Path) -> Path:
    (folder / "out").mkdir(exist_ok=True)
    link = folder / "out" / "engines"
    link.symlink_to("nowhere")
    return link


@contextlib.contextmanager
def _stdout_closed() -> Iterator[None]:
    """As `COMMAND >&-` starts it: descriptor 1 closed, and Python's sys.stdout None."""
    sys.stdout.flush()
    os.close(1)
    sys.stdout = None
    yield


CASES: list[Case] = [
    # 1. ONNX files only through the checked loader
    Case("ONNX external data outside the graph's folder (build)", lambda d, m: _build(d, _outside(d)), 2,
         "external data must be a file named relative to the graph's folder", tool="dmfnet-export"),
    Case("ONNX external data at /dev/zero (quantize)", lambda d, m: _quantize(d, _graph(d, _external("/dev/zero"))),
         2, "external data must be a file named relative to the graph's folder", tool="dmfnet-export"),
    Case("ONNX external data behind a link to /dev/zero (build)", lambda d, m: _build(d, _link_to_zero(d)), 2,
         "leads outside the graph's folder", tool="dmfnet-export"),
    Case("ONNX external data missing (quantize)", lambda d, m: _quantize(d, _graph(d, _external("weights.bin"))), 2,
         "cannot be opened (No such file or directory)", tool="dmfnet-export"),
    Case("ONNX external data a FIFO (build)", lambda d, m: _build(d, _fifo_data(d)), 2, "is not a regular file",
         tool="dmfnet-export"),
    Case("ONNX graph declaring over 2 GB of external data (quantize)", lambda d, m: _quantize(d, _over_2gb(d)), 2,
         "bytes of graph and external data", tool="dmfnet-export"),
    Case("ONNX file that does not parse (build)", lambda d, m: _build(d, _garbage(d)), 2, "not an ONNX graph",
         tool="dmfnet-export"),
    Case("ONNX file that does not parse (quantize)", lambda d, m: _quantize(d, _garbage(d)), 2, "not an ONNX graph",
         tool="dmfnet-export"),
    Case("recipe --onnx with external data outside its folder", lambda d, m: [
        "recipe", str(REPO / "export" / "cpu-fp32.yaml"), "--onnx", str(_outside(d)), "--out", str(d / "out"),
        "--no-gate"], 2, "external data must be a file named relative", tool="dmfnet-export"),
    # 2. what the toolchains cannot take
    Case("ONNX graph declaring opset 99 (build)", lambda d, m: _build(d, _graph(d, _opset(99))), 2,
         "declares ONNX opset 99", tool="dmfnet-export"),
    Case("engine for a 10^12-pixel static input (build)", lambda d, m: _build(d, _graph(
        d, _static(1_000_000), inputs={"mri": [1, 1, 1_000_000, 1_000_000], "other": [1, 1, 1_000_000, 1_000_000]})),
        2, "exceed the pixel budget", tool="dmfnet-export"),
    Case("recipe --list with a target TensorRT for RTX has not (sm90)", lambda d, m: [
        "recipe", "--list", str(_rtx_recipe(d, "[sm86, sm90]"))], 2, "no Hopper target", tool="dmfnet-export"),
    # 3. signals (tests/cli/test_signals.py) and messages
    Case("fp32 graph labelled int8-tensorrt (build)", lambda d, m: _build(d, _graph(d, precision="int8-tensorrt")), 2,
         "says int8-tensorrt, but the graph is fp32", tool="dmfnet-export"),
    Case("INT8 graph labelled fp32 (build)", lambda d, m: _build(d, _int8_labelled_fp32(d)), 2,
         "says fp32, but the graph is int8-onnxruntime", tool="dmfnet-export"),
    Case("TensorRT warnings before a parse failure (build)", lambda d, m: _build(d, _graph(d, _unsupported_node)), 2,
         "cannot parse the graph", tool="dmfnet-export"),
    Case("a line break in a missing file's name (build)", lambda d, m: _build(d, d / "a\nb.onnx"), 2,
         "ONNX file not found", tool="dmfnet-export"),
    Case("a line break in a missing file's name (fuse)", lambda d, m: [
        "fuse", "--mri", str(d / "a\nb.png"), "--other", str(_img(d, "ct.png", _grey())), "-o",
        str(d / "out" / "f.png")], 2, "file not found"),
    # 4. standard output closed
    Case("standard output closed (dmfnet info >&-)", lambda d, m: ["info"], 3, "standard output: is closed",
         patch=_stdout_closed),
    Case("standard output closed (recipe --list >&-)", lambda d, m: ["recipe", "--list", str(REPO / "export")], 3,
         "standard output: is closed", patch=_stdout_closed, tool="dmfnet-export"),
    # 5. a symbolic link that leads nowhere is an existing output
    Case("quantize -o a looping symlink", lambda d, m: [*_quantize(d, _graph(d))[:-1], str(_looping_link(d, "q.onnx"))],
         2, "symbolic link that leads nowhere", tool="dmfnet-export"),
    Case("fuse -o a looping symlink", lambda d, m: [
        "fuse", "--mri", str(_img(d, "mri.png", _grey())), "--other", str(_img(d, "ct.png", _grey(seed=1))), "-o",
        str(_looping_link(d, "f.png"))], 2, "symbolic link that leads nowhere"),
    Case("onnx -o a looping symlink", lambda d, m: ["onnx", "--model", "tiny", "--size", "64", "-o", str(
        _looping_link(d, "graphs"))], 2, "symbolic link that leads nowhere", tool="dmfnet-export"),
    Case("build --out a dangling symlink", lambda d, m: _build(d, _graph(d), _dangling(d)), 2,
         "symbolic link that leads nowhere", tool="dmfnet-export"),
]


# ---- engines: declared INT8 fallbacks, weight stripping, inspect -------------------------------------------------
INIT_CONV, CHANNEL_CONV = "/init_conv/Conv", "/fusion/attention.4/channel/channel.3/Conv"


def _qdq_pair(tensor: str, scale: str, zero: str, axis: dict) -> tuple[list, str]:
    from onnx import helper

    q, dq = f"{tensor}.q", f"{tensor}.dq"
    return [helper.make_node("QuantizeLinear", [tensor, scale, zero], [q], name=q, **axis),
            helper.make_node("DequantizeLinear", [q, scale, zero], [dq], name=dq, **axis)], dq


def qdq(*convolutions: str) -> ONNX_CHANGE:
    """Explicit INT8 Q/DQ on the data (per tensor) and weights (per output channel, as Model Optimizer writes them)
    of the named convolutions. TensorRT for RTX 1.7 runs /init_conv/Conv in INT8 and the 1x1 convolution on the
    pooled channel vector, /fusion/attention.4/channel/channel.3/Conv, unfused in FP32."""
    def change(model) -> None:
        import numpy as np
        from onnx import numpy_helper

        weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        model.graph.initializer.extend([numpy_helper.from_array(np.array(0.05, np.float32), "qdq.scale"),
                                        numpy_helper.from_array(np.array(0, np.int8), "qdq.zero")])
        nodes = []
        for node in model.graph.node:
            if node.name in convolutions:
                w = weights[node.input[1]]
                scale = np.maximum(np.abs(w.reshape(len(w), -1)).max(axis=1) / 127, 1e-8).astype(np.float32)
                names = (f"{node.name}.w.scale", f"{node.name}.w.zero")
                model.graph.initializer.extend([numpy_helper.from_array(scale, names[0]),
                                                numpy_helper.from_array(np.zeros(len(w), np.int8), names[1])])
                data, node.input[0] = _qdq_pair(node.input[0], "qdq.scale", "qdq.zero", {})
                weight, node.input[1] = _qdq_pair(node.input[1], *names, {"axis": 0})
                nodes += data + weight
            nodes.append(node)
        del model.graph.node[:]
        model.graph.node.extend(nodes)

    return change


def _int8_graph(folder: Path) -> Path:
    return _graph(folder, qdq(INIT_CONV, CHANNEL_CONV), precision="int8-tensorrt")


def _engine(folder: Path, data: bytes, flavour: str = "tensorrt-rtx") -> Path:
    """`data` as an engine with a manifest whose hash and size match it (the shipped FP16 engine's manifest)."""
    template = REPO / "docs" / "engines" / "dmfnet-edge-fp16.engine.json"
    engine = folder / "m.engine"
    engine.write_bytes(data)
    meta = json.loads(template.read_text())
    meta.update(engine_file=engine.name, engine_sha256=hashlib.sha256(data).hexdigest(), engine_bytes=len(data),
                toolchain={"flavour": flavour, "version": "1.7.1.116"})
    engine.with_name(engine.name + ".json").write_text(json.dumps(meta))
    return engine


def _swapped_engine(folder: Path) -> Path:
    engine = _engine(folder, b"vtrt" + bytes(64))
    engine.write_bytes(b"vtrt" + bytes(63) + b"\x01")
    return engine


def _fifo_engine(folder: Path) -> Path:
    _engine(folder, b"vtrt" + bytes(64))
    (folder / "m.engine").unlink()
    os.mkfifo(folder / "m.engine")
    return folder / "m.engine"


def _raw_engine(folder: Path) -> Path:
    (folder / "m.engine").write_bytes(b"vtrt" + bytes(64))
    return folder / "m.engine"


def _no_gpu() -> contextlib.AbstractContextManager:
    """No GPU visible to the process, as on a CPU-only build machine (and on a GPU machine hidden from it)."""
    from unittest import mock

    return mock.patch.dict(os.environ, {"CUDA_VISIBLE_DEVICES": ""})


CASES += [
    Case("INT8 convolution run in FP32 without a declaration (build)", lambda d, m: _build(d, _int8_graph(d)), 1,
         "1 of them undeclared (declared: none); where FP32 is acceptable, declare them", tool="dmfnet-export"),
    Case("build --allow-int8-fallbacks with two counts", lambda d, m: [
        *_build(d, _graph(d)), "--allow-int8-fallbacks", "1,2"], 2, "at most one count", tool="dmfnet-export"),
    Case("build --strip-weights without a GPU", lambda d, m: [*_build(d, _graph(d)), "--strip-weights"], 3,
         "--strip-weights: no GPU is visible here", patch=_no_gpu, tool="dmfnet-export"),
    Case("inspect an engine whose manifest is another flavour's", lambda d, m: [
        "inspect", str(_engine(d, b"ftrt" + bytes(64)))], 2, "the manifest says a tensorrt-rtx engine, the plan is "
         "tensorrt", tool="dmfnet-export"),
    Case("inspect a swapped engine", lambda d, m: ["inspect", str(_swapped_engine(d))], 2, "damaged or was swapped",
         tool="dmfnet-export"),
    Case("inspect an engine that is a FIFO", lambda d, m: ["inspect", str(_fifo_engine(d))], 2,
         "is not a regular file", tool="dmfnet-export"),
    Case("inspect an engine without its manifest", lambda d, m: [
        "inspect", str(_raw_engine(d))], 2, "engine manifest not found", tool="dmfnet-export"),
]
