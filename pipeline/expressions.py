"""The expressions a task can produce: their grammar, sizes and widths, and the check that `adder predict`
runs before a model sees a line. Pure Python, no numpy: config, problems and codecs all build on it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from pipeline.errors import AdderError

OPERATIONS = "+-*"  # canonical order; also the order of the operation symbols in a codec's alphabet
OPERATION_NAMES = {"+": "add", "-": "sub", "*": "mul"}
MAX_EXPRESSION_CHARS = 10_000  # room for 1,000-digit operands; a million-character line is refused
MAX_OPERAND_DIGITS = 4_000  # longer operands parse as 10**4000, which no model's range holds
TOKEN = re.compile(r"\s*(?:([0-9]+)|([-+*()]))")


def bracket_spans(terms: int) -> list[tuple[int, int]]:
    """(first, last) operand of every span brackets may enclose: at least two operands, not all of them."""
    return [(first, first + size - 1) for size in range(2, terms) for first in range(terms - size + 1)]


Span = tuple[int, int]  # (first, last) operand inside a pair of brackets


@cache
def layouts(terms: int, depth: int) -> tuple[tuple[Span, ...], ...]:
    """Every way to bracket `terms` operands with spans nested up to `depth` deep, outermost first; each span
    encloses two or more operands but not all of those around it. () is no brackets."""
    found: list[tuple[Span, ...]] = [()]
    if depth:
        for first, last in bracket_spans(terms):
            found += [((first, last), *((a + first, b + first) for a, b in inner))
                      for inner in layouts(last - first + 1, depth - 1)]
    return tuple(found)


def count_layouts(terms: int, depth: int) -> int:
    """How many bracket layouts `terms` operands have, nested up to `depth` deep."""
    return len(layouts(terms, depth))


def largest_magnitude(terms: int, high: int, ops: str) -> int:
    """An upper bound on |value| of any expression of `terms` operands in 0..high, whatever the
    bracketing: |a+b|, |a-b| <= |a|+|b| and |a*b| = |a||b|, maximised over every split of the operands."""

    @cache
    def bound(n: int) -> int:
        if n == 1:
            return high
        splits = [(bound(k), bound(n - k)) for k in range(1, n)]
        sums = max(a + b for a, b in splits) if set(ops) & set("+-") else 0
        products = max(a * b for a, b in splits) if "*" in ops else 0
        return max(sums, products)

    return bound(terms)


@dataclass(frozen=True)
class Limits:
    """The expressions a model was trained on: min_terms..terms operands in low..high joined by `ops`,
    with one bracketed span when `brackets`. Predict refuses anything else."""

    terms: int
    low: int
    high: int
    ops: str = "+"
    min_terms: int | None = None  # None: exactly `terms`
    brackets: bool = False

    @classmethod
    def of(cls, task) -> Limits:
        return cls(task.terms, task.low, task.high, task.ops, task.min_terms, task.brackets)

    @property
    def fewest_terms(self) -> int:
        return self.terms if self.min_terms is None else self.min_terms

    @property
    def max_answer(self) -> int:
        """The largest |answer| possible (for sums: terms x largest operand)."""
        return largest_magnitude(self.terms, self.high, self.ops)

    @property
    def negative(self) -> bool:
        """Whether answers can be negative (then the output alphabet has '-')."""
        return "-" in self.ops

    @property
    def alphabet(self) -> str:
        """Digits, the operations, brackets, then the pad space: the tutorial's '0123456789+ ' for sums."""
        symbols = [op for op in OPERATIONS if op in self.ops or (op == "-" and self.negative)]
        return "0123456789" + "".join(symbols) + ("()" if self.brackets else "") + " "

    @property
    def operand_width(self) -> int:
        return len(str(self.high))

    @property
    def operand_range(self) -> str:
        """'be in 0..999', or for a range of very long operands 'have at most 1,000 digits'."""
        if self.low == 0 and self.operand_width > 20 and self.high == 10**self.operand_width - 1:
            return f"have at most {self.operand_width:,} digits"
        return f"be in {self.low}..{self.high}"

    @property
    def expression_width(self) -> int:
        """The longest expression in characters."""
        brackets = 2 if self.brackets and self.terms > 2 else 0
        return self.terms * self.operand_width + self.terms - 1 + brackets

    @property
    def answer_width(self) -> int:
        """The longest answer in characters, sign included."""
        return len(str(self.max_answer)) + (1 if self.negative else 0)

    @property
    def example(self) -> str:
        if self.brackets:  # around two operands or more, never all of them
            a, b = self.ops[0], self.ops[-1]
            return f"(12{a}7){b}3" + (f"{a}40" if self.terms > 3 else "")
        return self.ops[0].join(["12", "50", "7", "3"][: max(self.fewest_terms, 2)])

    def grammar(self) -> str:
        ops = " or ".join(f"'{op}'" for op in self.ops)
        brackets = ", with brackets around some of the terms" if self.brackets else ""
        return f"expected numbers joined by {ops}{brackets}, like {self.example}"

    def check(self, expression: str) -> str:
        """The expression in canonical form (no spaces, no leading zeros), or an AdderError saying what is wrong."""
        quoted = shown(expression)
        if len(expression) > MAX_EXPRESSION_CHARS:
            raise AdderError(f"expression of {len(expression):,} characters is too long ({quoted})")
        if not expression.strip():
            raise AdderError("empty expression")
        parsed = parse(expression.strip(), self.ops, self.brackets)
        if parsed is None:
            raise AdderError(f"malformed expression {quoted}: {self.grammar()}")
        operands, ops, span = parsed
        if not self.fewest_terms <= len(operands) <= self.terms:
            trained = f"{self.fewest_terms}..{self.terms}" if self.fewest_terms < self.terms else f"{self.terms}"
            raise AdderError(f"{quoted} has {len(operands)} terms; this model was trained on {trained}")
        if span is not None and span not in bracket_spans(len(operands)):
            raise AdderError(f"{quoted}: brackets must enclose two or more terms but not all of them")
        if not all(self.low <= v <= self.high for v in operands):
            raise AdderError(f"{quoted}: operands must {self.operand_range} for this model")
        return render(operands, ops, span)


