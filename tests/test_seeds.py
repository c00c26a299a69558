"""An experiment under several seeds, through the real train and evaluate stages in this process (a tiny
model, one short epoch a seed) on a local MLflow sqlite store: one model folder per seed, the served copy
chosen on validation, a parent run holding the spread and one child run per seed."""

import hashlib
import json

import mlflow
import numpy as np
import pytest
import yaml

from pipeline.config import load_params
from pipeline.seeds import chosen_seed

EXP = "add2-seq2seq-seeds"
PARAMS = {
    "seed": 1,
    "backend": "jax",
    "tasks": {"add2": {"terms": 2, "digits": 2, "train_size": 300, "val_size": 60, "test_size": 120}},
    "experiments": {EXP: {"task": "add2", "model": "seq2seq", "units": [8, 4], "epochs": 2, "samples_per_epoch": 64,
                          "batch_size": 32, "learning_rate": 0.01, "seeds": [3, 1, 2]}},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADDER_ROOT", str(root))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        from pipeline.stages.evaluate import evaluate_one
        from pipeline.stages.generate import generate
        from pipeline.stages.train import train

        generate("add2")
        info = train(EXP)
        evaluate_one(EXP, load_params())
        yield root, info
        mlflow.set_tracking_uri(None)


def read(path):
    return json.loads(path.read_text())


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_seed_has_its_folder_and_the_served_one_is_best_on_validation(project):
    root, info = project
    folder = root / "models" / EXP
    val = {seed: read(folder / "seeds" / str(seed) / "run.json") for seed in (3, 1, 2)}
    last_val = {seed: float(np.genfromtxt(folder / "seeds" / str(seed) / "history.csv", delimiter=",", names=True)
                            ["val_exact_match"].reshape(-1)[-1]) for seed in (3, 1, 2)}
    assert info["seeds"] == [3, 1, 2] and info["chosen_seed"] == chosen_seed(last_val)
    chosen = folder / "seeds" / str(info["chosen_seed"])
    for name in ("model.keras", "codec.json", "history.csv"):
        assert sha256(folder / name) == sha256(chosen / name)
    assert read(folder / "run.json")["run_id"] == val[info["chosen_seed"]]["run_id"]
    assert len({run["run_id"] for run in val.values()}) == 3


def test_chosen_seed_ties_go_to_the_earliest_listed():
    assert chosen_seed({3: 0.5, 1: 0.7, 2: 0.7}) == 1
    assert chosen_seed({3: 0.9, 1: 0.7, 2: 0.9}) == 3


def test_metrics_hold_the_mean_and_each_seed(project):
    root, _ = project
    metrics = read(root / "metrics" / f"{EXP}.json")
    evaluation = read(root / "evaluation" / f"{EXP}.json")
    per_seed = {row["seed"]: row for row in evaluation["per_seed"]}
    assert sorted(per_seed) == [1, 2, 3]
    for seed, row in per_seed.items():
        assert len(row["correct"]) == PARAMS["tasks"]["add2"]["test_size"]
        assert row["exact_match"] == pytest.approx(row["correct"].count("1") / len(row["correct"]))
        assert metrics[f"exact_match_seed_{seed}"] == row["exact_match"]
    figures = [row["exact_match"] for row in per_seed.values()]
    assert metrics["exact_match"] == pytest.approx(np.mean(figures))
    assert (metrics["exact_match_min"], metrics["exact_match_max"]) == (min(figures), max(figures))
    assert metrics["exact_match_low"] <= metrics["exact_match"] <= metrics["exact_match_high"]


def test_a_parent_run_holds_the_spread_and_a_child_run_each_seed(project):
    root, info = project
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("adder").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == info["parent_run_id"]]
    assert [p.info.run_id for p in parents] == [info["parent_run_id"]] and parents[0].info.run_name == EXP
    assert sorted(int(c.data.params["seed"]) for c in children) == [1, 2, 3] and len(runs) == 4
    metrics = read(root / "metrics" / f"{EXP}.json")
    parent = parents[0].data.metrics
    assert parent["test_exact_match"] == pytest.approx(metrics["exact_match"])
    assert parent["test_exact_match_low"] == pytest.approx(metrics["exact_match_low"])
    # The chosen seed is a label on the parent (a tag), not a metric the UI would chart beside the figures.
    assert parents[0].data.tags["chosen_seed"] == str(info["chosen_seed"]) and "chosen_seed" not in parent
    for child in children:
        seed = int(child.data.params["seed"])
        assert child.info.run_name == f"{EXP} seed {seed}" and child.info.status == "FINISHED"
        assert child.data.metrics["test_exact_match"] == pytest.approx(metrics[f"exact_match_seed_{seed}"])
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val_exact_match")] == [1, 2]


def test_only_the_served_seed_logs_a_serving_model(project):
    root, info = project
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    logged = client.search_logged_models([client.get_experiment_by_name("adder").experiment_id])
    serving = [m for m in logged if m.name == f"{EXP}-serving"]
    assert [m.source_run_id for m in serving] == [info["run_id"]]
    assert len(serving) == 1  # logged by evaluate, to the chosen seed's run
    assert sum(m.name == EXP for m in logged) == 3  # every seed's Keras model, named after the experiment
