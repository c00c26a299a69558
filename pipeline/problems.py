"""Problem generation, vectorised with numpy and deterministic from the seed."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import nested
from pipeline.config import Task
from pipeline.digits import number_widths
from pipeline.errors import AdderError
from pipeline.expressions import bracket_spans

SPLITS = ("train", "val", "test")
HEADER = "problem,answer"
STEPS_HEADER = "problem,answer,steps"  # tasks whose problems can take more than one operation
STEP_SEPARATOR = ";"
POWERS_OF_TEN = 10 ** np.arange(19, dtype=np.int64)  # every power of ten an int64 holds


@dataclass(frozen=True)
class Problems:
    """Problems as text with their exact answers and, where a problem takes more than one operation or a
    multiplication by a number of two or more digits, the worked steps that lead to the answer."""

    text: np.ndarray  # str, e.g. "12+50"
    answer: np.ndarray  # int64
    steps: np.ndarray | None = None  # str, e.g. "19*3-40;57-40" for "(12+7)*3-40"; None: a task of single sums

    def __len__(self) -> int:
        return len(self.text)

    def take(self, index: np.ndarray) -> Problems:
        return Problems(self.text[index], self.answer[index], None if self.steps is None else self.steps[index])


def sample_operands(task: Task, n: int, rng: np.random.Generator) -> np.ndarray:
    """An (n, terms) int64 array drawn from the task's operand distribution."""
    shape = (n, task.terms)
    if not keras_digits(task):
        return rng.integers(task.low, task.high, size=shape, endpoint=True, dtype=np.int64)
    return keras_operands(rng.integers(0, keras_draw_bound(task.digits), size=shape, dtype=np.uint64), task.digits)


def keras_draw_bound(digits: int) -> int:
    """Keras addition_rnn draws a length in 1..digits, then that many random digits. One number below
    this bound holds both (length - 1, digits) = divmod(draw, 10**digits): one draw per operand, so the
    first n problems never depend on how many follow, and a scalar bound keeps numpy's draw fast."""
    return digits * 10**digits


def keras_operands(draws: np.ndarray, digits: int) -> np.ndarray:
    """Draws below keras_draw_bound(digits) -> int64 operands: the random digits cut to the drawn length."""
    length_index, value = np.divmod(draws, np.uint64(10**digits))
    return (value % POWERS_OF_TEN.astype(np.uint64)[length_index.astype(np.intp) + 1]).astype(np.int64)


def leading_digits(values: np.ndarray, widths: np.ndarray, slots: int) -> np.ndarray:
    """(slots, n) uint32 characters: each number's digits from the left, then '0's. Scaling a number to
    `slots` digits puts its j-th digit at one power of ten for every row, and 32-bit division, where
    the scaled numbers fit, is several times faster than 64-bit."""
    dtype = np.uint32 if slots <= 9 else np.uint64
    scaled = values.astype(dtype) * POWERS_OF_TEN.astype(dtype).take(slots - widths)
    chars = np.empty((slots, len(values)), dtype=np.uint32)
    for j in range(slots):
        chars[j] = scaled // 10 ** (slots - 1 - j) % 10 + ord("0")
    return chars


def join_sums(operands: np.ndarray) -> np.ndarray:
    """(n, terms) non-negative ints -> 'a+b+...' strings. Every operand is written into one character
    matrix at its row's offset, then a numpy str array views the matrix without a copy."""
    n, terms = operands.shape
    widths = number_widths(operands)
    slots = int(widths.max(initial=1))
    width = terms * (slots + 1) - 1  # the longest text; every operand's slots fit in it
    chars = np.zeros((n, width), dtype=np.uint32)
    flat, slot = chars.reshape(-1), np.arange(slots)[:, None]
    end = np.arange(n) * width  # flat index where each row's text ends so far
    for t in range(terms):
        if t:
            flat[end] = ord("+")
            end += 1
        digits = leading_digits(operands[:, t], widths[:, t], slots)
        if t == terms - 1:
            digits = np.where(slot < widths[:, t], digits, 0)  # a zero code point ends a numpy str
        # Past its digits an operand leaves '0's, where the next '+' and operand then go.
        flat[end + slot] = digits
        end += widths[:, t]
    return chars.view(f"U{width}")[:, 0]


