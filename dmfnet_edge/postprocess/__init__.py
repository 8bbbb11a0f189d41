"""The stage after the runner, without torch: network output -> pixels (range, crop, chroma restored)."""
