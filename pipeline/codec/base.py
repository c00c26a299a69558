"""What every codec does: refuse expressions its model was not trained for, pair inputs with targets
for training, and run the model in batches to get outputs for decode()."""

from __future__ import annotations

import numpy as np

from pipeline.expressions import Limits

PREDICT_BATCH = 4096


def run_batches(model, x) -> np.ndarray:
    """model outputs for x (an array or a list of arrays), PREDICT_BATCH rows per call.
    predict_on_batch skips model.predict's per-call set-up, which costs ~0.25 s even for 100 rows."""
    inputs = x if isinstance(x, list) else [x]
    chunks = [model.predict_on_batch([a[i : i + PREDICT_BATCH] for a in inputs] if len(inputs) > 1 else inputs[0][i : i + PREDICT_BATCH])
              for i in range(0, len(inputs[0]), PREDICT_BATCH)]
    return np.concatenate([np.asarray(c) for c in chunks])


class Checked:
    """What every codec does: refuse expressions its model was not trained for, pair inputs with
    targets for training, and run the model to get outputs for decode()."""

    limits: Limits

    def check(self, expression: str) -> str:
        return self.limits.check(expression)

    def training_pair(self, texts, answers, steps=None) -> tuple:
        """(inputs, targets) for training; steps (worked steps) matter only to codecs that write them."""
        return self.encode_inputs(texts), self.encode_targets(answers)

    def infer(self, model, x) -> np.ndarray:
        return run_batches(model, x)

    @property
    def writes_steps(self) -> bool:
        """Whether the model writes worked steps before its answer (see worked())."""
        return False

    def worked(self, outputs: np.ndarray) -> np.ndarray:
        """The worked steps in model outputs, ';' between steps; only for codecs that write them."""
        raise NotImplementedError
