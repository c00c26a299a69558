"""Problem families: terms, operations, brackets, fixed width. Answers are checked against an
independent evaluator written here (the generator itself never parses or evals text)."""

import re
from collections import Counter

import numpy as np
import pytest
from helpers import task_with

from pipeline.errors import AdderError
from pipeline.expressions import Limits, bracket_spans, largest_magnitude
from pipeline.problems import sample_problems, split_problems

TOKENS = re.compile(r"[0-9]+|[-+*()]")


def evaluate(text: str) -> int:
    """Textbook recursive descent: expression = term (('+'|'-') term)*, term = factor ('*' factor)*."""
    tokens = TOKENS.findall(text)
    assert "".join(tokens) == text
    position = 0

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def factor() -> int:
        token = take()
        if token == "(":
            value = expression()
            assert take() == ")"
            return value
        return int(token)

    def term() -> int:
        value = factor()
        while peek() == "*":
            take()
            value *= factor()
        return value

    def expression() -> int:
        value = term()
        while peek() in ("+", "-"):
            value = value + term() if take() == "+" else value - term()
        return value

    result = expression()
    assert position == len(tokens)
    return result


task = task_with(terms=2, digits=2, train_size=300, val_size=50, test_size=50)
FAMILIES = {
    "terms": task(terms=4, min_terms=2),
    "ops": task(ops="+-*"),
    "brackets": task(terms=3, min_terms=2, ops="+-*", brackets=True),
    "deep_brackets": task(terms=6, min_terms=3, digits=3, ops="+-*", brackets=True),
    "fixed_width": task(terms=3, digits=3, fixed_width=True, ops="-*"),
    "range_products": task(terms=5, digits=None, min_value=0, max_value=30, ops="*-"),
}


def operands_of(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"[0-9]+", text)]


@pytest.mark.parametrize("name", FAMILIES)
def test_answers_are_exact(name):
    problems = sample_problems(FAMILIES[name], 3000, np.random.default_rng(0))
    assert problems.answer.dtype == np.int64
    assert [evaluate(t) for t in problems.text.tolist()] == problems.answer.tolist()


@pytest.mark.parametrize("name", FAMILIES)
def test_problems_are_what_the_task_allows(name):
    t = FAMILIES[name]
    limits = Limits.of(t)
    problems = sample_problems(t, 3000, np.random.default_rng(1))
    for text, answer in zip(problems.text.tolist(), problems.answer.tolist()):
        assert limits.check(text) == text  # canonical, and accepted by predict
        assert abs(answer) <= limits.max_answer
        assert len(text) <= limits.expression_width and len(str(answer)) <= limits.answer_width


def test_terms_uniform_between_min_and_max():
    problems = sample_problems(FAMILIES["terms"], 30000, np.random.default_rng(0))
    counts = Counter(len(operands_of(t)) for t in problems.text.tolist())
    assert set(counts) == {2, 3, 4}
    np.testing.assert_allclose([counts[n] / 30000 for n in (2, 3, 4)], 1 / 3, atol=0.015)


def test_operations_uniform_and_mixed():
    problems = sample_problems(task(terms=3, ops="+-*"), 30000, np.random.default_rng(0))
    ops = Counter(op for t in problems.text.tolist() for op in re.findall(r"[-+*]", t))
    np.testing.assert_allclose([ops[op] / 60000 for op in "+-*"], 1 / 3, atol=0.015)
    assert (problems.answer < 0).any()


def test_brackets_uniform_over_spans_and_none():
    problems = sample_problems(task(terms=4, min_terms=4, ops="+-*", brackets=True), 40000, np.random.default_rng(0))
    layouts = Counter(re.sub(r"[0-9]+", "n", re.sub(r"[-+*]", "o", t)) for t in problems.text.tolist())
    # 4 terms: spans (0,1) (1,2) (2,3) (0,2) (1,3), or no brackets: 6 layouts, equally likely
    assert len(layouts) == 6 == len(bracket_spans(4)) + 1
    np.testing.assert_allclose([c / 40000 for c in layouts.values()], 1 / 6, atol=0.015)
    assert "(nonono)" not in layouts and "n" not in layouts


def test_two_terms_never_bracketed():
    problems = sample_problems(FAMILIES["brackets"], 5000, np.random.default_rng(0))
    two = [t for t in problems.text.tolist() if len(operands_of(t)) == 2]
    assert two and not any("(" in t for t in two)
    assert any("(" in t for t in problems.text.tolist())


def test_brackets_change_the_answer():
    # precedence is the generator's: 2+3*4 = 14, (2+3)*4 = 20
    problems = sample_problems(task(terms=3, min_terms=3, digits=1, ops="+*", brackets=True), 5000,
                               np.random.default_rng(0))
    answers = dict(zip(problems.text.tolist(), problems.answer.tolist()))
    assert answers.get("2+3*4", 14) == 14 and answers.get("(2+3)*4", 20) == 20
    assert any(t.startswith("(") and "*" in t and evaluate(t) != evaluate(t.replace("(", "").replace(")", ""))
               for t in answers)


def test_fixed_width_operands_have_exactly_d_digits():
    problems = sample_problems(FAMILIES["fixed_width"], 5000, np.random.default_rng(0))
    values = np.array([operands_of(t) for t in problems.text.tolist()])
    assert values.min() >= 100 and values.max() <= 999
    assert values.min() < 110 and values.max() > 990
    assert FAMILIES["fixed_width"].space_size == 900**3 * 4


