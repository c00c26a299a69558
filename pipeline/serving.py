"""The served model: an MLflow pyfunc that takes expressions as strings and answers each row on its own,
so `mlflow models serve` (or any MLflow tool) can use sequence models without knowing their codecs. It
holds one model (an experiment's `serving` model) or several (`adder-all`: every task's champion), each
expression going to the best-scoring one whose grammar accepts it."""

from __future__ import annotations

import json
import logging
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

from pipeline import registry, tracking
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
MAX_ERROR_CHARS = 200  # a row's error or a refusal is cut to this: 1,000 refused rows answer in well under 1 MB
MAX_DRAIN_BYTES = 64 << 20  # a body over MAX_BODY_BYTES is read and dropped up to this, so the client reads the 413
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


def shown(expression: str) -> str:
    return repr(expression if len(expression) <= SHOWN_CHARS else expression[:SHOWN_CHARS - 3] + "...")


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
                             "error": [None if chosen is not None else bounded(error) for chosen, error in routed],
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


# --- `adder serve`: MLflow's scoring server behind a guard that checks each request before MLflow parses it

FORMATS = ("inputs", "instances", "dataframe_split", "dataframe_records")  # MLflow's JSON request formats
logger = logging.getLogger("uvicorn.error")


def guarded(app, limit: int = MAX_BODY_BYTES, drain: int = MAX_DRAIN_BYTES):
    """An ASGI app in front of MLflow's scoring server `app`. A POST body over `limit` bytes is a 413, its
    rest read and dropped up to `drain` bytes so that a client still sending reads the 413 (not a reset
    connection). A request to /invocations is checked and parsed here, where MLflow would answer a missing
    Content-Type or deep JSON with a 500 and a traceback, quote a bad body whole, keep only a 2-D input's
    first column and turn null into "None": it must be UTF-8 JSON in one of MLflow's formats and one column,
    and MLflow gets only its string rows, as a one-column `dataframe_split` (the format it parses without
    coercing them); the other rows get their error here, in their place. Every error answered is one short
    line of JSON, whoever raised it."""

    async def guard(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        started = []

        async def sending(message):
            started.append(True)
            await send(message)

        try:
            return await checked(scope, receive, sending)
        except Exception:  # a bug: logged with its traceback, and the client gets the same short JSON as ever
            if started:
                raise
            logger.exception("%s %s failed", scope["method"], scope["path"])
            return await answer(send, 500, "internal error", close=True)

    async def checked(scope, receive, send):
        if scope["method"] != "POST":
            return await respond(send, *await run(app, scope, receive))
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and not declared.isdigit():
            return await answer(send, 400, "bad Content-Length", close=True)
        # A client that waits for "100 Continue" has sent nothing yet: refuse it before it does.
        if declared is not None and int(declared) > limit and (
                int(declared) > drain or headers.get(b"expect", b"").lower() == b"100-continue"):
            return await answer(send, 413, f"request body over {limit:,} bytes", close=True)
        body = await read(receive)
        if body is None:  # the client went away
            return
        if len(body) > limit:
            return await answer(send, 413, f"request body over {limit:,} bytes", close=True)
        if scope["path"] != "/invocations":
            return await respond(send, *await run(app, scope, replay(body, receive)))
        try:
            rows = request_rows(headers.get(b"content-type"), body)
            check_limits(rows)
        except Refused as e:
            return await answer(send, e.status, e.refusal)
        strings = [row for row in rows if isinstance(row, str)]
        if not strings:  # nothing for a model: no need to ask MLflow (which refuses an empty input)
            return await respond(send, 200, [], predictions(rows, []))
        forwarded = json.dumps({"dataframe_split": {"columns": ["expression"], "data": [[row] for row in strings]}})
        scope = {**scope, "headers": [(name, value) for name, value in scope["headers"] if name != b"content-length"]
                 + [(b"content-length", str(len(forwarded)).encode())]}
        status, response_headers, content = await run(app, scope, replay(forwarded.encode(), receive))
        if status == 200 and len(strings) < len(rows):
            content = predictions(rows, json.loads(content)["predictions"])
        return await respond(send, status, response_headers, content)

    async def read(receive) -> bytes | None:
        """The body, or None if the client went away; past `limit`, the rest is dropped, up to `drain`."""
        body, received, more = bytearray(), 0, True
        while more and received <= drain:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            received += len(chunk)
            if len(body) <= limit:
                body += chunk
            more = message.get("more_body", False)
        return bytes(body)

    return guard


def replay(body: bytes, receive):
    """An ASGI receive that hands over `body` whole, then whatever `receive` says (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed


async def run(app, scope, receive) -> tuple[int, list, bytes]:
    """`app`'s response (status, headers, body), kept here so that an error can be shortened before it goes."""
    response = {"status": 500, "headers": [], "body": bytearray()}

    async def keep(message):
        if message["type"] == "http.response.start":
            response["status"], response["headers"] = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            response["body"] += message.get("body", b"")

    await app(scope, receive, keep)
    return response["status"], response["headers"], bytes(response["body"])


async def respond(send, status: int, headers: list, content) -> None:
    """Sends a response: `content` as JSON if not bytes; any error as one short line of JSON."""
    if status >= 400:
        return await answer(send, status, error_message(content))
    if not isinstance(content, bytes):
        content, headers = json.dumps(content).encode(), [(b"content-type", b"application/json")]
    headers = [(name, value) for name, value in headers if name.lower() != b"content-length"]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(content)).encode())]})
    await send({"type": "http.response.body", "body": content})


