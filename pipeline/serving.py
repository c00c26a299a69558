"""The served model: an MLflow pyfunc that takes expressions as strings and answers with strings,
so `mlflow models serve` (or any MLflow tool) can use a sequence model without knowing its codec."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, Schema

from pipeline.codec import Codec, load_codec
from pipeline.errors import AdderError

# One unnamed string column: MLflow then accepts a plain list (["12+50"]) as well as a DataFrame.
SIGNATURE = ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("string", "answer")]))
ERRORS_SHOWN = 3  # a request full of bad expressions still gets a one-line message


class AdderModel(mlflow.pyfunc.PythonModel):
    """Expressions in (a string column, a list or a Series), answers out as strings. A malformed
    expression raises INVALID_PARAMETER_VALUE, which MLflow's scoring server answers with a 400."""

    def __init__(self, backend: str = "tensorflow"):
        self.backend = backend  # the Keras backend it was trained on, used unless KERAS_BACKEND says otherwise

    def load_context(self, context) -> None:
        # Models logged before the backend was recorded were trained on TensorFlow.
        os.environ.setdefault("KERAS_BACKEND", getattr(self, "backend", "tensorflow"))
        import keras

        import pipeline.models  # noqa: F401  registers the custom layers (PositionalEmbedding) before loading

        model = keras.models.load_model(context.artifacts["model"], compile=False)
        self.ready(model, load_codec(Path(context.artifacts["codec"])))

    def ready(self, model, codec: Codec) -> AdderModel:
        """Attaches a loaded model; set here, not in __init__, so they are never pickled with the class."""
        self.model, self.codec = model, codec
        self.lock = threading.Lock()  # the scoring server predicts from a thread pool; Keras models are not thread-safe
        return self

    # Typed as MLflow's schema check hands it over; a DataFrame hint also keeps MLflow from inferring a schema.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[str]:
        from pipeline.evaluate import predict_answers

        checked = checked_expressions(self.codec, expressions_of(model_input))
        with self.lock:
            return predict_answers(self.model, self.codec, checked).tolist()


def expressions_of(model_input) -> list:
    """The expressions in what MLflow hands over: a one-column DataFrame (what its schema check makes of a
    request), or a list, Series or array when called directly."""
    if isinstance(model_input, pd.DataFrame):
        model_input = model_input.iloc[:, 0]
    return np.asarray(model_input, dtype=object).reshape(-1).tolist()


def checked_expressions(codec: Codec, expressions: list) -> list[str]:
    """Canonical expressions, or one MlflowException naming the first few bad ones."""
    checked, bad = [], []
    for number, expression in enumerate(expressions, 1):
        try:
            if not isinstance(expression, str):
                raise AdderError(f"expected a string, got {type(expression).__name__} {expression!r}")
            checked.append(codec.check(expression))
        except AdderError as e:
            bad.append(f"#{number}: {e}")
    if bad:
        more = f" (and {len(bad) - ERRORS_SHOWN} more)" if len(bad) > ERRORS_SHOWN else ""
        raise MlflowException(f"{len(bad)} bad expression(s): {'; '.join(bad[:ERRORS_SHOWN])}{more}",
                              error_code=INVALID_PARAMETER_VALUE)
    return checked


def serve(uri: str, host: str, port: int, tracking_uri: str) -> None:
    """Replaces this process with `mlflow models serve`, so a signal to `adder serve` reaches the server.
    --env-manager local: this environment already holds every requirement, and nothing is downloaded."""
    import sys

    here = Path(sys.executable).parent  # the venv's mlflow, and the uvicorn it starts by name
    command = [str(here / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
               "--host", host, "--port", str(port)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{here}{os.pathsep}{os.environ.get('PATH', '')}"}
    os.execve(command[0], command, env)


# What the served model imports besides its Keras backend; pinned so that MLflow need not infer them (slow)
# and a served copy matches.
REQUIREMENTS = ("mlflow", "keras", "numpy", "pandas", "scikit-learn", "pydantic", "pyyaml")


def log_serving_model(folder: Path, example: str, backend: str) -> str:
    """Logs pipeline.serving's pyfunc with the Keras model, its codec and the pipeline package itself,
    so it loads in a fresh process; returns the model URI."""
    from pipeline.backend import REQUIREMENTS as BACKEND_REQUIREMENTS
    from pipeline.tracking import pinned

    info = mlflow.pyfunc.log_model(
        name="serving",
        python_model=AdderModel(backend),
        artifacts={"model": str(folder / "model.keras"), "codec": str(folder / "codec.json")},
        code_paths=[str(Path(__file__).parent)],  # the pipeline package
        signature=SIGNATURE,
        input_example=[example],
        pip_requirements=pinned(*REQUIREMENTS, *BACKEND_REQUIREMENTS[backend]),
    )
    return info.model_uri
