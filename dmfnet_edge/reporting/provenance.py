"""The provenance record written beside a fused volume (NAME.provenance.json): everything needed to trace the
output back to its inputs, model, intensity mapping and software. `fuse-volume --overwrite` recognises its own
earlier outputs by it (io/output_guard.py)."""

from __future__ import annotations

import importlib.metadata as md
import platform
import time
from typing import Any

from dmfnet_edge import __version__
from dmfnet_edge.io.provenance import Provenance
from dmfnet_edge.io.volumes import Volume

RECORDED_PACKAGES = ("numpy", "opencv-python-headless", "onnxruntime", "torch", "pydicom", "nibabel", "SimpleITK")


def software_versions() -> dict[str, str]:
    """dmfnet-edge, Python and the installed packages that can change a fused pixel or how inputs are read."""
    versions = {"dmfnet-edge": __version__, "python": platform.python_version()}
    for dist in RECORDED_PACKAGES:
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return versions


def provenance(mri: Volume, other: Volume, modality: str, intensity: dict[str, Any], model: dict[str, Any],
               outputs: list[str], seconds: dict[str, float], geometry: dict[str, Any] | None = None,
               ) -> Provenance:
    """The record for one fused volume: inputs (path, format, hash, slices), the model as its runner describes it,
    the intensity settings actually used, the files written, the geometry decisions and the time each step took."""
    return Provenance.convert({
        "inputs": {"mri": {"path": str(mri.source), "format": mri.kind, "sha256": mri.input_sha256,
                           "slices": mri.slices, "spacing_mm": [float(s) for s in mri.spacing]},
                   "other": {"path": str(other.source), "format": other.kind, "sha256": other.input_sha256,
                             "modality": modality, "slices": other.slices}},
        "model": model, "intensity": intensity, "outputs": outputs, "seconds": seconds,
        "versions": software_versions(), "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **({"geometry": geometry} if geometry is not None else {})}, "the provenance record")
