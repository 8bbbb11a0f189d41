"""Validation during Stage-II training, and the rule that picks the checkpoint to ship.

Every `--val-every` steps the fusion network (its EMA weights where EMA is on) fuses every validation pair from
the validation split's feature cache (full images, exactly as inference sees them but for the float16 rounding
of the cached features), the fused luma gets the functional image's chroma back as in the pipeline, and the
eleven metrics are computed as `dmfnet eval` does. The Stage-II training loss (the hybrid loss on the whole
images) is reported beside them, for the model and for each baseline.

Selection rule (stated once, used everywhere): for each modality and each of the eleven metrics, rank the
model among {model, average, max, laplacian} (1 = best; ties share the better rank); the score is the mean
rank over all modality x metric cells, lower is better. Ranks are coarse (many validations tie), so equal
scores are decided by the margin: the mean over the same cells of (model - best baseline) / |best baseline|,
higher is better; only on equal score and margin is the earlier step kept. The withheld evaluation set is
never seen (it is not in the data).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dmfnet_edge.baselines import BASELINES, fuse_with_baseline
from dmfnet_edge.io.images import read_image
from dmfnet_edge.io.pairs import ImagePair
from dmfnet_edge.metrics.evaluate import pair_metrics, summarise
from dmfnet_edge.metrics.fusion import METRIC_NAMES
from dmfnet_edge.pipeline import finish, prepare_pair
from dmfnet_edge.preprocess.color import split_luma
from dmfnet_edge.preprocess.tensor import to_network
from dmfnet_edge.train.feature_cache import FeatureCache
from dmfnet_edge.train.losses import HybridFusionLoss

ACCEPTANCE_BASELINES = ("average", "laplacian")


def rank_score(model: dict[str, dict[str, float]], baselines: dict[str, dict[str, dict[str, float]]]
               ) -> tuple[float, dict[str, Any]]:
    """(mean rank, details) of per-task model metrics against per-task baseline metrics (see the module doc);
    details hold the margin, the wins against each baseline and whether each task meets the project's bar."""
    ranks: list[int] = []
    margins: list[float] = []
    wins: dict[str, dict[str, list[str]]] = {}
    for task, ours in model.items():
        wins[task] = {}
        for metric in METRIC_NAMES:
            ranks.append(1 + sum(baselines[b][task][metric] > ours[metric] for b in baselines))
            best = max(baselines[b][task][metric] for b in baselines)
            margins.append((ours[metric] - best) / max(abs(best), 1e-12))
        for b in baselines:
            wins[task][b] = [m for m in METRIC_NAMES if ours[m] > baselines[b][task][m]]
    accepted = {task: all(m in wins[task][b] for b in ACCEPTANCE_BASELINES if b in wins[task]
                          for m in ("Qabf", "VIF"))
                and all(len(wins[task][b]) >= 8 for b in ACCEPTANCE_BASELINES if b in wins[task])
                for task in model}
    return float(np.mean(ranks)), {"margin": round(float(np.mean(margins)), 5), "wins": wins,
                                   "meets_bar": accepted}


def better(result: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """Whether a validation result beats the best so far under the selection rule (lower rank, then margin)."""
    if best is None:
        return True
    return (result["score"], -result.get("margin", 0.0)) < (best["score"], -best.get("margin", 0.0))


class Validator:
    """Scores a DMFNet's fusion network on a cached validation split against the baselines."""

    def __init__(self, cache: FeatureCache, pairs: list[ImagePair], progress: Callable[[], None] | None = None
                 ) -> None:
        if [(p.task, p.name) for p in pairs] != cache.names:
            raise ValueError("the validation cache does not hold these pairs in this order")
        self.cache, self.pairs = cache, pairs
        self.sources = [(read_image(p.mri), read_image(p.other)) for p in pairs]
        self.prepared = [prepare_pair(m, o, f"{p.task}/{p.name}") for p, (m, o) in zip(pairs, self.sources)]
        self.criterion = HybridFusionLoss()
        self.baselines: dict[str, dict[str, dict[str, float]]] = {}
        self.baseline_loss: dict[str, dict[str, float]] = {}
        for name in BASELINES:
            rows: dict[str, list[dict[str, float]]] = {}
            losses: dict[str, list[float]] = {}
            for k, (pair, (mri, other)) in enumerate(zip(pairs, self.sources)):
                fused = fuse_with_baseline(name, mri, other)
                rows.setdefault(pair.task, []).append(pair_metrics(pair, fused, mri, other))
                luma = torch.from_numpy(to_network(split_luma(fused)[0]))[None, None]
                losses.setdefault(pair.task, []).append(self._loss(k, luma))
                if progress:
                    progress()
            self.baselines[name] = summarise(rows)
            self.baseline_loss[name] = {t: round(float(np.mean(v)), 5) for t, v in losses.items()}

    def _loss(self, index: int, fused: torch.Tensor) -> float:
        whole = self.cache.full(index)
        return float(self.criterion(whole.mri, whole.other, fused.float())[0])

    def evaluate(self, model: Any) -> dict[str, Any]:
        """Per-task mean metrics of `model` (a DMFNet; only its fusion network runs), score and wins."""
        rows: dict[str, list[dict[str, float]]] = {}
        losses: dict[str, list[float]] = {}
        was_training = model.fusion.training
        model.fusion.eval()
        with torch.inference_mode():
            for k, (pair, (mri, other), prepared) in enumerate(zip(self.pairs, self.sources, self.prepared)):
                batch = self.cache.full(k)
                fused = model.fuse((batch.mri_feats, batch.other_feats), batch.mri, batch.other)
                pixels = finish(prepared, fused[0, 0].float().numpy()).pixels
                rows.setdefault(pair.task, []).append(pair_metrics(pair, pixels, mri, other))
                losses.setdefault(pair.task, []).append(self._loss(k, fused))
        model.fusion.train(was_training)
        tasks = summarise(rows)
        score, details = rank_score(tasks, self.baselines)
        loss = {t: round(float(np.mean(v)), 5) for t, v in losses.items()}
        return {"score": round(score, 4), "tasks": tasks, **details, "loss": loss,
                "baseline_loss": self.baseline_loss}
