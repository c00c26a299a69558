"""Every kind of model survives saving: built, published as `adder train` publishes a folder, then
answered through `adder predict` in a fresh process and, for the sequence models, through the served pyfunc
loaded by a Python that cannot import the installed package (`python -I -S`: no PYTHONPATH, no .pth files,
so the editable install is invisible and only the pyfunc's bundled copy of `pipeline` can load). Each must
answer exactly as the model did before it was saved: custom layers (PositionalEmbedding), greedy decoding
after a reload and the code bundle are what this would catch. The models keep their random initial weights:
they answer each expression differently, where a briefly trained decoder answers every one blank."""

from __future__ import annotations

import json
import subprocess
import sysconfig

import pytest
import yaml
from helpers import BIN, cli_env, shown, tracking_uri

from pipeline import model_folder
from pipeline.codec import Limits, save_codec
from pipeline.config import MODELS, NUMBER_MODELS, Experiment, Task
from pipeline.evaluate import predict_answers
from pipeline.models import build_model, make_codec
from pipeline.problems import split_problems
from pipeline.train import seed_everything

TASK = Task(terms=2, digits=2, train_size=300, val_size=30, test_size=30)
UNITS = {"naive_lstm": (8,), "naive_mlp": (8, 4), "seq2seq": (16, 8), "digitwise": (16,), "attention": (16,),
         "transformer": (16,)}
EXPRESSIONS = ["12+50", "99+99", "1+2", " 7 + 40 ", "10+10", "58+31"]

# The served pyfunc in a Python that sees site-packages (MLflow, Keras, JAX) but not the editable
# install's .pth: `pipeline` must come from the model's own code folder.
ISOLATED = """
import json, sys, importlib.util
sys.path.append(sys.argv[1])
assert importlib.util.find_spec("pipeline") is None, "pipeline is importable without the model's code"
import mlflow.pyfunc
answers, first = {}, None
for kind, path in json.loads(sys.argv[2]).items():
    served = mlflow.pyfunc.load_model(path)
    answers[kind] = served.predict(json.loads(sys.argv[3]))["answer"].tolist()
    first = first or path  # the first model's bundled copy stays imported for the others
    assert sys.modules["pipeline"].__file__.startswith(first + "/code/"), sys.modules["pipeline"].__file__
print(json.dumps(answers))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A project whose models/ holds one model of each kind, the answers each gave before it was saved, and
    (sequence models) its served pyfunc logged to a local store."""
    import mlflow

    from pipeline.serving import log_serving_model

    root = tmp_path_factory.mktemp("kinds")
    experiments = {f"add-{kind}": Experiment(task="add", model=kind, units=UNITS[kind], epochs=1, batch_size=50)
                   for kind in MODELS}
    (root / "params.yaml").write_text(yaml.safe_dump({
        "seed": 1, "backend": "jax", "tasks": {"add": TASK.model_dump(exclude_none=True)},
        "experiments": {name: exp.model_dump(mode="json", exclude_none=True) for name, exp in experiments.items()}}))
    splits = split_problems(TASK, 0)
    before, pyfuncs = {}, {}
    with tracking_uri(f"sqlite:///{root / 'mlflow.db'}"):
        mlflow.set_experiment("kinds")  # not whichever experiment an earlier test in this process left active
        for kind in MODELS:
            seed_everything(1)
            exp = experiments[f"add-{kind}"]
            codec = make_codec(exp, Limits.of(TASK), splits["train"])
            model = build_model(exp, codec, total_steps=1, steps_per_execution=1)
            out = root / "models" / f"add-{kind}"
            staging = model_folder.staging_folder(out)
            model.save(staging / "model.keras")
            save_codec(codec, staging / "codec.json")
            model_folder.publish(staging, {"run_id": f"{MODELS.index(kind):032x}"}, out)  # a stand-in run id
            before[kind] = [str(a) for a in predict_answers(model, codec, [e.replace(" ", "") for e in EXPRESSIONS])]
            assert len(set(before[kind])) > 2, before[kind]  # answers that tell a wrong reload apart
            if kind not in NUMBER_MODELS:
                with mlflow.start_run():
                    uri = log_serving_model([(kind, out, None)], EXPRESSIONS[0], "jax")
                pyfuncs[kind] = mlflow.artifacts.download_artifacts(uri, dst_path=str(root / "served" / kind))
    return root, before, pyfuncs


@pytest.mark.e2e
@pytest.mark.parametrize("kind", MODELS)
def test_each_kind_answers_through_adder_predict_as_before_saving(saved, kind):
    root, before, _ = saved
    result = subprocess.run([str(BIN / "adder"), "predict", "--model", f"add-{kind}", "--file", "-"], cwd=root,
                            env=cli_env(), input="\n".join(EXPRESSIONS) + "\n", capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, shown(result)
    assert result.stdout.splitlines() == before[kind], shown(result)  # --file - reads stdin, one answer a line


@pytest.mark.e2e
def test_each_served_kind_loads_without_the_installed_package(saved):
    root, before, pyfuncs = saved
    site_packages = sysconfig.get_paths(vars={"base": str(BIN.parent), "platbase": str(BIN.parent)})["purelib"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root), "KERAS_BACKEND": "jax"}
    result = subprocess.run([str(BIN / "python"), "-I", "-S", "-c", ISOLATED, site_packages, json.dumps(pyfuncs),
                             json.dumps(EXPRESSIONS)], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, shown(result)
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served == {kind: before[kind] for kind in pyfuncs}
    assert set(served) == {"seq2seq", "digitwise", "attention", "transformer"}


@pytest.mark.e2e
def test_predict_with_no_such_model_is_one_line(saved):
    root, _, _ = saved
    result = subprocess.run([str(BIN / "adder"), "predict", "1+2", "--model", "nosuch"], cwd=root, env=cli_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == "", shown(result)
    assert result.stderr.strip().splitlines() == [
        "error: no model 'nosuch': not an experiment with a trained model, a task, a model folder or an MLflow URI"
        f" (trained: {', '.join(sorted(path.name for path in (root / 'models').iterdir()))})",
    ], shown(result)