def sum_rows(operands: np.ndarray) -> np.ndarray:
    """Row sums, a column at a time (numpy's sum along short rows is slow)."""
    total = operands[:, 0].copy()
    for t in range(1, operands.shape[1]):
        total += operands[:, t]
    return total


def to_problems(operands: np.ndarray) -> Problems:
    return Problems(join_sums(operands), sum_rows(operands))


def is_plain_sum(task: Task) -> bool:
    return task.ops == "+" and not task.brackets and not task.fixed_width and task.min_terms in (None, task.terms)


def sample_problems(task: Task, n: int, rng: np.random.Generator) -> Problems:
    if task.nesting > 1 or task.value_limit is not None:
        text, answer, steps = zip(*(nested.draw(task, rng) for _ in range(n))) if n else ((), (), ())
        return Problems(np.array(text, dtype=str), np.array(answer, dtype=np.int64), np.array(steps, dtype=str))
    if not is_plain_sum(task):
        return expression_problems(task, n, rng)
    operands = sample_operands(task, n, rng)  # the fast path: scalar-bound draws, no expression logic
    if task.terms == 2:
        return to_problems(operands)
    ops, none = np.full((n, task.terms - 1), "+"), np.full(n, -1)
    return Problems(join_sums(operands), sum_rows(operands),
                    reduction_chain(operands, ops, np.full(n, task.terms), none, none))


def keras_digits(task: Task) -> bool:
    """Whether operands have 1..digits digits, drawn as Keras addition_rnn does."""
    return task.digits is not None and not task.fixed_width


def draw_columns(task: Task) -> tuple[list[int], list[int], dict[str, slice]]:
    """Inclusive (low, high) bounds of every random number one problem needs, and where each kind sits."""
    lows, highs, where = [], [], {}

    def add(name: str, low: int, high: int, count: int) -> None:
        where[name] = slice(len(lows), len(lows) + count)
        lows.extend([low] * count)
        highs.extend([high] * count)

    if keras_digits(task):
        add("operands", 0, keras_draw_bound(task.digits) - 1, task.terms)  # as sample_operands draws them
    else:
        add("operands", task.low, task.high, task.terms)
    add("terms", task.min_terms or task.terms, task.terms, 1)
    add("ops", 0, len(task.ops) - 1, task.terms - 1)
    # One draw picks the bracket span uniformly for any number of terms: its count of choices divides it.
    choices = [len(bracket_spans(n)) + 1 for n in range((task.min_terms or task.terms), task.terms + 1)]
    add("span", 0, math.lcm(*choices) - 1 if task.brackets else 0, 1)
    return lows, highs, where


def span_table(terms: int) -> np.ndarray:
    """(terms + 1, choices, 2): for n terms, choice k -> (first, last) bracketed operand; the last choice
    of each row, and padding, is (-1, -1): no brackets."""
    table = np.full((terms + 1, len(bracket_spans(terms)) + 1, 2), -1, dtype=np.int64)
    for n in range(terms + 1):
        spans = bracket_spans(n)
        if spans:
            table[n, : len(spans)] = spans
    return table


def bracket_choice(task: Task, terms: np.ndarray, draw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) bracketed operand per problem, uniform over the spans of its terms and no brackets;
    (-1, -1) for none."""
    if not task.brackets:
        return np.full(len(terms), -1), np.full(len(terms), -1)
    choices = np.array([len(bracket_spans(n)) + 1 for n in range(task.terms + 1)])
    return span_table(task.terms)[terms, draw % choices[terms]].T


def fold(values: np.ndarray, ops: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Row-wise exact value of the active operands joined by their ops, * before + and -: left to right,
    a running total of finished terms plus the product term being built."""
    total = np.zeros(len(values), dtype=np.int64)
    term = np.zeros(len(values), dtype=np.int64)
    started = np.zeros(len(values), dtype=bool)
    for i in range(values.shape[1]):
        value, on = values[:, i], active[:, i]
        op = ops[:, i - 1] if i else np.full(len(values), "+")
        first, more = on & ~started, on & started
        times, fresh = more & (op == "*"), more & (op != "*")
        total = np.where(fresh, total + term, total)
        signed = np.where(op == "-", -value, value)
        term = np.where(first, value, np.where(times, term * value, np.where(fresh, signed, term)))
        started |= on
    return total + term


