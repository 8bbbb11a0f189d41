"""The GPU check: everything this repository could not run without a GPU, prepared once and run in one go on a
lent GPU machine (one command, at most 8 minutes; --budget-seconds, default 450), writing one JSON and one Markdown
report under --out. Steps, most important first; each is recorded as it ends, so a run cut short keeps what ran:

  machine        GPU, driver, torch, CUDA, nvcc, compute-sanitizer
  extension      builds the fused kernel's PyTorch extension (python -m dmfnet_edge.models.cuda_extension)
  op_vs_module   the CUDA op (dmfnet::pixel_attention_fuse) against the PyTorch CrossModalAttention: max abs error
  sanitizer      kernels/cross_modal_attention/cma_check.cu: the launcher, the plugin's AOT entry launched as
                 TensorRT launches it, and the whole module against the CPU reference, then under
                 compute-sanitizer memcheck
  timings        edge and paper models on --backend gpu, eager and CUDA graphs, against FP32 eager PyTorch, all on
                 device-resident inputs: median and p99, ratios from this one run
  tensorrt       where full TensorRT or TensorRT for RTX is importable: build an engine of the shipped FP32 graph,
                 load and run it on this GPU, max abs error against ONNX Runtime (as Polygraphy's Comparator), time it

    python3 benchmarks/gpu_check.py --out "$OUT"            on the GPU machine (make gpu-check)
    python benchmarks/gpu_check.py --dry-run --out DIR      anywhere: imports, the plan, the size of what travels
    python benchmarks/gpu_check.py --fetch-wheels           here, once: wheels of what the GPU machine lacks (msgspec)

The GPU machine's Python (3.12 with torch, numpy, safetensors, onnx, onnxruntime, ninja, nvcc) lacks msgspec: its
wheel travels in carry/gpu-check/wheels and is installed into a temporary folder before dmfnet_edge is imported.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CARRY = REPO / "carry" / "gpu-check"
WHEELS = CARRY / "wheels"
CARRY_LIMIT = 64 << 20  # what travels to the GPU machine: the working tree and the carried folders
NEEDED_THERE = {"msgspec": "msgspec==0.23.0"}  # importable here, absent from the GPU machine's image
GPU_PYTHON = "3.12"
WORK = Path(tempfile.gettempdir()) / "dmfnet-gpu-check"
STEPS = ("machine", "extension", "op_vs_module", "sanitizer", "timings", "tensorrt")
OP_TOLERANCE = 1e-4  # FP32 op against the FP32 module (the CPU reference matches to this, tests/models)


def bootstrap_wheels() -> None:
    """Make the carried wheels importable (the GPU machine has no package index) before dmfnet_edge is imported."""
    missing = [name for name in NEEDED_THERE if importlib.util.find_spec(name) is None]
    wheels = sorted(WHEELS.glob("*.whl")) if WHEELS.is_dir() else []
    if not missing or not wheels:
        return
    site = WORK / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--upgrade", "--target", str(site), *map(str, wheels)], check=True)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()


class Report:
    """The check's results, written (JSON and Markdown) after every step."""

    def __init__(self, out: Path, budget: float, dry_run: bool) -> None:
        self.out, self.deadline, self.started = out, time.monotonic() + budget, time.monotonic()
        self.data: dict[str, Any] = {"dry_run": dry_run, "budget_seconds": budget, "steps": {}}
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def step(self, name: str, run: Callable[[], dict[str, Any]], needs: float = 20) -> dict[str, Any]:
        """Run one step unless fewer than `needs` seconds are left; record its result, or its error."""
        if self.left() < needs:
            result = {"status": "skipped", "reason": f"time budget: {self.left():.0f} s left, the step needs {needs}"}
        else:
            start = time.monotonic()
            try:
                result = {"status": "ok", **run()}
            except Exception as exc:  # a failed step is a result; the next ones still run
                result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000],
                          "traceback": traceback.format_exc()[-4000:]}
            result["seconds"] = round(time.monotonic() - start, 1)
        self.data["steps"][name] = result
        self.write()
        return result

    def write(self) -> None:
        self.data["elapsed_seconds"] = round(time.monotonic() - self.started, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=2) + "\n")
        (self.out / "gpu_check.md").write_text(markdown(self.data))


