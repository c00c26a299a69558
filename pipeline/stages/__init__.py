"""The DVC stages, one module each: read inputs, call the pure code, write outputs, track them in MLflow."""
