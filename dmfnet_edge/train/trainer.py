"""Training loops for both stages, on CPU or CUDA (bf16 autocast on request), with checkpoints and resume.

Stage I trains the UNet as an x0-predicting denoiser on both modalities (each pair contributes its MRI and its
other image). Stage II freezes the UNet and trains the fusion network with the hybrid loss, either live (fresh
noise for the 2 x T noised copies of every crop, as the method does) or from a feature cache (crops of the
full-image features at the frozen inference noise, `feature_cache.py`: no UNet pass per step).

Options shared by both: a constant or cosine learning rate (with linear warm-up), an exponential moving average
of the weights, a loss history, and for Stage II periodic validation with checkpoint selection
(`selection.py`). Every checkpoint holds all of it, so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch
from torch import nn

from dmfnet_edge.config import ModelConfig
from dmfnet_edge.errors import InputError
from dmfnet_edge.models.checkpoint import save_model
from dmfnet_edge.models.diffusion import DiffusionObjective
from dmfnet_edge.models.dmfnet import DMFNet
from dmfnet_edge.models.unet import DiffusionUNet
from dmfnet_edge.train.data import PairBank
from dmfnet_edge.train.feature_cache import CachedBatch, FeatureCache
from dmfnet_edge.train.losses import HybridFusionLoss, diffusion_loss
from dmfnet_edge.train.selection import better
from dmfnet_edge.train.state import load_state, save_state

log = logging.getLogger(__name__)
Progress = Callable[[int, dict[str, float]], None]
Validate = Callable[[nn.Module], dict[str, Any]]  # a model with the weights to score -> {"score": ..., ...}
SCHEDULES = ("constant", "cosine")


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
    schedule: str = "constant"  # or "cosine": from lr to lr * min_lr_ratio over `steps`, after `warmup`
    warmup: int = 0
    min_lr_ratio: float = 0.0
    ema: float = 0.0  # decay of the weights' exponential moving average; 0 = off
    grad_gain: float = 1.0  # stage 2: the loss's gradient target gain (see HybridFusionLoss); 1 = the paper's
    w_contrast: float = 0.0  # stage 2: weight of the local-contrast term (see HybridFusionLoss); 0 = the paper's
    val_every: int = 0  # stage 2: validate (and select the best checkpoint) every this many steps; 0 = off
    log_every: int = 50  # steps per entry of the loss history


def learning_rate(settings: TrainSettings, step: int) -> float:
    """The learning rate of optimiser step `step` (0-based)."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    if settings.schedule == "constant":
        return settings.lr
    span = max(settings.steps - settings.warmup, 1)
    progress = min((step - settings.warmup) / span, 1.0)
    low = settings.lr * settings.min_lr_ratio
    return low + 0.5 * (settings.lr - low) * (1 + math.cos(math.pi * progress))


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

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        mri, other = batch
        x0 = torch.cat([mri, other]).to(self.device)
        xt, gamma = self.objective.noised(x0, gen)
        mse = diffusion_loss(self.model(xt, gamma), x0)
        return mse, {"mse": float(mse.detach())}

    def export_module(self) -> nn.Module:
        return self.model


