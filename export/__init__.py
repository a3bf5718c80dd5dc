"""Model life cycle: data indexing, training recipes, losses, augmentations, ONNX export with a
parity check, and TensorRT engine builds. Imports torch (the ``train`` extra)."""
