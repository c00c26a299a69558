"""Greedy decoding of a transformer as one compiled graph: the expression is encoded once, and each new
token attends to the cached keys and values of the tokens before it instead of recomputing them."""

from __future__ import annotations

import weakref

import keras

from pipeline.models import TransformerBlock

# model -> {(steps, start): its decoder}, so that each keeps its compiled graph while the model lives
_decoders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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

    def call(self, expression):
        memory = self.expression_embedding(expression)
        for block in self.encoder:
            memory = block(memory)
        memories = [block.memory_keys_values(memory) for block in self.decoder]
        caches = [None] * len(self.decoder)
        token = keras.ops.zeros_like(expression[:, :1]) + self.start
        outputs = []
        for position in range(self.steps):
            x = self.answer_embedding.at(token, position)
            for i, block in enumerate(self.decoder):
                x, caches[i] = block.step(x, caches[i], memories[i])
            outputs.append(self.next_token(x))
            token = keras.ops.cast(keras.ops.argmax(outputs[-1], axis=-1), "int32")
        return keras.ops.concatenate(outputs, axis=1)


def cached_greedy(model, steps: int, start: int) -> CachedGreedy | None:
    """The cached decoder of a transformer built by pipeline.models (None for any other model)."""
    if not isinstance(model, keras.Model) or not any(isinstance(layer, TransformerBlock) for layer in model.layers):
        return None
    decoders = _decoders.setdefault(model, {})
    if (steps, start) not in decoders:
        decoders[steps, start] = CachedGreedy(model, steps, start)
    return decoders[steps, start]
