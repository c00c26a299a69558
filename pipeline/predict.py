"""Answering expressions with a trained model: from an experiment name, a model folder or an MLflow URI."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.codec import Codec
from pipeline.errors import AdderError
from pipeline.evaluate import predict_answers


@dataclass
class Predictor:
    model: object
    codec: Codec
    source: str

    def answer(self, expressions: list[str]) -> np.ndarray:
        """Answers for expressions already checked by codec.limits.check."""
        return predict_answers(self.model, self.codec, expressions)


def best_sequence_experiment(root: Path) -> str:
    """The trained seq2seq experiment with the highest test exact match."""
    scored = []
    for path in sorted((root / "metrics").glob("*.json")):
        folder = root / "models" / path.stem
        if (folder / "codec.json").is_file() and json.loads((folder / "codec.json").read_text())["kind"] == "chars":
            scored.append((json.loads(path.read_text()).get("exact_match", 0.0), path.stem))
    if not scored:
        raise AdderError("no trained sequence model yet; run `make run` (or `dvc repro`) first, or pass --model")
    return max(scored)[1]


def load_predictor(root: Path, model: str | None) -> Predictor:
    from pipeline.stages import load_trained

    if model is None:
        model = best_sequence_experiment(root)
    if model.startswith(("models:/", "runs:/")):
        return load_from_mlflow(model)
    folder = Path(model) if Path(model).is_dir() else root / "models" / model
    if not folder.is_dir():
        raise AdderError(f"no model {model!r}: not an experiment with a trained model, a model folder or an MLflow URI")
    return Predictor(*load_trained(folder), str(folder))


def load_from_mlflow(uri: str) -> Predictor:
    import mlflow

    from pipeline.codec import load_codec
    from pipeline.config import project_root
    from pipeline.tracking import connect

    connect(project_root())
    try:
        local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=tempfile.mkdtemp(prefix="adder-")))
    except mlflow.exceptions.MlflowException as e:
        raise AdderError(f"cannot load {uri}: {str(e).splitlines()[0]}") from None
    codec_file = next(local.rglob("codec.json"), None)
    if codec_file is None:
        raise AdderError(f"{uri} is not an adder model (no codec.json among its files)")
    return Predictor(mlflow.tensorflow.load_model(str(local)), load_codec(codec_file), uri)
