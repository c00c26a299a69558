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
from pipeline.config import MILESTONES, Experiment, Task
from pipeline.errors import AdderError
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


def training_stream(x, y: np.ndarray, indices: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches that never straddle two epochs, gathered from arrays held once in memory
    (x may be a tuple of arrays, for models with several inputs)."""
    x, y = tf.nest.map_structure(tf.constant, x), tf.constant(y)
    epochs = tf.data.Dataset.from_tensor_slices(indices)
    batches = epochs.flat_map(lambda row: tf.data.Dataset.from_tensor_slices(row).batch(batch_size))
    gather = lambda i: (tf.nest.map_structure(lambda a: tf.gather(a, i), x), tf.gather(y, i))
    return batches.map(gather).prefetch(tf.data.AUTOTUNE)


def steps_per_execution(steps: int, cap: int = 64) -> int:
    """The largest divisor of the epoch's steps up to cap: tiny batches run many steps per call."""
    return max(d for d in range(1, min(steps, cap) + 1) if steps % d == 0)


def strategy_for(exp: Experiment, rows_per_epoch: int) -> tf.distribute.Strategy:
    """Mirrored over every replica (all visible GPUs, or the CPU alone), or TensorFlow's default placement.
    Several replicas need every batch to split evenly between them (Keras fails on uneven parts)."""
    if exp.distribute == "none":
        return tf.distribute.get_strategy()
    strategy = tf.distribute.MirroredStrategy()
    n = strategy.num_replicas_in_sync
    if exp.batch_size % n or rows_per_epoch % n:
        raise AdderError(f"distribute: mirrored splits every batch over {n} replicas: batch_size ({exp.batch_size}) "
                         f"and the rows per epoch ({rows_per_epoch}) must be multiples of {n}")
    return strategy


class WholeBatch:
    """A model answering each row once: on several replicas Keras's predict_on_batch gives every replica
    the whole batch and concatenates their answers."""

    def __init__(self, model: keras.Model):
        self.model = model

    def predict_on_batch(self, x):
        return keras.ops.convert_to_numpy(self.model(x, training=False))


EpochHook = Callable[[int, dict[str, float]], None]


class EpochReport(keras.callbacks.Callback):
    """Scores the held-out split after every epoch, adds it to the epoch's logs and hands them on."""

    def __init__(self, codec: Codec, val: Problems, exp: Experiment, on_epoch: EpochHook | None):
        super().__init__()
        self.codec, self.val, self.exp, self.on_epoch = codec, val, exp, on_epoch
        self.seconds_to: dict[float, float] = {}

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        model = self.model if self.model.distribute_strategy.num_replicas_in_sync == 1 else WholeBatch(self.model)
        for name, value in score(predict_answers(model, self.codec, self.val.text), self.val.answer, self.codec).items():
            logs[f"val_{name}"] = value
        logs["seconds"] = time.perf_counter() - self.started
        for level in MILESTONES:
            if logs["val_exact_match"] >= level:
                self.seconds_to.setdefault(level, logs["seconds"])
        reached = self.exp.target is not None and logs["val_exact_match"] >= self.exp.target
        if reached or (self.exp.max_seconds is not None and logs["seconds"] >= self.exp.max_seconds):
            self.model.stop_training = True
        if self.on_epoch:
            self.on_epoch(epoch + 1, {k: float(v) for k, v in logs.items()})


@dataclass
class Trained:
    model: keras.Model
    codec: Codec
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    seconds_to: dict[str, float] = field(default_factory=dict)  # e.g. {"seconds_to_99": 12.3}


def train(exp: Experiment, task: Task, train_split: Problems, val_split: Problems, seed: int,
          on_epoch: EpochHook | None = None) -> Trained:
    seed_everything(seed)
    codec = make_codec(exp, Limits.of(task))
    indices = epoch_indices(len(train_split), exp, np.random.default_rng(seed))
    steps = math.ceil(indices.shape[1] / exp.batch_size)
    strategy = strategy_for(exp, indices.shape[1])
    with strategy.scope():  # Keras trains under the strategy its model was built in
        # Keras cannot run several steps per call on several replicas.
        per_call = steps_per_execution(steps) if strategy.num_replicas_in_sync == 1 else 1
        model = build_model(exp, codec, steps * exp.epochs, per_call)
    stream = training_stream(*codec.training_pair(train_split.text, train_split.answer), indices, exp.batch_size)
    report = EpochReport(codec, val_split, exp, on_epoch)
    started = time.perf_counter()
    fit = model.fit(stream, epochs=exp.epochs, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[report])
    seconds = time.perf_counter() - started
    history = [{k: float(v[i]) for k, v in fit.history.items()} for i in range(len(fit.history["loss"]))]
    milestones = {f"seconds_to_{level * 100:g}".replace(".", "_"): s for level, s in report.seconds_to.items()}
    return Trained(model, codec, history, seconds, milestones)
