"""The Keras backend: chosen once, refused in one line when it cannot run, and models that move between
backends answer the same."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import pytest
from helpers import PROJECT

from pipeline import backend
from pipeline.config import parse_params
from pipeline.errors import AdderError


def test_unknown_backend_names_the_allowed_ones():
    with pytest.raises(AdderError, match=r"unknown Keras backend 'torch'; allowed: jax, tensorflow"):
        backend.use("torch")


def test_backend_not_installed_says_how_to_install_it(monkeypatch):
    # Faked: both backends are installed here, so find_spec is made to report jax missing.
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a))
    with pytest.raises(AdderError, match=r"needs the package jax, which is not installed: pip install 'jax\[cpu\]'"):
        backend.use("jax")


def test_another_backend_already_loaded_is_refused():
    other = next(name for name in backend.BACKENDS if name != keras.backend.backend())
    with pytest.raises(AdderError, match=f"Keras already runs on {keras.backend.backend()}"):
        backend.use(other)
    assert backend.use(keras.backend.backend()) == keras.backend.backend()


def test_backend_is_a_validated_param():
    params = {"seed": 0, "tasks": {"t": {"terms": 2, "digits": 1, "train_size": 5, "val_size": 1, "test_size": 1}},
              "experiments": {"t-digitwise": {"task": "t", "model": "digitwise", "epochs": 1, "batch_size": 1}}}
    assert parse_params(params).backend == backend.DEFAULT
    with pytest.raises(AdderError, match=r"backend: .*'jax'.*'tensorflow'.*\(got 'torch'\)"):
        parse_params({**params, "backend": "torch"})


# Seeds and trains a model on JAX the way `adder train` does; prints the heavy packages that got imported.
LIGHT = textwrap.dedent("""
    import sys
    from pipeline import backend
    backend.use("jax")
    from pipeline.config import Experiment, Task
    from pipeline.problems import split_problems
    from pipeline.train import train
    task = Task(terms=2, digits=1, train_size=50, val_size=10, test_size=1)
    splits = split_problems(task, 0)
    train(Experiment(task="t", model="digitwise", units=(4,), epochs=1, batch_size=10), task, splits["train"],
          splits["val"], seed=1)
    print(sorted(m for m in ("tensorflow", "sklearn", "matplotlib") if m in sys.modules))
""")


def test_training_on_jax_imports_no_package_it_does_not_use():
    """Each costs every train stage seconds of start-up (TensorFlow ~5 s, scikit-learn ~3 s, Matplotlib ~1 s)."""
    result = subprocess.run([sys.executable, "-c", LIGHT], cwd=PROJECT, capture_output=True, text=True, timeout=300,
                            env={k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_hidden_modules_fail_to_import_only_inside_the_block():
    with backend.hidden("json", "adder_no_such_module"):
        import json as still_there  # imported before the block: untouched

        with pytest.raises(ImportError):
            import adder_no_such_module  # noqa: F401
    assert still_there is json and "adder_no_such_module" not in sys.modules


# Trains (or only loads) a transformer, whose custom layer must serialise, and a digitwise LSTM in one
# process on the backend KERAS_BACKEND names; prints their answers to held-out problems.
MOVE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from pipeline.codec import save_codec
    from pipeline.config import Experiment, Task
    from pipeline.evaluate import predict_answers
    from pipeline.model_folder import publish, staging_folder
    from pipeline.model_folder import load_trained
    from pipeline.problems import split_problems
    from pipeline.train import train
    folder, action = Path(sys.argv[1]), sys.argv[2]
    task = Task(terms=2, digits=2, train_size=300, val_size=60, test_size=1)
    splits = split_problems(task, 0)
    answers = {}
    for model in ("transformer", "digitwise"):
        exp = Experiment(task="t", model=model, units=(16,), epochs=2, samples_per_epoch=300, batch_size=30)
        out = folder / model
        if action == "train":
            trained = train(exp, task, splits["train"], splits["val"], seed=1)
            staging = staging_folder(out)
            trained.model.save(staging / "model.keras")
            save_codec(trained.codec, staging / "codec.json")
            publish(staging, {"run_id": "0" * 32}, out)  # trained outside MLflow: a stand-in run id
        loaded, codec = load_trained(out)
        answers[model] = predict_answers(loaded, codec, splits["val"].text).tolist()
    print(json.dumps(answers))
""")


def answers_on(name: str, folder: Path, action: str) -> dict:
    result = subprocess.run([sys.executable, "-c", MOVE, str(folder), action], cwd=PROJECT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "KERAS_BACKEND": name})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("trained_on", "loaded_on"), [("tensorflow", "jax"), ("jax", "tensorflow")])
def test_a_model_trained_on_one_backend_answers_the_same_on_the_other(tmp_path, trained_on, loaded_on):
    before = answers_on(trained_on, tmp_path, "train")
    assert answers_on(loaded_on, tmp_path, "load") == before
    assert all(any(answer != "" for answer in answers) for answers in before.values())  # real answers, not blanks
