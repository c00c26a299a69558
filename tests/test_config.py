"""params.yaml validation: every bad value is an AdderError naming the key path and what is allowed."""

import copy
import re
import shutil
import subprocess

import pytest
import yaml
from helpers import PROJECT, error_of
from pydantic import ValidationError

from pipeline.config import MODELS, Params, load_params, parse_params
from pipeline.errors import AdderError

REPO_PARAMS = PROJECT / "params.yaml"
RAW = yaml.safe_load(REPO_PARAMS.read_text())


def raw():
    return copy.deepcopy(RAW)


def test_repo_params_load():
    params = load_params(REPO_PARAMS)
    assert isinstance(params, Params)
    assert set(params.tasks) >= {"mapping", "seed", "add3", "terms", "ops", "brackets"}
    exp = params.experiment("seed-seq2seq")
    assert (exp.task, exp.model, exp.units, exp.batch_size) == ("seed", "seq2seq", (100, 50), 10)
    assert params.task("seed").space_size == 100
    assert params.task("add3").high == 999


def test_every_experiment_names_its_task_and_model():
    params = load_params(REPO_PARAMS)
    for name, exp in params.experiments.items():
        assert name.startswith(f"{exp.task}-{exp.model}")


def test_unknown_experiment_and_task_lookups():
    params = parse_params(raw())
    with pytest.raises(AdderError, match="unknown experiment 'nope'; known: mapping-naive_lstm"):
        params.experiment("nope")
    with pytest.raises(AdderError, match="unknown task 'nope'; known: mapping, seed, add2, add3"):
        params.task("nope")


def test_batch_size_zero():
    params = raw()
    params["experiments"]["seed-seq2seq"]["batch_size"] = 0
    message = error_of(params)
    assert "experiments.seed-seq2seq.batch_size" in message
    assert "greater than or equal to 1" in message
    assert "got 0" in message


def test_unknown_model_lists_allowed_models():
    params = raw()
    params["experiments"]["seed-seq2seq"]["model"] = "foo"
    message = error_of(params)
    assert "experiments.seed-seq2seq.model" in message
    assert "'foo'" in message
    for model in MODELS:
        assert model in message


@pytest.mark.parametrize("where", [(), ("tasks", "seed"), ("experiments", "seed-seq2seq")])
def test_unknown_key_rejected(where):
    params = raw()
    node = params
    for key in where:
        node = node[key]
    node["colour"] = "blue"
    message = error_of(params)
    assert ".".join([*where, "colour"]) + ":" in message
    assert "unknown key; allowed:" in message


def test_unknown_key_lists_allowed_keys():
    params = raw()
    params["experiments"]["seed-seq2seq"]["learning_rat"] = 0.01
    message = error_of(params)
    assert "learning_rate" in message and "samples_per_epoch" in message


def test_experiment_with_unknown_task():
    params = raw()
    params["experiments"]["seed-seq2seq"]["task"] = "nope"
    message = error_of(params)
    assert "'nope' is not a task" in message
    assert "known: mapping, seed, add2, add3" in message


def test_experiment_with_unknown_task_names_full_key_path():
    params = raw()
    params["experiments"]["seed-seq2seq"]["task"] = "nope"
    assert "experiments.seed-seq2seq.task" in error_of(params)


@pytest.mark.parametrize("name", ["seed-lstm", "seq2seq-seed", "seed_seq2seq", "mapping-seq2seq", "seed-seq2seq-Big",
                                  "seed-seq2seq-"])
def test_bad_experiment_name(name):
    params = raw()
    params["experiments"][name] = params["experiments"].pop("seed-seq2seq")
    message = error_of(params)
    assert f"experiment name {name!r}" in message
    assert "<task>-<model>[-variant]" in message
    assert "seed-seq2seq[-...]" in message


def test_experiment_variant_name_accepted():
    params = raw()
    params["experiments"]["seed-seq2seq-small_2"] = {**params["experiments"]["seed-seq2seq"], "units": [10, 10]}
    assert parse_params(params).experiment("seed-seq2seq-small_2").units == (10, 10)


def test_task_with_digits_and_min_max():
    params = raw()
    params["tasks"]["seed"]["digits"] = 2
    message = error_of(params)
    assert "tasks.seed:" in message
    assert "min_value and max_value, or digits" in message


def test_task_with_neither_digits_nor_range():
    params = raw()
    del params["tasks"]["seed"]["min_value"], params["tasks"]["seed"]["max_value"]
    assert "tasks.seed: set either min_value and max_value, or digits" in error_of(params)


def test_task_min_above_max():
    params = raw()
    params["tasks"]["seed"]["min_value"] = 11
    assert "tasks.seed: min_value and max_value must both be set, with min_value <= max_value" in error_of(params)


def test_missing_required_key():
    params = raw()
    del params["experiments"]["seed-seq2seq"]["epochs"]
    assert "experiments.seed-seq2seq.epochs: Field required" in error_of(params)


@pytest.mark.parametrize(("path", "value", "allowed"), [
    (("seed",), -1, "greater than or equal to 0"),
    (("tasks", "seed", "terms"), 1, "greater than or equal to 2"),
    (("tasks", "add3", "digits"), 19, "less than or equal to 18"),
    (("tasks", "seed", "train_size"), -1, "greater than or equal to 0"),
    (("experiments", "seed-seq2seq", "learning_rate"), 0, "greater than 0"),
    (("experiments", "seed-seq2seq", "units"), [], "at least 1 item"),
    (("experiments", "seed-seq2seq", "epochs"), "many", "valid integer"),
])
def test_out_of_range_values(path, value, allowed):
    params = raw()
    node = params
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    message = error_of(params)
    assert ".".join(path) + ":" in message
    assert allowed in message


