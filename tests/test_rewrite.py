"""The step model's parts: nested expressions and their worked steps, reductions as training rows, the
rewrite codec, and the loop that feeds a model its own rewrites (driven here by a scripted stand-in for a
model, which says so)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline import nested
from pipeline.breakdown import breakdowns, features
from pipeline.codec import Limits, RewriteCodec
from pipeline.codec.rewrites import reductions
from pipeline.config import Task, parse_params
from pipeline.errors import AdderError
from pipeline.expressions import count_layouts, is_expression, layouts
from pipeline.problems import Problems, sample_problems
from pipeline.rewriting import calls_allowed, rewrite

BRACKETS = Task(terms=3, min_terms=2, digits=2, ops="+-*", brackets=True, train_size=1, val_size=1, test_size=1)
DEEP = Task(terms=5, min_terms=4, digits=2, ops="+-*", brackets=True, nesting=2, value_limit=10**6,
            train_size=0, val_size=0, test_size=1)


def test_nested_steps_follow_the_vectorised_chains_on_one_bracketed_span():
    from pipeline.expressions import parse

    drawn = sample_problems(BRACKETS, 3000, np.random.default_rng(5))
    for text, answer, steps in zip(drawn.text.tolist(), drawn.answer.tolist(), drawn.steps.tolist()):
        operands, ops, span = parse(text, "+-*", True)
        assert nested.worked(operands, ops, [span] if span else [])[:2] == (steps.split(";") if steps else [], answer)


def test_bracket_layouts_nest_inside_spans_that_are_not_everything():
    assert layouts(3, 1) == ((), ((0, 1),), ((1, 2),))
    assert count_layouts(4, 2) == 10  # none, 5 single spans, 4 spans inside a span of three
    assert ((0, 2), (0, 1)) in layouts(4, 2) and ((0, 3), (0, 1)) not in layouts(4, 2)


def test_deep_problems_are_deeper_and_their_steps_lead_to_the_answer():
    drawn = sample_problems(DEEP, 400, np.random.default_rng(3))
    depths = set()
    for text, answer, steps in zip(drawn.text.tolist(), drawn.answer.tolist(), drawn.steps.tolist()):
        assert len(features(text, answer)["terms"]) and 4 <= int(features(text, answer)["terms"]) <= 5
        depths.add(features(text, answer)["brackets"])
        for line in [text, *steps.split(";")]:
            # A test-only check of the generator's arithmetic (partial products keep their leading zeros).
            assert is_expression(line) and eval(re.sub(r"\b0+(?=\d)", "", line)) == answer
        assert abs(answer) < 10**6
    assert depths == {"no", "yes", "nested"}
    assert nested.render(["12", "7", "3", "40", "2"], list("+*-*"), [(0, 3), (0, 1)]) == "((12+7)*3-40)*2"


def test_the_deep_task_is_checked_like_any_other():
    with pytest.raises(AdderError, match="nesting needs brackets"):
        parse_params({"seed": 1, "tasks": {"d": {"terms": 4, "digits": 2, "nesting": 2, "train_size": 0,
                                                 "val_size": 0, "test_size": 5}},
                      "experiments": {}})
    base = {"seed": 1, "tasks": {"brackets": BRACKETS.model_dump(), "deep": DEEP.model_dump()}}
    run = {"task": "brackets", "model": "transformer", "units": [8], "epochs": 1, "batch_size": 2}
    with pytest.raises(AdderError, match=r"experiments.deep-transformer.task: 'deep' has no training"):
        parse_params({**base, "experiments": {"deep-transformer": {**run, "task": "deep"}}})
    with pytest.raises(AdderError, match=r"eval_tasks: 'deeper' is not a task"):
        parse_params({**base, "experiments": {"brackets-transformer": {**run, "eval_tasks": ["deeper"]}}})
    with pytest.raises(AdderError, match="answer: rewrite .* is a transformer's framing"):
        parse_params({**base, "experiments": {"brackets-attention": {**run, "model": "attention",
                                                                     "answer": "rewrite"}}})


def test_reductions_are_every_single_step():
    problems = Problems(np.array(["(12+7)*3-40", "5+6"]), np.array([17, 11]), np.array(["19*3-40;57-40", ""]))
    before, after, origin = reductions(problems.text, problems.answer, problems.steps)
    assert before.tolist() == ["(12+7)*3-40", "19*3-40", "57-40", "5+6"]
    assert after.tolist() == ["19*3-40", "57-40", "17", "11"]
    assert origin.tolist() == [0, 0, 0, 1]


@pytest.mark.parametrize(("text", "ok"), [
    ("8+-85", True), ("3*(0400+4500)", True), ("((1+2)*3-4)*5", True), ("-17", True), ("83--1823", True),
    ("", False), ("1+", False), ("(1+2", False), ("1+2)", False), ("1+*2", False), ("()", False), ("1 2", False),
])
def test_is_expression(text, ok):
    assert is_expression(text) is ok


def codec() -> RewriteCodec:
    train = Problems(np.array(["(12+7)*3-40", "47*36"]), np.array([17, 1692]), np.array(["19*3-40;57-40", "0282+1410"]))
    return RewriteCodec.fitted(Limits.of(BRACKETS), None, train)


def test_rewrite_codec_reads_left_aligned_numbers_units_first_with_room_to_spare():
    c = codec()
    assert c.in_width == 2 * len("(12+7)*3-40") and c.out_steps == c.in_width + 1
    x = c.encode_inputs(["12+7"])
    assert "".join(c.alphabet[(code + c.pad_code) % c.n_symbols] for code in x[0]).rstrip() == "21+7"
    rows = c.training_rows(Problems(np.array(["5+6"]), np.array([11]), np.array([""])))
    (_, decoder_inputs), y = c.training_pair(rows.text, rows.answer, rows.steps)
    assert [c.symbols[t] for t in y[0, :2]] == ["1", "1"] and y[0, 2] == c.END and decoder_inputs[0, 0] == c.START
    with pytest.raises(AdderError, match="longer than the model's"):
        c.encode_inputs(["1+" * 20 + "1"])


class Scripted:
    """A stand-in for a trained model (no Keras): writes the rewrite its script gives for the expression it
    is shown, as a decoder's per-step probabilities."""

    def __init__(self, codec: RewriteCodec, script: dict[str, str]):
        self.codec, self.script = codec, {tuple(codec.encode_inputs([k])[0]): v for k, v in script.items()}

    def predict_on_batch(self, inputs):
        x, _ = inputs
        c = self.codec
        out = np.zeros((len(x), c.out_steps, c.out_symbols), dtype=np.float32)
        for row, codes in enumerate(x):
            written = self.script.get(tuple(codes), "")
            if len(written) < c.out_steps:
                tokens = c.encode_targets(None, np.array([written]))[0]
            else:  # no room left for END: numbers of one digit only, which read the same both ways
                tokens = [c.symbols.index(char) for char in written[: c.out_steps]]
            out[row, np.arange(c.out_steps), tokens] = 1.0
        return out


