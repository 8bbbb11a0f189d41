"""Identities every stage agrees on, without torch: the TensorRT plugin op of the fused pixel stage.

The exporter writes nodes `PLUGIN_NAMESPACE::PLUGIN_OP` (version PLUGIN_VERSION), the builder registers the
plugin under the same name, and engine manifests record it.
"""

PLUGIN_OP = "DmfnetPixelAttentionFuse"
PLUGIN_NAMESPACE = "dmfnet"
PLUGIN_VERSION = "1"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_OP}"
