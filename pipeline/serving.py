"""The served model: an MLflow pyfunc that takes expressions as strings and answers each row on its own,
so `mlflow models serve` (or any MLflow tool) can use sequence models without knowing their codecs. It
holds one model (an experiment's `serving` model) or several (`adder-all`: every task's champion), each
expression going to the best-scoring one whose grammar accepts it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, REQUEST_LIMIT_EXCEEDED
from mlflow.types import ColSpec, Schema

from pipeline import tracking
from pipeline.codec import Codec, load_codec
from pipeline.errors import AdderError
from pipeline.expressions import MAX_EXPRESSION_CHARS, refusal, shown

# One unnamed string column in: MLflow then accepts a plain list (["12+50"]) as well as a DataFrame.
# One row out per expression: its answer, or the error that refused it, and the model that answered.
SIGNATURE = ModelSignature(inputs=Schema([ColSpec("string")]),
                           outputs=Schema([ColSpec("string", name, required=False)
                                           for name in ("answer", "error", "model")]))
MAX_ROWS = 1_000  # per request; more is a 413 before any model runs
MAX_ERROR_CHARS = 200  # a row's error or a refusal is cut to this: 1,000 refused rows answer in well under 1 MB
ONE_COLUMN = "the model takes one column of expressions (one string per row)"


class Refused(MlflowException):
    """A request refused as a whole, answered by MLflow's scoring server with `status`. Its message stays as
    written: the server prefixes an exception's message with the whole input ("Failed to predict data
    '...'"), which for a request refused for its size is exactly what must not be echoed back."""

    def __init__(self, message: str, status: int = 400):
        self.refusal, self.status = message, status
        super().__init__(message, error_code=REQUEST_LIMIT_EXCEEDED if status == 413 else INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self.refusal

    @message.setter
    def message(self, _: str) -> None:
        pass

    def get_http_status_code(self) -> int:
        return self.status


def bounded(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """text cut to `limit` characters: an error may quote a codec's range or several members' reasons in full."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def not_a_string(value) -> str:
    """The error of a row that is not a string, naming its JSON type (pandas writes a missing cell as NaN)."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        kind = "null"
    elif isinstance(value, (bool, np.bool_)):
        kind = "boolean"
    elif isinstance(value, (int, float, np.number)):
        kind = "number"
    elif isinstance(value, dict):
        kind = "object"
    elif isinstance(value, (list, tuple, np.ndarray)):
        kind = "array"
    else:
        kind = type(value).__name__
    return f"expected a string, got {kind}"


class AdderModel(mlflow.pyfunc.PythonModel):
    """Expressions in (a string column, a list or a Series); a DataFrame out with one row per expression:
    `answer` (None if refused), `error` (None if answered) and `model` (the member that answered).
    A request beyond the limits is refused as a whole (Refused: a 413 or a 400)."""

    def __init__(self, backend: str = "tensorflow", members: list[dict] | None = None):
        self.backend = backend  # the Keras backend it was trained on, used unless KERAS_BACKEND says otherwise
        # Each member: its name, and the prefix of its artifacts `<prefix>model` and `<prefix>codec`;
        # in order of preference (higher test exact match first).
        self.members = members or [{"name": "model", "prefix": ""}]

    def load_context(self, context) -> None:
        # Models logged before the backend was recorded were trained on TensorFlow.
        os.environ.setdefault("KERAS_BACKEND", getattr(self, "backend", "tensorflow"))
        import keras

        from pipeline.kinds import kind

        kind("transformer")  # registers its custom layers (PositionalEmbedding, TransformerBlock) before loading

        members = getattr(self, "members", None) or [{"name": "model", "prefix": ""}]
        self.ready([(member["name"],
                     keras.models.load_model(context.artifacts[f"{member['prefix']}model"], compile=False),
                     load_codec(Path(context.artifacts[f"{member['prefix']}codec"]))) for member in members])

    def ready(self, served: list[tuple[str, object, Codec]]) -> AdderModel:
        """Attaches loaded (name, model, codec) members; set here, not in __init__, so they are never pickled."""
        self.served = served
        self.lock = threading.Lock()  # the scoring server predicts from a thread pool; Keras models are not thread-safe
        return self

    # Typed as MLflow's schema check hands it over; a DataFrame hint also keeps MLflow from inferring a schema.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from pipeline.evaluate import predict_explained

        expressions = expressions_of(model_input)
        check_limits(expressions)
        routed = [self.route(expression) for expression in expressions]
        answers: list = [None] * len(routed)
        errors: list = [None if chosen is not None else bounded(error) for chosen, error in routed]
        for member, (_, model, codec) in enumerate(self.served):
            rows = [row for row, (chosen, _) in enumerate(routed) if chosen == member]
            if rows:
                with self.lock:
                    got, _, why = predict_explained(model, codec, [routed[row][1] for row in rows])
                for row, answer, error in zip(rows, got.tolist(), why):
                    answers[row], errors[row] = (None, bounded(error)) if error else (str(answer), None)
        return pd.DataFrame({"answer": answers,
                             "error": errors,
                             "model": [None if chosen is None else self.served[chosen][0] for chosen, _ in routed]},
                            dtype=object)

    def route(self, expression) -> tuple[int | None, str]:
        """(member, canonical expression) for the first member whose grammar accepts it, else (None, error)."""
        if not isinstance(expression, str):
            return None, not_a_string(expression)
        refusals = []
        for member, (name, _, codec) in enumerate(self.served):
            try:
                return member, codec.check(expression)
            except AdderError as e:
                refusals.append((name, str(e)))
        return None, refusal(expression, refusals, "served model")


def expressions_of(model_input) -> list:
    """The expressions in what MLflow hands over: a one-column DataFrame (what its schema check makes of a
    request), or a list, Series or array when called directly. More than one column is refused, not flattened
    or cut to its first column: each row is one expression."""
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] != 1:
            if model_input.empty:
                return []
            raise Refused(f"{ONE_COLUMN}; got {model_input.shape[1]:,} columns")
        model_input = model_input.iloc[:, 0]
    array = np.asarray(model_input, dtype=object)
    if array.ndim > 2 or (array.ndim == 2 and array.shape[1] != 1):
        raise Refused(f"{ONE_COLUMN}; got an array of shape {array.shape}")
    return array.reshape(-1).tolist()


def check_limits(expressions: list) -> None:
    """Refuses the whole request, before any parsing or model, if it has too many rows or too long a row."""
    if len(expressions) > MAX_ROWS:
        raise Refused(f"{len(expressions):,} expressions in one request; at most {MAX_ROWS:,}", 413)
    for number, expression in enumerate(expressions, 1):
        if isinstance(expression, str) and len(expression) > MAX_EXPRESSION_CHARS:
            raise Refused(f"expression #{number} has {len(expression):,} characters ({shown(expression)}); "
                          f"at most {MAX_EXPRESSION_CHARS:,}")


# What the served model imports besides its Keras backend; pinned so that MLflow need not infer them (slow)
# and a served copy matches.
REQUIREMENTS = ("mlflow", "keras", "numpy", "pandas", "scikit-learn", "pydantic", "pyyaml")


def log_serving_model(members: list[tuple[str, Path, float | None]], example: str, backend: str,
                      name: str = "serving") -> str:
    """Logs pipeline.serving's pyfunc over members (name, model folder holding model.keras and codec.json,
    test exact match), best first, with the pipeline package itself, so it loads in a fresh process;
    returns the model URI."""
    from pipeline.backend import REQUIREMENTS as BACKEND_REQUIREMENTS

    prefixes = [f"{i}." if len(members) > 1 else "" for i in range(len(members))]
    artifacts = {f"{prefix}{kind}": str(folder / file) for prefix, (_, folder, _) in zip(prefixes, members)
                 for kind, file in (("model", "model.keras"), ("codec", "codec.json"))}
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=AdderModel(backend, [{"name": member, "prefix": prefix, "exact_match": score}
                                          for prefix, (member, _, score) in zip(prefixes, members)]),
        artifacts=artifacts,
        code_paths=[str(Path(__file__).parent)],  # the pipeline package
        signature=SIGNATURE,
        input_example=[example],
        pip_requirements=tracking.pinned(*REQUIREMENTS, *BACKEND_REQUIREMENTS[backend]),
    )
    return info.model_uri