async def answer(send, status: int, message: str, close: bool = False) -> None:
    """An error: {"error_code": ..., "message": ...} on one line, the message's first line cut short."""
    code = {404: "ENDPOINT_NOT_FOUND", 413: "REQUEST_LIMIT_EXCEEDED"}.get(
        status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
    lines = message.strip().splitlines()
    content = json.dumps({"error_code": code, "message": bounded(lines[0] if lines else "error")}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    # Connection: close where the body may be unread; the client then reads this and reconnects.
    await send({"type": "http.response.start", "status": status,
                "headers": headers + ([(b"connection", b"close")] if close else [])})
    await send({"type": "http.response.body", "body": content})


def error_message(content: bytes) -> str:
    """The message of an error MLflow (or FastAPI) answered: its JSON `message` (`detail`), else its text;
    without the request that MLflow quotes before an error in predict ("Failed to predict data '...'")."""
    try:
        parsed = json.loads(content)
    except (ValueError, RecursionError):
        parsed = None
    message = str(parsed.get("message", parsed.get("detail", ""))) if isinstance(parsed, dict) else \
        content.decode("utf-8", "replace")
    return message.rpartition("\nError: ")[2]


def predictions(rows: list, answered: list) -> dict:
    """The response: `answered` (the string rows' predictions, in order) with the other rows' errors in place."""
    expressions = sum(isinstance(row, str) for row in rows)
    if len(answered) != expressions:
        raise RuntimeError(f"{len(answered)} predictions for {expressions} expressions")
    strings = iter(answered)
    return {"predictions": [next(strings) if isinstance(row, str) else
                            {"answer": None, "error": not_a_string(row), "model": None} for row in rows]}


def request_rows(content_type: bytes | None, body: bytes) -> list:
    """The rows of a JSON request to /invocations, in order, each as JSON gave it (str, None, a number, ...);
    Refused (415 or 400, a short message) if it is not UTF-8 JSON, not in one of MLflow's formats, or not
    one column. `params` are ignored, as MLflow ignores them for a model that declares none."""
    if content_type is None:
        raise Refused("no Content-Type: send application/json", 415)
    mime, *parameters = [part.replace(" ", "").replace('"', "").lower()
                         for part in content_type.decode("latin-1").split(";")]
    if mime != "application/json" or any(p not in ("", "charset=utf-8") for p in parameters):
        raise Refused(f"Content-Type {shown(content_type.decode('latin-1'))}: send application/json (UTF-8)", 415)
    try:
        payload = json.loads(body)
    except RecursionError:
        raise Refused("JSON nested too deeply") from None
    except json.JSONDecodeError as e:  # its msg says what, never the text
        raise Refused(f"not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except ValueError as e:  # not UTF-8, or an integer of more digits than Python converts
        raise Refused(f"not JSON: {bounded(str(e).splitlines()[0] if str(e) else type(e).__name__, 100)}") from None
    keys = [key for key in FORMATS if isinstance(payload, dict) and key in payload]
    if len(keys) != 1:
        raise Refused(f"expected a JSON object with one of {', '.join(FORMATS)}")
    data = payload[keys[0]]
    if keys[0] == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("data"), list) or \
                set(data) - {"columns", "data", "index"}:
            raise Refused("dataframe_split takes data (a list of rows), and optionally columns and index")
        if "columns" in data and (not isinstance(data["columns"], list) or len(data["columns"]) != 1):
            raise Refused(f"{ONE_COLUMN}; dataframe_split's columns must name one")
        data = data["data"]
    elif keys[0] == "dataframe_records":
        if not isinstance(data, list) or not all(isinstance(record, dict) for record in data):
            raise Refused("dataframe_records takes a list of objects")
        if len({name for record in data for name in record}) > 1:
            raise Refused(f"{ONE_COLUMN}; the records name more than one")
    elif isinstance(data, dict):  # {"inputs": {"name": [...]}}: named columns
        if len(data) != 1:
            raise Refused(f"{ONE_COLUMN}; got {len(data):,} columns")
        data = next(iter(data.values()))
    rows = data if isinstance(data, list) else [data]  # a single value is one row, as MLflow takes it
    if len(rows) > MAX_ROWS:  # before looking at each one
        raise Refused(f"{len(rows):,} expressions in one request; at most {MAX_ROWS:,}", 413)
    return [cell(row, number) for number, row in enumerate(rows, 1)]


def cell(row, number: int):
    """A row's one value: the row itself, or the single value of a one-item list or object."""
    if isinstance(row, (list, dict)):
        if len(row) != 1:
            raise Refused(f"{ONE_COLUMN}; row #{number:,} has {len(row):,} values")
        return row[0] if isinstance(row, list) else next(iter(row.values()))
    return row


def serve(uri: str, host: str, port: int, tracking_uri: str) -> None:
    """Serves uri with MLflow's scoring server (what `mlflow models serve --env-manager local` runs: this
    environment already holds every requirement) behind guarded, until interrupted."""
    import uvicorn
    from mlflow.pyfunc.scoring_server import init

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    try:
        model = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as e:
        raise AdderError(f"cannot load {uri}: {str(e).strip().splitlines()[0][:200]}") from None
    uvicorn.run(guarded(init(model)), host=host, port=port, log_level="warning")


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


# --- adder-all: every task's champion behind one endpoint, rebuilt whenever a champion moves

MEMBERS_TAG = "members"  # on an adder-all version: its members' versions, "adder-add3/4,adder-ops/2"
BUILD_TRIES = 3


def publish_all_families(root: Path, backend: str) -> str | None:
    """Registers a version of adder-all serving every task's champion (the best-scoring first) and points its
    alias `champion` at it, unless it already serves exactly those; returns its version, None without
    champions. Reads the champions back afterwards and builds again if one moved meanwhile."""
    client = mlflow.MlflowClient()
    for _ in range(BUILD_TRIES):
        members = registry.champions(client)
        if not members:
            return None
        wanted = ",".join(f"{m['name']}/{m['version']}" for m in members)
        try:
            current = client.get_model_version_by_alias(registry.ALL_FAMILIES, registry.CHAMPION)
            if current.tags.get(MEMBERS_TAG) == wanted:
                return str(current.version)
        except MlflowException:
            pass  # none yet
        build_all_families(root, client, members, wanted, backend)
    return str(client.get_model_version_by_alias(registry.ALL_FAMILIES, registry.CHAMPION).version)


def build_all_families(root: Path, client, members: list[dict], wanted: str, backend: str) -> None:
    import tempfile

    tracking.open_experiment(tracking.SERVED, None if tracking.tracking_uri(root).startswith("http")
                                          else (root / "mlartifacts").as_uri())
    experiment_id = mlflow.get_experiment_by_name(tracking.SERVED).experiment_id
    with tempfile.TemporaryDirectory(prefix="adder-all-") as tmp, \
            mlflow.start_run(experiment_id=experiment_id, run_name=registry.ALL_FAMILIES,
                             tags={tracking.NOTE: f"Serves {wanted.replace(',', ', ')}."}) as run:
        folders = [Path(mlflow.artifacts.download_artifacts(f"models:/{m['name']}/{m['version']}",
                                                            dst_path=f"{tmp}/{i}")) / "artifacts"
                   for i, m in enumerate(members)]
        example = load_codec(folders[0] / "codec.json").limits.example
        uri = log_serving_model([(f"models:/{m['name']}/{m['version']}", folder, m["exact_match"])
                                 for m, folder in zip(members, folders)], example, backend, name="serving-all")
    if not client.search_registered_models(filter_string=f"name = '{registry.ALL_FAMILIES}'"):
        try:
            client.create_registered_model(registry.ALL_FAMILIES, description=ALL_NOTE)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":  # else a concurrent evaluate made it
                raise
    version = client.create_model_version(registry.ALL_FAMILIES, source=uri, run_id=run.info.run_id,
                                          model_id=uri.removeprefix("models:/"), tags={MEMBERS_TAG: wanted})
    client.update_model_version(registry.ALL_FAMILIES, version.version, description=f"Serves {wanted.replace(',', ', ')}.")
    client.set_registered_model_alias(registry.ALL_FAMILIES, registry.CHAMPION, version.version)


ALL_NOTE = ("Every task's champion behind one endpoint: each expression goes to the champion whose grammar "
            "accepts it, the one with the higher test exact match first. A version per change of champions; "
            "its tag `members` lists them. The alias `champion` is the latest: what `adder serve` serves.")
