"""Answering expressions with a trained model: from an experiment name, a model folder or an MLflow URI."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.codec import Codec, NumberCodec, codec_of, load_codec
from pipeline.errors import AdderError
from pipeline.evaluate import predict_answers
from pipeline.model_folder import verified


@dataclass
class Predictor:
    model: object
    codec: Codec
    source: str

    def answer(self, expressions: list[str]) -> np.ndarray:
        """Answers for expressions already checked by codec.limits.check."""
        return predict_answers(self.model, self.codec, expressions)


def best_sequence_experiment(root: Path) -> str:
    """The trained sequence experiment with the highest test exact match; on a tie, the one
    trained on the widest operands (so '12+50' does not go to a model of 1..10). A folder whose
    codec does not load is passed over: it fails with its own message when named."""
    scored = []
    for path in sorted((root / "metrics").glob("*.json")):
        codec_file = root / "models" / path.stem / "codec.json"
        try:
            codec = read_codec(codec_file) if codec_file.is_file() else None
            exact_match = json.loads(path.read_text()).get("exact_match", 0.0)
        except (AdderError, ValueError):
            continue
        if codec is not None and not isinstance(codec, NumberCodec):
            scored.append((exact_match, codec.limits.high, path.stem))
    if not scored:
        raise AdderError("no trained sequence model yet; run `make run` (or `dvc repro`) first, or pass --model")
    return max(scored)[-1]


def load_predictor(root: Path, model: str | None) -> Predictor:
    from pipeline import backend
    from pipeline.config import PARAMS_FILE, load_params

    backend.use(load_params(root / PARAMS_FILE).backend)  # any model loads on either backend
    if model is None:
        model = best_sequence_experiment(root)
    if model.startswith(("models:/", "runs:/")):
        return load_from_mlflow(model)
    folder = Path(model) if Path(model).is_dir() else root / "models" / model
    if not folder.is_dir():
        raise AdderError(f"no model {model!r}: not an experiment with a trained model, a model folder or an MLflow URI")
    return Predictor(*load_trained(folder), str(folder))


def load_trained(folder: Path) -> tuple:
    """The Keras model and codec that `adder train` published in folder, once its files are checked
    against run.json; AdderError naming the file if one is corrupt."""
    verified(folder)
    return load_keras(folder / "model.keras"), read_codec(folder / "codec.json")


def load_keras(path: Path):
    import keras

    import pipeline.models  # noqa: F401  registers the custom layers (PositionalEmbedding) before loading

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # a truncated or foreign file fails in any of zipfile, h5py, json or Keras itself
        raise AdderError(f"{path} is not a Keras model that loads ({type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0][:120] if str(e).strip() else 'no detail'})") from None


def read_codec(path: Path) -> Codec:
    try:
        return load_codec(path)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:  # truncated JSON, or not a codec's
        raise AdderError(f"{path} is not a codec that loads ({type(e).__name__}); retrain the model") from None


def load_from_mlflow(uri: str) -> Predictor:
    import mlflow

    from pipeline.config import project_root
    from pipeline.tracking import connect

    connect(project_root())
    try:
        local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=tempfile.mkdtemp(prefix="adder-")))
    except mlflow.exceptions.MlflowException as e:
        raise AdderError(f"cannot load {uri}: {str(e).splitlines()[0]}") from None
    if len(list((local / "artifacts").rglob("*.keras"))) > 1:  # adder-all: one champion per task
        raise AdderError(f"{uri} serves several models, one per task: serve it (adder serve), or predict with "
                         "one task's champion, --model models:/adder-<task>@champion")
    if (local / "artifacts" / "model.keras").is_file():  # a `serving` pyfunc (a champion): Keras file and codec as saved
        return Predictor(load_keras(local / "artifacts" / "model.keras"), read_codec(local / "artifacts" / "codec.json"), uri)
    codec = mlflow.models.Model.load(str(local)).metadata or {}
    if "codec" not in codec:
        raise AdderError(f"{uri} is not an adder model (no codec in its metadata)")
    import mlflow.keras

    import pipeline.models  # noqa: F401  registers the custom layers before loading

    return Predictor(mlflow.keras.load_model(str(local)), codec_of(codec["codec"]), uri)
