"""Which Keras backend runs the models: chosen once per process, before Keras is first imported."""

from __future__ import annotations

import importlib.util
import os
import sys

from pipeline.errors import AdderError

# backend -> the package that provides it, and how to install it
BACKENDS = {"jax": ("jax", "pip install 'jax[cpu]'"), "tensorflow": ("tensorflow", "pip install tensorflow")}
# backend -> what a logged model needs installed to load on it (pipeline.tracking.pinned pins them)
REQUIREMENTS = {"jax": ("jax", "jaxlib"), "tensorflow": ("tensorflow",)}
DEFAULT = "jax"  # about 3x faster epochs and 4x faster start-up here (docs/decisions.md)


def use(backend: str) -> str:
    """Makes `backend` Keras's backend for this process; raises AdderError, before any work, if it is
    unknown, not installed, or another backend is already loaded."""
    if backend not in BACKENDS:
        raise AdderError(f"unknown Keras backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    package, install = BACKENDS[backend]
    if importlib.util.find_spec(package) is None:
        raise AdderError(f"Keras backend {backend!r} needs the package {package}, which is not installed: {install}")
    if "keras" in sys.modules:
        loaded = sys.modules["keras"].backend.backend()
        if loaded != backend:
            raise AdderError(f"Keras already runs on {loaded} in this process; cannot switch to {backend}")
    os.environ["KERAS_BACKEND"] = backend
    return backend
