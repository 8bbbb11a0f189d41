"""`dmfnet train stage1|stage2`: train the diffusion UNet, then the fusion network on its frozen features."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from dmfnet_edge._optional import require
from dmfnet_edge.cli.progress import bar
from dmfnet_edge.cli.types import NON_NEGATIVE, POSITIVE, THREADS, float_range, int_range, positive_float, torch_device
from dmfnet_edge.errors import InputError
from dmfnet_edge.io.pairs import find_pairs
from dmfnet_edge.metrics.table import markdown_table


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", choices=["stage1", "stage2"], help="stage1: diffusion UNet; stage2: fusion network")
    p.add_argument("--data", required=True, type=Path, help="training split: DIR/MRI-X/{MRI,X}/NAME.png")
    p.add_argument("--val", type=Path, help="validation split for the final report (never trained on)")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, final weights, report)")
    p.add_argument("--preset", help="model preset, paper | edge | tiny: stage1's model (default edge); stage2: the "
                                    "fusion network of this preset on the --unet checkpoint's UNet (default: the "
                                    "checkpoint's own)")
    p.add_argument("--unet", help="stage2: the stage1 checkpoint (RUN/unet) whose UNet is frozen")
    p.add_argument("--steps", type=POSITIVE, default=4000,
                   help="optimiser steps in all (a resumed run stops there too)")
    p.add_argument("--batch", type=int_range(1, 256), default=8, help="pairs per step")
    p.add_argument("--crop", type=int_range(16, 4096), default=128,
                   help="random square crop side (same crop for both images)")
    p.add_argument("--lr", type=positive_float, help="learning rate (stage1 default 2e-4 AdamW, stage2 1e-4 Adam)")
    p.add_argument("--device", default="cpu", type=torch_device, help="cpu | cuda | cuda:N")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--threads", type=THREADS, help="CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0,
                   help="seed of initialisation, data order and noise")
    p.add_argument("--checkpoint-every", type=POSITIVE, default=200, help="steps between resumable checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.* if present")
    p.add_argument("--json", action="store_true", help="print the whole validation report as JSON")
    p.add_argument("--feature-cache", type=Path, metavar="DIR",
                   help="stage2: train on cached UNet features (DIR/train, and DIR/val with --val-every), built on "
                        "first use (about 21 MB per 256x256 pair for edge) and refused when stale")
    p.add_argument("--init", metavar="MODEL",
                   help="stage2: start the fusion network from this complete model (a preset name such as 'edge' "
                        "for the shipped weights, or a path); its UNet must be the --unet one")
    p.add_argument("--no-max-gate", action="store_true",
                   help="stage2: leave out the edge preset's max gate (the fusion head of the weights shipped "
                        "before it; the gate's ablation arm)")
    p.add_argument("--timesteps", type=_timesteps, metavar="T[,T...]",
                   help="stage2: the noise levels the fusion network reads (default: the preset's, 5,10,20 for "
                        "edge); fewer levels mean fewer UNet passes per pair. --init weights of a network with "
                        "more levels start it with their timestep merges folded")
    p.add_argument("--grad-gain", type=float_range(1.0, 3.0), default=1.0,
                   help="stage2: the hybrid loss's gradient target is this times the stronger source's gradient "
                        "(1 = the paper's loss; a detail lever)")
    p.add_argument("--w-contrast", type=float_range(0.0, 10.0), default=0.0,
                   help="stage2: weight of a one-sided local-contrast term (penalises local contrast below the "
                        "more contrasted source's; 0 = the paper's loss)")
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine"],
                   help="learning rate over --steps: constant, or cosine down to lr x --min-lr-ratio")
    p.add_argument("--warmup", type=NON_NEGATIVE, default=0, help="steps of linear learning-rate warm-up")
    p.add_argument("--min-lr-ratio", type=float, default=0.05, help="cosine: the last learning rate / --lr")
    p.add_argument("--ema", type=float, default=0.0,
                   help="decay of an exponential moving average of the weights (e.g. 0.999); the averaged "
                        "weights are validated and saved; 0 = off")
    p.add_argument("--val-every", type=NON_NEGATIVE, default=0,
                   help="stage2 with --val and --feature-cache: validate every N steps and keep the best "
                        "weights (mean rank against the baselines) as RUN/best")
    p.add_argument("--t-sampling", default="uniform", choices=["uniform", "low-noise"],
                   help="stage1 timesteps: the method's uniform t, or half of them drawn from t <= 100 (the "
                        "levels stage 2 reads), for short training budgets")


def _timesteps(text: str) -> tuple[int, ...]:
    parts = text.split(",")
    if not 1 <= len(parts) <= 8:
        raise argparse.ArgumentTypeError(f"{len(parts)} levels: give 1 to 8 noise levels, e.g. 10 or 5,10,20")
    steps = tuple(int_range(1, 2000)(part.strip()) for part in parts)
    if len(set(steps)) != len(steps) or list(steps) != sorted(steps):
        raise argparse.ArgumentTypeError(f"'{text}': give distinct levels in increasing order")
    return steps


def _check_split(args: argparse.Namespace) -> None:
    if args.val is not None and args.data.resolve() == args.val.resolve():
        raise InputError("--data and --val are the same folder; never train on the validation split")
    if args.data.resolve().name == "val":
        raise InputError(f"{args.data}: refusing to train on a folder named 'val'; use the train split")
    stage2_only = [name for name, given in (("--feature-cache", args.feature_cache), ("--init", args.init),
                                            ("--val-every", args.val_every),
                                            ("--no-max-gate", args.no_max_gate),
                                            ("--timesteps", args.timesteps),
                                            ("--grad-gain", args.grad_gain != 1.0),
                                            ("--w-contrast", args.w_contrast != 0.0)) if given]
    if args.stage == "stage1" and stage2_only:
        raise InputError(f"{', '.join(stage2_only)}: stage2 options (stage1 trains the UNet)")
    if args.val_every and (args.val is None or args.feature_cache is None):
        raise InputError("--val-every needs --val (the split to score) and --feature-cache (where its features "
                         "are cached)")
    if not 0.0 <= args.ema < 1.0:
        raise InputError(f"--ema {args.ema}: a decay is in [0, 1)")
    if not 0.0 <= args.min_lr_ratio <= 1.0:
        raise InputError(f"--min-lr-ratio {args.min_lr_ratio}: a ratio is in [0, 1]")


def run(args: argparse.Namespace) -> int:
    torch = require("torch", purpose="training")
    from dmfnet_edge.config import preset
    from dmfnet_edge.models.checkpoint import load_unet
    from dmfnet_edge.train.data import PairBank
    from dmfnet_edge.train.report import validation_report
    from dmfnet_edge.train.state import TrainingState
    from dmfnet_edge.train.trainer import Stage1Task, Stage2Task, TrainSettings, train

    _check_split(args)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    device = torch.device(args.device)
    torch.manual_seed(args.seed)  # the orthogonal initialisation draws from the global generator
    if args.stage == "stage1":
        task = Stage1Task(preset(args.preset or "edge"), device, args.t_sampling)
        lr = args.lr or 2e-4
    else:
        if not args.unet:
            raise InputError("stage2 needs --unet RUN/unet (the stage1 checkpoint)")
        unet, cfg, _ = load_unet(args.unet)
        cfg = _stage2_config(cfg, args.preset) if args.preset else cfg
        if args.no_max_gate or args.timesteps:
            import dataclasses

            fusion = dataclasses.replace(cfg.fusion, max_gate=cfg.fusion.max_gate and not args.no_max_gate,
                                         timesteps=args.timesteps or cfg.fusion.timesteps)
            cfg = dataclasses.replace(cfg, fusion=fusion)
            cfg.check()
        task = Stage2Task(cfg, unet, device, _init_weights(args.init, unet) if args.init else None,
                          args.grad_gain, args.w_contrast)
        lr = args.lr or 1e-4
    settings = TrainSettings(steps=args.steps, batch_size=args.batch, crop=args.crop, lr=lr, device=args.device,
                             amp=args.amp, seed=args.seed, checkpoint_every=args.checkpoint_every,
                             threads=args.threads, t_sampling=args.t_sampling, schedule=args.schedule,
                             warmup=args.warmup, min_lr_ratio=args.min_lr_ratio, ema=args.ema,
                             grad_gain=args.grad_gain, w_contrast=args.w_contrast, val_every=args.val_every)
    validate = None
    if args.feature_cache is not None:
        bank = _cache(args.feature_cache / "train", task.model, find_pairs(args.data), "train")
        if args.val_every:
            validate = _validator(args.feature_cache / "val", task.model, find_pairs(args.val))
    else:
        bank = PairBank.from_folder(args.data)
    info = {"data": str(args.data), "pairs": len(bank), "hardware": _hardware(torch, device, args.threads),
            "torch": str(torch.__version__), "unet_checkpoint": args.unet, "init": args.init,
            "features": "cached (frozen inference noise)" if args.feature_cache else "live (fresh noise)",
            "selection": "mean rank against the baselines on --val" if validate else None}
    with bar(args.steps, f"{args.stage} ({task.cfg.name})", "step") as progress:
        def report(step: int, stats: dict[str, float]) -> None:
            progress.n = step
            progress.set_postfix({k: f"{v:.4f}" for k, v in stats.items()}, refresh=False)
            progress.update(0)

        weights = train(task, bank, settings, args.out, args.resume, report, info, validate)
    print(f"weights: {weights}")
    _curves(args.out)
    best = TrainingState.read(args.out / "last.json").best if validate is not None else None
    if best is not None and (args.out / "best.json").is_file():
        print(f"best: {args.out / 'best.safetensors'} (step {best.step}, validation score {best.score:.3f}; "
              "rule: mean rank of 11 metrics x modalities against average, max, laplacian)")
    if args.val is not None:
        report_path = args.out / "val_report.json"
        with bar(len(find_pairs(args.val)), "validating", "pair") as progress:
            summary = validation_report(task, args.val, report_path, lambda: progress.update(1))
        print(json.dumps(summary, indent=2) if args.json else _val_summary(summary, report_path))
    return 0


def _curves(run: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        print("curves: not drawn (matplotlib is in the 'dev' extra); the history is in RUN/last.json")
        return
    from dmfnet_edge.train.curves import plot_run

    print(f"curves: {plot_run(run)}")


def _stage2_config(cfg, preset_name: str):
    """The UNet checkpoint's config with the fusion network of preset `preset_name` (same UNet required)."""
    import dataclasses

    from dmfnet_edge.config import preset

    chosen = preset(preset_name)
    if chosen.unet != cfg.unet or chosen.diffusion != cfg.diffusion:
        raise InputError(f"--preset {preset_name}: its UNet is not the --unet checkpoint's ({cfg.name}); stage2 "
                         "keeps the checkpoint's UNet")
    return dataclasses.replace(cfg, name=chosen.name, fusion=chosen.fusion)


