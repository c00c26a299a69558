"""Digit columns, least significant first: sums of any length, one answer digit per step."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pipeline import digits
from pipeline.codec.base import Checked
from pipeline.codec.matrices import char_matrix, operand_digits, place_digits
from pipeline.expressions import Limits


@dataclass(frozen=True)
class ColumnCodec(Checked):
    """Aligned digit columns, least significant first, one-hot per term; one answer digit per step.
    Length-agnostic, but it accepts only the operands its model was trained on, or as many digits as it
    was measured to add (accepting())."""

    limits: Limits
    accepted_digits: int | None = None  # None: the training range

    @property
    def train_steps(self) -> int:
        return len(str(self.limits.high)) + digits.carry_steps(self.limits.terms)

    @property
    def out_width(self) -> int:
        return self.train_steps

    @property
    def features(self) -> int:
        return 10 * self.limits.terms

    def check(self, expression: str) -> str:
        if self.accepted_digits is None:
            return self.limits.check(expression)
        return replace(self.limits, high=10**self.accepted_digits - 1).check(expression)

    def accepting(self, digits: int) -> ColumnCodec:
        return replace(self, accepted_digits=max(digits, self.limits.operand_width))

    def encode_inputs(self, texts) -> np.ndarray:
        columns = operand_digits(*char_matrix(texts), self.limits.terms)
        steps = max(self.train_steps, columns.shape[1] + digits.carry_steps(self.limits.terms))
        columns = np.pad(columns, ((0, 0), (0, steps - columns.shape[1]), (0, 0)))
        one_hot = np.eye(10, dtype=np.float32).take(columns.astype(np.intp), axis=0)  # (n, steps, terms, 10)
        return one_hot.reshape(len(columns), steps, self.features)

    def encode_targets(self, answers) -> np.ndarray:
        answers = np.asarray(answers)
        if answers.dtype.kind in "iu" and (answers >= 0).all():
            return place_digits(answers, self.train_steps)
        # Strings, negatives: as digit_columns reads them.
        return digits.digit_columns(answers.astype(str), self.train_steps)[:, :, 0]

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        return digits.digits_to_text(outputs.argmax(axis=-1).astype(np.int8))
