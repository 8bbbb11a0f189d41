"""`dmfnet info`: what a model is (config, parameters, FLOPs, weights hash, provenance)."""

from __future__ import annotations

import argparse
import json

from dmfnet_edge._optional import require
from dmfnet_edge.artifacts import WeightsSidecar
from dmfnet_edge.cli.types import int_multiple
from dmfnet_edge.preprocess.tensor import SIZE_MULTIPLE


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="edge", help="shipped name, preset (paper/edge/tiny) or PATH")
    p.add_argument("--size", type=int_multiple(SIZE_MULTIPLE, 64, 8192), default=256,
                   help=f"image side for the FLOP count (a network side: a multiple of {SIZE_MULTIPLE})")


def run(args: argparse.Namespace) -> int:
    require("torch", purpose="'dmfnet info'")
    from dmfnet_edge.models.checkpoint import load_or_build
    from dmfnet_edge.models.dmfnet import parameter_count
    from dmfnet_edge.models.flops import pair_flops

    model, meta = load_or_build(args.model, allow_random=True)
    flops = pair_flops(model, args.size)
    info = {
        "model": model.cfg.name,
        "parameters": {"unet": parameter_count(model.unet), "fusion": parameter_count(model.fusion)},
        f"gflop_per_pair_{args.size}": {k: round(v / 1e9, 3) for k, v in flops.items()},
        "weights_sha256": meta.weights_sha256,
        "training": _training_summary(meta),
        "config": model.cfg.to_dict(),
    }
    print(json.dumps(info, indent=2))
    return 0


def _training_summary(meta: WeightsSidecar) -> object:
    """What the sidecar says about how the weights were trained (segments, steps, time, hardware, torch)."""
    training = meta.training
    if training is None:
        return meta.weights or "not recorded"
    keys = ("stage", "steps_done", "step", "train_seconds", "hardware", "torch", "pairs", "unet_checkpoint",
            "segments")
    return {k: training[k] for k in keys if k in training}


COMMANDS = {"info": (configure, run)}
