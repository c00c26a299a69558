"""Worked steps: built by the generator from each expression's structure, checked here by evaluating them."""

import re

import numpy as np
import pytest
from helpers import PROJECT

from pipeline.config import load_params
from pipeline.problems import STEP_SEPARATOR, read_csv, reduction_chain, split_problems, write_csv

NUMBER = re.compile(r"\d+")
PARAMS = load_params(PROJECT / "params.yaml")


def chain(values, ops, first=-1, last=-1) -> str:
    """reduction_chain of one expression: values [12, 7, 3, 40], ops '+*-', brackets around first..last."""
    values = np.array([values])
    ops = np.array([list(ops)]) if ops else np.empty((1, 0), dtype=str)
    return reduction_chain(values, ops, np.array([values.shape[1]]), np.array([first]), np.array([last]))[0]


@pytest.mark.parametrize("values, ops, span, steps", [
    ([12, 7, 3, 40], "+*-", (0, 1), "19*3-40;57-40"),                       # the bracketed span first
    ([47, 36], "*", None, "0282+1410"),                                      # partial products, in columns
    ([45, 123], "*", None, "00615+04920"),                                   # the shorter operand multiplies
    ([3, 470], "*", None, ""),                                               # by one digit: the product alone
    ([15, 3, 40], "*-", (1, 2), "15*-37;-0105+-0450"),                      # signs stay with digits
    ([40, 19, 13], "-*", None, "40-(0057+0190);40-247"),                    # bracketed after a -
    ([99, 99, 99], "**", None, "(0891+8910)*99;9801*99;088209+882090"),     # and before a *
    ([2, 3, 4, 5], "+*+", None, "2+12+5;14+5"),                              # * before +, then left to right
    ([2, 3, 4, 5], "-+-", (0, 2), "(-1+4)-5;3-5"),                          # a span keeps its brackets until one value
    ([12, 50], "+", None, ""),                                               # one operation: nothing to show
])
def test_reduction_chain_examples(values, ops, span, steps):
    first, last = span or (-1, -1)
    assert chain(values, ops, first, last) == steps


def value(expression: str) -> int:
    """The test's own check (the generator never evaluates text); partial products' padding zeros dropped."""
    return eval(re.sub(r"(?<!\d)0+(?=\d)", "", expression), {"__builtins__": {}})


def check_steps(text: str, answer: int, steps: str) -> None:
    """Every step is the expression rewritten by one operation (or a product written as its partial
    products, which may be more numbers than the product had): the same value as the problem, and one
    product fewer or fewer numbers than the last."""
    before = text
    for line in steps.split(STEP_SEPARATOR) if steps else []:
        assert value(line) == answer, (text, line)
        assert (line.count("*") < before.count("*")
                or len(NUMBER.findall(line)) < len(NUMBER.findall(before))), (text, line)
        before = line
    assert value(text) == answer


@pytest.mark.parametrize("task_name", sorted(PARAMS.tasks))
def test_every_default_split_has_true_steps_ending_in_the_answer(task_name):
    task = PARAMS.tasks[task_name]
    for _split, problems in split_problems(task, PARAMS.seed).items():
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