def markdown(data: dict[str, Any]) -> str:
    """The report as Markdown: one section per step, its figures as a table."""
    title = "GPU check (dry run: nothing was run on a GPU)" if data["dry_run"] else "GPU check"
    lines = [f"# {title}", "", f"elapsed {data.get('elapsed_seconds')} s of a {data['budget_seconds']:.0f} s budget",
             ""]
    for name, result in data["steps"].items():
        lines += [f"## {name}: {result.get('status')}", ""]
        rows = [(k, v) for k, v in result.items() if k not in ("status", "traceback")]
        lines += ["| | |", "| --- | --- |", *[f"| {k} | {_cell(v)} |" for k, v in rows], ""]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def run(command: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=max(timeout, 1), env=env, cwd=REPO)


# ---- steps ------------------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import torch

    props = torch.cuda.get_device_properties(0)
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    smi = run(query, 30) if shutil.which("nvidia-smi") else None
    nvcc = run(["nvcc", "--version"], 30) if shutil.which("nvcc") else None
    return {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}", "sms": props.multi_processor_count,
            "nvidia_smi": smi.stdout.strip() if smi else None, "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "python": platform.python_version(),
            "nvcc": nvcc.stdout.strip().splitlines()[-1] if nvcc else None,
            "compute_sanitizer": shutil.which("compute-sanitizer")}


def capability() -> str:
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return f"{major}{minor}"


