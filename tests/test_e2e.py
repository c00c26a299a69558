"""End-to-end tests: real `dvc repro`, real `adder` processes, a real MLflow store and tracking server.

Nothing is mocked. Two tiny projects are built once per module and run concurrently (the machine
spends most of each `adder` call importing TensorFlow and MLflow, so overlap halves the wait):

* repo A: a git + DVC repo running `dvc repro` on a tiny params.yaml, tracked in its own sqlite store;
* repo B: the same params, run stage by stage with `adder generate/train/evaluate` against a real
  `mlflow server`; it must reproduce repo A byte for byte (determinism) and fill the server.

The failure-mode tests (dead tracking server, invalid params) build their own small projects.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from helpers import (
    GIT,
    SPLITS,
    TINY,
    check_training_run,
    cli_env,
    csv_without_timing,
    free_port,
    make_repo,
    mlflow_server,
    one_error_line,
    read_json,
    run,
    runs_by_name,
    shown,
    tracking_uri,
    without_timing,
    write_params,
)

TASKS = tuple(TINY["tasks"])
EXPERIMENTS = tuple(TINY["experiments"])
SEQ2SEQ = "seed-seq2seq"


# --------------------------------------------------------------------------------------------------
# helpers


def run_concurrently(*calls: tuple) -> list[subprocess.CompletedProcess]:
    """Runs several (args, cwd, env) commands at once; results in the same order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: run(*call), calls))


def git_head(repo: Path) -> str:
    return run(GIT + ["rev-parse", "HEAD"], repo).stdout.strip()


def all_run_ids(client) -> set[str]:
    ids = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id for r in client.search_runs(ids, max_results=10000)} if ids else set()


# --------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A real `mlflow server` on a sqlite store, shared by this module's tests."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(folder, f"sqlite:///{folder / 'srv.db'}") as server:
        yield server


@dataclass
class Pipelines:
    repo: Path  # repo A: `dvc repro`, local sqlite store
    repro: subprocess.CompletedProcess
    server_repo: Path  # repo B: adder commands against the tracking server
    server_steps: list[subprocess.CompletedProcess] = field(default_factory=list)


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory, tracking_server) -> Pipelines:
    repo = make_repo(tmp_path_factory.mktemp("repo") / "adder", TINY)
    server_repo = make_repo(tmp_path_factory.mktemp("server-repo") / "adder", TINY)

    def by_hand() -> list[subprocess.CompletedProcess]:
        import mlflow

        tracking_server.wait_ready()
        # An experiment made before the project tagged its experiments: the stages tag it too.
        mlflow.MlflowClient(tracking_uri=tracking_server.uri).create_experiment("adder")
        env = cli_env(tracking_server.uri)
        steps = []
        commands = ([["adder", "generate", t] for t in TASKS] + [["adder", "train", e] for e in EXPERIMENTS]
                    + [["adder", "evaluate", *EXPERIMENTS]])
        for args in commands:
            steps.append(run(args, server_repo, env))
            if steps[-1].returncode != 0:
                break
        return steps

    with ThreadPoolExecutor(2) as pool:
        repro = pool.submit(run, ["dvc", "repro"], repo, cli_env(), 600)
        steps = pool.submit(by_hand)
        return Pipelines(repo, repro.result(), server_repo, steps.result())


@pytest.fixture(scope="module")
def repo(pipelines) -> Path:
    """Repo A after a successful `dvc repro`."""
    assert pipelines.repro.returncode == 0, shown(pipelines.repro)
    return pipelines.repo


@pytest.fixture(scope="module")
def store(repo):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")


