"""Model management (manifest, fetch, verify) and the onnxruntime wrappers of each model."""