def extension(report: Report) -> dict[str, Any]:
    """Build the extension into a folder of this run; the later steps load it from there."""
    folder = WORK / "extension"
    cc = capability()
    env = {**os.environ, "TORCH_CUDA_ARCH_LIST": f"{cc[:-1]}.{cc[-1]}", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = run([sys.executable, "-m", "dmfnet_edge.models.cuda_extension", "--out", str(folder)],
               min(300, report.left() - 120), env)
    if done.returncode != 0:
        raise RuntimeError(f"build failed ({done.returncode}): {(done.stderr or done.stdout)[-1500:]}")
    os.environ["DMFNET_CUDA_EXTENSION"] = str(folder)
    return {"module": done.stdout.strip().splitlines()[-1], "arch": cc}


def op_vs_module() -> dict[str, Any]:
    """The fused op (the prebuilt extension) against the PyTorch module it replaces, FP32, several shapes."""
    import torch

    from dmfnet_edge.models.fusion import CrossModalAttention

    torch.manual_seed(0)
    errors = {}
    for n, c, h, w in ((2, 16, 64, 64), (1, 8, 24, 40), (1, 256, 16, 16), (3, 32, 5, 9)):
        module = CrossModalAttention(c, 4).cuda().eval()
        for p in module.parameters():
            torch.nn.init.normal_(p, std=0.3)
        x, y = torch.randn(n, c, h, w, device="cuda"), torch.randn(n, c, h, w, device="cuda")
        with torch.inference_mode():
            expected = module(x, y)
            module.use_fused_kernel = True
            fused = module(x, y)
        errors[f"{n}x{c}x{h}x{w}"] = float((fused - expected).abs().max())
    worst = max(errors.values())
    return {"max_abs_error": errors, "worst": worst, "tolerance": OP_TOLERANCE, "within": worst < OP_TOLERANCE}


def sanitizer(report: Report) -> dict[str, Any]:
    """cma_check.cu built for this GPU, run plain (errors against the CPU reference) and under memcheck."""
    kernels = REPO / "kernels" / "cross_modal_attention"
    exe = WORK / "cma_check"
    built = run(["nvcc", "-O2", f"-arch=sm_{capability()}", "-I", str(kernels), str(kernels / "cma_check.cu"),
                 str(kernels / "cma_kernels.cu"), str(kernels / "cma_reference.cpp"), "-o", str(exe)], 180)
    if built.returncode != 0:
        raise RuntimeError(f"nvcc failed: {built.stderr[-1500:]}")
    plain = run([str(exe)], 60)
    result: dict[str, Any] = {"errors": json.loads(plain.stdout) if plain.returncode == 0 else plain.stderr[-500:]}
    tool = shutil.which("compute-sanitizer")
    if tool is None:
        return {**result, "memcheck": "compute-sanitizer not found"}
    checked = run([tool, "--tool", "memcheck", "--error-exitcode", "9", "--print-limit", "20", str(exe)],
                  min(240, report.left() - 60))
    summary = [line for line in checked.stdout.splitlines() if "ERROR SUMMARY" in line]
    return {**result, "memcheck_exit": checked.returncode, "memcheck_clean": checked.returncode == 0,
            "memcheck": summary[-1] if summary else checked.stdout[-800:]}


def timings(extension_ok: bool, runs: int) -> dict[str, Any]:
    """Per model: FP32 eager PyTorch, --backend gpu eager and with CUDA graphs (FP16), device-resident 256x256."""
    import torch

    torch.backends.cudnn.benchmark = True
    x = torch.rand(1, 1, 256, 256, device="cuda") * 2 - 1
    out = {"fused_kernel": extension_ok, "input": "1x1x256x256 on the GPU", "runs": runs}
    for spec in ("edge", "paper"):
        out[spec] = _ratios(_model_rows(spec, x, extension_ok, runs))
        torch.cuda.empty_cache()
    return out


def _model_rows(spec: str, x: Any, extension_ok: bool, runs: int) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_gpu import cuda_times

    from dmfnet_edge.models.checkpoint import load_or_build
    from dmfnet_edge.runtime.gpu_backend import GpuRunner

    model = load_or_build(spec, allow_random=True)[0].cuda().eval()
    with torch.inference_mode():
        reference = model(x, x)
        rows = {"pytorch_fp32_eager": cuda_times(lambda: model(x, x), runs, warmup=10)}
    for graphs in (False, True):
        with GpuRunner(spec, precision="fp16", fused_kernels=extension_ok, cuda_graphs=graphs,
                       allow_random=True) as runner:
            name = f"gpu_fp16_{'graphs' if graphs else 'eager'}"
            rows[name] = cuda_times(lambda runner=runner: runner.fuse_tensors(x, x), runs, warmup=10)
            rows[f"{name}_max_abs_vs_fp32"] = float((runner.fuse_tensors(x, x) - reference).abs().max())
    return rows


def _ratios(rows: dict[str, Any]) -> dict[str, Any]:
    """Median and p99 of each timed variant, and the ratios between them (one run, one GPU)."""
    from bench_gpu import summary

    table = {k: v if isinstance(v, float) else dict(zip(("median_ms", "p99_ms"), summary(v))) for k, v in rows.items()}
    base = table["pytorch_fp32_eager"]["median_ms"]
    for name in ("gpu_fp16_eager", "gpu_fp16_graphs"):
        table[name]["vs_fp32_eager"] = round(base / table[name]["median_ms"], 2)
    table["graphs_vs_eager"] = round(table["gpu_fp16_eager"]["median_ms"] / table["gpu_fp16_graphs"]["median_ms"], 2)
    return table


def tensorrt(report: Report, runs: int) -> dict[str, Any]:
    flavour = next((f for m, f in (("tensorrt", "tensorrt"), ("tensorrt_rtx", "tensorrt-rtx"))
                    if importlib.util.find_spec(m)), None)
    if flavour is None:
        return {"status": "skipped", "reason": "neither tensorrt nor tensorrt_rtx is importable here"}
    import numpy as np

    from dmfnet_edge.cli.main import export_main
    from dmfnet_edge.runtime.onnxruntime_backend import OnnxRuntimeRunner
    from dmfnet_edge.runtime.tensorrt_backend import TensorRTRunner

    graph = REPO / "dmfnet_edge" / "weights" / "dmfnet-edge-fp32.onnx"
    engines = WORK / "engines"
    if export_main(["build", "--onnx", str(graph), "--out", str(engines), "--toolchain", flavour, "--shapes",
                    "1x256x256"]) != 0:
        raise RuntimeError("dmfnet-export build failed (its error line is above)")
    engine = next(engines.glob("*.engine"))
    mri, other = (np.random.default_rng(k).uniform(-1, 1, (1, 1, 256, 256)).astype(np.float32) for k in (0, 1))
    expected = OnnxRuntimeRunner(graph).fuse(mri, other)
    with TensorRTRunner.load(engine) as runner:
        got = runner.fuse(mri, other)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            runner.fuse(mri, other)
            times.append(1000 * (time.perf_counter() - start))
    times.sort()
    error = np.abs(got - expected)
    return {"flavour": flavour, "engine": engine.name, "max_abs_error_vs_onnxruntime": float(error.max()),
            "mean_abs_error": float(error.mean()), "host_to_host_median_ms": times[len(times) // 2],
            "host_to_host_p99_ms": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]}


# ---- the dry run ------------------------------------------------------------------------------------------------
def carried_files() -> tuple[int, int]:
    """(bytes, files) of what travels: tracked and untracked-not-ignored files, and the carried folder."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    paths = [REPO / p for p in listed if p] + ([p for p in CARRY.rglob("*")] if CARRY.is_dir() else [])
    files = [p for p in paths if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_size for p in files), len(files)


def dry_run(report: Report) -> bool:
    modules = ["torch", "dmfnet_edge.runtime.gpu_backend", "dmfnet_edge.models.cuda_extension",
               "dmfnet_edge.models.kernels", "dmfnet_edge.runtime.tensorrt_backend", "dmfnet_edge.engines.qdp_plugin",
               "dmfnet_edge.runtime.onnxruntime_backend", "dmfnet_edge.cli.main"]
    imports = {}
    for name in modules:
        try:
            importlib.import_module(name)
            imports[name] = "ok"
        except Exception as exc:
            imports[name] = f"{type(exc).__name__}: {exc}"[:300]
    sys.path.insert(0, str(REPO / "benchmarks"))
    importlib.import_module("bench_gpu")
    size, count = carried_files()
    wheels = sorted(p.name for p in WHEELS.glob("*.whl")) if WHEELS.is_dir() else []
    plan = {name: PLAN[name] for name in STEPS}
    report.step("dry_run", lambda: {
        "imports": imports, "plan": plan, "carried_bytes": size, "carried_files": count, "carry_limit": CARRY_LIMIT,
        "fits": size < CARRY_LIMIT, "carry": [str(CARRY.relative_to(REPO))], "wheels": wheels,
        "wheels_note": "ok" if wheels else "none: run --fetch-wheels here before the GPU run (msgspec is not there)",
        "device_command": DEVICE_COMMAND}, needs=0)
    return size < CARRY_LIMIT and all(v == "ok" for v in imports.values())


PLAN = {
    "machine": "nvidia-smi, torch.cuda device properties, nvcc --version",
    "extension": "python -m dmfnet_edge.models.cuda_extension --out /tmp/dmfnet-gpu-check/extension "
                 "(TORCH_CUDA_ARCH_LIST = this GPU's)",
    "op_vs_module": "CrossModalAttention with use_fused_kernel False and True on 4 shapes: max abs error < 1e-4",
    "sanitizer": "nvcc cma_check.cu cma_kernels.cu cma_reference.cpp; run it; compute-sanitizer --tool memcheck",
    "timings": "edge and paper: FP32 eager, --backend gpu FP16 eager and CUDA graphs, device-resident 256x256, "
               "median and p99 of --runs, ratios",
    "tensorrt": "if tensorrt or tensorrt_rtx imports: dmfnet-export build of the shipped FP32 graph, TensorRTRunner "
                "against ONNX Runtime (max abs error), host-to-host median and p99",
}
DEVICE_COMMAND = "make gpu-check OUT=$OUT (carry: carry/gpu-check; timeout 540 s)"


def fetch_wheels() -> int:
    """Download the wheels the GPU machine lacks (for its Python 3.12, manylinux x86-64) into carry/gpu-check."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    tags = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
    platforms = [f"--platform={tag}" for tag in tags]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               GPU_PYTHON, "--implementation", "cp", *platforms, "-d", str(WHEELS), *NEEDED_THERE.values()]
    return subprocess.run(command).returncode


