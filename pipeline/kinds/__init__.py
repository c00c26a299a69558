"""One module per model kind, declaring in one place its words for the UI, its codec, its loss and its
builder. A kind is imported by name (kind()), never by another module's import statement: a stage that
trains one experiment loads only that experiment's kind, so editing the transformer retrains no LSTM
(tests/test_lineage.py resolves kind() to the experiment's own kind, and checks that a training loads no
other)."""

from __future__ import annotations

import importlib
from types import ModuleType

from pipeline.config import MODELS


def kind(name: str) -> ModuleType:
    """The module of model kind `name` (one of config.MODELS): WORDS, LOSS, codec(exp, limits, train) and
    build(exp, codec)."""
    if name not in MODELS:
        raise ValueError(f"no model kind {name!r}; one of {', '.join(MODELS)}")
    return importlib.import_module(f"{__name__}.{name}")
