"""Exact match broken down by what makes a problem hard: how many terms, how long the operands, which
operations, how many carries or borrows, how long the answer. Pure functions of problem text and predictions."""

from __future__ import annotations

import numpy as np

from pipeline.expressions import OPERATION_NAMES, OPERATIONS, parse

BREAKDOWNS = ("terms", "digits", "operation", "brackets", "carries", "answer_length")
NOT_COUNTED = "n/a"  # carries are counted for sums, borrows for one subtraction; not for the rest


def column_carries(operands: list[int]) -> int:
    """Columns that carry into the next one when the operands are added by hand."""
    count, carry = 0, 0
    for column in range(len(str(max(operands)))):
        carry = (sum(v // 10**column % 10 for v in operands) + carry) // 10
        count += carry > 0
    return count


def column_borrows(a: int, b: int) -> int:
    """Columns that borrow when the smaller number is taken from the larger by hand."""
    big, small = max(a, b), min(a, b)
    count, borrow = 0, 0
    for column in range(len(str(big))):
        borrow = int(big // 10**column % 10 - borrow < small // 10**column % 10)
        count += borrow
    return count


def features(text: str, answer: int) -> dict[str, str]:
    """The breakdown groups one problem falls in."""
    operands, ops, span = parse(text, OPERATIONS, brackets=True)
    used = {OPERATION_NAMES[op] for op in ops}
    if set(ops) == {"+"}:
        carries = str(column_carries(operands))
    elif ops == ["-"]:
        carries = str(column_borrows(*operands))
    else:
        carries = NOT_COUNTED
    return {
        "terms": str(len(operands)),
        "digits": str(max(len(str(v)) for v in operands)),
        "operation": used.pop() if len(used) == 1 else "mixed",
        "brackets": "yes" if span else "no",
        "carries": carries,
        "answer_length": str(len(str(answer))),
    }


def group_order(group: str) -> tuple:
    return (0, int(group), "") if group.isdigit() else (1, 0, group)


def breakdowns(texts, answers, predicted) -> dict[str, dict[str, dict[str, float]]]:
    """{breakdown: {group: {"count": n, "exact_match": fraction right}}}, groups in natural order."""
    answers = np.asarray(answers)
    right = np.asarray(predicted).astype(str) == answers.astype(str)
    rows = [features(t, int(a)) for t, a in zip(np.asarray(texts).tolist(), answers.tolist())]
    result = {}
    for name in BREAKDOWNS:
        groups = np.array([row[name] for row in rows], dtype=str)
        result[name] = {
            group: {"count": int((groups == group).sum()), "exact_match": float(right[groups == group].mean())}
            for group in sorted(set(groups.tolist()), key=group_order)
        }
    return result


def breakdown_rows(result: dict) -> list[dict]:
    """The breakdowns as flat rows: breakdown, group, count, exact_match."""
    return [{"breakdown": name, "group": group, **cell} for name, groups in result.items() for group, cell in groups.items()]


def breakdown_metrics(result: dict, prefix: str = "test_exact_match") -> dict[str, float]:
    """The breakdowns as MLflow metric names: test_exact_match/terms/3."""
    return {f"{prefix}/{name}/{group.replace('/', '_')}": cell["exact_match"]
            for name, groups in result.items() for group, cell in groups.items()}