def _init_weights(spec: str, unet):
    """Fusion-network weights of a complete model, checked to sit on the same UNet."""
    import torch

    from dmfnet_edge.models.checkpoint import load_model

    model, _ = load_model(spec)
    ours = unet.state_dict()
    theirs = model.unet.state_dict()
    if ours.keys() != theirs.keys() or any(not torch.equal(ours[k], theirs[k]) for k in ours):
        raise InputError(f"--init {spec}: its UNet is not the --unet one; a fusion network only fits the UNet it "
                         "was trained on")
    return model.fusion.state_dict()


def _cache(folder: Path, model, pairs, split: str):
    from dmfnet_edge.train.feature_cache import FeatureCache

    with bar(len(pairs), f"caching {split} features", "pair") as progress:
        return FeatureCache.open_or_build(folder, model, pairs, lambda: progress.update(1))


def _validator(folder: Path, model, pairs):
    from dmfnet_edge.train.selection import Validator

    cache = _cache(folder, model, pairs, "val")
    with bar(len(pairs) * 3, "scoring the baselines", "image") as progress:
        return Validator(cache, pairs, lambda: progress.update(1)).evaluate


def _val_summary(summary: dict, report_path: Path) -> str:
    if "x0_psnr_db_by_timestep" in summary:
        levels = ", ".join(f"t={t}: {v:.2f} dB" for t, v in summary["x0_psnr_db_by_timestep"].items())
        head = f"validation ({summary['pairs']} pairs): x0 PSNR {levels}"
    else:
        head = f"validation (mean per modality):\n{markdown_table(summary['tasks'])}"
    return f"{head}\nfull report: {report_path}"


def _hardware(torch, device, threads: int | None) -> str:
    """The device, and on CPU the threads training will use (--threads is applied later, by the loop)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {threads or torch.get_num_threads()} threads"


COMMANDS = {"train": (configure, run)}
