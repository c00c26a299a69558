"""Problem generation: exact, in range, deterministic, disjoint where asked."""

import hashlib

import numpy as np
import pytest
from helpers import PROJECT, task_with

from pipeline.config import load_params
from pipeline.errors import AdderError
from pipeline.problems import (
    HEADER,
    Problems,
    distinct_problems,
    join_sums,
    keras_draw_bound,
    keras_operands,
    leading_digits,
    number_widths,
    overlap,
    read_csv,
    sample_operands,
    sample_problems,
    split_problems,
    to_problems,
    write_csv,
)

PARAMS = load_params(PROJECT / "params.yaml")
task = task_with(terms=2, min_value=1, max_value=100, train_size=300, val_size=50, test_size=50)


def operands_of(problems: Problems) -> list[list[int]]:
    return [[int(v) for v in text.split("+")] for text in problems.text]


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("t", [task(), task(terms=5, min_value=0, max_value=10**9),
                               task(terms=3, min_value=None, max_value=None, digits=4)],
                         ids=["tutorial", "5-terms-big", "keras-digits"])
def test_answers_are_exact_sums_of_the_text(t):
    problems = sample_problems(t, 2000, rng())
    assert problems.answer.dtype == np.int64
    assert [sum(ops) for ops in operands_of(problems)] == problems.answer.tolist()
    assert all(len(ops) == t.terms for ops in operands_of(problems))


def test_to_problems_text():
    problems = to_problems(np.array([[3, 10], [0, 7]]))
    assert problems.text.tolist() == ["3+10", "0+7"]
    assert problems.answer.tolist() == [13, 7]


@pytest.mark.parametrize("terms", [1, 2, 5])
@pytest.mark.parametrize("high", [9, 999, 10**9, 10**18 - 1, 4 * 10**18])
def test_join_sums_writes_what_python_formats(terms, high):
    operands = rng(terms).integers(0, high, size=(500, terms), endpoint=True)
    operands[0], operands[1] = 0, high  # the shortest and longest numbers too
    text = join_sums(operands)
    assert text.tolist() == ["+".join(map(str, row)) for row in operands.tolist()]
    assert join_sums(np.zeros((0, terms), dtype=np.int64)).shape == (0,)


def test_leading_digits_fill_every_slot():
    values = np.array([7, 42, 999, 0])
    chars = leading_digits(values, number_widths(values), 3)  # a row per slot
    assert ["".join(map(chr, column)) for column in chars.T] == ["700", "420", "999", "000"]


def test_keras_operands_read_length_and_digits_from_one_draw():
    # draw = (length - 1) * 10**digits + random digits; the operand keeps the last `length` of them
    draws = np.array([0 * 1000 + 123, 1 * 1000 + 123, 2 * 1000 + 123, 2 * 1000 + 7, keras_draw_bound(3) - 1],
                     dtype=np.uint64)
    assert keras_operands(draws, 3).tolist() == [3, 23, 123, 7, 999]
    assert keras_operands(np.array([keras_draw_bound(18) - 1], dtype=np.uint64), 18).tolist() == [10**18 - 1]


@pytest.mark.parametrize("t", [task(), task(min_value=None, max_value=None, digits=3), task(terms=3, min_terms=2),
                               task(terms=3, min_value=None, max_value=None, digits=18, ops="+-", brackets=True)],
                         ids=["range", "keras-digits", "terms", "families"])
def test_first_problems_do_not_depend_on_how_many_follow(t):
    few, many = sample_problems(t, 10, rng(5)), sample_problems(t, 1000, rng(5))
    np.testing.assert_array_equal(few.text, many.text[:10])
    np.testing.assert_array_equal(few.answer, many.answer[:10])


def test_operands_within_range():
    ops = sample_operands(task(min_value=5, max_value=9), 5000, rng())
    assert ops.shape == (5000, 2)
    assert ops.min() == 5 and ops.max() == 9  # both ends reachable (randint-like, inclusive)
    assert set(np.unique(ops)) == {5, 6, 7, 8, 9}


def test_keras_digits_distribution():
    t = task(min_value=None, max_value=None, digits=3)
    ops = sample_operands(t, 30000, rng())
    assert ops.min() >= 0 and ops.max() <= 999
    lengths = np.char.str_len(ops.astype(str)).ravel()
    assert set(lengths) == {1, 2, 3}
    share = np.bincount(lengths, minlength=4)[1:] / lengths.size
    # a length in 1..3 is drawn first, then that many random digits (leading zeros shorten the number)
    expected = np.array([1 / 3 + 1 / 3 * 0.1 + 1 / 3 * 0.01, 1 / 3 * 0.9 + 1 / 3 * 0.09, 1 / 3 * 0.9])
    np.testing.assert_allclose(share, expected, atol=0.015)
    assert (ops == 0).any()  # Keras' digit strings can be all zeros


def test_task_bounds():
    assert (task().low, task().high, task().space_size) == (1, 100, 10000)
    digits = task(min_value=None, max_value=None, digits=3)
    assert (digits.low, digits.high, digits.space_size) == (0, 999, 1000**2)


