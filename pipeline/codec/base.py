"""What every codec does: refuse expressions its model was not trained for, pair inputs with targets
for training, and decode what a model outputs (pipeline.decoding runs the model)."""

from __future__ import annotations

import numpy as np

from pipeline.expressions import Limits

PREDICT_BATCH = 1024  # measured fastest on CPU for the sequence models (docs/benchmarks.md)


def run_batches(model, x) -> np.ndarray:
    """model outputs for x (an array or a list of arrays), PREDICT_BATCH rows per call.
    predict_on_batch skips model.predict's per-call set-up, which costs ~0.25 s even for 100 rows.
    A shorter last batch is padded to a power of two: compiled backends (JAX) compile a model once per
    batch size, so that bounds the sizes a model ever sees to eleven."""
    inputs = x if isinstance(x, list) else [x]
    rows = len(inputs[0])
    outputs = []
    for start in range(0, rows, PREDICT_BATCH):
        batch = [a[start : start + PREDICT_BATCH] for a in inputs]
        n = len(batch[0])
        padded = [np.concatenate([a, np.repeat(a[:1], (1 << (n - 1).bit_length()) - n, axis=0)]) for a in batch]
        outputs.append(np.asarray(model.predict_on_batch(padded if len(padded) > 1 else padded[0]))[:n])
    return np.concatenate(outputs)


class Checked:
    """What every codec does: refuse expressions its model was not trained for, pair inputs with
    targets for training, and decode a model's outputs."""

    limits: Limits

    def check(self, expression: str) -> str:
        return self.limits.check(expression)

    def accepting(self, digits: int):
        """The codec accepting operands of up to `digits` digits, for a model measured to add them; only a
        length-agnostic codec widens."""
        return self

    def training_rows(self, problems):
        """The rows a model is trained on: the problems themselves, for every codec but a step model's."""
        return problems

    def training_pair(self, texts, answers, steps=None) -> tuple:
        """(inputs, targets) for training; steps (worked steps) matter only to codecs that write them."""
        return self.encode_inputs(texts), self.encode_targets(answers)

    def input_widths(self, texts) -> np.ndarray | None:
        """Per input row, the leading columns that hold its expression, for codecs whose models skip the
        padding after it (training then cuts batches to their longest); None where every column counts."""
        return None

    def target_widths(self, targets: np.ndarray) -> np.ndarray | None:
        """Per target row, the leading columns that carry its answer, for codecs whose targets are padded
        to a common width (training skips the rest); None where every column counts."""
        return None

    @property
    def writes_steps(self) -> bool:
        """Whether the model writes worked steps before its answer (see worked())."""
        return False

    def worked(self, outputs: np.ndarray) -> np.ndarray:
        """The worked steps in model outputs, ';' between steps; only for codecs that write them."""
        raise NotImplementedError
