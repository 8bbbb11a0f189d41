"""Training loops for both stages, on CPU or CUDA (bf16 autocast on request), with checkpoints and resume.

Stage I trains the UNet as an x0-predicting denoiser on both modalities (each pair contributes its MRI and its
other image). Stage II freezes the UNet, draws fresh noise for the 2 x T noised copies of every pair as the
method does, and trains the fusion network with the hybrid loss.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dmfnet_edge.config import ModelConfig
from dmfnet_edge.models.checkpoint import save_model
from dmfnet_edge.models.diffusion import DiffusionObjective
from dmfnet_edge.models.dmfnet import DMFNet
from dmfnet_edge.models.unet import DiffusionUNet
from dmfnet_edge.train.data import PairBank
from dmfnet_edge.train.losses import HybridFusionLoss, diffusion_loss
from dmfnet_edge.train.state import load_state, save_state

log = logging.getLogger(__name__)
Progress = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters and run options shared by both stages."""

    steps: int
    batch_size: int
    crop: int
    lr: float
    device: str = "cpu"
    amp: bool = False
    seed: int = 0
    checkpoint_every: int = 200
    threads: int | None = None
    t_sampling: str = "uniform"  # stage 1 only: see DiffusionObjective


def orthogonal_init(module: nn.Module) -> None:
    """Orthogonal (gain 1) weights and zero biases for every Conv and Linear, as the method initialises."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(layer.weight, gain=1.0)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class Stage1Task:
    """x0-prediction diffusion objective on single images of both modalities."""

    kind = "unet"

    def __init__(self, cfg: ModelConfig, device: torch.device, t_sampling: str = "uniform") -> None:
        self.cfg = cfg
        self.model = DiffusionUNet(cfg.unet).to(device)
        orthogonal_init(self.model)
        self.objective = DiffusionObjective(cfg.diffusion, t_sampling)
        self.device = device

    def trainable(self) -> nn.Module:
        return self.model

    def optimizer(self, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=lr)

    def loss(self, mri: torch.Tensor, other: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        x0 = torch.cat([mri, other]).to(self.device)
        xt, gamma = self.objective.noised(x0, gen)
        mse = diffusion_loss(self.model(xt, gamma), x0)
        return mse, {"mse": float(mse.detach())}

    def export_module(self) -> nn.Module:
        return self.model


class Stage2Task:
    """Hybrid fusion loss on the fusion network; the Stage-I UNet is frozen."""

    kind = "dmfnet"

    def __init__(self, cfg: ModelConfig, unet: DiffusionUNet, device: torch.device) -> None:
        self.cfg = cfg
        self.model = DMFNet(cfg).to(device)
        self.model.unet.load_state_dict(unet.state_dict())
        self.model.unet.eval().requires_grad_(False)
        orthogonal_init(self.model.fusion)
        self.criterion = HybridFusionLoss().to(device)
        self.device = device

    def trainable(self) -> nn.Module:
        return self.model.fusion

    def optimizer(self, lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.fusion.parameters(), lr=lr)

    def loss(self, mri: torch.Tensor, other: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        mri, other = mri.to(self.device), other.to(self.device)
        n, _, h, w = mri.shape
        noise = torch.randn((n, 2, self.model.gammas.shape[0], h, w), generator=gen).to(self.device)
        with torch.no_grad():
            feats = self.model.features(mri, other, noise)
        fused = self.model.fusion(*feats)
        total, parts = self.criterion(mri, other, fused.float())
        return total, {"loss": float(total.detach()), **{k: float(v) for k, v in parts.items()}}

    def export_module(self) -> nn.Module:
        return self.model


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def train(task: Stage1Task | Stage2Task, bank: PairBank, settings: TrainSettings, out: Path, resume: bool,
          progress: Progress | None = None, info: dict[str, Any] | None = None) -> Path:
    """Run the loop, checkpointing to out/last.* and writing the final model to out/<kind>.safetensors."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    out.mkdir(parents=True, exist_ok=True)
    module = task.trainable()
    opt = task.optimizer(settings.lr)
    rng = np.random.default_rng(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    step, earlier, segments = 0, 0.0, []
    if resume and (out / "last.json").exists():
        state = load_state(out, module, opt, rng, gen)
        step, earlier = int(state["step"]), float(state.get("train_seconds", 0.0))
        segments = state.get("segments", [])
        log.info("resumed from step %d", step)
    record = {"settings": asdict(settings), "stage": task.kind, **(info or {})}
    # every run that resumes a folder is one segment: the steps it trained and with which settings
    record["segments"] = [*segments, {"from_step": step, "settings": asdict(settings)}]
    started = time.perf_counter()
    module.train()
    while step < settings.steps:
        mri, other = bank.sample(rng, settings.batch_size, settings.crop)
        with _autocast(task.device, settings.amp):
            loss, stats = task.loss(mri, other, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if progress:
            progress(step, stats)
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            record["train_seconds"] = round(earlier + time.perf_counter() - started, 1)
            save_state(out, module, opt, step, rng, gen, record)
            log.info("step %d/%d %s (%.0f s)", step, settings.steps,
                     " ".join(f"{k}={v:.4f}" for k, v in stats.items()), time.perf_counter() - started)
    module.eval()
    record["train_seconds"] = round(earlier + time.perf_counter() - started, 1)
    record["steps_done"] = step
    return save_model(task.export_module(), task.cfg, out / task.kind, task.kind, {"training": record})