class Stage2Task:
    """Hybrid fusion loss on the fusion network; the Stage-I UNet is frozen."""

    kind = "dmfnet"

    def __init__(self, cfg: ModelConfig, unet: DiffusionUNet, device: torch.device,
                 init: dict[str, torch.Tensor] | None = None, grad_gain: float = 1.0, w_contrast: float = 0.0
                 ) -> None:
        """`init`: fusion-network weights to start from (a trained model's, to fine-tune); a head with a source
        skip that `init` lacks gets zero weights for the sources, so it starts as that network; a max gate that
        `init` lacks starts nearly closed. `grad_gain`, `w_contrast`: the loss's detail levers (HybridFusionLoss)."""
        self.cfg = cfg
        self.model = DMFNet(cfg).to(device)
        self.model.unet.load_state_dict(unet.state_dict())
        self.model.unet.eval().requires_grad_(False)
        orthogonal_init(self.model.fusion)
        if cfg.fusion.source_skip:
            self.model.fusion.head.zero_source_weights()
        self.model.fusion.head.close_gate()
        if init is not None:
            load_fusion_weights(self.model.fusion, init)
        self.criterion = HybridFusionLoss(grad_gain=grad_gain, w_contrast=w_contrast).to(device)
        self.device = device

    def trainable(self) -> nn.Module:
        return self.model.fusion

    def optimizer(self, lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.fusion.parameters(), lr=lr)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor] | CachedBatch, gen: torch.Generator
             ) -> tuple[torch.Tensor, dict]:
        if isinstance(batch, CachedBatch):
            mri, other = batch.mri.to(self.device), batch.other.to(self.device)
            feats = ([f.to(self.device) for f in batch.mri_feats], [f.to(self.device) for f in batch.other_feats])
        else:
            mri, other = batch[0].to(self.device), batch[1].to(self.device)
            n, _, h, w = mri.shape
            noise = torch.randn((n, 2, self.model.gammas.shape[0], h, w), generator=gen).to(self.device)
            with torch.no_grad():
                feats = self.model.features(mri, other, noise)
        fused = self.model.fuse(feats, mri, other)
        total, parts = self.criterion(mri, other, fused.float())
        return total, {"loss": float(total.detach()), **{k: float(v) for k, v in parts.items()}}

    def export_module(self) -> nn.Module:
        return self.model


