"""End-of-training validation reports (JSON), written after the final weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dmfnet_edge.artifacts import write_json_atomic
from dmfnet_edge.io.pairs import find_pairs
from dmfnet_edge.metrics.evaluate import evaluate
from dmfnet_edge.models.diffusion import tile_noise
from dmfnet_edge.pipeline import fuse_pixels
from dmfnet_edge.runtime.torch_backend import TorchRunner
from dmfnet_edge.train.data import PairBank


def _unet_report(task, bank: PairBank, progress: Callable[[], None]) -> dict[str, Any]:
    """Stage I: x0 reconstruction PSNR (dB, on [-1, 1] data) at the Stage-II noise levels, frozen noise."""
    from dmfnet_edge.models.dmfnet import DMFNet

    ref = DMFNet(task.cfg)  # only for the frozen noise levels and field
    psnr: dict[str, list[float]] = {str(t): [] for t in task.cfg.fusion.timesteps}
    with torch.no_grad():
        for mri, other in zip(bank.mri, bank.other):
            x = torch.from_numpy(np.stack([mri, other])[:, None].astype(np.float32) * (2 / 255) - 1)
            noise = tile_noise(ref.noise, *x.shape[-2:])[0][:, None]
            for k, t in enumerate(task.cfg.fusion.timesteps):
                xt = ref.gammas[k] * x + ref.sigmas[k] * noise[k]
                pred = task.model(xt, ref.gammas[k].repeat(2))
                mse = float(torch.mean((pred - x) ** 2))
                psnr[str(t)].append(10 * np.log10(4.0 / max(mse, 1e-12)))
            progress()
    return {"x0_psnr_db_by_timestep": {t: round(float(np.mean(v)), 3) for t, v in psnr.items()},
            "pairs": len(bank)}


def validation_report(task, val_dir: Path, out_path: Path, progress: Callable[[], None] = lambda: None
                      ) -> dict[str, Any]:
    """Evaluate the trained stage on the validation split; write and return the summary. `progress()` is called
    once per pair."""
    if task.kind == "unet":
        summary = _unet_report(task, PairBank.from_folder(val_dir), progress)
    else:
        summary = _fusion_report(task.model, val_dir, progress)
    write_json_atomic(out_path, summary)
    return summary


def _fusion_report(module: Any, pairs_dir: Path, progress: Callable[[], None]) -> dict[str, Any]:
    """Fuse every pair of a split with an in-memory torch DMFNet (the library path) and evaluate it."""
    runner = TorchRunner(module, device=str(next(module.parameters()).device))
    return evaluate(find_pairs(pairs_dir), lambda pair, m, o: fuse_pixels(runner, m, o, pair.name).pixels, progress)
