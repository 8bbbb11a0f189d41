"""TensorRT engine building, engine manifests and cache keys (TensorRT itself is imported lazily)."""
