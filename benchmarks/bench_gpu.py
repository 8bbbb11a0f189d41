"""GPU latency per 256x256 pair (batch 1), all variants measured in this one script on the same GPU, every one on
inputs already on the device and with its output left there (the timings compare the network, not host copies):

  official        6 serial FP32 eager UNet passes (unpruned) + fusion head (the published call pattern)
  batched FP32    the 6 passes as one batch, pruned tail, FP32 eager
  compile         batched FP16 autocast under torch.compile (default, and mode="reduce-overhead")
  fast path       dmfnet's --backend gpu (GpuRunner.fuse_tensors): FP16, channels_last, pruned, fused kernel, one
                  CUDA graph per shape
plus the fused cross-modal attention kernel against the PyTorch module it replaces (the maps and the kernel timed as
one call, as the module is), and the edge model on the fast path at batch 1 and 64 slices, device-resident and, on
its own line, host to host (what `dmfnet fuse` pays per call). Medians and 99th percentiles of --repeats timed runs
after warm-up; ratios against `official`.

    python benchmarks/bench_gpu.py [--model paper] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import official_pattern  # noqa: E402

from dmfnet_edge.models.checkpoint import load_or_build  # noqa: E402
from dmfnet_edge.models.fusion import CrossModalAttention  # noqa: E402
from dmfnet_edge.models.kernels import attention_maps, pixel_attention_fuse  # noqa: E402
from dmfnet_edge.runtime.gpu_backend import GpuRunner  # noqa: E402


def cuda_times(fn, runs: int, warmup: int = 5) -> list[float]:
    """Milliseconds of each of `runs` calls, measured with CUDA events on the current stream after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def percentile(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(times: list[float]) -> tuple[float, float]:
    """(median, p99) in ms."""
    return statistics.median(times), percentile(times, 99)


def load(spec: str):
    return load_or_build(spec, allow_random=True)[0]


def model_table(spec: str, runs: int) -> None:
    model = load(spec).cuda().eval()
    x = torch.rand(1, 1, 256, 256, device="cuda") * 2 - 1
    rows = {}
    with torch.inference_mode():
        rows["official: 6 serial FP32 eager passes + head"] = cuda_times(lambda: official_pattern(model, x, x), runs)
        rows["batched, pruned, FP32 eager"] = cuda_times(lambda: model(x, x), runs)
        for mode in ("default", "reduce-overhead"):
            compiled = torch.compile(model, mode=mode)

            def run(compiled=compiled):
                with torch.autocast("cuda", dtype=torch.float16):
                    return compiled(x, x)

            rows[f"batched FP16 torch.compile ({mode})"] = cuda_times(run, runs, warmup=10)
    with GpuRunner(spec, precision="fp16", allow_random=True) as fast:  # latency only: the paper size has no weights
        rows["dmfnet --backend gpu (FP16, graph, fused kernel)"] = cuda_times(lambda: fast.fuse_tensors(x, x), runs)
    base = statistics.median(rows["official: 6 serial FP32 eager passes + head"])
    print(f"\n{spec} model, 256x256 pair, batch 1, device-resident, {torch.cuda.get_device_name()}, "
          f"torch {torch.__version__}")
    print(f"{'variant':<52} {'median ms':>10} {'p99 ms':>8} {'vs official':>12}")
    for name, times in rows.items():
        median, p99 = summary(times)
        print(f"{name:<52} {median:>10.2f} {p99:>8.2f} {base / median:>11.1f}x")


def kernel_table(runs: int) -> None:
    print("\nfused cross-modal attention pixel stage vs the PyTorch module (FP32, batch 1, device-resident)")
    for c, size in ((256, 16), (128, 64), (128, 256)):
        module = CrossModalAttention(c, 8).cuda().eval()
        x, y = (torch.randn(1, c, size, size, device="cuda") for _ in range(2))
        weight, bias = module.pixel.weight, module.pixel.bias
        with torch.inference_mode():
            ref = statistics.median(cuda_times(lambda: module(x, y), runs))
            fused = statistics.median(cuda_times(
                lambda: pixel_attention_fuse(x, y, *attention_maps(module, x + y), weight, bias), runs))
        print(f"  C={c:<4} {size}x{size}: module {ref:.3f} ms, maps + fused kernel {fused:.3f} ms = {ref / fused:.2f}x")


def edge_batches(runs: int) -> None:
    print("\nedge model on the GPU fast path")
    with GpuRunner("edge", precision="fp16") as runner:
        for batch in (1, 64):
            device = torch.rand(batch, 1, 256, 256, device="cuda") * 2 - 1
            host = device.cpu().numpy()
            on_device = statistics.median(cuda_times(lambda: runner.fuse_tensors(device, device), runs))
            host_to_host = statistics.median(cuda_times(lambda: runner.fuse(host, host), runs))
            print(f"  batch {batch:>2}: {on_device:.2f} ms per call device-resident ({1000 * batch / on_device:.0f} "
                  f"pairs/s); host to host {host_to_host:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="paper")
    parser.add_argument("--repeats", "--runs", dest="repeats", type=int, default=30, help="timed runs per variant")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    model_table(args.model, args.repeats)
    kernel_table(args.repeats)
    edge_batches(args.repeats)


if __name__ == "__main__":
    main()
