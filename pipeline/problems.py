"""Problem generation, vectorised with numpy and deterministic from the seed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import Task
from pipeline.errors import AdderError

SPLITS = ("train", "val", "test")
HEADER = "problem,answer"


@dataclass(frozen=True)
class Problems:
    """Problems as text with their exact answers."""

    text: np.ndarray  # str, e.g. "12+50"
    answer: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.text)

    def take(self, index: np.ndarray) -> Problems:
        return Problems(self.text[index], self.answer[index])


def sample_operands(task: Task, n: int, rng: np.random.Generator) -> np.ndarray:
    """An (n, terms) int64 array drawn from the task's operand distribution."""
    shape = (n, task.terms)
    if task.digits is None:
        return rng.integers(task.low, task.high, size=shape, endpoint=True, dtype=np.int64)
    # Keras addition_rnn: a length in 1..digits, then that many random digits. Both come from
    # one draw per operand, so the first n problems never depend on how many follow.
    draws = rng.integers([1, 0], [task.digits, 10**task.digits - 1], size=(*shape, 2), endpoint=True, dtype=np.int64)
    return draws[..., 1] % 10 ** draws[..., 0]


def to_problems(operands: np.ndarray) -> Problems:
    text = np.char.mod("%d", operands[:, 0])
    for column in operands[:, 1:].T:
        text = np.char.add(np.char.add(text, "+"), np.char.mod("%d", column))
    return Problems(text.astype(str), operands.sum(axis=1))


def sample_problems(task: Task, n: int, rng: np.random.Generator) -> Problems:
    return to_problems(sample_operands(task, n, rng))


def distinct_problems(task: Task, n: int, rng: np.random.Generator, max_rounds: int = 100) -> Problems:
    """n distinct problems in order of first draw, so the result is fixed by the seed."""
    texts, answers = np.empty(0, dtype=str), np.empty(0, dtype=np.int64)
    for _ in range(max_rounds):
        batch = sample_problems(task, 2 * n, rng)
        texts, answers = np.concatenate([texts, batch.text]), np.concatenate([answers, batch.answer])
        _, first = np.unique(texts, return_index=True)
        first.sort()
        texts, answers = texts[first], answers[first]
        if len(texts) >= n:
            return Problems(texts[:n], answers[:n])
    raise AdderError(f"found only {len(texts)} distinct problems of the {n} asked for after {max_rounds} rounds of sampling")


def split_problems(task: Task, seed: int) -> dict[str, Problems]:
    """train / val / test splits; with task.disjoint no problem appears in two splits."""
    rng = np.random.default_rng(seed)
    # Test first, so growing train_size never changes the test set.
    sizes = {"test": task.test_size, "val": task.val_size, "train": task.train_size}
    if not task.disjoint:
        return {split: sample_problems(task, size, rng) for split, size in sizes.items()}
    total = sum(sizes.values())
    if total > task.space_size:
        raise AdderError(
            f"train_size + val_size + test_size = {total:,} but the task has only {task.space_size:,} distinct "
            "problems; lower the sizes or set disjoint: false"
        )
    pool = distinct_problems(task, total, rng)
    bounds = np.cumsum([0, *sizes.values()])
    return {split: pool.take(np.arange(bounds[i], bounds[i + 1])) for i, split in enumerate(sizes)}


def overlap(train: Problems, other: Problems) -> float:
    """Fraction of `other` whose problem also appears in `train`."""
    return float(np.isin(other.text, train.text).mean()) if len(other) else 0.0


def write_csv(problems: Problems, path: Path) -> str:
    """Writes problems as CSV and returns the sha256 of the bytes written."""
    lines = np.char.add(np.char.add(problems.text, ","), problems.answer.astype(str))
    data = (HEADER + "\n" + "\n".join(lines.tolist()) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def read_csv(path: Path) -> Problems:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise AdderError(f"missing dataset {path}; run `adder generate` (or `dvc repro`) first") from None
    if not lines or lines[0] != HEADER:
        raise AdderError(f"{path}: not an adder dataset (expected header {HEADER!r})")
    rows = np.array(lines[1:], dtype=str)
    text, answer = np.char.partition(rows, ",")[:, [0, 2]].T if len(rows) else (rows, rows)
    return Problems(text.astype(str), answer.astype(np.int64))
