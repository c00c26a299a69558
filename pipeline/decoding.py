"""Running a model on encoded inputs: one pass in batches, or for a decoder fed its own output, greedy
decoding. A transformer decodes as one compiled graph: the expression is encoded once, and each new token
attends to the cached keys and values of the tokens before it instead of recomputing them."""

from __future__ import annotations

import weakref

import keras
import numpy as np

from pipeline.codec import Codec, TokenCodec
from pipeline.codec.base import run_batches
from pipeline.models import TransformerBlock

# model -> {(steps, start): its decoder}, so that each keeps its compiled graph while the model lives
_decoders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Answers of up to this many tokens are written by a graph with one copy of the step per token (fastest);
# longer ones by a loop over one copy, which compiles in seconds instead of minutes.
UNROLLED = 8


class CachedGreedy(keras.Model):
    """Writes `steps` tokens from START, each the argmax of the last; gives the probabilities of every
    step, as the model would over its own greedy output. Shares the model's layers and weights."""

    def __init__(self, model: keras.Model, steps: int, start: int):
        super().__init__()
        self.expression_embedding = model.get_layer("expression_embedding")
        self.answer_embedding = model.get_layer("answer_embedding")
        blocks = [layer for layer in model.layers if isinstance(layer, TransformerBlock)]
        self.encoder = [block for block in blocks if not block.decoder]
        self.decoder = [block for block in blocks if block.decoder]
        self.next_token = model.get_layer("next_token")
        self.steps, self.start = steps, start
        self.built = True  # its layers are the trained model's: built; Keras would otherwise build it by an eager run

    def call(self, expression):
        memory = self.expression_embedding(expression)
        for block in self.encoder:
            memory = block(memory)
        memories = [block.memory_keys_values(memory) for block in self.decoder]
        batch = keras.ops.shape(expression)[0]

        def write(position, state):
            token, caches, outputs = state
            x = self.answer_embedding.at(token, position)
            written = []
            for block, cache, memory_keys_values in zip(self.decoder, caches, memories):
                x, cache = block.step(x, position, cache, memory_keys_values)
                written.append(cache)
            probabilities = self.next_token(x)
            outputs = keras.ops.slice_update(outputs, (0, position, 0), probabilities)
            return keras.ops.cast(keras.ops.argmax(probabilities, axis=-1), "int32"), written, outputs

        caches = [tuple(keras.ops.zeros((batch, self.steps, block.heads, block.dim // block.heads)) for _ in "kv")
                  for block in self.decoder]
        start = keras.ops.zeros_like(expression[:, :1]) + self.start
        outputs = keras.ops.zeros((batch, self.steps, self.next_token.units))
        state = (start, caches, outputs)
        if self.steps > UNROLLED:
            return keras.ops.fori_loop(0, self.steps, write, state)[2]
        for position in range(self.steps):
            state = write(position, state)
        return state[2]


def cached_greedy(model, steps: int, start: int) -> CachedGreedy | None:
    """The cached decoder of a transformer built by pipeline.models (None for any other model)."""
    if not isinstance(model, keras.Model) or not any(isinstance(layer, TransformerBlock) for layer in model.layers):
        return None
    decoders = _decoders.setdefault(model, {})
    if (steps, start) not in decoders:
        decoders[steps, start] = CachedGreedy(model, steps, start)
    return decoders[steps, start]


def outputs(model, codec: Codec, x) -> np.ndarray:
    """What model outputs for x, encoded by codec, for codec.decode()."""
    if not isinstance(codec, TokenCodec):
        return run_batches(model, x)
    if (decoder := cached_greedy(model, codec.out_steps, codec.START)) is not None:
        return run_batches(decoder, x)
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
