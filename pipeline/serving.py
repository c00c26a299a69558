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

from pipeline.codec import Codec, load_codec
from pipeline.errors import AdderError
from pipeline.expressions import MAX_EXPRESSION_CHARS

# One unnamed string column in: MLflow then accepts a plain list (["12+50"]) as well as a DataFrame.
# One row out per expression: its answer, or the error that refused it, and the model that answered.
SIGNATURE = ModelSignature(inputs=Schema([ColSpec("string")]),
                           outputs=Schema([ColSpec("string", name, required=False)
                                           for name in ("answer", "error", "model")]))
MAX_ROWS = 1_000  # per request; more is a 413 before any model runs
MAX_BODY_BYTES = 1 << 20  # `adder serve` refuses a larger request body (413) before reading it into JSON
SHOWN_CHARS = 40  # an error quotes at most this much of an expression


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


def shown(expression: str) -> str:
    return repr(expression if len(expression) <= SHOWN_CHARS else expression[:SHOWN_CHARS - 3] + "...")


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

        import pipeline.models  # noqa: F401  registers the custom layers (PositionalEmbedding) before loading

        members = getattr(self, "members", None) or [{"name": "model", "prefix": ""}]
        self.ready([(member["name"], keras.models.load_model(context.artifacts[f"{member['prefix']}model"], compile=False),
                     load_codec(Path(context.artifacts[f"{member['prefix']}codec"]))) for member in members])

    def ready(self, served: list[tuple[str, object, Codec]]) -> AdderModel:
        """Attaches loaded (name, model, codec) members; set here, not in __init__, so they are never pickled."""
        self.served = served
        self.lock = threading.Lock()  # the scoring server predicts from a thread pool; Keras models are not thread-safe
        return self

    # Typed as MLflow's schema check hands it over; a DataFrame hint also keeps MLflow from inferring a schema.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from pipeline.evaluate import predict_answers

        expressions = expressions_of(model_input)
        check_limits(expressions)
        routed = [self.route(expression) for expression in expressions]
        answers: list = [None] * len(routed)
        for member, (name, model, codec) in enumerate(self.served):
            rows = [row for row, (chosen, _) in enumerate(routed) if chosen == member]
            if rows:
                with self.lock:
                    for row, answer in zip(rows, predict_answers(model, codec, [routed[row][1] for row in rows])):
                        answers[row] = str(answer)
        return pd.DataFrame({"answer": answers,
                             "error": [None if chosen is not None else error for chosen, error in routed],
                             "model": [None if chosen is None else self.served[chosen][0] for chosen, _ in routed]},
                            dtype=object)

    def route(self, expression) -> tuple[int | None, str]:
        """(member, canonical expression) for the first member whose grammar accepts it, else (None, error)."""
        if not isinstance(expression, str):
            return None, f"expected a string, got {type(expression).__name__}"
        refusals = []
        for member, (name, _, codec) in enumerate(self.served):
            try:
                return member, codec.check(expression)
            except AdderError as e:
                refusals.append((name, str(e)))
        return None, refusal(expression, refusals)


def refusal(expression: str, refusals: list[tuple[str, str]]) -> str:
    """One member's reason as it is; of several, those that parsed the expression (wrong size or range),
    else that none of their grammars accepts it."""
    if len(refusals) == 1:
        return refusals[0][1]
    specific = [f"{name}: {reason}" for name, reason in refusals if not reason.startswith(("malformed", "empty"))]
    if specific:
        return "; ".join(specific)
    return "empty expression" if not expression.strip() else f"malformed expression {shown(expression)}: no served model's grammar accepts it"


def expressions_of(model_input) -> list:
    """The expressions in what MLflow hands over: a one-column DataFrame (what its schema check makes of a
    request), or a list, Series or array when called directly."""
    if isinstance(model_input, pd.DataFrame):
        model_input = model_input.iloc[:, 0]
    return np.asarray(model_input, dtype=object).reshape(-1).tolist()


def check_limits(expressions: list) -> None:
    """Refuses the whole request, before any parsing or model, if it has too many rows or too long a row."""
    if len(expressions) > MAX_ROWS:
        raise Refused(f"{len(expressions):,} expressions in one request; at most {MAX_ROWS:,}", 413)
    for number, expression in enumerate(expressions, 1):
        if isinstance(expression, str) and len(expression) > MAX_EXPRESSION_CHARS:
            raise Refused(f"expression #{number} has {len(expression):,} characters ({shown(expression)}); "
                          f"at most {MAX_EXPRESSION_CHARS:,}")


# --- `adder serve`: MLflow's scoring server behind a cap on the request body


