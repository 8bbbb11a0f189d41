"""CPU latency of one 256x256 pair in PyTorch eager FP32: the official call pattern against ours.

official: 6 serial UNet passes (2 sources x 3 timesteps, batch 1 each, the whole decoder incl. the unused
          tail), then the fusion network.
ours:     the 6 passes as one batch with the unused tail pruned, then the fusion network (DMFNet.forward).
Both are timed in this process, interleaved, after warm-up; medians and the ratio are printed.

    python benchmarks/bench_cpu.py [--model edge] [--repeats 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dmfnet_edge.models.checkpoint import load_or_build
from dmfnet_edge.models.dmfnet import DMFNet
from dmfnet_edge.profiling import cpu_description


def official_pattern(model: DMFNet, mri: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Six serial, unpruned UNet passes, then the head (the published inference loop, made deterministic)."""
    noise = model.noise[..., : mri.shape[-2], : mri.shape[-1]]
    feats: list[list[list[torch.Tensor]]] = [[], []]
    for s, image in enumerate((mri, other)):
        for k in range(model.gammas.shape[0]):
            xt = model.gammas[k] * image + model.sigmas[k] * noise[s, k]
            feats[s].append(model.unet.decoder_features(xt, model.gammas[k : k + 1], prune=False))
    per_source = [[torch.cat([f[level] for f in feats[s]], dim=1) for level in range(len(feats[s][0]))]
                  for s in range(2)]
    return model.fuse(per_source, mri, other)


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="edge", help="edge (shipped weights), a preset or a weights PATH")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_or_build(args.model, allow_random=True)[0]
    gen = torch.Generator().manual_seed(0)
    mri, other = (torch.rand(1, 1, args.size, args.size, generator=gen) * 2 - 1 for _ in range(2))
    with torch.inference_mode():
        reference = official_pattern(model, mri, other)
        max_diff = float((model(mri, other) - reference).abs().max())
        for _ in range(args.warmup):
            official_pattern(model, mri, other), model(mri, other)
        official, ours = [], []
        for _ in range(args.repeats):  # interleaved so that machine noise hits both alike
            official += timed(lambda: official_pattern(model, mri, other), 1)
            ours += timed(lambda: model(mri, other), 1)
    med_official, med_ours = statistics.median(official), statistics.median(ours)
    print(f"model {model.cfg.name}, {args.size}x{args.size} pair, torch {torch.__version__}, "
          f"{args.threads} threads, {cpu_description()}, {args.repeats} runs each")
    print(f"{'variant':<40} {'median s':>9} {'min s':>8} {'vs official':>12}")
    print(f"{'official: 6 serial unpruned passes':<40} {med_official:>9.3f} {min(official):>8.3f} {1.0:>11.2f}x")
    print(f"{'ours: one batch of 6, pruned tail':<40} {med_ours:>9.3f} {min(ours):>8.3f} "
          f"{med_official / med_ours:>11.2f}x")
    print(f"max |ours - official| = {max_diff:.2e}")


if __name__ == "__main__":
    main()