def expression_problems(task: Task, n: int, rng: np.random.Generator) -> Problems:
    """Problems of any family: all of a problem's random numbers come from one row of one draw, so the
    first n problems never depend on how many follow. Answers come from the problem's own structure."""
    lows, highs, where = draw_columns(task)
    # uint64: a Keras operand's draw can pass the int64 range (18 digits: up to 18 * 10**18)
    draws = rng.integers(lows, highs, size=(n, len(lows)), endpoint=True, dtype=np.uint64)
    values = draws[:, where["operands"]]
    values = keras_operands(values, task.digits) if keras_digits(task) else values.astype(np.int64)
    column = lambda name: draws[:, where[name]].astype(np.int64)
    terms = column("terms")[:, 0]
    ops = np.array(list(task.ops))[column("ops")].reshape(n, task.terms - 1)
    first, last = bracket_choice(task, terms, column("span")[:, 0])
    position = np.arange(task.terms)
    inside = (position >= first[:, None]) & (position <= last[:, None])
    bracket_value = fold(values, ops, inside)
    outer = (position < terms[:, None]) & ~(inside & (position > first[:, None]))
    answer = fold(np.where(position == first[:, None], bracket_value[:, None], values), ops, outer)
    return Problems(expression_text(as_text(values), ops, terms, first, last), answer,
                    reduction_chain(values, ops, terms, first, last))


def first_true(mask: np.ndarray) -> np.ndarray:
    return mask.argmax(axis=1)


def as_text(values: np.ndarray) -> np.ndarray:
    """Integers as decimal strings, no wider than the longest needs."""
    width = int((number_widths(np.abs(values)) + (values < 0)).max(initial=1))
    return values.astype(f"U{width}")


def join(*parts) -> np.ndarray:
    out = parts[0]
    for part in parts[1:]:
        out = np.strings.add(out, part)
    return out


def add_step(steps: np.ndarray, rows: np.ndarray, line: np.ndarray) -> np.ndarray:
    """steps with line (one per row in rows) appended, each line after a separator (reduction_chain
    strips the first)."""
    lines = np.full(len(steps), "", dtype=np.result_type(line, "U1"))
    lines[rows] = line
    steps = join(steps, np.where(lines == "", "", STEP_SEPARATOR), lines)
    return steps.astype(f"U{max(int(np.strings.str_len(steps).max(initial=1)), 1)}")  # joins add up widths


