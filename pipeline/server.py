"""`adder serve`: MLflow's scoring server (what `mlflow models serve --env-manager local` runs) behind a
guard that checks each request before MLflow parses it."""

from __future__ import annotations

import json
import logging
import os

import mlflow.pyfunc
from mlflow.exceptions import MlflowException

from pipeline.errors import AdderError
from pipeline.expressions import shown
from pipeline.serving import MAX_ROWS, ONE_COLUMN, Refused, bounded, check_limits, not_a_string

MAX_BODY_BYTES = 1 << 20  # a larger request body is refused (413) before it is read into JSON
MAX_DRAIN_BYTES = 64 << 20  # a body over MAX_BODY_BYTES is read and dropped up to this, so the client reads the 413

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
