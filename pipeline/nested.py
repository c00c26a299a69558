"""Expressions with brackets inside brackets ('((12+7)*3-40)*2'), drawn one at a time: a rarer, held-out
family (deeper than any task a model trains on), so plain Python, where problems.py vectorises the
families models train on. The worked steps follow the same rules as problems.reduction_chain, innermost
brackets first; tests hold the two equal on expressions of one bracketed span."""

from __future__ import annotations

from pipeline.expressions import Span, layouts


def render(operands: list[str], ops: list[str], spans: tuple[Span, ...] | list[Span]) -> str:
    """'((12+7)*3-40)*2' from operands as text, the ops between them and the bracketed spans."""
    parts = []
    for i, operand in enumerate(operands):
        opened = "(" * sum(first == i for first, _ in spans)
        closed = ")" * sum(last == i for _, last in spans)
        parts.append(f"{ops[i - 1] if i else ''}{opened}{operand}{closed}")
    return "".join(parts)


def partial_products(a: int, b: int) -> str:
    """a*b as its partial products when both have two or more digits, as problems.partial_sums writes
    them (47*36 -> '0282+1410'); '' otherwise."""
    wide_a, wide_b = len(str(abs(a))), len(str(abs(b)))
    if wide_a < 2 or wide_b < 2:
        return ""
    if wide_a < wide_b:
        a, b = b, a
    places = len(str(abs(b)))
    width = len(str(abs(a))) + places
    sign = -1 if b < 0 else 1
    parts = [a * (sign * (abs(b) // 10**k % 10) * 10**k) for k in range(places)]
    return "+".join(str(part).zfill(width + (part < 0)) for part in parts)


def worked(values: list[int], ops: list[str], spans: list[Span]) -> tuple[list[str], int, int]:
    """The worked steps of one expression (the answer not repeated), its answer and the largest |value| met
    on the way: one operation at a time, innermost brackets first, * before + and -, then left to right."""
    values, ops, spans = list(values), list(ops), list(spans)
    steps, largest = [], max((abs(v) for v in values), default=0)
    while ops:
        first, last = spans[-1] if spans else (0, len(values) - 1)
        scope = range(first, last)  # op j joins operands j and j + 1
        at = next((j for j in scope if ops[j] == "*"), first)
        a, b, op = values[at], values[at + 1], ops[at]
        result = a * b if op == "*" else a - b if op == "-" else a + b
        largest = max(largest, abs(result))
        values[at : at + 2], ops[at : at + 1] = [result], []
        # Every open span holds the op; a span left with one operand needs no brackets.
        spans = [(start, end - 1) for start, end in spans if start < end - 1]
        if op == "*" and (sums := partial_products(a, b)):
            before = ops[at - 1] if at else "+"
            following = ops[at] if at < len(ops) else "+"
            piece = f"({sums})" if before in "-*" or following == "*" else sums
            steps.append(render([piece if i == at else str(v) for i, v in enumerate(values)], ops, spans))
        if ops:
            steps.append(render([str(v) for v in values], ops, spans))
    return steps, values[0], largest


def draw(task, rng) -> tuple[str, int, str]:
    """One problem of a nested task: (text, answer, worked steps joined by ';'), redrawn until no value on
    the way reaches task.value_limit."""
    while True:
        terms = int(rng.integers(task.min_terms or task.terms, task.terms, endpoint=True))
        lengths = rng.integers(1, task.digits, size=terms, endpoint=True)
        values = [int(rng.integers(0, 10**length)) for length in lengths.tolist()]
        ops = [task.ops[i] for i in rng.integers(0, len(task.ops), size=terms - 1).tolist()]
        options = layouts(terms, task.nesting if task.brackets else 0)
        spans = list(options[int(rng.integers(0, len(options)))])
        steps, answer, largest = worked(values, ops, spans)
        if task.value_limit is None or largest < task.value_limit:
            return render([str(v) for v in values], ops, spans), answer, ";".join(steps)