def test_one_to_d_digits_as_keras():
    problems = sample_problems(FAMILIES["terms"], 30000, np.random.default_rng(0))
    lengths = Counter(len(str(v)) for t in problems.text.tolist() for v in operands_of(t))
    share_one = lengths[1] / sum(lengths.values())
    assert share_one == pytest.approx(0.5 + 0.5 * 0.1, abs=0.01)  # length 1 drawn, or 2 with a leading zero


@pytest.mark.parametrize("name", ["terms", "ops", "brackets"])
def test_deterministic_and_disjoint(name):
    t = FAMILIES[name]
    a, b = split_problems(t, 7), split_problems(t, 7)
    for split in a:
        np.testing.assert_array_equal(a[split].text, b[split].text)
        np.testing.assert_array_equal(a[split].answer, b[split].answer)
        assert len(set(a[split].text.tolist())) == len(a[split])
    assert not set(a["train"].text.tolist()) & set(a["test"].text.tolist())
    assert not set(a["train"].text.tolist()) & set(a["val"].text.tolist())
    assert not set(a["val"].text.tolist()) & set(a["test"].text.tolist())
    assert not np.array_equal(a["train"].text, split_problems(t, 8)["train"].text)


def test_brackets_splits_share_their_composition():
    splits = split_problems(FAMILIES["brackets"].model_copy(update={"train_size": 2000}), 1)
    with_brackets = {name: np.mean(["(" in t for t in split.text]) for name, split in splits.items()}
    assert abs(with_brackets["train"] - with_brackets["test"]) < 0.1


def test_plain_sums_keep_the_original_draw():
    # the general generator is only used when a family option is set: existing datasets stay byte-identical
    plain = task(terms=2)
    problems = sample_problems(plain, 5, np.random.default_rng(0))
    same = sample_problems(plain.model_copy(update={"min_terms": 2}), 5, np.random.default_rng(0))
    np.testing.assert_array_equal(problems.text, same.text)


@pytest.mark.parametrize(("t", "size"), [
    (task(terms=3, min_terms=2, digits=1), 10**2 + 10**3),
    (task(terms=2, digits=1, ops="+-*"), 100 * 3),
    (task(terms=3, min_terms=2, digits=1, ops="+-", brackets=True), 100 * 2 + 1000 * 4 * 3),
])
def test_space_size_counts_every_distinct_text(t, size):
    assert t.space_size == size
    if size < 20000:
        # drawing far more than the space finds exactly that many distinct texts
        problems = sample_problems(t, 40 * size, np.random.default_rng(0))
        assert len(set(problems.text.tolist())) == size


def test_more_problems_than_exist_refused():
    t = task(terms=2, digits=1, ops="+-", train_size=150, val_size=30, test_size=30)
    with pytest.raises(AdderError, match=r"= 210 but the task has only 200 distinct problems"):
        split_problems(t, 0)


@pytest.mark.parametrize(("changes", "message"), [
    ({"ops": "+/"}, "ops: one or more of '\\+-\\*'"),
    ({"ops": "++"}, "each once"),
    ({"ops": ""}, "ops: one or more"),
    ({"min_terms": 3}, "min_terms \\(3\\) must be at most terms \\(2\\)"),
    ({"brackets": True}, "brackets need terms >= 3"),
    ({"fixed_width": True, "digits": None, "min_value": 1, "max_value": 9}, "fixed_width needs digits"),
    ({"terms": 5, "digits": 5, "ops": "*"}, "answers could reach 2\\*\\*63"),
])
def test_unsatisfiable_settings_refused(changes, message):
    from pipeline.config import parse_params

    spec = {"terms": 2, "digits": 2, "train_size": 1, "val_size": 1, "test_size": 1, **changes}
    raw = {"seed": 1, "tasks": {"t": {k: v for k, v in spec.items() if v is not None}},
           "experiments": {"t-seq2seq": {"task": "t", "model": "seq2seq", "epochs": 1, "batch_size": 1}}}
    with pytest.raises(AdderError, match=f"tasks.t: .*{message}") as e:
        parse_params(raw)
    assert "\n" not in str(e.value)


def test_number_models_refuse_other_families():
    from pipeline.config import parse_params

    raw = {"seed": 1,
           "tasks": {"ops": {"terms": 2, "digits": 2, "ops": "+-", "train_size": 1, "val_size": 1, "test_size": 1}},
           "experiments": {"ops-naive_mlp": {"task": "ops", "model": "naive_mlp", "units": [4], "epochs": 1,
                                             "batch_size": 1}}}
    with pytest.raises(AdderError, match="experiments.ops-naive_mlp.model: naive_mlp reads a fixed number of operands"):
        parse_params(raw)


@pytest.mark.parametrize(("terms", "high", "ops", "bound"), [
    (2, 999, "+", 1998), (4, 99, "+", 396), (2, 99, "+-*", 9801), (3, 99, "+-*", 970299), (3, 1, "+*", 3),
    (3, 9, "-", 27),
])
def test_largest_magnitude(terms, high, ops, bound):
    assert largest_magnitude(terms, high, ops) == bound


def test_largest_magnitude_is_reached_or_bounds_every_problem():
    t = task(terms=3, min_terms=2, ops="+-*", brackets=True)
    problems = sample_problems(t, 50000, np.random.default_rng(0))
    assert np.abs(problems.answer).max() <= largest_magnitude(3, 99, "+-*")
