"""Exact match broken down by what makes a problem hard: how many terms, how long the operands, which
operations, how many carries or borrows, how long the answer; for models that write worked steps, where
their steps first go wrong and how often each kind of step is right. Pure functions of problem text,
worked steps and predictions."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from pipeline.expressions import OPERATION_NAMES

BREAKDOWNS = ("terms", "digits", "operation", "brackets", "carries", "answer_length", "first_wrong_step",
              "first_wrong_kind", "step_kind")
# Whether a problem's answer is right follows from where its steps first go wrong (0% or 100% but for steps
# gone wrong on the way to a right answer), so those breakdowns are shown as how the problems spread over
# their groups.
SHARES = {"first_wrong_step", "first_wrong_kind"}
NOT_COUNTED = "n/a"  # carries are counted for sums, borrows for one subtraction; not for the rest
STEP_SEPARATOR = ";"
NUMBER = re.compile(r"\d+")
OPERATION = re.compile(r"(?<=[0-9)])[-+*]")  # a binary operation: after a number or a closing bracket
BRACKET_DEPTHS = {0: "no", 1: "yes"}  # deeper: "nested"


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
    operands, ops = [int(n) for n in NUMBER.findall(text)], OPERATION.findall(text)
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
        "brackets": BRACKET_DEPTHS.get(bracket_depth(text), "nested"),
        "carries": carries,
        "answer_length": str(len(str(answer))),
    }


def bracket_depth(text: str) -> int:
    depth = deepest = 0
    for char in text:
        depth += (char == "(") - (char == ")")
        deepest = max(deepest, depth)
    return deepest


def group_order(group: str) -> tuple:
    return (0, int(group), "") if group.isdigit() else (1, 0, group) if group != "none" else (2, 0, group)


def step_kind(before: str, step: str) -> str:
    """What one worked step did to the expression before it: wrote a product as its partial products
    (47*36 -> 0282+1410), multiplied (19*3-40 -> 57-40), closed a bracket ((12+7)*3 -> 19*3) or added or
    subtracted (sum)."""
    if step.count("*") < before.count("*"):
        return "partial_products" if len(NUMBER.findall(step)) == len(NUMBER.findall(before)) else "product"
    return "bracket" if step.count("(") < before.count("(") else "sum"


def first_wrong(expected: list[str], written: list[str]) -> str:
    """The number of the first step written wrong (1 = the first), 'answer' when only the final answer is
    wrong, 'none' when all is right: both lists end with the answer."""
    for i, step in enumerate(expected):
        if i >= len(written) or written[i] != step:
            return "answer" if i == len(expected) - 1 else str(i + 1)
    return "none" if len(written) == len(expected) else "answer"


def step_features(text: str, answer: str, steps: str, predicted: str,
                  worked: str) -> tuple[str, str, list[tuple[str, bool]]]:
    """A problem's first wrong step, that step's kind ('answer': the final one; 'none'), and each of its
    steps' kind and whether it was written right."""
    expected = [*(steps.split(STEP_SEPARATOR) if steps else []), answer]
    written = [*(worked.split(STEP_SEPARATOR) if worked else []), predicted]
    kinds = [(step_kind(before, step), i < len(written) - 1 and written[i] == step)
             for i, (before, step) in enumerate(zip([text, *expected], expected[:-1]))]
    first = first_wrong(expected, written)
    return first, kinds[int(first) - 1][0] if first.isdigit() else first, kinds


def grouped(groups: np.ndarray, right: np.ndarray) -> dict[str, dict[str, float]]:
    return {group: {"count": int((groups == group).sum()), "exact_match": float(right[groups == group].mean())}
            for group in sorted(set(groups.tolist()), key=group_order)}


def breakdowns(texts, answers, predicted, steps=None, worked=None) -> dict[str, dict[str, dict[str, float]]]:
    """{breakdown: {group: {"count": n, "exact_match": fraction right}}}, groups in natural order. With the
    worked steps expected and written (a model that writes steps): first_wrong_step (exact match of the
    answer among the problems whose steps first go wrong there) and step_kind (steps of each kind written
    right, out of all steps of that kind)."""
    answers = np.asarray(answers).astype(str)
    predicted = np.asarray(predicted).astype(str)
    right = predicted == answers
    rows = [features(t, int(a)) for t, a in zip(np.asarray(texts).tolist(), answers.tolist())]
    result = {name: grouped(np.array([row[name] for row in rows], dtype=str), right)
              for name in BREAKDOWNS if name in rows[0]} if rows else {}
    if steps is not None and worked is not None:
        rows = zip(np.asarray(texts).tolist(), answers.tolist(), np.asarray(steps).tolist(), predicted.tolist(),
                   np.asarray(worked).tolist())
        per_problem = [step_features(*row) for row in rows]
        result["first_wrong_step"] = grouped(np.array([first for first, _, _ in per_problem], dtype=str), right)
        result["first_wrong_kind"] = grouped(np.array([kind for _, kind, _ in per_problem], dtype=str), right)
        kinds = [kind for _, _, problem_kinds in per_problem for kind in problem_kinds]
        if kinds:
            result["step_kind"] = grouped(np.array([k for k, _ in kinds], dtype=str), np.array([r for _, r in kinds]))
    return result


def breakdown_rows(result: dict) -> list[dict]:
    """The breakdowns as flat rows: breakdown, group, count, exact_match."""
    return [{"breakdown": name, "group": group, **cell}
            for name, groups in result.items() for group, cell in groups.items()]


def group_figures(name: str, groups: dict) -> dict[str, float]:
    """Each group's exact match or, for SHARES, its share of the problems."""
    total = sum(cell["count"] for cell in groups.values())
    return {group: cell["count"] / total if name in SHARES else cell["exact_match"] for group, cell in groups.items()}


TITLES = {"terms": "number of terms", "digits": "digits of the longest operand", "operation": "operation",
          "brackets": "brackets", "carries": "carries (sums) or borrows (one subtraction)",
          "answer_length": "answer length (characters)",
          "first_wrong_step": "first wrong step (answer: only the final answer wrong; none: all right)",
          "first_wrong_kind": "kind of the first wrong step (answer: only the final answer wrong; none: all "
                              "right)",
          "step_kind": "kind of worked step (steps written right)"}
# A single group of these does not repeat the overall figure.
STEP_BREAKDOWNS = {"first_wrong_step", "first_wrong_kind", "step_kind"}


def figure_name(name: str) -> str:
    return f"{'share of problems' if name in SHARES else 'exact match'} by {TITLES[name]}"


def breakdown_frame(name: str, metrics: dict[str, dict]) -> pd.DataFrame:
    """Exact match (each group's share of the problems, for SHARES) per experiment (rows) and group
    (columns) of one breakdown; outside the step breakdowns only experiments with two or more groups,
    since one repeats the overall figure."""
    rows = {exp: group_figures(name, m.get("breakdown", {}).get(name, {})) for exp, m in metrics.items()}
    fewest = 1 if name in STEP_BREAKDOWNS else 2
    frame = pd.DataFrame.from_dict({exp: groups for exp, groups in rows.items() if len(groups) >= fewest},
                                   orient="index")
    return frame[sorted(frame.columns, key=group_order)]