def test_bad_task_name():
    params = raw()
    params["tasks"]["Seed"] = params["tasks"]["seed"]
    assert "task name 'Seed': use lowercase letters" in error_of(params)


def test_not_a_mapping():
    assert "valid dictionary" in error_of(None)
    assert "valid dictionary" in error_of(["seed", 1])


def test_zero_units_rejected():
    params = raw()
    params["experiments"]["seed-seq2seq"]["units"] = [0, 50]
    assert "experiments.seed-seq2seq.units" in error_of(params)


def test_tasks_beyond_int64_rejected():
    params = raw()
    params["tasks"]["seed"].update(terms=20, min_value=5 * 10**17, max_value=10**18 - 1)
    assert "tasks.seed" in error_of(params)


def test_load_params_from_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw()))
    assert load_params(path) == parse_params(raw())


def test_load_params_names_the_file(tmp_path):
    params = raw()
    params["experiments"]["seed-seq2seq"]["batch_size"] = 0
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(AdderError, match=r"^mine\.yaml: experiments\.seed-seq2seq\.batch_size: "):
        load_params(path)


def test_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\ntasks: [unclosed\n  experiments: {\n")
    with pytest.raises(AdderError, match=r"^params\.yaml: not valid YAML \(") as e:
        load_params(path)
    assert "\n" not in str(e.value)


def test_empty_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("")
    with pytest.raises(AdderError, match="^params.yaml: .*valid dictionary"):
        load_params(path)


def test_missing_file(tmp_path):
    with pytest.raises(AdderError, match="cannot read .*nope.yaml"):
        load_params(tmp_path / "nope.yaml")


def test_params_are_frozen():
    params = parse_params(raw())
    with pytest.raises(ValidationError):
        params.seed = 2


def test_digitwise_refuses_tasks_it_cannot_frame():
    params = raw()
    params["experiments"]["ops-digitwise"] = {"task": "ops", "model": "digitwise", "units": [8], "epochs": 1,
                                              "batch_size": 8}
    assert "experiments.ops-digitwise.model: digitwise adds digit columns" in error_of(params)


def test_eval_lengths_need_a_length_agnostic_model():
    params = raw()
    params["experiments"]["seed-seq2seq"]["eval_lengths"] = [20]
    assert "eval_lengths needs a length-agnostic model" in error_of(params)


def test_an_experiment_cannot_train_on_a_task_without_training_problems():
    params = raw()
    params["tasks"]["seed"]["train_size"] = 0
    assert ("experiments.seed-seq2seq.task: 'seed' has no training or validation problems" in error_of(params))


def test_unknown_answer_framing_lists_the_framings():
    params = raw()
    params["experiments"]["ops-transformer"]["answer"] = "backwards"
    message = error_of(params)
    assert message.startswith("params.yaml: experiments.ops-transformer.answer:")
    assert "'plain', 'reversed', 'steps' or 'rewrite'" in message and "'backwards'" in message


@pytest.mark.parametrize("answer", ["steps", "plain"])
def test_answer_framing_needs_a_decoder(answer):
    params = raw()
    params["experiments"]["seed-seq2seq"]["answer"] = answer
    message = error_of(params)
    assert message.startswith("params.yaml: experiments.seed-seq2seq: answer: ")
    assert f"answer: {answer} needs a decoder that writes answers of any length (attention or transformer)" in message


def test_oversample_names_operations_of_its_task_and_needs_draws():
    params = raw()
    params["experiments"]["ops-transformer"]["oversample"] = {"/": 3}
    assert "experiments.ops-transformer.oversample" in error_of(params)
    params["experiments"]["ops-transformer"]["oversample"] = {"*": 0}
    assert "experiments.ops-transformer.oversample" in error_of(params)
    params = raw()
    params["experiments"]["add3-attention"]["oversample"] = {"*": 3}
    assert error_of(params) == ("params.yaml: experiments.add3-attention.oversample: '*' is not an operation of "
                                "task 'add3' (its ops: +)")
    params = raw()
    params["experiments"]["ops-transformer"]["samples_per_epoch"] = None
    params["experiments"]["ops-transformer"]["oversample"] = {"*": 3}
    assert "oversample draws each epoch's samples; set samples_per_epoch" in error_of(params)


def test_warmup_is_fewer_epochs_than_the_run():
    params = raw()
    epochs = params["experiments"]["ops-transformer"]["epochs"]
    params["experiments"]["ops-transformer"]["warmup_epochs"] = epochs
    assert f"warmup_epochs ({epochs}) must be fewer than epochs ({epochs})" in error_of(params)
    params["experiments"]["ops-transformer"]["warmup_epochs"] = -1
    assert "experiments.ops-transformer.warmup_epochs" in error_of(params)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_gpu_sets_valid_params():
    """`make run-gpu`'s -S settings, applied to params.yaml as DVC applies them, pass its schema."""
    printed = subprocess.run(["make", "-n", "--no-print-directory", "-o", ".venv/.installed", "run-gpu"], cwd=PROJECT,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    settings = re.findall(r"-S '([^']+)'", printed)
    assert printed.startswith("dvc exp run -n gpu-sized ") and len(settings) == 11
    params = raw()
    for setting in settings:
        key, value = setting.split("=", 1)
        *parents, last = key.split(".")
        node = params
        for parent in parents:
            node = node[parent]
        assert last in node, f"{key} sets a key params.yaml does not have"
        node[last] = yaml.safe_load(value)
    exp = parse_params(params).experiment("brackets-transformer")
    assert (exp.units, exp.batch_size, exp.samples_per_epoch) == ((128, 128), 256, 100_000)
