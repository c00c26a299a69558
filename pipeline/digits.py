"""Numbers as digit columns, least significant first: the framing under which a small
recurrent model adds numbers of any length. Vectorised with numpy, no Python big integers."""

from __future__ import annotations

import numpy as np


def number_widths(values: np.ndarray) -> np.ndarray:
    """Decimal digits of non-negative integers (0 has one)."""
    widths = np.ones(values.shape, dtype=np.int64)
    for power in range(1, len(str(int(values.max(initial=0))))):
        widths += values >= 10**power
    return widths


def digit_columns(texts, steps: int | None = None, terms: int | None = None) -> np.ndarray:
    """'123+45' -> (n, steps, terms) digits, column k holding digit k (from the right) of each term.
    Problems with fewer terms get zero terms, which leave the sum unchanged."""
    rows = np.char.split(np.asarray(texts, dtype=str), "+").tolist()
    count = terms or max(map(len, rows), default=1)
    terms = np.array([row + ["0"] * (count - len(row)) for row in rows], dtype=str).reshape(len(rows), count)
    width = max(int(np.char.str_len(terms).max()), 1) if terms.size else 1
    steps = max(steps or 0, width)
    padded = np.char.zfill(terms, steps).astype(f"S{steps}")
    digits = padded.view(np.uint8).reshape(*terms.shape, steps) - ord("0")
    return digits[:, :, ::-1].transpose(0, 2, 1)


def column_sums(columns: np.ndarray, steps: int) -> np.ndarray:
    """Exact answer digits, least significant first, by schoolbook addition with carries."""
    n, width, _ = columns.shape
    out = np.zeros((n, steps), dtype=np.int8)
    carry = np.zeros(n, dtype=np.int64)
    for k in range(steps):
        total = carry + (columns[:, k].sum(axis=1) if k < width else 0)
        out[:, k], carry = total % 10, total // 10
    return out


def digits_to_text(digits: np.ndarray) -> np.ndarray:
    """(n, steps) digits, least significant first -> numbers as strings without leading zeros."""
    chars = (digits[:, ::-1] + ord("0")).astype(np.uint8)
    text = chars.view(f"S{digits.shape[1]}")[:, 0].astype(str)
    stripped = np.char.lstrip(text, "0")
    return np.where(stripped == "", "0", stripped)


def carry_steps(terms: int) -> int:
    """Extra answer columns a sum of `terms` numbers can carry into."""
    return len(str(terms * 9)) - 1 if terms > 1 else 0


def long_problems(n: int, digits: int, terms: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n problems of `terms` operands with exactly `digits` digits each, with exact answers as text."""
    operand_digits = rng.integers(0, 10, size=(n, terms, digits), dtype=np.int8)
    operand_digits[:, :, 0] = rng.integers(1, 10, size=(n, terms))  # no leading zero
    operands = (operand_digits + ord("0")).astype(np.uint8).view(f"S{digits}")[..., 0].astype(str)
    text = operands[:, 0]
    for column in operands[:, 1:].T:
        text = np.char.add(np.char.add(text, "+"), column)
    columns = operand_digits[:, :, ::-1].transpose(0, 2, 1)
    return text, digits_to_text(column_sums(columns, digits + carry_steps(terms)))