def fold_timestep_merges(own: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights of a network that merges T noise levels per scale, for one that merges fewer: each merge's first
    1x1 convolution reads T blocks of c channels (one per timestep); block j of the new one is the sum of the
    old blocks j, j + T', ... (T' the new count). At the frozen noise levels (t = 5, 10, 20: sigma below 0.03)
    the UNet's features barely depend on t, so the folded network starts out close to the one it came from."""
    folded = dict(weights)
    for name, new in own.items():
        old = weights.get(name)
        if not (name.startswith("merge.") and name.endswith(".body.0.weight") and old is not None):
            continue
        if old.shape == new.shape:
            continue
        c, steps_new = new.shape[0], new.shape[1] // new.shape[0]
        steps_old = old.shape[1] // c
        if old.shape[0] != c or old.shape[2:] != new.shape[2:] or steps_old % steps_new or steps_new >= steps_old:
            raise ValueError(f"{name}: {tuple(old.shape)} cannot start a merge of {tuple(new.shape)}")
        blocks = old.reshape(c, steps_old // steps_new, steps_new * c, *old.shape[2:])
        folded[name] = blocks.sum(dim=1)
    return folded


def load_fusion_weights(fusion: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load fusion-network weights, widening a head's first convolution with zero source-image inputs where
    `weights` come from a network without the source skip, keeping the head's own (closed) max gate where
    `weights` have none, and folding the timestep merges of a network that read more noise levels
    (`fold_timestep_merges`); anything else must match exactly."""
    own = fusion.state_dict()
    weights = fold_timestep_merges(own, dict(weights))
    for gate in ("head.gate.weight", "head.gate.bias"):
        if gate in own and gate not in weights:
            weights[gate] = own[gate]
        if gate in weights and gate not in own:
            raise InputError("the starting weights have a max gate and this fusion network has none; start "
                             "from weights without one, or keep the gate")
    name = "head.conv1.weight"
    if name in weights and name in own and weights[name].shape != own[name].shape:
        old, new = weights[name], own[name]
        if old.shape[0] != new.shape[0] or old.shape[1] > new.shape[1] or old.shape[2:] != new.shape[2:]:
            raise ValueError(f"{name}: {tuple(old.shape)} cannot start a head of {tuple(new.shape)}")
        widened = torch.zeros_like(new)
        widened[:, :old.shape[1]] = old
        weights[name] = widened
    fusion.load_state_dict(weights, strict=True)


class WeightAverage:
    """Exponential moving average of a module's floating-point parameters and buffers."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.values = {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}

    def reset(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            if k in self.values:
                self.values[k].copy_(v)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        current = module.state_dict()
        for k, avg in self.values.items():
            avg.mul_(self.decay).add_(current[k].detach(), alpha=1 - self.decay)

    @contextlib.contextmanager
    def applied(self, module: nn.Module):
        """The module with the averaged weights inside the block, its own weights restored after."""
        saved = {k: v.detach().clone() for k, v in module.state_dict().items() if k in self.values}
        module.load_state_dict(self.values, strict=False)
        try:
            yield module
        finally:
            module.load_state_dict(saved, strict=False)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def train(task: Stage1Task | Stage2Task, bank: PairBank | FeatureCache, settings: TrainSettings, out: Path,
          resume: bool, progress: Progress | None = None, info: dict[str, Any] | None = None,
          validate: Validate | None = None) -> Path:
    """Run the loop, checkpointing to out/last.* and writing the final model to out/<kind>.safetensors (the EMA
    weights where EMA is on). With `validate` (and settings.val_every), the best-scoring weights so far are
    also written to out/best.* as a complete model; the loss and validation history live in the checkpoint."""
    if settings.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {settings.schedule!r}; choose one of {SCHEDULES}")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    out.mkdir(parents=True, exist_ok=True)
    module = task.trainable()
    opt = task.optimizer(settings.lr)
    rng = np.random.default_rng(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    ema = WeightAverage(module, settings.ema) if settings.ema > 0 else None
    step, earlier, segments = 0, 0.0, []
    history: list[dict[str, float]] = []
    val_history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    if resume and (out / "last.json").exists():
        state = load_state(out, module, opt, rng, gen, ema.values if ema else None)
        step, earlier = state.step, state.train_seconds
        segments = [msgspec.to_builtins(s) for s in state.segments]
        history, val_history = list(state.history), list(state.validation)
        best = msgspec.to_builtins(state.best)
        if ema and not state.ema_saved:
            ema.reset(module)
        log.info("resumed from step %d", step)
    record = {"settings": asdict(settings), "stage": task.kind, **(info or {})}
    # every run that resumes a folder is one segment: the steps it trained and with which settings
    record["segments"] = [*segments, {"from_step": step, "settings": asdict(settings)}]
    record["ema_saved"] = ema is not None
    started = time.perf_counter()
    window: dict[str, list[float]] = {}

    def scored() -> contextlib.AbstractContextManager:
        return ema.applied(module) if ema else contextlib.nullcontext(module)

    def checkpoint() -> None:
        record.update(train_seconds=round(earlier + time.perf_counter() - started, 1), history=history,
                      validation=val_history, best=best)
        save_state(out, module, opt, step, rng, gen, record, ema.values if ema else None)

    module.train()
    while step < settings.steps:
        lr = learning_rate(settings, step)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = bank.sample(rng, settings.batch_size, settings.crop)
        with _autocast(task.device, settings.amp):
            loss, stats = task.loss(batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema:
            ema.update(module)
        step += 1
        for k, v in stats.items():
            window.setdefault(k, []).append(v)
        if step % settings.log_every == 0 or step == settings.steps:
            history.append({"step": step, "lr": lr, **{k: round(float(np.mean(v)), 5) for k, v in window.items()}})
            window = {}
        if progress:
            progress(step, stats)
        if validate and settings.val_every and (step % settings.val_every == 0 or step == settings.steps):
            with scored():
                result = validate(task.export_module())
                entry = {"step": step, **result}
                val_history.append(entry)
                if better(result, best):
                    best = {"step": step, "score": result["score"], "margin": result.get("margin", 0.0)}
                    save_model(task.export_module(), task.cfg, out / "best", task.kind,
                               {"training": {**record, "selected": entry}})
            log.info("step %d: validation score %.3f (best %.3f at step %d)", step, result["score"],
                     best["score"], best["step"])
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            checkpoint()
            log.info("step %d/%d %s (%.0f s)", step, settings.steps,
                     " ".join(f"{k}={v:.4f}" for k, v in stats.items()), time.perf_counter() - started)
    module.eval()
    record.update(train_seconds=round(earlier + time.perf_counter() - started, 1), steps_done=step,
                  history=history, validation=val_history, best=best)
    if ema:
        module.load_state_dict(ema.values, strict=False)  # the run ends on the averaged weights
    return save_model(task.export_module(), task.cfg, out / task.kind, task.kind, {"training": record})
