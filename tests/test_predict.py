"""`adder predict` in-process: one output line per input line whatever the bytes, the ranges models accept,
and the checks on run.json. The models are stand-ins that answer sums exactly (helpers.ExactModel),
so no Keras is needed: what is under test is the reading, routing and writing around them."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from helpers import CODEC, ExactModel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline import predict
from pipeline.cli import app
from pipeline.codec import ColumnCodec, accepting, save_codec
from pipeline.errors import AdderError
from pipeline.expressions import Limits
from pipeline.model_folder import publish, verified
from pipeline.predict import Predictor, Predictors

SEPARATORS = ["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
lines = st.one_of(st.sampled_from(["12+50", "1+1", "99+99", " 7 + 8 ", "", "x", "123+4"]),
                  st.lists(st.sampled_from(["12", "+", "3", *SEPARATORS[1:]]), max_size=6).map("".join))


@pytest.fixture
def stand_in(monkeypatch):
    """predict answering with one stand-in model of 2-digit sums."""
    members = Predictors([Predictor(CODEC, "add2", lambda: ExactModel(CODEC))])
    monkeypatch.setattr(predict, "load_predictors", lambda root, model, steps=False: members)


def expected(line: str) -> str:
    try:
        return str(sum(int(term) for term in CODEC.check(line).split("+")))
    except AdderError:
        return ""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(lines, min_size=1, max_size=8), junk=st.binary(max_size=6), stdin=st.booleans())
def test_every_input_line_gets_its_own_output_line_in_order(stand_in, tmp_path, batch, junk, stdin):
    data = "\n".join(batch).encode() + b"\n" + junk + b"\n"
    path = tmp_path / "lines.txt"
    path.write_bytes(data)
    result = CliRunner().invoke(app, ["predict", "--file", "-" if stdin else str(path)], input=data if stdin else None)
    inputs = data.removesuffix(b"\n").split(b"\n")
    outputs = result.stdout.split("\n")
    assert outputs[-1] == "" and len(outputs) - 1 == len(inputs), (inputs, result.stdout)
    for number, (line, answer) in enumerate(zip(inputs, outputs), 1):
        try:
            text = line.removesuffix(b"\r").decode()
        except UnicodeDecodeError:
            assert answer == "" and f"line {number}: not UTF-8 text" in result.stderr
            continue
        assert answer == expected(text), (number, line, answer)
        if answer == "":
            assert f"error: line {number}: " in result.stderr
    assert result.exit_code == (0 if all(outputs[:-1]) else AdderError.exit_code)


def test_the_probes_lines_stay_in_place(stand_in, tmp_path):
    """`printf '12+50\\n1+1\\r2+2\\n3+4\\n' | adder predict --file -` printed 4 answers for 3 lines."""
    result = CliRunner().invoke(app, ["predict", "--file", "-"], input=b"12+50\n1+1\r2+2\n3+4\n")
    assert result.stdout == "62\n\n7\n" and "error: line 2: malformed expression '1+1\\r2+2'" in result.stderr
    (tmp_path / "f").write_bytes(b"12+50\n\xff\n")
    result = CliRunner().invoke(app, ["predict", "--file", str(tmp_path / "f")])
    assert result.stdout == "62\n\n" and result.stderr == "error: line 2: not UTF-8 text (byte 0xff at column 1)\n"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_empty_input_prints_nothing(stand_in):
    result = CliRunner().invoke(app, ["predict", "--file", "-"], input=b"")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


# --------------------------------------------------------------------------------------------------
# accepted ranges


def test_a_column_codec_accepts_its_training_range_or_what_it_was_measured_to_add():
    trained = ColumnCodec(Limits(terms=4, low=0, high=99, min_terms=2))
    assert trained.check("12+34+56") == "12+34+56"
    for wide in ("123+456+789", "12345+67890", "1" * 30 + "+1"):
        with pytest.raises(AdderError, match="operands must be in 0..99"):
            trained.check(wide)
    add10 = ColumnCodec(Limits(terms=2, low=0, high=10**10 - 1))
    measured = accepting(add10, {10: 1.0, 20: 1.0, 100: 0.999, 1000: 0.994})
    assert measured.check("9" * 1000 + "+1") == "9" * 1000 + "+1"
    with pytest.raises(AdderError, match="operands must have at most 1,000 digits"):
        measured.check("9" * 1001 + "+1")
    # A length that fails stops the range there, whatever longer ones score.
    assert accepting(add10, {20: 0.995, 100: 0.5, 1000: 1.0}).accepted_digits == 20
    assert accepting(add10, {20: 0.9}) == add10 and accepting(add10, {}) == add10
    assert accepting(CODEC, {100: 1.0}) == CODEC  # fixed-width codecs never widen


def published_folder(root, name: str, codec, val: float, lengths: dict | None = None):
    """A model folder as training publishes it (its model file a stand-in blob), with its evaluation."""
    staging = root / "models" / f".staging-{name}"
    staging.mkdir(parents=True)
    (staging / "model.keras").write_bytes(b"stand-in")
    save_codec(codec, staging / "codec.json")
    (staging / "history.csv").write_text(f"val_exact_match\n0.1\n{val}\n")
    publish(staging, {"run_id": "a" * 32, "model_uri": "models:/m-" + "b" * 32}, root / "models" / name)
    if lengths is not None:
        (root / "metrics").mkdir(exist_ok=True)
        (root / "metrics" / f"{name}.json").write_text(json.dumps(
            {"exact_match": val, **{f"exact_match_{n}_digits": v for n, v in lengths.items()}}))


def test_the_default_routes_each_line_to_the_best_published_model_that_accepts_it(tmp_path):
    """Chosen from the model folders, not metrics/ (which evaluate deletes while it runs): the best on
    validation first; each folder accepting only its range."""
    published_folder(tmp_path, "add2", ColumnCodec(Limits(terms=2, low=0, high=99)), 1.0)
    published_folder(tmp_path, "add10", ColumnCodec(Limits(terms=2, low=0, high=10**10 - 1)), 0.99,
                     {10: 1.0, 100: 0.995})
    published_folder(tmp_path, "terms", ColumnCodec(Limits(terms=4, low=0, high=99, min_terms=2)), 0.98)
    (tmp_path / "models" / "broken").mkdir()  # a folder that fails its checks is passed over
    members = predict.published(tmp_path)
    answering = lambda line: Path(members.route(line)[0].source).name
    assert ([answering(line) for line in ("12+50", "1234+5", "1+2+3", "9" * 100 + "+1")]
            == ["add2", "add10", "terms", "add10"])
    refused = members.route("123+456+789")
    assert isinstance(refused, AdderError) and "terms: '123+456+789': operands must be in 0..99" in str(refused)
    assert isinstance(members.route("9" * 101 + "+1"), AdderError)
    shutil.rmtree(tmp_path / "metrics")  # evaluate running: the measured range is not known, the trained one is
    assert isinstance(predict.published(tmp_path).route("1" * 11 + "+1"), AdderError)


def test_a_task_name_routes_among_its_experiments_models_only(tmp_path):
    published_folder(tmp_path, "add2", ColumnCodec(Limits(terms=2, low=0, high=99)), 1.0)
    published_folder(tmp_path, "terms", ColumnCodec(Limits(terms=4, low=0, high=99, min_terms=2)), 0.98)
    members = predict.published(tmp_path, task=("terms", {"terms"}))
    assert Path(members.route("12+50")[0].source).name == "terms"  # add2 is better on validation, but not terms'
    with pytest.raises(AdderError, match="^no trained sequence model of task 'ops' yet"):
        predict.published(tmp_path, task=("ops", set()))


def test_run_json_fields_are_checked_before_use(tmp_path):
    published_folder(tmp_path, "add2", ColumnCodec(Limits(terms=2, low=0, high=99)), 1.0)
    folder = tmp_path / "models" / "add2"
    good = json.loads((folder / "run.json").read_text())
    assert verified(folder) == good
    for change, says in (({"model_uri": "/tmp/evil/model"}, "model_uri '/tmp/evil/model'"),
                         ({"model_uri": "runs:/" + "a" * 32 + "/../x"}, "model_uri"),
                         ({"run_id": "../x"}, "run_id"),
                         ({"sha256": {}}, "no sha256 of model.keras and codec.json"),
                         ({"sha256": {**good["sha256"], "../../x": "0" * 64}}, "sha256 names a file"),
                         ({"seeds": ["../1"], "chosen_seed": "../1"}, "seeds")):
        (folder / "run.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(AdderError, match="is not as training writes it") as raised:
            verified(folder)
        assert says in str(raised.value)


@pytest.mark.parametrize("name", ["../models/add2", "a/b", "..", "/etc"])
def test_experiment_names_never_leave_models(tmp_path, name):
    from pipeline.model_folder import experiment_folder

    with pytest.raises(AdderError, match="is not an experiment name"):
        experiment_folder(tmp_path, name)


@pytest.mark.parametrize("args, says", [
    (["serve", "--model"], "error: Option '--model' requires an argument."),
    (["predict", "--nosuch"], "error: No such option: --nosuch (usage: adder predict --help)"),
    (["predict", "1+2", "--model", "/no/such/folder"], "no such model folder"),
])
def test_usage_errors_are_one_line(args, says):
    """`adder serve --model` without a value printed a framed usage box naming only --help."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k != "ADDER_WARM"})
    assert result.returncode == 2 and result.stdout == "", result
    assert len(result.stderr.splitlines()) == 1 and says in result.stderr, result.stderr


def test_a_model_from_mlflow_leaves_no_temporary_folder(tmp_path, monkeypatch):
    """`--model models:/...` downloaded into /tmp/adder-XXXX and left it there, a folder per call. MLflow is
    a stand-in here: a download that writes a model without a codec, which is refused."""
    import tempfile

    import mlflow

    from pipeline import tracking

    def download(uri, dst_path):
        (Path(dst_path) / "MLmodel").write_text("flavors: {}\n")
        return dst_path

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(tracking, "connect", lambda root: None)
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download)
    with pytest.raises(AdderError, match="is not an adder model"):
        predict.load_from_mlflow("models:/m-" + "0" * 32)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("terms", [3, 4])
def test_the_grammar_hint_cites_an_expression_the_model_accepts(terms):
    """The brackets model's hint cited (12+7)*3-40, four terms, which its own 3-term grammar refused."""
    limits = Limits(terms=terms, low=0, high=99, ops="+-*", min_terms=2, brackets=True)
    assert limits.check(limits.example) == limits.example
    with pytest.raises(AdderError, match=f"like {re.escape(limits.example)}"):
        limits.check("12++50")
