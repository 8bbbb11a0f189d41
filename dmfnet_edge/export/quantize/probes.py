"""What every precision recipe measures its result with: probe pairs from the calibration set, their outputs on
ONNX Runtime, the PSNR against the FP32 graph, and the version of the tool that wrote the graph."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from dmfnet_edge.evaluation.verify import psnr_db

PROBE_PAIRS = 6  # calibration pairs (evenly spaced, so every modality) a recipe measures PSNR on


def tool_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def output_psnr(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """PSNR in dB of network outputs ([-1, 1], scaled to 8 bits) against the FP32 graph's, over all probes."""
    return psnr_db(float(np.mean([np.mean(((o - r) * 127.5).astype(np.float64) ** 2)
                                  for o, r in zip(outputs, reference)])))


def session_outputs(path: Path, probes: list[dict[str, np.ndarray]], simulate_qdq: bool = False
                    ) -> list[np.ndarray]:
    """The graph's output for every probe on ONNX Runtime's CPU provider (Q/DQ simulated in FP32 if asked)."""
    import onnxruntime as ort

    from dmfnet_edge.runtime.onnxruntime_backend import SIMULATE_QDQ

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if simulate_qdq:
        options.add_session_config_entry(*SIMULATE_QDQ)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [session.run(None, probe)[0] for probe in probes]


def probe_batches(batches: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    picks = np.unique(np.round(np.linspace(0, len(batches) - 1, min(PROBE_PAIRS, len(batches)))).astype(int))
    return [batches[i] for i in picks]
