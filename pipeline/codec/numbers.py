"""The tutorial's mapping framing: operands as scaled numbers, the sum as one number."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.codec.base import Checked
from pipeline.codec.matrices import char_matrix, operand_digits
from pipeline.expressions import Limits


@dataclass(frozen=True)
class NumberCodec(Checked):
    """The tutorial's mapping framing: operands as numbers scaled by terms * largest."""

    limits: Limits

    @property
    def scale(self) -> float:
        return float(self.limits.max_answer)

    def operands(self, texts) -> np.ndarray:
        columns = operand_digits(*char_matrix(texts), self.limits.terms)
        values = np.zeros((len(columns), self.limits.terms), dtype=np.uint64)
        for place in range(columns.shape[1] - 1, -1, -1):
            values = values * 10 + columns[:, place]
        return values.astype(np.float64).astype(np.float32)  # rounded as float(text) then float32 rounds it

    def encode_inputs(self, texts) -> np.ndarray:
        return self.operands(texts) / self.scale

    def encode_targets(self, answers) -> np.ndarray:
        return np.asarray(answers, dtype=np.float32) / self.scale

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Predictions -> answers in original units, rounded like the tutorial's invert()."""
        return np.rint(np.asarray(outputs).reshape(-1) * self.scale).astype(np.int64).astype(str)
