"""Fitting one experiment: the tutorial's loop of fresh examples every epoch, on either Keras backend."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import keras
import numpy as np

from pipeline.backend import hidden
from pipeline.codec import Codec, Limits, TokenCodec
from pipeline.config import MILESTONES, Experiment, Task
from pipeline.errors import AdderError
from pipeline.evaluate import predict_answers, score
from pipeline.models import build_model, make_codec
from pipeline.problems import Problems


def seed_everything(seed: int) -> None:
    if keras.backend.backend() != "tensorflow":
        with hidden("tensorflow"):  # else Keras imports TensorFlow (5 s) to seed it too
            keras.utils.set_random_seed(seed)
        return  # JAX on the CPU is deterministic as it is
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def epoch_indices(n: int, exp: Experiment, rng: np.random.Generator, chances: np.ndarray | None = None) -> np.ndarray:
    """(epochs, samples) row indices: fresh draws per epoch (each row with its chance, if given), or a
    shuffled pass over the split. Draws fill whole batches (samples_per_epoch rounded up to a multiple of
    batch_size): a short last batch is one more program for XLA to compile, seconds each on a CPU."""
    draws = -(-exp.samples_per_epoch // exp.batch_size) * exp.batch_size if exp.samples_per_epoch else 0
    if chances is not None:
        return rng.choice(n, size=(exp.epochs, draws), p=chances)
    if draws:
        return rng.integers(0, n, size=(exp.epochs, draws))
    return np.stack([rng.permutation(n) for _ in range(exp.epochs)])


def draw_chances(texts, ops: str, oversample: dict[str, float]) -> np.ndarray | None:
    """Each problem's chance of a draw under exp.oversample: the largest weight among the operations it
    holds (1 for those not listed), normalised; None when nothing is oversampled."""
    if not oversample:
        return None
    texts = np.asarray(texts, dtype=str)
    weights = np.zeros(len(texts))
    for op in ops:
        weights = np.where(np.strings.find(texts, op) >= 0, np.maximum(weights, oversample.get(op, 1.0)), weights)
    return weights / weights.sum()


MIN_WIDTH = 8


def rounded_width(widths) -> np.ndarray:
    """Widths rounded up to a power of two (MIN_WIDTH at least): each width a batch is cut to is one more
    program for XLA to compile (seconds each on a CPU), so few widths, at most twice the work."""
    return np.maximum(MIN_WIDTH, 2 ** np.ceil(np.log2(np.maximum(widths, 1)))).astype(int)


def by_width(indices: np.ndarray, widths: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Each epoch's draws ordered so that every batch holds targets of similar width (sorted by width,
    cut into batches, the batches shuffled): a batch then costs what its longest target needs. Draws
    whose targets all round to one width keep their order."""
    rounded = rounded_width(widths)
    if np.ptp(rounded) == 0:
        return indices
    out = np.empty_like(indices)
    for epoch, drawn in enumerate(indices):
        ordered = drawn[np.argsort(rounded[drawn], kind="stable")]
        batches = np.arange(0, len(ordered), batch_size)
        out[epoch] = np.concatenate([ordered[start:start + batch_size] for start in rng.permutation(batches)])
    return out


class EpochBatches(keras.utils.PyDataset):
    """Every epoch's batches in one stream (fit takes them steps_per_epoch at a time), gathered from arrays
    held once in memory; batches never straddle two epochs (x may be a tuple of arrays, for models with
    several inputs). With target widths (decoders), a batch's targets and the decoder's inputs are cut to
    the widest target in it, rounded up (rounded_width); with input widths (models that skip the padding
    after an expression), its expressions likewise."""

    def __init__(self, x, y: np.ndarray, indices: np.ndarray, batch_size: int, widths: np.ndarray | None = None,
                 in_widths: np.ndarray | None = None):
        super().__init__()
        self.x, self.y, self.indices, self.batch_size, self.widths = x, y, indices, batch_size, widths
        self.in_widths = in_widths
        self.steps = math.ceil(indices.shape[1] / batch_size)  # per epoch

    def __len__(self) -> int:
        return self.steps * len(self.indices)

    def __getitem__(self, i: int):
        epoch, step = divmod(i, self.steps)
        rows = self.indices[epoch, step * self.batch_size:(step + 1) * self.batch_size]
        x = tuple(a[rows] for a in self.x) if isinstance(self.x, (tuple, list)) else self.x[rows]
        y = self.y[rows]
        if self.widths is not None:
            width = int(rounded_width(self.widths[rows].max()))
            x, y = (*x[:-1], x[-1][:, :width]), y[:, :width]  # the decoder's inputs come last
        if self.in_widths is not None:
            x = (x[0][:, : int(rounded_width(self.in_widths[rows].max()))], *x[1:])  # the expression comes first
        return x, y