def test_the_loop_feeds_each_rewrite_back_until_a_number_and_stops_a_bad_chain_alone():
    c = codec()
    model = Scripted(c, {"(12+7)*3-40": "19*3-40", "19*3-40": "57-40", "57-40": "17",
                         "2*3": "2*+", "1+1": "1+1", "9+9": "9+" * 11 + "9"})
    chains = rewrite(model, c, ["(12+7)*3-40", "2*3", "1+1", "9+9", "1+1+1+1+1+1+1+1+1+1+1+1"])
    assert chains.answers.tolist() == ["17", "", "", "", ""]
    assert chains.worked[0] == "19*3-40;57-40"
    assert chains.errors[0] is None
    assert chains.errors[1] == "call 1 wrote '2*+', not an expression"
    assert chains.errors[2] == f"no number after {calls_allowed('1+1')} calls, the most '1+1' can take (last: '1+1')"
    assert chains.errors[3].startswith("call 1 wrote '9+9+9") and "longer than the 22 the model" in chains.errors[3]
    assert chains.errors[4].startswith("'1+1+1") and "has 23 characters" in chains.errors[4]


def test_first_wrong_kind_and_nested_brackets_in_the_breakdowns():
    result = breakdowns(["(12+7)*3", "((1+2)*3-4)*5"], [57, 25], ["57", "26"], ["19*3", "(3*3-4)*5;(9-4)*5;5*5"],
                        ["19*3", "(3*3-4)*5;(9-4)*5;5*5"])
    assert result["brackets"] == {"yes": {"count": 1, "exact_match": 1.0}, "nested": {"count": 1, "exact_match": 0.0}}
    assert result["first_wrong_kind"] == {"answer": {"count": 1, "exact_match": 0.0},
                                          "none": {"count": 1, "exact_match": 1.0}}
    wrong_bracket = breakdowns(["(12+7)*3"], [57], ["57"], ["19*3"], ["18*3"])
    assert wrong_bracket["first_wrong_kind"] == {"bracket": {"count": 1, "exact_match": 1.0}}


def test_a_step_model_decodes_alike_cached_or_by_whole_passes_and_loads_back(tmp_path):
    """The compiled greedy decoder tracks each written digit's place as the full model computes it."""
    import keras

    from pipeline.config import Experiment
    from pipeline.decoding import by_passes, outputs
    from pipeline.models import build_model

    c = codec()
    exp = Experiment(task="brackets", model="transformer", units=[8], epochs=1, batch_size=2, answer="rewrite")
    keras.utils.set_random_seed(2)
    model = build_model(exp, c)
    x = c.encode_inputs(["(12+7)*3-40", "47*36", "8+-85", "0282+1410"])
    written = lambda probabilities: c.written(probabilities).tolist()
    assert written(outputs(model, c, x)) == written(by_passes(model, c, x))
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(outputs(loaded, c, x), outputs(model, c, x), atol=1e-6)


def test_a_step_model_reads_an_expression_alike_at_any_padding_width():
    import keras

    from pipeline.config import Experiment
    from pipeline.models import build_model

    c = codec()
    keras.utils.set_random_seed(3)
    model = build_model(Experiment(task="brackets", model="transformer", units=[8], epochs=1, batch_size=2,
                                   answer="rewrite"), c)
    x = c.encode_inputs(["(12+7)*3-40", "8+-85"])
    (_, previous), _ = c.training_pair(["(12+7)*3-40", "8+-85"], None, np.array(["19*3-40", "-77"]))
    np.testing.assert_allclose(model.predict_on_batch([x[:, :11], previous]), model.predict_on_batch([x, previous]),
                               atol=1e-5)


def test_a_step_model_is_validated_no_wider_than_its_longest_expression_and_rewrite():
    """The room to spare (ROOM times the longest in training) is padding on both sides of a teacher-forced
    pass, which changes no token (above; the decoder is causal): validation cuts it off."""
    c = codec()
    seen = []

    class Widths:
        def predict_on_batch(self, inputs):
            seen.append((inputs[0].shape[1], inputs[1].shape[1]))
            return np.zeros((*inputs[1].shape, c.out_symbols), np.float32)

    texts, answers, steps = np.array(["(12+7)*3", "8-85"]), np.array([57, -77]), np.array(["19*3", ""])
    assert c.forced_exact_match(Widths(), texts, answers, steps) == 0.0
    assert seen == [(len("(12+7)*3"), len("19*3") + 1)] and c.in_width > len("(12+7)*3")
