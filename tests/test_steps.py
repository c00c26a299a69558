"""Worked steps: built by the generator from each expression's structure, checked here by evaluating them."""

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_params
from pipeline.problems import STEP_SEPARATOR, read_csv, reduction_chain, split_problems, write_csv

PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")


def chain(values, ops, first=-1, last=-1) -> str:
    """reduction_chain of one expression: values [12, 7, 3, 40], ops '+*-', brackets around first..last."""
    values = np.array([values])
    ops = np.array([list(ops)]) if ops else np.empty((1, 0), dtype=str)
    return reduction_chain(values, ops, np.array([values.shape[1]]), np.array([first]), np.array([last]))[0]


@pytest.mark.parametrize("values, ops, span, steps", [
    ([12, 7, 3, 40], "+*-", (0, 1), "19*3-40;57-40"),                       # the bracketed span first
    ([47, 36], "*", None, "47*6=282;47*30=1410;282+1410=1692"),             # partial products, running sum
    ([45, 123], "*", None, "123*5=615;123*40=4920;615+4920=5535"),          # the shorter operand multiplies
    ([3, 470], "*", None, ""),                                               # by one digit: the product alone
    ([15, 3, 40], "*-", (1, 2), "15*-37;15*-7=-105;15*-30=-450;-105+-450=-555"),  # signs stay with digits
    ([2, 3, 4, 5], "+*+", None, "2+12+5;14+5"),                              # * before +, then left to right
    ([2, 3, 4, 5], "-+-", (0, 2), "(-1+4)-5;3-5"),                          # a span keeps its brackets until one value
    ([12, 50], "+", None, ""),                                               # one operation: nothing to show
])
def test_reduction_chain_examples(values, ops, span, steps):
    first, last = span or (-1, -1)
    assert chain(values, ops, first, last) == steps


def value(expression: str) -> int:
    return eval(expression, {"__builtins__": {}})  # the test's own check; the generator never evaluates text


def check_steps(text: str, answer: int, steps: str) -> None:
    lines = steps.split(STEP_SEPARATOR) if steps else []
    results = []
    for line in lines:
        if "=" in line:  # a partial product or a running sum: true as written
            left, right = line.split("=")
            assert value(left) == int(right), (text, line)
            results.append(int(right))
        else:  # the expression after one operation: the same value as the problem
            assert value(line) == answer, (text, line)
            results.append(value(line))
    assert value(text) == answer
    assert not results or results[-1] == answer, (text, steps)


@pytest.mark.parametrize("task_name", sorted(PARAMS.tasks))
def test_every_default_split_has_true_steps_ending_in_the_answer(task_name):
    task = PARAMS.tasks[task_name]
    for split, problems in split_problems(task, PARAMS.seed).items():
        if problems.steps is None:  # a task of single sums: no problem has steps
            assert task.ops == "+" and task.terms == 2 and not task.brackets
            continue
        for text, answer, steps in zip(problems.text.tolist(), problems.answer.tolist(), problems.steps.tolist()):
            check_steps(text, answer, steps)


def test_steps_survive_the_csv(tmp_path):
    problems = split_problems(PARAMS.tasks["brackets"], PARAMS.seed)["val"]
    write_csv(problems, tmp_path / "val.csv")
    back = read_csv(tmp_path / "val.csv")
    assert (tmp_path / "val.csv").read_text().startswith("problem,answer,steps\n")
    np.testing.assert_array_equal(back.steps, problems.steps)
    np.testing.assert_array_equal(back.answer, problems.answer)
