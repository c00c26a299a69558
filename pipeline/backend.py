"""Which Keras backend runs the models: chosen once per process, before Keras is first imported."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    if backend == "jax":
        cache_compilations()
    import_keras()
    return backend


def cache_compilations() -> None:
    """Keeps JAX's compiled programs on disk (JAX_COMPILATION_CACHE_DIR, default ~/.cache/adder/jax), so a model
    trained or scored again, in a rerun, a sweep or a test, skips the seconds XLA spends compiling it.
    Cached programs are the ones XLA would compile again: results do not change."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "adder" / "jax"
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache))
    # JAX caches only compilations over a second by default; most of adder's take less
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def import_keras() -> None:
    """Imports Keras without scikit-learn and Matplotlib, which Keras loads only for wrappers and plots that
    adder does not use, and which cost every process 2-4 s of start-up."""
    with hidden("sklearn", "matplotlib"):
        import keras  # noqa: F401


@contextmanager
def hidden(*modules: str) -> Iterator[None]:
    """Inside the block, importing any of these modules not yet imported raises ImportError: libraries that
    treat them as optional (Keras does) then skip them."""
    hide = [m for m in modules if m not in sys.modules]
    sys.modules.update(dict.fromkeys(hide))  # a None entry makes `import` raise ImportError
    try:
        yield
    finally:
        for m in hide:
            del sys.modules[m]