def shown(expression: str, chars: int = 40) -> str:
    """The expression quoted, cut to `chars` characters: an error never echoes a long input whole."""
    return repr(expression if len(expression) <= chars else expression[: chars - 3] + "...")


def refusal(expression: str, refusals: list[tuple[str, str]], models: str = "model") -> str:
    """Why no model accepts expression, from each (name, reason): one model's reason as it is; of several,
    those that parsed the expression (wrong size or range), else that none of their grammars accepts it."""
    if len(refusals) == 1:
        return refusals[0][1]
    specific = [f"{name}: {reason}" for name, reason in refusals if not reason.startswith(("malformed", "empty"))]
    if specific:
        return "; ".join(specific)
    if not expression.strip():
        return "empty expression"
    return f"malformed expression {shown(expression)}: no {models}'s grammar accepts it"


def parse(text: str, allowed_ops: str, brackets: bool) -> tuple[list[int], list[str], tuple[int, int] | None] | None:
    """Operands, operations and the bracketed (first, last) operand span; None if not of the grammar:
    operand (op operand)*, with at most one '(' before an operand and one ')' after a later one."""
    operands: list[int] = []
    ops: list[str] = []
    opened = closed = None
    position, expect_operand = 0, True
    while position < len(text):
        token = TOKEN.match(text, position)
        if token is None:
            return None
        number, symbol = token.groups()
        position = token.end()
        if expect_operand and number is not None:
            digits = number.lstrip("0") or "0"
            # int() refuses over 4,300 digits; a number that long is out of every model's range anyway.
            operands.append(int(digits) if len(digits) <= MAX_OPERAND_DIGITS else 10**MAX_OPERAND_DIGITS)
            expect_operand = False
        elif expect_operand and symbol == "(" and brackets and opened is None:
            opened = len(operands)
        elif not expect_operand and symbol == ")" and opened is not None and closed is None:
            closed = len(operands) - 1
        elif not expect_operand and symbol is not None and symbol in allowed_ops:
            ops.append(symbol)
            expect_operand = True
        else:
            return None
    if expect_operand or (opened is None) != (closed is None):
        return None
    return operands, ops, None if opened is None else (opened, closed)


def render(operands: list[int], ops: list[str], span: tuple[int, int] | None) -> str:
    """The canonical text of an expression, as the generator writes it."""
    parts = []
    for i, value in enumerate(operands):
        op = ops[i - 1] if i else ""
        parts.append(f"{op}{'(' if span and i == span[0] else ''}{value}{')' if span and i == span[1] else ''}")
    return "".join(parts)


SIGNED_NUMBER = re.compile(r"-?[0-9]+")


def is_expression(text: str) -> bool:
    """Whether text is an expression a step model may write: signed numbers joined by + - *, with
    balanced brackets nested to any depth ('8+-85', '3*(0400+4500)', '((1+2)*3-4)*5')."""
    depth, position, expect_operand = 0, 0, True
    while position < len(text):
        char = text[position]
        if expect_operand and char == "(":
            depth, position = depth + 1, position + 1
        elif expect_operand:
            number = SIGNED_NUMBER.match(text, position)
            if number is None:
                return False
            position, expect_operand = number.end(), False
        elif char == ")" and depth:
            depth, position = depth - 1, position + 1
        elif char in OPERATIONS:
            position, expect_operand = position + 1, True
        else:
            return False
    return not expect_operand and depth == 0
