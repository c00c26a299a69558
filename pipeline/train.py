"""Fitting one experiment: the tutorial's loop of fresh examples every epoch, as one tf.data stream."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from pipeline.codec import Codec, Limits
from pipeline.config import Experiment, Task
from pipeline.evaluate import predict_answers, score
from pipeline.models import build_model, make_codec
from pipeline.problems import Problems


def seed_everything(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def epoch_indices(n: int, exp: Experiment, rng: np.random.Generator) -> np.ndarray:
    """(epochs, samples) row indices: fresh draws per epoch, or a shuffled pass over the split."""
    if exp.samples_per_epoch:
        return rng.integers(0, n, size=(exp.epochs, exp.samples_per_epoch))
    return np.stack([rng.permutation(n) for _ in range(exp.epochs)])


def training_stream(x: np.ndarray, y: np.ndarray, indices: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches that never straddle two epochs, gathered from arrays held once in memory."""
    x, y = tf.constant(x), tf.constant(y)
    epochs = tf.data.Dataset.from_tensor_slices(indices)
    batches = epochs.flat_map(lambda row: tf.data.Dataset.from_tensor_slices(row).batch(batch_size))
    return batches.map(lambda i: (tf.gather(x, i), tf.gather(y, i))).prefetch(tf.data.AUTOTUNE)


def steps_per_execution(steps: int, cap: int = 64) -> int:
    """The largest divisor of the epoch's steps up to cap: tiny batches run many steps per call."""
    return max(d for d in range(1, min(steps, cap) + 1) if steps % d == 0)


EpochHook = Callable[[int, dict[str, float]], None]


class EpochReport(keras.callbacks.Callback):
    """Scores the held-out split after every epoch, adds it to the epoch's logs and hands them on."""

    def __init__(self, codec: Codec, val: Problems, on_epoch: EpochHook | None):
        super().__init__()
        self.codec, self.val, self.on_epoch = codec, val, on_epoch
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        for name, value in score(predict_answers(self.model, self.codec, self.val.text), self.val.answer, self.codec).items():
            logs[f"val_{name}"] = value
        logs["seconds"] = time.perf_counter() - self.started
        if self.on_epoch:
            self.on_epoch(epoch + 1, {k: float(v) for k, v in logs.items()})


@dataclass
class Trained:
    model: keras.Model
    codec: Codec
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0


def train(exp: Experiment, task: Task, train_split: Problems, val_split: Problems, seed: int,
          on_epoch: EpochHook | None = None) -> Trained:
    seed_everything(seed)
    codec = make_codec(exp, Limits.of(task))
    indices = epoch_indices(len(train_split), exp, np.random.default_rng(seed))
    steps = math.ceil(indices.shape[1] / exp.batch_size)
    model = build_model(exp, codec, steps_per_execution(steps))
    stream = training_stream(codec.encode_inputs(train_split.text), codec.encode_targets(train_split.answer),
                             indices, exp.batch_size)
    started = time.perf_counter()
    fit = model.fit(stream, epochs=exp.epochs, steps_per_epoch=steps, verbose=0, shuffle=False,
                    callbacks=[EpochReport(codec, val_split, on_epoch)])
    seconds = time.perf_counter() - started
    history = [{k: float(v[i]) for k, v in fit.history.items()} for i in range(len(fit.history["loss"]))]
    return Trained(model, codec, history, seconds)