def check(report: Report, runs: int) -> None:
    import torch

    if not torch.cuda.is_available():
        report.data["steps"]["machine"] = {"status": "failed", "error": "no CUDA GPU is visible to torch here"}
        report.write()
        return
    report.step("machine", machine, needs=0)
    built = report.step("extension", lambda: extension(report), needs=150)["status"] == "ok"
    if built:
        report.step("op_vs_module", op_vs_module)
    else:
        report.data["steps"]["op_vs_module"] = {"status": "skipped", "reason": "the extension did not build"}
    report.step("sanitizer", lambda: sanitizer(report), needs=90)
    report.step("timings", lambda: timings(built, runs), needs=90)
    report.step("tensorrt", lambda: tensorrt(report, runs), needs=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "out" / "gpu-check"))
    parser.add_argument("--dry-run", action="store_true", help="imports, plan and carry size; nothing on a GPU")
    parser.add_argument("--fetch-wheels", action="store_true", help="download the wheels the GPU machine lacks")
    parser.add_argument("--budget-seconds", type=float, default=450, help="the whole check (default 450: 7.5 min)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per variant")
    args = parser.parse_args()
    if args.fetch_wheels:
        return fetch_wheels()
    WORK.mkdir(parents=True, exist_ok=True)
    bootstrap_wheels()
    sys.path.insert(0, str(REPO))
    report = Report(args.out, args.budget_seconds, args.dry_run)
    if args.dry_run:
        return 0 if dry_run(report) else 1
    check(report, args.runs)
    return 1 if any(step["status"] == "failed" for step in report.data["steps"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