def partial_sums(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a*b as the sum of its partial products where both have two or more digits: the longer times each
    digit of the shorter in its place, units first, each zero-padded to the width any product of the two
    could take, so that their digits stand in columns as on paper (47*36 -> '0282+1410'); '' elsewhere.
    The digits keep their number's sign (15*-37 -> '-0105+-0450'). Returns the sums and their rows."""
    rows = np.flatnonzero((number_widths(np.abs(a)) > 1) & (number_widths(np.abs(b)) > 1))
    a, b = a[rows], b[rows]
    swap = number_widths(np.abs(a)) < number_widths(np.abs(b))
    a, b = np.where(swap, b, a), np.where(swap, a, b)  # b: the multiplier, the shorter (the right on a tie)
    places = number_widths(np.abs(b))
    width = number_widths(np.abs(a)) + places  # room for any product of numbers this wide
    sums = np.full(len(rows), "")
    for k in range(int(places.max(initial=0))):
        part = a * (np.sign(b) * (np.abs(b) // 10**k % 10) * 10**k)
        text = np.strings.zfill(as_text(part), width + (part < 0))
        sums = np.strings.add(sums, np.where(k < places, join("+" if k else "", text), ""))
    return sums, rows


def reduction_chain(values: np.ndarray, ops: np.ndarray, terms: np.ndarray, first: np.ndarray,
                    last: np.ndarray) -> np.ndarray:
    """The worked steps of each expression, from its own structure: one operation at a time in the order
    it is evaluated (the bracketed span first, * before + and -, then left to right), the expression
    rewritten after each. A multiplication whose operands both have two or more digits is first rewritten
    as the sum of its partial products (partial_sums), bracketed where its neighbours need it. The last
    value is the answer, which is not repeated: (12+7)*3-40 -> '19*3-40;57-40' (answer 17); 47*36 ->
    '0282+1410' (answer 1692)."""
    values, ops, terms = values.astype(np.int64), ops.copy(), terms.astype(np.int64)
    first, last = first.astype(np.int64), last.astype(np.int64)
    n, slots = values.shape
    rows, index = np.arange(n), np.arange(max(slots - 1, 0))
    steps = np.full(n, "", dtype="U1")
    for _ in range(slots - 1):
        todo = terms > 1
        valid = index < (terms - 1)[:, None]  # op j joins operands j and j + 1
        bracketed = valid & (index >= first[:, None]) & (index < last[:, None])
        scope = np.where(bracketed.any(axis=1)[:, None], bracketed, valid)
        times = scope & (ops == "*")
        at = np.where(times.any(axis=1), first_true(times), first_true(scope))
        a, b, op = values[rows, at], values[rows, np.minimum(at + 1, slots - 1)], ops[rows, at]
        multiplied = np.flatnonzero(todo & (op == "*"))
        sums, expanded = partial_sums(a[multiplied], b[multiplied])
        expanded = multiplied[expanded]
        result = np.where(op == "*", a * b, np.where(op == "-", a - b, a + b))
        # Operand at+1 and op at leave; everything after them moves one place left.
        after = np.arange(slots) > at[:, None]
        shifted = np.concatenate([values[:, 1:], values[:, -1:]], axis=1)
        values = np.where(todo[:, None], np.where(after, shifted, values), values)
        values[rows, at] = np.where(todo, result, values[rows, at])
        shifted_ops = np.concatenate([ops[:, 1:], ops[:, -1:]], axis=1)
        ops = np.where(todo[:, None] & (index >= at[:, None]), shifted_ops, ops)
        inside = todo & (first >= 0) & (at >= first) & (at < last)
        last = np.where(inside, last - 1, last)
        closed = first == last  # a span of one operand needs no brackets
        first, last = np.where(closed, -1, first), np.where(closed, -1, last)
        terms = np.where(todo, terms - 1, terms)
        if len(expanded):  # the partial products stand where the product will: the next line, one step before
            steps = add_step(steps, expanded, expression_text(
                with_partial_sums(values[expanded], ops[expanded], terms[expanded], at[expanded], sums),
                ops[expanded], terms[expanded], first[expanded], last[expanded]))
        rows_left = np.flatnonzero(todo & (terms > 1))
        steps = add_step(steps, rows_left, expression_text(as_text(values[rows_left]), ops[rows_left], terms[rows_left],
                                                           first[rows_left], last[rows_left]))
    return np.strings.lstrip(steps, STEP_SEPARATOR)


def with_partial_sums(values: np.ndarray, ops: np.ndarray, terms: np.ndarray, at: np.ndarray,
                      sums: np.ndarray) -> np.ndarray:
    """The operands as text, operand `at` of each row replaced by its partial sums, in brackets where an
    operation binding tighter than + (a * on either side, a - before) would split them."""
    row, last_op = np.arange(len(values)), ops.shape[1] - 1
    before = np.where(at > 0, ops[row, np.maximum(at - 1, 0)], "+")
    following = np.where(at < terms - 1, ops[row, np.minimum(at, last_op)], "+")
    tight = (before == "-") | (before == "*") | (following == "*")
    piece = np.where(tight, join("(", sums, ")"), sums)
    return np.where(np.arange(values.shape[1]) == at[:, None], piece[:, None], as_text(values))


def expression_text(operands: np.ndarray, ops: np.ndarray, terms: np.ndarray, first: np.ndarray,
                    last: np.ndarray) -> np.ndarray:
    """Canonical text from operands as text, as expressions.render writes it: '(12+7)*3-40'."""
    text = np.full(len(operands), "", dtype=str)
    for i in range(operands.shape[1]):
        token = join(np.where(first == i, "(", ""), operands[:, i], np.where(last == i, ")", ""))
        if i:
            token = np.strings.add(ops[:, i - 1], token)
        text = np.strings.add(text, np.where(i < terms, token, ""))
    return text.astype(str)


def concatenate(a: Problems, b: Problems) -> Problems:
    steps = None if a.steps is None or b.steps is None else np.concatenate([a.steps, b.steps])
    return Problems(np.concatenate([a.text, b.text]), np.concatenate([a.answer, b.answer]), steps)


def distinct_problems(task: Task, n: int, rng: np.random.Generator, max_rounds: int = 100) -> Problems:
    """n distinct problems in order of first draw, so the result is fixed by the seed."""
    pool = None
    for _ in range(max_rounds):
        batch = sample_problems(task, 2 * n, rng)
        pool = batch if pool is None else concatenate(pool, batch)
        _, first = np.unique(pool.text, return_index=True)
        first.sort()
        pool = pool.take(first)
        if len(pool) >= n:
            return pool.take(np.arange(n))
    raise AdderError(f"found only {len(pool)} distinct problems of the {n} asked for "
                     f"after {max_rounds} rounds of sampling")


def split_problems(task: Task, seed: int) -> dict[str, Problems]:
    """train / val / test splits; with task.disjoint no problem appears in two splits."""
    rng = np.random.default_rng(seed)
    sizes = {"test": task.test_size, "val": task.val_size, "train": task.train_size}
    if not task.disjoint:
        return {split: sample_problems(task, size, rng) for split, size in sizes.items()}
    total = sum(sizes.values())
    if total > task.space_size:
        raise AdderError(
            f"train_size + val_size + test_size = {total:,} but the task has only {task.space_size:,} distinct "
            "problems; lower the sizes or set disjoint: false"
        )
    # Shuffle before cutting: the most frequent problems are the first drawn, and without this
    # they would all land in the test split and none in training.
    pool = distinct_problems(task, total, rng)
    pool = pool.take(rng.permutation(len(pool)))
    bounds = np.cumsum([0, *sizes.values()])
    return {split: pool.take(np.arange(bounds[i], bounds[i + 1])) for i, split in enumerate(sizes)}


def overlap(train: Problems, other: Problems) -> float:
    """Fraction of `other` whose problem also appears in `train`."""
    return float(np.isin(other.text, train.text).mean()) if len(other) else 0.0


def write_csv(problems: Problems, path: Path) -> str:
    """Writes problems as CSV (with a steps column where they have steps); returns the sha256 of the bytes."""
    lines = np.char.add(np.char.add(problems.text, ","), problems.answer.astype(str))
    header = HEADER
    if problems.steps is not None:
        lines, header = np.char.add(np.char.add(lines, ","), problems.steps), STEPS_HEADER
    data = "\n".join([header, *lines.tolist()]).encode() + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def read_csv(path: Path) -> Problems:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise AdderError(f"missing dataset {path}; run `adder generate` (or `dvc repro`) first") from None
    if not lines or lines[0] not in (HEADER, STEPS_HEADER):
        raise AdderError(f"{path}: not an adder dataset (expected header {HEADER!r} or {STEPS_HEADER!r})")
    rows = np.array(lines[1:], dtype=str)
    text, rest = np.char.partition(rows, ",")[:, [0, 2]].T if len(rows) else (rows, rows)
    if lines[0] == HEADER:
        return Problems(text.astype(str), rest.astype(np.int64))
    answer, steps = np.char.partition(rest, ",")[:, [0, 2]].T if len(rows) else (rows, rows)
    return Problems(text.astype(str), answer.astype(np.int64), steps.astype(str))

