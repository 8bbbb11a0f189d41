"""ONNX export, precision recipes, calibration and accuracy gates."""
