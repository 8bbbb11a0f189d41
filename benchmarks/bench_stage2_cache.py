"""Stage-II training step on CPU: the frozen UNet run live on every crop against crops of cached features.

live:   sample crops, run the frozen UNet on the 2 x T noised copies (fresh noise, as the method trains), then
        the fusion network forward + backward + Adam step.
cached: sample crops of the cached full-image features (feature_cache.py), then the same fusion step.
Both arms are timed in this process, interleaved step by step after warm-up, on the same model and data; the
medians and their ratio are printed, with the one-off cost of building the cache per pair.

It also measures how far the features a live step trains on are from the ones inference computes: the UNet
on a crop (at the inference noise field, tiled from the crop's corner) against the same window of the
full-image features, split into the crop's border band (16 px) and its interior. The cached crops are the
full-image features themselves (up to float16 rounding).

    python benchmarks/bench_stage2_cache.py [--pairs ../shared/data/harvard/train] [--count 24] [--steps 12]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dmfnet_edge.io.pairs import find_pairs
from dmfnet_edge.models.checkpoint import load_unet
from dmfnet_edge.profiling import cpu_description
from dmfnet_edge.train.data import PairBank
from dmfnet_edge.train.feature_cache import FeatureCache
from dmfnet_edge.train.trainer import Stage2Task


def step(task: Stage2Task, opt: torch.optim.Optimizer, batch, gen: torch.Generator) -> float:
    start = time.perf_counter()
    loss, _ = task.loss(batch, gen)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def crop_feature_gap(task: Stage2Task, cache: FeatureCache, crops: int, crop: int, border: int = 16
                     ) -> list[tuple[str, float, float]]:
    """Per level: mean |UNet(crop) - crop(UNet(image))| / mean |crop(UNet(image))|, border band and interior."""
    rng = np.random.default_rng(1)
    model = task.model
    sums: dict[int, list[float]] = {}
    with torch.no_grad():
        for _ in range(crops):
            batch = cache.sample(rng, 1, crop)
            live_m, _ = model.features(batch.mri, batch.other)
            for level, (live, cached) in enumerate(zip(live_m, batch.mri_feats)):
                f = crop // live.shape[-1]
                b = max(border // f, 1)
                diff, ref = (live - cached).abs(), cached.abs().mean()
                inner = diff[..., b:-b, b:-b].mean()
                mask = torch.ones_like(diff, dtype=torch.bool)
                mask[..., b:-b, b:-b] = False
                acc = sums.setdefault(level, [0.0, 0.0])
                acc[0] += float(diff[mask].mean() / ref) / crops
                acc[1] += float(inner / ref) / crops
    return [(f"level {lvl} (1/{cache.height // cache.levels[lvl].shape[-2]})", v[0], v[1])
            for lvl, v in sums.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, default=Path("../shared/data/harvard/train"))
    parser.add_argument("--model", default="edge", help="the UNet (and fusion network) of this model")
    parser.add_argument("--count", type=int, default=24, help="pairs to cache for the benchmark")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per arm")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = find_pairs(args.pairs)
    pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, min(args.count, len(pairs))).astype(int)]
    unet, cfg, _ = load_unet(args.model)
    task = Stage2Task(cfg, unet, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cache = FeatureCache.open_or_build(Path(tmp) / "cache", task.model, pairs)
        build = (time.perf_counter() - start) / len(pairs)
        bank = PairBank(pairs)
        opt = task.optimizer(1e-4)
        gen = torch.Generator().manual_seed(0)
        rng_live, rng_cached = np.random.default_rng(0), np.random.default_rng(0)
        task.model.fusion.train()
        for _ in range(2):  # warm-up
            step(task, opt, bank.sample(rng_live, args.batch, args.crop), gen)
            step(task, opt, cache.sample(rng_cached, args.batch, args.crop), gen)
        live, cached, sample_live, sample_cached = [], [], [], []
        for _ in range(args.steps):  # interleaved so that machine noise hits both alike
            t0 = time.perf_counter()
            batch = bank.sample(rng_live, args.batch, args.crop)
            sample_live.append(time.perf_counter() - t0)
            live.append(step(task, opt, batch, gen) + sample_live[-1])
            t0 = time.perf_counter()
            batch = cache.sample(rng_cached, args.batch, args.crop)
            sample_cached.append(time.perf_counter() - t0)
            cached.append(step(task, opt, batch, gen) + sample_cached[-1])
        gap = crop_feature_gap(task, cache, 8, args.crop)
    med_live, med_cached = statistics.median(live), statistics.median(cached)
    print(f"model {cfg.name}, batch {args.batch} x {args.crop}x{args.crop} crops, {len(pairs)} pairs of "
          f"{args.pairs}, torch {torch.__version__}, {args.threads} threads, {cpu_description()}, "
          f"{args.steps} steps each")
    print(f"{'arm':<44} {'median s/step':>13} {'min s':>7} {'of it, sampling':>16} {'speed-up':>9}")
    print(f"{'live: frozen UNet on every crop':<44} {med_live:>13.3f} {min(live):>7.3f} "
          f"{statistics.median(sample_live):>16.3f} {1.0:>8.2f}x")
    print(f"{'cached: crops of cached full-image features':<44} {med_cached:>13.3f} {min(cached):>7.3f} "
          f"{statistics.median(sample_cached):>16.3f} {med_live / med_cached:>8.2f}x")
    print(f"building the cache: {build:.2f} s per pair once ({cache.meta.bytes / len(pairs) / 1e6:.1f} MB per "
          "pair, float16)")
    print("UNet on a crop vs the same window of the full-image features (mean |difference| / mean |feature|):")
    print(f"{'MRI features':<22} {'border 16 px':>13} {'interior':>9}")
    for name, border, inner in gap:
        print(f"{name:<22} {border:>13.3f} {inner:>9.3f}")


if __name__ == "__main__":
    main()
