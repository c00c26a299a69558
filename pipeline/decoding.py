"""Running a model on encoded inputs: one pass in batches, or for a decoder fed its own output, greedy
decoding: the kind's own (a transformer's, in one compiled graph) where it has one, else by passes."""

from __future__ import annotations

import numpy as np

from pipeline.codec import Codec, TokenCodec
from pipeline.codec.base import run_batches
from pipeline.config import MODELS
from pipeline.kinds import kind


def outputs(model, codec: Codec, x) -> np.ndarray:
    """What model outputs for x, encoded by codec, for codec.decode()."""
    if not isinstance(codec, TokenCodec):
        return run_batches(model, x)
    name = getattr(model, "name", None)  # a built model is named after its kind
    if name in MODELS and (greedy := getattr(kind(name), "greedy", None)):
        return run_batches(greedy(model, codec), x)
    return by_passes(model, codec, x)


def by_passes(model, codec: TokenCodec, x: np.ndarray) -> np.ndarray:
    """Greedy decoding by whole passes of the model: each fixes one more token; causal decoders keep
    earlier ones unchanged."""
    tokens = np.full((len(x), codec.out_steps), codec.START, np.int32)
    for step in range(codec.out_steps):
        probs = run_batches(model, [x, tokens])
        if step + 1 < codec.out_steps:
            tokens[:, step + 1] = probs[:, step].argmax(axis=-1)
        if (tokens[:, 1 : step + 2] == codec.END).any(axis=1).all():
            break  # every answer has ended
    return probs