def steps_per_execution(steps: int, cap: int = 64) -> int:
    """The largest divisor of the epoch's steps up to cap: tiny batches run many steps per call."""
    return max(d for d in range(1, min(steps, cap) + 1) if steps % d == 0)


@contextmanager
def replicas(exp: Experiment, rows_per_epoch: int) -> Iterator[int]:
    """The scope a model is built and trained in, yielding its number of replicas: for `distribute:
    mirrored`, TensorFlow's MirroredStrategy or Keras's DataParallel over every device (all visible GPUs,
    or the CPU alone); else one. Several replicas need every batch to split evenly between them."""
    if exp.distribute == "none":
        yield 1
        return
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        n = strategy.num_replicas_in_sync
    else:
        devices = keras.distribution.list_devices()
        strategy, n = keras.distribution.DataParallel(devices=devices), len(devices)
    if exp.batch_size % n or rows_per_epoch % n:
        raise AdderError(f"distribute: mirrored splits every batch over {n} replicas: batch_size ({exp.batch_size}) "
                         f"and the rows per epoch ({rows_per_epoch}) must be multiples of {n}")
    with strategy.scope():
        yield n


class WholeBatch:
    """A model answering each row once: on several replicas Keras's predict_on_batch gives every replica
    the whole batch and concatenates their answers."""

    def __init__(self, model: keras.Model):
        self.model = model

    def predict_on_batch(self, x):
        return keras.ops.convert_to_numpy(self.model(x, training=False))


def held_out_scores(model, codec: Codec, val: Problems) -> dict[str, float]:
    """Scores on the validation split. Decoders fed their own output are scored in one teacher-forced pass
    (TokenCodec.forced_exact_match) instead of a greedy decoding per epoch: the same exact match for
    answer-only framings, a stricter one for steps (every step right too), at a fraction of the cost."""
    if isinstance(codec, TokenCodec):
        return {"exact_match": codec.forced_exact_match(model, val.text, val.answer, val.steps)}
    return score(predict_answers(model, codec, val.text), val.answer, codec)


EpochHook = Callable[[int, dict[str, float]], None]


class EpochReport(keras.callbacks.Callback):
    """Scores the held-out split after every epoch, adds it to the epoch's logs and hands them on."""

    def __init__(self, codec: Codec, val: Problems, exp: Experiment, on_epoch: EpochHook | None, replicas: int = 1):
        super().__init__()
        self.codec, self.val, self.exp, self.on_epoch, self.replicas = codec, val, exp, on_epoch, replicas
        self.seconds_to: dict[float, float] = {}

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        model = self.model if self.replicas == 1 else WholeBatch(self.model)
        for name, value in held_out_scores(model, self.codec, self.val).items():
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
    replicas: int = 1  # devices each batch was split over (distribute: mirrored)


def train(exp: Experiment, task: Task, train_split: Problems, val_split: Problems, seed: int,
          on_epoch: EpochHook | None = None) -> Trained:
    seed_everything(seed)
    codec = make_codec(exp, Limits.of(task), train_split)
    rows = codec.training_rows(train_split)
    chances = draw_chances(rows.text, task.ops, exp.oversample)
    rng = np.random.default_rng(seed)
    indices = epoch_indices(len(rows), exp, rng, chances)
    x, y = codec.training_pair(rows.text, rows.answer, rows.steps)
    if (widths := codec.target_widths(y)) is not None:
        indices = by_width(indices, widths, exp.batch_size, rng)
    stream = EpochBatches(x, y, indices, exp.batch_size, widths, codec.input_widths(rows.text))
    steps = stream.steps
    with replicas(exp, indices.shape[1]) as n:
        # Keras cannot run several steps per call on several replicas.
        model = build_model(exp, codec, steps * exp.epochs, steps_per_execution(steps) if n == 1 else 1)
        report = EpochReport(codec, val_split, exp, on_epoch, n)
        started = time.perf_counter()
        fit = model.fit(stream, epochs=exp.epochs, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[report])
    seconds = time.perf_counter() - started
    history = [{k: float(v[i]) for k, v in fit.history.items()} for i in range(len(fit.history["loss"]))]
    milestones = {f"seconds_to_{level * 100:g}".replace(".", "_"): s for level, s in report.seconds_to.items()}
    return Trained(model, codec, history, seconds, milestones, n)