def test_same_seed_same_splits():
    a, b = split_problems(task(), 7), split_problems(task(), 7)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a[split].text, b[split].text)
        np.testing.assert_array_equal(a[split].answer, b[split].answer)
    assert not np.array_equal(a["train"].text, split_problems(task(), 8)["train"].text)


def test_same_seed_identical_csv_bytes(tmp_path):
    digests = []
    for run in ("a", "b"):
        path = tmp_path / run / "train.csv"
        digest = write_csv(split_problems(task(), 7)["train"], path)
        assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
        digests.append(digest)
    assert digests[0] == digests[1]
    assert (tmp_path / "a" / "train.csv").read_bytes() == (tmp_path / "b" / "train.csv").read_bytes()


def test_csv_format(tmp_path):
    path = tmp_path / "x.csv"
    write_csv(Problems(np.array(["3+10", "1+1"]), np.array([13, 2])), path)
    assert path.read_text() == "problem,answer\n3+10,13\n1+1,2\n"


@pytest.mark.parametrize("t", [task(), task(min_value=None, max_value=None, digits=3)], ids=["range", "digits"])
def test_disjoint_splits(t):
    splits = split_problems(t, 1)
    sizes = {name: len(p) for name, p in splits.items()}
    assert sizes == {"train": 300, "val": 50, "test": 50}
    for p in splits.values():
        assert len(np.unique(p.text)) == len(p)
        assert [sum(ops) for ops in operands_of(p)] == p.answer.tolist()
    assert not set(splits["train"].text) & set(splits["val"].text)
    assert not set(splits["train"].text) & set(splits["test"].text)
    assert not set(splits["val"].text) & set(splits["test"].text)
    assert overlap(splits["train"], splits["test"]) == 0.0


def test_disjoint_splits_can_use_the_whole_space():
    t = task(min_value=1, max_value=5, train_size=15, val_size=5, test_size=5)
    splits = split_problems(t, 0)
    every = np.concatenate([p.text for p in splits.values()])
    assert sorted(every) == sorted(f"{a}+{b}" for a in range(1, 6) for b in range(1, 6))


def test_distinct_problems_in_order_of_first_draw():
    t = task(min_value=1, max_value=3)
    problems = distinct_problems(t, 9, rng(3))
    assert sorted(problems.text) == sorted(f"{a}+{b}" for a in range(1, 4) for b in range(1, 4))
    np.testing.assert_array_equal(problems.text, distinct_problems(t, 9, rng(3)).text)


def test_sizes_larger_than_the_space_refused():
    t = task(min_value=1, max_value=3, train_size=5, val_size=3, test_size=2)
    with pytest.raises(AdderError, match=r"= 10 but the task has only 9 distinct problems.*disjoint: false"):
        split_problems(t, 0)


def test_non_disjoint_draws_with_replacement_and_measures_overlap():
    seed_task = PARAMS.task("seed")
    assert not seed_task.disjoint and seed_task.space_size == 100
    splits = split_problems(seed_task, PARAMS.seed)
    assert len(splits["train"]) == 1000 and len(splits["test"]) == 1000
    assert len(np.unique(splits["train"].text)) <= 100
    # 1000 draws from 100 problems cover nearly all of them: the test split is (almost) all seen in training
    assert overlap(splits["train"], splits["test"]) > 0.99


def test_overlap_by_hand():
    train = Problems(np.array(["1+1", "1+2", "1+3"]), np.array([2, 3, 4]))
    other = Problems(np.array(["1+1", "2+1", "1+3", "9+9"]), np.array([2, 3, 4, 18]))
    assert overlap(train, other) == 0.5
    assert overlap(train, Problems(np.array([], dtype=str), np.array([], dtype=np.int64))) == 0.0


def test_repo_add3_split_is_disjoint():
    splits = split_problems(PARAMS.task("add3"), PARAMS.seed)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [50000, 1000, 10000]
    assert overlap(splits["train"], splits["test"]) == 0.0
    assert overlap(splits["train"], splits["val"]) == 0.0


def test_csv_round_trip(tmp_path):
    problems = split_problems(task(terms=3, min_value=0, max_value=10**12), 5)["val"]
    path = tmp_path / "deep" / "val.csv"
    write_csv(problems, path)
    back = read_csv(path)
    np.testing.assert_array_equal(back.text, problems.text)
    np.testing.assert_array_equal(back.answer, problems.answer)
    assert back.answer.dtype == np.int64


def test_read_csv_errors(tmp_path):
    with pytest.raises(AdderError, match="missing dataset .*run `adder generate`"):
        read_csv(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1+1,2\n")
    with pytest.raises(AdderError, match=f"not an adder dataset .*{HEADER}"):
        read_csv(bad)


def test_frequent_problems_spread_over_every_split():
    # 1-digit + 1-digit problems are 1/9 of the digits=3 draws but only 100 distinct problems:
    # they must not all end up in the test split (the first drawn), leaving training without any.
    splits = split_problems(task(min_value=None, max_value=None, digits=3, train_size=5000, val_size=500,
                                 test_size=1000), 1)
    short = {name: np.mean([len(t) == 3 for t in split.text]) for name, split in splits.items()}
    assert short["train"] > 0.005
    assert abs(short["train"] - short["test"]) < 0.01
