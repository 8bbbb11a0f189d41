"""The one door for everything that is not pixels: the bounded reader and the typed records.

* `reader`: `read_bounded` (regular files only, size capped before reading), `parse_json` and `parse_yaml`
  (nesting capped, YAML anchors and aliases refused). Nothing else in the package opens a JSON or YAML file
  (tests/test_records.py fails if a module does).
* `base`: `Record`, the typed, versioned base class of every record, with `read`, `from_yaml`, `convert`,
  `write` and `schema`.
* `RECORD_TYPES`: every record class of the package, by format name; docs/schemas/ is generated from it
  (`python benchmarks/record_schemas.py`), and a test checks that every `Record` subclass is listed.
"""

from __future__ import annotations

import importlib

from dmfnet_edge.records.base import SHA256, Record, RelativePath, json_bytes
from dmfnet_edge.records.reader import parse_json, parse_yaml, read_bounded

__all__ = ["RECORD_TYPES", "SHA256", "Record", "RelativePath", "json_bytes", "parse_json", "parse_yaml", "read_bounded",
           "record_type"]

# format name -> "module:Class". Strings, so that this layer imports none of the modules that declare them.
RECORD_TYPES: dict[str, str] = {
    "dmfnet-edge-weights": "dmfnet_edge.artifacts:WeightsSidecar",
    "dmfnet-edge-onnx": "dmfnet_edge.contract:OnnxManifest",
    "dmfnet-edge-engine": "dmfnet_edge.runtime.engine_manifest:EngineManifest",
    "dmfnet-edge-calibration": "dmfnet_edge.export.calibration:CalibrationManifest",
    "dmfnet-edge-recipe": "dmfnet_edge.export.recipes:RecipeFile",
    "dmfnet-edge-provenance": "dmfnet_edge.io.provenance:Provenance",
    "dmfnet-edge-feature-cache": "dmfnet_edge.train.feature_cache:FeatureCacheKey",
    "dmfnet-edge-training-state": "dmfnet_edge.train.state:TrainingState",
    "dmfnet-edge-triton-repository": "dmfnet_edge.serving.triton_repo:RepositoryRecord",
    "dmfnet-edge-ort-cache": "dmfnet_edge.runtime.ort_cache:OrtCacheRecord",
}


def record_type(fmt: str) -> type[Record]:
    module, _, name = RECORD_TYPES[fmt].partition(":")
    return getattr(importlib.import_module(module), name)
