"""Answering expressions with a trained model: from an experiment name, a model folder or an MLflow URI."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

from pipeline.codec import Codec, NumberCodec, accepting, codec_of, lengths_in
from pipeline.errors import AdderError
from pipeline.evaluate import predict_explained
from pipeline.expressions import refusal
from pipeline.model_folder import NAME, experiment_folder, load_keras, read_codec, validation_score, verified


class Predictor:
    """A model and its codec; a model from a folder loads on first use, so that choosing among many
    folders reads only their codecs."""

    def __init__(self, codec: Codec, source: str, load):
        self.codec, self.source, self.load = codec, source, load
        self.loaded = None

    @property
    def model(self):
        if self.loaded is None:
            self.loaded = self.load()
        return self.loaded

    def answer(self, expressions: list[str], steps: bool = False) -> list[str | AdderError]:
        """Answers for expressions already checked by codec.check, with steps each followed by the worked
        steps the model wrote before it, one a line, indented; where there is none (a step model's chain
        stopped short of a number), the AdderError that says why."""
        answers, worked, errors = predict_explained(self.model, self.codec, expressions, steps)
        if steps:
            answers = ["\n".join([answer, *(f"  {step}" for step in chain.split(";") if step)])
                       for answer, chain in zip(answers.tolist(), worked.tolist())]
        return [AdderError(error) if error else str(answer) for answer, error in zip(answers, errors)]


class Predictors:
    """The models that answer `adder predict`: one named, or every published sequence model, each expression
    going to the first (best on validation) whose range accepts it, as `adder serve` routes rows."""

    def __init__(self, members: list[Predictor]):
        self.members = members

    def route(self, expression: str) -> tuple[Predictor, str] | AdderError:
        """(the member that answers, the canonical expression), or the AdderError that refuses it."""
        refusals = []
        for member in self.members:
            try:
                return member, member.codec.check(expression)
            except AdderError as e:
                refusals.append((Path(member.source).name, str(e)))
        return AdderError(refusal(expression, refusals, "trained model"))


def published(root: Path, steps: bool = False, task: tuple[str, set[str]] | None = None) -> Predictors:
    """Every published sequence model (of those writing worked steps, with steps; of a task's experiments,
    given task as (name, its experiments)), best first: by final
    validation exact match, then the widest operands. Chosen from the model folders themselves, which a
    running or killed stage never leaves half-written; a folder that fails its checks is passed over (it
    fails with its own message when named)."""
    ranked = []
    for folder in trained_folders(root):
        if task is not None and folder.name not in task[1]:
            continue
        try:
            predictor = from_folder(root, folder)
            val = validation_score(folder)
        except (AdderError, OSError, ValueError, KeyError, IndexError, csv.Error):
            continue
        codec = predictor.codec
        if not isinstance(codec, NumberCodec) and (codec.writes_steps or not steps):
            ranked.append((-val, -codec.limits.high, folder.name, predictor))
    if not ranked:
        of_task = f" of task {task[0]!r}" if task is not None else ""
        raise AdderError(f"no trained sequence model{of_task}{' writing worked steps' if steps else ''} yet; run "
                         "`make run` (or `dvc repro`) first, or pass --model")
    return Predictors([predictor for *_, predictor in sorted(ranked, key=lambda r: r[:3])])


def trained_folders(root: Path) -> list[Path]:
    """models/<experiment>/ folders, by name (unchecked: from_folder checks one before it is used)."""
    return sorted(path for path in (root / "models").glob("*") if path.is_dir() and NAME.fullmatch(path.name))


def from_folder(root: Path, folder: Path) -> Predictor:
    """The model published in folder, once checked against run.json; its codec accepting the operand lengths
    its evaluation measured, its Keras model loaded on first use."""
    verified(folder)
    codec = accepting(read_codec(folder / "codec.json"), measured_lengths(root, folder.name))
    return Predictor(codec, str(folder), lambda: load_keras(folder / "model.keras"))


def measured_lengths(root: Path, experiment: str) -> dict[int, float]:
    """Exact match per operand length from the experiment's evaluation (metrics/<experiment>.json); {} when
    there is none yet (evaluate is running) or it does not read."""
    try:
        metrics = json.loads((root / "metrics" / f"{experiment}.json").read_text())
    except (OSError, ValueError):
        return {}
    return lengths_in(metrics) if isinstance(metrics, dict) else {}


def load_predictors(root: Path, model: str | None, steps: bool = False) -> Predictors:
    from pipeline import backend
    from pipeline.config import PARAMS_FILE, load_params

    params = load_params(root / PARAMS_FILE)
    backend.use(params.backend)  # any model loads on either backend
    if model is None:
        return published(root, steps)
    if model.startswith(("models:/", "runs:/")):
        return Predictors([load_from_mlflow(model)])
    if Path(model).is_dir():
        return Predictors([from_folder(root, Path(model))])
    if "/" in model or model.startswith("."):
        raise AdderError(f"no model {model!r}: no such model folder, and not an experiment or an MLflow URI")
    folder = experiment_folder(root, model)
    if not folder.is_dir() and model in params.tasks:
        return published(root, steps, (model, {name for name, e in params.experiments.items() if e.task == model}))
    if not folder.is_dir():
        hint = (f"; a stage may be retraining it, or one was interrupted: `dvc checkout {folder.relative_to(root)}` "
                "restores the last one" if locked(root, folder) else "")
        known = ", ".join(path.name for path in trained_folders(root)) or "none yet"
        raise AdderError(f"no model {model!r}: not an experiment with a trained model, a task, a model folder or an "
                         f"MLflow URI{hint} (trained: {known})")
    return Predictors([from_folder(root, folder)])


def locked(root: Path, folder: Path) -> bool:
    """Whether dvc.lock records folder as a stage's output (so DVC's cache holds its last version)."""
    try:
        return f"path: {folder.relative_to(root)}\n" in (root / "dvc.lock").read_text()
    except OSError:
        return False


def load_from_mlflow(uri: str) -> Predictor:
    import mlflow

    from pipeline.config import project_root
    from pipeline.tracking import connect

    connect(project_root())
    with tempfile.TemporaryDirectory(prefix="adder-") as tmp:  # the model is in memory once loaded
        try:
            local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp))
        except mlflow.exceptions.MlflowException as e:
            raise AdderError(f"cannot load {uri}: {str(e).splitlines()[0]}") from None
        return loaded_from(local, uri)


def loaded_from(local: Path, uri: str) -> Predictor:
    """The model MLflow downloaded into local: a `serving` pyfunc's Keras file and codec, or a Keras model
    logged with its codec in the metadata."""
    import mlflow

    if len(list((local / "artifacts").rglob("*.keras"))) > 1:  # adder-all: one champion per task
        raise AdderError(f"{uri} serves several models, one per task: serve it (adder serve), or predict with "
                         "one task's champion, --model models:/adder-<task>@champion")
    if (local / "artifacts" / "model.keras").is_file():  # a `serving` pyfunc (a champion): Keras file and codec
        model = load_keras(local / "artifacts" / "model.keras")
        return Predictor(read_codec(local / "artifacts" / "codec.json"), uri, lambda: model)
    codec = mlflow.models.Model.load(str(local)).metadata or {}
    if "codec" not in codec:
        raise AdderError(f"{uri} is not an adder model (no codec in its metadata)")
    import mlflow.keras

    from pipeline.kinds import kind

    kind("transformer")  # registers its custom layers before loading

    model = mlflow.keras.load_model(str(local))
    return Predictor(codec_of(codec["codec"]), uri, lambda: model)
