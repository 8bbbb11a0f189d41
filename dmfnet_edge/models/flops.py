"""FLOP counting with torch's FlopCounterMode (2 x MAC, convolutions and matmuls), on the meta device so that
no arithmetic is actually done."""

from __future__ import annotations

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode

from dmfnet_edge.models.dmfnet import DMFNet


def pair_flops(model: DMFNet, size: int = 256) -> dict[str, int]:
    """FLOPs for fusing one size x size pair: {'unet': the batched passes, 'fusion': the head, 'total'}."""
    meta = copy.deepcopy(model).to("meta").eval()
    mri = torch.zeros(1, 1, size, size, device="meta")
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            feats = meta.features(mri, mri)
        unet = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            meta.fuse(feats, mri, mri)
        fusion = counter.get_total_flops()
    return {"unet": unet, "fusion": fusion, "total": unet + fusion}
