"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from dmfnet_edge._optional import require
from dmfnet_edge.cli.types import THREADS, torch_device
from dmfnet_edge.errors import InputError
from dmfnet_edge.runtime import BACKEND_CHOICES, PRECISION_CHOICES, Runner, open_runner


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="edge", help="shipped model name (edge) or PATH to NAME.safetensors/.json")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help="inference backend (default: auto)")
    p.add_argument("--device", default="cpu", type=torch_device, help="torch device: cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=PRECISION_CHOICES,
                   help="onnxruntime with a shipped model: fp32 (default) or int8 graph; torch: fp32; "
                        "gpu: fp16 (default), bf16 or fp32")
    p.add_argument("--threads", type=THREADS, help="CPU threads for inference (default: the library's choice)")
    p.add_argument("--server", metavar="URL",
                   help="fuse on a Triton Inference Server instead: http://HOST:PORT or grpc://HOST:PORT (e.g. "
                        "'dmfnet serve'); retries with backoff while the server is unavailable")
    p.add_argument("--server-model", default="dmfnet_edge", help="the model's name on --server")


def reference_model(spec: str):
    """A DMFNet to export or to gate against: shipped or saved weights, or a preset's random weights (asked for
    by naming the preset: paper, tiny)."""
    require("torch", purpose="this command")
    from dmfnet_edge.models.checkpoint import load_or_build

    return load_or_build(spec, allow_random=True)


def runner_from(args: argparse.Namespace) -> Runner:
    if getattr(args, "server", None):
        local = [name for name, given in (("--model", args.model != "edge"), ("--backend", args.backend != "auto"),
                                          ("--precision", args.precision), ("--threads", args.threads),
                                          ("--device", args.device != "cpu")) if given]
        if local:
            verb = "chooses" if len(local) == 1 else "choose"
            raise InputError(f"--server fuses with the model the server serves; {', '.join(local)} {verb} a local "
                             "model or backend (configure the server instead)")
        return open_runner(server=args.server, server_model=args.server_model)
    return open_runner(args.backend, args.model, device=args.device, threads=args.threads, precision=args.precision)


def parse_window(text: str | None) -> tuple[float, float] | None:
    """'CENTER,WIDTH' (e.g. 40,400 for a CT brain window) -> (center, width)."""
    if text is None:
        return None
    try:
        center, width = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--window '{text}': expected CENTER,WIDTH, e.g. 40,400") from None
    if not (math.isfinite(center) and math.isfinite(width)):
        raise InputError(f"--window '{text}': CENTER and WIDTH must be finite numbers")
    if width <= 0:
        raise InputError(f"--window '{text}': the width must be positive")
    return center, width


class Kept:
    """Counts the outputs a command completes one by one (each written atomically), so that a run stopped
    part-way by an error, Ctrl-C or SIGTERM says in its one error line what it kept (cli.main reads
    `args.kept_note`)."""

    def __init__(self, args: argparse.Namespace, what: str, where: Path, total: int | None = None,
                 missing: str = "") -> None:
        self.count, self.what, self.where, self.total, self.missing = 0, what, where, total, missing
        args.kept_note = self.describe

    def add(self, n: int = 1) -> None:
        self.count += n

    def describe(self) -> str:
        if not self.count:
            return ""
        of = f" of {self.total}" if self.total is not None else ""
        missing = f" ({self.missing})" if self.missing else ""
        return f"{self.count}{of} {self.what} before it and are complete in {self.where}{missing}"