def limit_body(app, limit: int = MAX_BODY_BYTES):
    """An ASGI app that answers a POST whose body exceeds `limit` bytes with a 413, reading no more of it
    than that (by Content-Length, else while it streams in), before `app` parses anything."""

    async def limited(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > limit:
            return await refuse(send, 413 if declared.isdigit() else 400)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > limit:
                return await refuse(send, 413)
            more = message.get("more_body", False)
        replay = [{"type": "http.request", "body": body, "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        await app(scope, replayed, send)

    async def refuse(send, status: int):
        error = {413: ("REQUEST_LIMIT_EXCEEDED", f"request body over {limit:,} bytes"),
                 400: ("BAD_REQUEST", "bad Content-Length")}[status]
        content = f'{{"error_code": "{error[0]}", "message": "{error[1]}"}}'.encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": content})

    return limited


def serve(uri: str, host: str, port: int, tracking_uri: str) -> None:
    """Serves uri with MLflow's scoring server (what `mlflow models serve --env-manager local` runs: this
    environment already holds every requirement) behind limit_body, until interrupted."""
    import uvicorn
    from mlflow.pyfunc.scoring_server import init

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    try:
        model = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as e:
        raise AdderError(f"cannot load {uri}: {str(e).strip().splitlines()[0][:200]}") from None
    uvicorn.run(limit_body(init(model)), host=host, port=port, log_level="warning")


# What the served model imports besides its Keras backend; pinned so that MLflow need not infer them (slow)
# and a served copy matches.
REQUIREMENTS = ("mlflow", "keras", "numpy", "pandas", "scikit-learn", "pydantic", "pyyaml")


def log_serving_model(members: list[tuple[str, Path, float | None]], example: str, backend: str,
                      name: str = "serving") -> str:
    """Logs pipeline.serving's pyfunc over members (name, model folder holding model.keras and codec.json,
    test exact match), best first, with the pipeline package itself, so it loads in a fresh process;
    returns the model URI."""
    from pipeline.backend import REQUIREMENTS as BACKEND_REQUIREMENTS
    from pipeline.tracking import pinned

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
        pip_requirements=pinned(*REQUIREMENTS, *BACKEND_REQUIREMENTS[backend]),
    )
    return info.model_uri


# --- adder-all: every task's champion behind one endpoint, rebuilt whenever a champion moves

MEMBERS_TAG = "members"  # on an adder-all version: its members' versions, "adder-add3/4,adder-ops/2"
BUILD_TRIES = 3


def publish_all_families(root: Path, backend: str) -> str | None:
    """Registers a version of adder-all serving every task's champion (the best-scoring first) and points its
    alias `champion` at it, unless it already serves exactly those; returns its version, None without
    champions. Reads the champions back afterwards and builds again if one moved meanwhile."""
    from pipeline import tracking

    client = mlflow.MlflowClient()
    for _ in range(BUILD_TRIES):
        members = tracking.champions(client)
        if not members:
            return None
        wanted = ",".join(f"{m['name']}/{m['version']}" for m in members)
        try:
            current = client.get_model_version_by_alias(tracking.ALL_FAMILIES, tracking.CHAMPION)
            if current.tags.get(MEMBERS_TAG) == wanted:
                return str(current.version)
        except MlflowException:
            pass  # none yet
        build_all_families(root, client, members, wanted, backend)
    return str(client.get_model_version_by_alias(tracking.ALL_FAMILIES, tracking.CHAMPION).version)


def build_all_families(root: Path, client, members: list[dict], wanted: str, backend: str) -> None:
    import tempfile

    from pipeline import tracking

    tracking.open_experiment(tracking.SERVED, None if tracking.tracking_uri(root).startswith("http")
                                          else (root / "mlartifacts").as_uri())
    experiment_id = mlflow.get_experiment_by_name(tracking.SERVED).experiment_id
    with tempfile.TemporaryDirectory(prefix="adder-all-") as tmp, \
            mlflow.start_run(experiment_id=experiment_id, run_name=tracking.ALL_FAMILIES,
                             tags={tracking.NOTE: f"Serves {wanted.replace(',', ', ')}."}) as run:
        folders = [Path(mlflow.artifacts.download_artifacts(f"models:/{m['name']}/{m['version']}",
                                                            dst_path=f"{tmp}/{i}")) / "artifacts"
                   for i, m in enumerate(members)]
        example = load_codec(folders[0] / "codec.json").limits.example
        uri = log_serving_model([(f"models:/{m['name']}/{m['version']}", folder, m["exact_match"])
                                 for m, folder in zip(members, folders)], example, backend, name="serving-all")
    if not client.search_registered_models(filter_string=f"name = '{tracking.ALL_FAMILIES}'"):
        try:
            client.create_registered_model(tracking.ALL_FAMILIES, description=ALL_NOTE)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":  # else a concurrent evaluate made it
                raise
    version = client.create_model_version(tracking.ALL_FAMILIES, source=uri, run_id=run.info.run_id,
                                          model_id=uri.removeprefix("models:/"), tags={MEMBERS_TAG: wanted})
    client.update_model_version(tracking.ALL_FAMILIES, version.version, description=f"Serves {wanted.replace(',', ', ')}.")
    client.set_registered_model_alias(tracking.ALL_FAMILIES, tracking.CHAMPION, version.version)


ALL_NOTE = ("Every task's champion behind one endpoint: each expression goes to the champion whose grammar "
            "accepts it, the one with the higher test exact match first. A version per change of champions; "
            "its tag `members` lists them. The alias `champion` is the latest: what `adder serve` serves.")
