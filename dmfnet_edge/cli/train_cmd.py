"""`dmfnet train stage1|stage2`: train the diffusion UNet, then the fusion network on its frozen features."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from dmfnet_edge._optional import require
from dmfnet_edge.cli.progress import bar
from dmfnet_edge.cli.types import NON_NEGATIVE, POSITIVE, int_range, positive_float, torch_device
from dmfnet_edge.errors import InputError
from dmfnet_edge.io.pairs import find_pairs
from dmfnet_edge.metrics.table import markdown_table


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", choices=["stage1", "stage2"], help="stage1: diffusion UNet; stage2: fusion network")
    p.add_argument("--data", required=True, type=Path, help="training split: DIR/MRI-X/{MRI,X}/NAME.png")
    p.add_argument("--val", type=Path, help="validation split for the final report (never trained on)")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, final weights, report)")
    p.add_argument("--preset", default="edge", help="model preset for stage1: paper | edge | tiny")
    p.add_argument("--unet", help="stage2: the stage1 checkpoint (RUN/unet) whose UNet is frozen")
    p.add_argument("--steps", type=POSITIVE, default=4000, help="optimiser steps in all (a resumed run stops there too)")
    p.add_argument("--batch", type=int_range(1, 256), default=8, help="pairs per step")
    p.add_argument("--crop", type=int_range(16, 4096), default=128, help="random square crop side (same crop for both images)")
    p.add_argument("--lr", type=positive_float, help="learning rate (stage1 default 2e-4 AdamW, stage2 1e-4 Adam)")
    p.add_argument("--device", default="cpu", type=torch_device, help="cpu | cuda | cuda:N")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--threads", type=POSITIVE, help="CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=NON_NEGATIVE, default=0, help="seed of initialisation, data order and noise")
    p.add_argument("--checkpoint-every", type=POSITIVE, default=200, help="steps between resumable checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.* if present")
    p.add_argument("--json", action="store_true", help="print the whole validation report as JSON")
    p.add_argument("--t-sampling", default="uniform", choices=["uniform", "low-noise"],
                   help="stage1 timesteps: the method's uniform t, or half of them drawn from t <= 100 (the "
                        "levels stage 2 reads), for short training budgets")


def _check_split(args: argparse.Namespace) -> None:
    if args.val is not None and args.data.resolve() == args.val.resolve():
        raise InputError("--data and --val are the same folder; never train on the validation split")
    if args.data.resolve().name == "val":
        raise InputError(f"{args.data}: refusing to train on a folder named 'val'; use the train split")


def run(args: argparse.Namespace) -> int:
    torch = require("torch", purpose="training")
    from dmfnet_edge.config import preset
    from dmfnet_edge.models.checkpoint import load_unet
    from dmfnet_edge.train.data import PairBank
    from dmfnet_edge.train.report import validation_report
    from dmfnet_edge.train.trainer import Stage1Task, Stage2Task, TrainSettings, train

    _check_split(args)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    device = torch.device(args.device)
    torch.manual_seed(args.seed)  # the orthogonal initialisation draws from the global generator
    if args.stage == "stage1":
        task = Stage1Task(preset(args.preset), device, args.t_sampling)
        lr = args.lr or 2e-4
    else:
        if not args.unet:
            raise InputError("stage2 needs --unet RUN/unet (the stage1 checkpoint)")
        unet, cfg, _ = load_unet(args.unet)
        task = Stage2Task(cfg, unet, device)
        lr = args.lr or 1e-4
    settings = TrainSettings(steps=args.steps, batch_size=args.batch, crop=args.crop, lr=lr, device=args.device,
                             amp=args.amp, seed=args.seed, checkpoint_every=args.checkpoint_every,
                             threads=args.threads, t_sampling=args.t_sampling)
    bank = PairBank.from_folder(args.data)
    info = {"data": str(args.data), "pairs": len(bank), "hardware": _hardware(torch, device),
            "torch": torch.__version__, "unet_checkpoint": args.unet}
    with bar(args.steps, f"{args.stage} ({task.cfg.name})", "step") as progress:
        def report(step: int, stats: dict[str, float]) -> None:
            progress.n = step
            progress.set_postfix({k: f"{v:.4f}" for k, v in stats.items()}, refresh=False)
            progress.update(0)

        weights = train(task, bank, settings, args.out, args.resume, report, info)
    print(f"weights: {weights}")
    if args.val is not None:
        report_path = args.out / "val_report.json"
        with bar(len(find_pairs(args.val)), "validating", "pair") as progress:
            summary = validation_report(task, args.val, report_path, lambda: progress.update(1))
        print(json.dumps(summary, indent=2) if args.json else _val_summary(summary, report_path))
    return 0


def _val_summary(summary: dict, report_path: Path) -> str:
    if "x0_psnr_db_by_timestep" in summary:
        levels = ", ".join(f"t={t}: {v:.2f} dB" for t, v in summary["x0_psnr_db_by_timestep"].items())
        head = f"validation ({summary['pairs']} pairs): x0 PSNR {levels}"
    else:
        head = f"validation (mean per modality):\n{markdown_table(summary['tasks'])}"
    return f"{head}\nfull report: {report_path}"


def _hardware(torch, device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


COMMANDS = [("train", "train stage 1 (diffusion UNet) or stage 2 (fusion network)", configure, run)]