@pytest.fixture(scope="module")
def predictions(repo, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """`adder predict` calls on repo A, run at once: one expression with the seq2seq model loaded back
    from MLflow, a file of expressions with one bad line for the default model (the best seq2seq
    experiment: the same one, from its folder), and an MLflow URI that holds no model."""
    lines = tmp_path_factory.mktemp("predict") / "expressions.txt"
    lines.write_text("3+4\nthree+four\n 10 + 2 \n3+4\n")
    run_info = read_json(repo / "models" / SEQ2SEQ / "run.json")
    env = cli_env()
    calls = {
        "mlflow": (["adder", "predict", "3+4", "--model", run_info["model_uri"]], repo, env),
        "file": (["adder", "predict", "--file", str(lines)], repo, env),
        "no model": (["adder", "predict", "3+4", "--model", f"runs:/{run_info['run_id']}/no-such-model"], repo, env),
    }
    return dict(zip(calls, run_concurrently(*calls.values())))


# --------------------------------------------------------------------------------------------------
# 1. a full `dvc repro` in a fresh git + DVC repo


@pytest.mark.e2e
def test_repro_writes_every_output(repo, pipelines):
    assert "Running stage 'compare'" in pipelines.repro.stdout, shown(pipelines.repro)
    for task in TASKS:
        for split in SPLITS:
            lines = (repo / "data" / task / f"{split}.csv").read_text().splitlines()
            assert lines[0] == "problem,answer"
            assert len(lines) - 1 == TINY["tasks"][task][f"{split}_size"]
        summary = read_json(repo / "data" / task / "summary.json")
        assert {s: v["size"] for s, v in summary["splits"].items()} == {
            s: TINY["tasks"][task][f"{s}_size"] for s in SPLITS}
    for name in EXPERIMENTS:
        for file in ("model.keras", "codec.json", "history.csv", "run.json"):
            assert (repo / "models" / name / file).is_file(), file
        assert (repo / "metrics" / f"{name}.json").is_file()
        history = read_json(repo / "evaluation" / f"{name}.json")["history"]
        assert [point["epoch"] for point in history] == list(range(1, TINY["experiments"][name]["epochs"] + 1))
    with (repo / "plots" / "curves.csv").open() as f:
        curves = Counter(row["experiment"] for row in csv.DictReader(f))
    assert curves == {name: exp["epochs"] for name, exp in TINY["experiments"].items()}
    report = (repo / "reports" / "comparison.md").read_text()
    for name in EXPERIMENTS:
        assert f"| {name} |" in report
    assert (repo / "dvc.lock").is_file()
    # The local store lives at the project root, not in the cwd's ./mlruns.
    assert (repo / "mlflow.db").is_file() and (repo / "mlartifacts").is_dir()
    assert not (repo / "mlruns").exists()


@pytest.mark.e2e
def test_repro_metrics_files(repo):
    for name, exp in TINY["experiments"].items():
        metrics = read_json(repo / "metrics" / f"{name}.json")
        if exp["model"] == "seq2seq":
            assert 0 <= metrics["exact_match"] <= 1 and 0 <= metrics["char_accuracy"] <= 1, metrics
            assert "rmse" not in metrics
        else:
            assert metrics["rmse"] >= 0 and 0 <= metrics["exact_match"] <= 1, metrics
        assert metrics["train_seconds"] > 0
        # The metrics file holds the headline figures only; sizes and breakdowns are in evaluation/.
        assert set(metrics) <= {"exact_match", "char_accuracy", "rmse", "train_seconds"}, metrics
        evaluation = read_json(repo / "evaluation" / f"{name}.json")
        assert evaluation["exact_match"] == metrics["exact_match"]
        assert evaluation["test_size"] == TINY["tasks"][exp["task"]]["test_size"]
        assert evaluation["parameters"] > 0


@pytest.mark.e2e
def test_repro_tracks_one_mlflow_run_per_experiment(repo, store):
    runs = runs_by_name(store, "adder")
    assert Counter({name: len(found) for name, found in runs.items()}) == Counter(dict.fromkeys(EXPERIMENTS, 1))
    head = git_head(repo)
    for name in EXPERIMENTS:
        run_ = runs[name][0]
        check_training_run(store, run_, name, repo)
        assert run_.data.tags["git_commit"] == head
        assert run_.data.tags["dvc_stage"] == f"train@{name}"
    datasets = runs_by_name(store, "adder-datasets")
    assert sorted(datasets) == sorted(f"generate-{t}" for t in TASKS)
    reports = runs_by_name(store, "adder-reports")
    assert list(reports) == ["compare"] and len(reports["compare"]) == 1
    # The UI opens every experiment as model training, not in its GenAI view.
    for experiment in ("adder", "adder-datasets", "adder-reports"):
        assert store.get_experiment_by_name(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    assert "comparison.md" in [a.path for a in store.list_artifacts(reports["compare"][0].info.run_id)]


@pytest.mark.e2e
def test_logged_models_load_back_and_match_the_saved_ones(repo, tmp_path):
    import keras
    import mlflow
    import mlflow.keras
    import numpy as np

    from pipeline.codec import load_codec
    from pipeline.problems import read_csv

    with tracking_uri(f"sqlite:///{repo / 'mlflow.db'}"):
        for name, exp in TINY["experiments"].items():
            model_uri = read_json(repo / "models" / name / "run.json")["model_uri"]
            info = mlflow.models.get_model_info(model_uri)
            # MLflow's keras flavor (it loads on any backend), with the backend and the codec in its metadata.
            assert info.flavors["keras"]["keras_backend"] == "jax"  # TINY trains on the default backend
            assert info.metadata["codec"] == read_json(repo / "models" / name / "codec.json")
            logged = mlflow.keras.load_model(model_uri)
            codec = load_codec(repo / "models" / name / "codec.json")
            x = codec.encode_inputs(read_csv(repo / "data" / exp["task"] / "test.csv").text[:8])
            predicted = np.asarray(logged.predict(x, verbose=0))
            if exp["model"] == "seq2seq":
                assert predicted.shape == (8, codec.out_width, codec.n_symbols)
            else:
                assert predicted.shape == (8, 1)
            saved = keras.models.load_model(repo / "models" / name / "model.keras", compile=False)
            np.testing.assert_allclose(predicted, saved.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.e2e
def test_predict_answers_an_expression_with_the_model_from_mlflow(predictions):
    result = predictions["mlflow"]
    assert result.returncode == 0, shown(result)
    assert re.fullmatch(r"\d*\n", result.stdout), shown(result)  # the seq2seq model's digits, one line


@pytest.mark.e2e
def test_predict_file_reports_a_bad_line_and_answers_the_others(predictions):
    result = predictions["file"]
    error = one_error_line(result)
    assert error.startswith("error: line 2: ") and "three+four" in error, error
    answers = result.stdout.split("\n")
    assert len(answers) == 5 and answers[-1] == "", shown(result)  # 4 lines, newline-terminated
    # Good lines answered, the bad one left empty so answers stay aligned with the file's lines.
    assert re.fullmatch(r"\d*", answers[0]) and answers[1] == "" and re.fullmatch(r"\d*", answers[2]), answers
    assert answers[3] == answers[0]  # the same expression gets the same answer
    # The model saved in models/<experiment>/ answers like the one logged to MLflow.
    assert answers[0] + "\n" == predictions["mlflow"].stdout


@pytest.mark.e2e
def test_predict_with_an_mlflow_uri_holding_no_model_is_a_one_line_error(predictions):
    error = one_error_line(predictions["no model"])
    assert "no-such-model" in error, error


# --------------------------------------------------------------------------------------------------
# 2. a second `dvc repro` has nothing to do


@pytest.mark.e2e
def test_second_repro_does_nothing(repo, store):
    outputs = [repo / "dvc.lock", repo / "reports" / "comparison.md",
               *(repo / "metrics" / f"{n}.json" for n in EXPERIMENTS),
               *(repo / "models" / n / "run.json" for n in EXPERIMENTS)]
    before = {p: p.read_bytes() for p in outputs}
    runs_before = all_run_ids(store)
    result = run(["dvc", "repro"], repo, cli_env(), 300)
    assert result.returncode == 0, shown(result)
    output = result.stdout + result.stderr
    assert "Data and pipelines are up to date." in output, shown(result)
    assert "Running stage" not in output, shown(result)
    stages = [f"generate@{t}" for t in TASKS] + [f"{s}@{e}" for s in ("train", "evaluate") for e in EXPERIMENTS]
    for stage in stages + ["compare"]:
        assert f"Stage '{stage}' didn't change, skipping" in output, (stage, shown(result))
    assert {p: p.read_bytes() for p in outputs} == before
    assert all_run_ids(store) == runs_before


@pytest.mark.e2e
def test_a_change_to_one_experiment_stales_its_own_stages_alone(repo):
    """One experiment's param changed: `dvc status` names its train and evaluate, and compare after them."""
    params = repo / "params.yaml"
    before = params.read_text()
    changed = yaml.safe_load(before)
    name = EXPERIMENTS[0]
    changed["experiments"][name]["epochs"] += 1
    params.write_text(yaml.safe_dump(changed))
    try:
        result = run(["dvc", "status", "--json"], repo, cli_env(), 120)
    finally:
        params.write_text(before)
    assert result.returncode == 0, shown(result)
    assert set(json.loads(result.stdout)) == {f"train@{name}", f"evaluate@{name}", "compare"}, shown(result)


# --------------------------------------------------------------------------------------------------
# 3. determinism: the same params in another repo give the same bytes and scores


@pytest.mark.e2e
def test_same_params_reproduce_data_and_metrics(repo, pipelines):
    for step in pipelines.server_steps:
        assert step.returncode == 0, shown(step)
    assert len(pipelines.server_steps) == len(TASKS) + len(EXPERIMENTS) + 1
    other = pipelines.server_repo
    for task in TASKS:
        for split in SPLITS:
            path = Path("data", task, f"{split}.csv")
            assert (other / path).read_bytes() == (repo / path).read_bytes(), path
        assert read_json(other / "data" / task / "summary.json") == read_json(repo / "data" / task / "summary.json")
    for name in EXPERIMENTS:
        assert (without_timing(read_json(other / "metrics" / f"{name}.json"))
                == without_timing(read_json(repo / "metrics" / f"{name}.json"))), name
        assert (without_timing(read_json(other / "evaluation" / f"{name}.json"))["breakdown"]
                == without_timing(read_json(repo / "evaluation" / f"{name}.json"))["breakdown"]), name
        # Every epoch's loss and validation scores, not just the final ones.
        assert (csv_without_timing(other / "models" / name / "history.csv")
                == csv_without_timing(repo / "models" / name / "history.csv")), name
        assert ((other / "models" / name / "codec.json").read_bytes()
                == (repo / "models" / name / "codec.json").read_bytes())


# --------------------------------------------------------------------------------------------------
# 4. a real MLflow tracking server


@pytest.mark.e2e
def test_tracking_server_records_the_runs(pipelines, tracking_server):
    import mlflow

    for step in pipelines.server_steps:
        assert step.returncode == 0, f"{shown(step)}\n--- server log\n{tracking_server.log()}"
    other = pipelines.server_repo
    client = mlflow.MlflowClient(tracking_uri=tracking_server.uri)
    runs = runs_by_name(client, "adder")
    assert Counter({name: len(found) for name, found in runs.items()}) == Counter(dict.fromkeys(EXPERIMENTS, 1))
    for name in EXPERIMENTS:
        check_training_run(client, runs[name][0], name, other)
        assert runs[name][0].data.tags["dvc_stage"] == "(outside dvc)"
    assert sorted(runs_by_name(client, "adder-datasets")) == sorted(f"generate-{t}" for t in TASKS)
    # Both experiments open as model training, the one made before the stages ran included.
    for experiment in ("adder", "adder-datasets"):
        found = client.get_experiment_by_name(experiment)
        assert found.tags["mlflow.experimentKind"] == "custom_model_development", found.tags
        assert found.tags["mlflow.note.content"].startswith("One run per "), found.tags
    # The registered version says which experiment it comes from, in tags and a sentence.
    seq2seq = runs[SEQ2SEQ][0]
    version = client.get_model_version(f"adder-{TINY['experiments'][SEQ2SEQ]['task']}", "1")
    assert version.run_id == seq2seq.info.run_id
    assert version.tags == {"experiment": SEQ2SEQ, "model": "seq2seq", "framing": "onehot",
                            "test_exact_match": f"{seq2seq.data.metrics['test_exact_match']:.6g}"}, version.tags
    assert version.description.startswith(f"{SEQ2SEQ}: seq2seq (onehot); test exact match "), version.description
    serving = client.get_logged_model(version.source.removeprefix("models:/"))
    listed = json.loads(serving.tags["mlflow.modelVersions"])
    assert [(v["name"], str(v["version"])) for v in listed] == [(version.name, "1")], listed
    # Artifacts went through the server to its destination, and nothing to a local store.
    assert any((tracking_server.folder / "art").rglob("model.keras"))
    assert any((tracking_server.folder / "art").rglob("samples.json"))
    assert not (other / "mlflow.db").exists() and not (other / "mlartifacts").exists()
    assert not (other / "mlruns").exists()


# --------------------------------------------------------------------------------------------------
# 5. and 6. failures: clear one-line errors before any work


def small_project(folder: Path, params: dict, with_data_for: tuple[str, ...] = ()) -> Path:
    """A project folder: params.yaml, and data/<task>/ of the TINY tasks written by the pipeline's own
    generator (in this process: no TensorFlow needed)."""
    from pipeline import problems
    from pipeline.config import parse_params

    folder.mkdir(parents=True, exist_ok=True)
    write_params(folder, params)
    parsed = parse_params(TINY)
    for task in with_data_for:
        for split, rows in problems.split_problems(parsed.tasks[task], parsed.seed).items():
            problems.write_csv(rows, folder / "data" / task / f"{split}.csv")
    return folder


@pytest.mark.e2e
def test_dead_tracking_server_fails_fast_without_training(tmp_path):
    project = small_project(tmp_path / "adder", TINY, with_data_for=("seed",))
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = cli_env(uri)
    started = time.monotonic()
    train, generate = run_concurrently((["adder", "train", SEQ2SEQ], project, env, 120),
                                       (["adder", "generate", "mapping"], project, env, 120))
    elapsed = time.monotonic() - started
    for result in (train, generate):
        error = one_error_line(result)
        assert uri in error and "unreachable" in error, error
    # Both processes together take ~10 s on an idle 2-core machine, nearly all of it importing
    # TensorFlow and MLflow; MLflow's default retries against a dead server would take minutes.
    assert elapsed < 30, f"took {elapsed:.0f}s to fail"
    assert not (project / "models" / SEQ2SEQ / "model.keras").exists()
    assert "trained" not in train.stdout
    assert not (project / "data" / "mapping").exists()
    assert not (project / "mlflow.db").exists()


@pytest.mark.e2e
def test_dead_tracking_server_fails_evaluate_compare_and_predict_in_one_line_writing_nothing(repo):
    """Against repo A's trained models: each command that reads or writes the tracking server stops before
    it writes anything of its own (metrics, evaluation, report) when the server is down."""
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = cli_env(uri)
    written = ("metrics", "evaluation", "reports", "plots")

    def contents() -> dict[str, bytes]:
        return {str(path): path.read_bytes() for folder in written for path in sorted((repo / folder).rglob("*"))
                if path.is_file()}

    before = contents()
    started = time.monotonic()
    results = run_concurrently((["adder", "evaluate", SEQ2SEQ], repo, env, 120), (["adder", "compare"], repo, env, 120),
                               (["adder", "predict", "3+4", "--model", "models:/adder-seed@champion"], repo, env, 120))
    elapsed = time.monotonic() - started
    for result in results:
        error = one_error_line(result)
        assert uri in error and "unreachable" in error, error
        assert result.stdout == "", shown(result)
    assert elapsed < 30, f"took {elapsed:.0f}s to fail"
    assert contents() == before


@pytest.mark.e2e
def test_invalid_params_value_is_named(tmp_path):
    params = json.loads(json.dumps(TINY))
    params["experiments"][SEQ2SEQ]["batch_size"] = 0
    project = small_project(tmp_path / "adder", params, with_data_for=("seed",))
    generate, train = run_concurrently((["adder", "generate", "mapping"], project, cli_env(), 120),
                                       (["adder", "train", SEQ2SEQ], project, cli_env(), 120))
    for result in (generate, train):
        error = one_error_line(result)
        assert f"experiments.{SEQ2SEQ}.batch_size" in error and "(got 0)" in error, error
    assert not (project / "data" / "mapping").exists()
    assert not (project / "models").exists()
    assert not (project / "mlflow.db").exists()


@pytest.mark.e2e
def test_temporary_copy_experiment_needs_a_tracking_server(tmp_path):
    """`dvc exp run --temp` runs where `--queue` does, in a copy under .dvc/tmp/exps/ that is thrown away:
    with the default sqlite store there, its runs would vanish and run.json name runs that do not exist."""
    repo = make_repo(tmp_path / "adder", TINY)
    result = run(["dvc", "exp", "run", "--temp"], repo, cli_env(), 300)
    assert result.returncode != 0, shown(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors and "start a tracking server and set MLFLOW_TRACKING_URI" in errors[0], shown(result)
    assert "Running stage 'train@" not in result.stdout, shown(result)  # the first stage stopped it
