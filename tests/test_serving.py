"""Serving: the string-in, string-out pyfunc, the champion decision, and `adder serve` over real HTTP.

Unit tests use a stand-in model that reads the encoded expressions back and answers them exactly, so they
need no TensorFlow. The end-to-end test trains a tiny model in a temporary project, serves its champion on
a free local port and load-tests it from concurrent clients."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import subprocess
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import BIN, CODEC, ExactModel, adder, candidate, cli_env, free_port, shown
from mlflow.exceptions import MlflowException

from pipeline.codec import CharCodec, Limits
from pipeline.errors import AdderError
from pipeline.registry import beats, best_champion, register_and_crown, served_model_uri
from pipeline.server import guarded
from pipeline.serving import MAX_ERROR_CHARS, MAX_ROWS, ONE_COLUMN, SIGNATURE, AdderModel


def served() -> AdderModel:
    return AdderModel().ready([("add2", ExactModel(CODEC), CODEC)])


def answered(*answers: str, model: str = "add2") -> list[dict]:
    return [{"answer": answer, "error": None, "model": model} for answer in answers]


# --------------------------------------------------------------------------------------------------
# the pyfunc's predict: one row out per expression


@pytest.mark.parametrize("given", [["12+50", " 3 + 4", "99+99"], pd.Series(["12+50", " 3 + 4", "99+99"]),
                                   pd.DataFrame({"expression": ["12+50", " 3 + 4", "99+99"]})])
def test_pyfunc_answers_expressions_with_strings(given):
    assert served().predict(None, given).to_dict("records") == answered("62", "7", "198")


def test_pyfunc_answers_nothing_for_no_expressions():
    assert served().predict(None, []).to_dict("records") == []


@pytest.mark.parametrize("bad, says", [("12++50", "malformed expression '12++50'"), ("", "empty expression"),
                                       ("123+4", "operands must be in 0..99"), ("1+2+3", "has 3 terms"),
                                       (None, "expected a string, got null"), ("１+2", "malformed expression"),
                                       (float("nan"), "expected a string, got null"),
                                       (7, "expected a string, got number")])
def test_a_bad_row_gets_its_own_error_and_the_good_rows_their_answers(bad, says):
    rows = served().predict(None, ["12+50", bad, "3+4"]).to_dict("records")
    assert rows[0] == answered("62")[0] and rows[2] == answered("7")[0]
    assert rows[1]["answer"] is None and rows[1]["model"] is None and says in rows[1]["error"]


def test_limits_refuse_the_whole_request_before_any_model_runs():
    model = AdderModel().ready([("add2", None, CODEC)])  # no model: a limit must refuse before one is needed
    with pytest.raises(MlflowException) as raised:
        model.predict(None, ["1+1"] * (MAX_ROWS + 1))
    assert raised.value.get_http_status_code() == 413 and "at most 1,000" in raised.value.message
    with pytest.raises(MlflowException) as raised:
        model.predict(None, ["1+1", "7" * 200_000])
    # A 400 whose message quotes a short prefix, not the 200,000 characters.
    assert raised.value.get_http_status_code() == 400 and len(raised.value.message) < 200, raised.value.message
    assert raised.value.message.startswith("expression #2 has 200,000 characters ('7777")


@pytest.mark.parametrize("given", [pd.DataFrame({"a": ["12+50", "3+4"], "b": ["1+1", "2+2"]}), [["12+50", "1+1"]],
                                   np.array([[["12+50"]]], dtype=object)], ids=["dataframe", "2-D list", "3-D array"])
def test_more_than_one_column_is_refused_not_cut_to_the_first_or_flattened(given):
    with pytest.raises(MlflowException) as raised:
        served().predict(None, given)
    assert raised.value.get_http_status_code() == 400 and raised.value.message.startswith(ONE_COLUMN)


class WideCodec:
    """Refuses every expression as Limits.check words a range of 1,000-digit operands: its bound in full."""

    def check(self, expression: str) -> str:
        raise AdderError(f"{expression[:37]!r}...: operands must be in 0..{10 ** 1000 - 1} for this model")


def test_every_row_error_is_cut_short_whatever_a_codec_says():
    model = AdderModel().ready([("wide", None, WideCodec()), ("add2", ExactModel(CODEC), CODEC)])
    rows = model.predict(None, ["9" * 1000 + "+1"] * MAX_ROWS).to_dict("records")
    assert all(len(row["error"]) <= MAX_ERROR_CHARS and row["error"].endswith("...") for row in rows), rows[0]
    assert rows[0]["error"].startswith("wide: '99999") and "operands must be in 0..999" in rows[0]["error"]
    # 1,000 rows of a 1 MB request: a response a quarter of its size, not 1.2 MB (2.8 MB in a real model's words).
    assert len(json.dumps({"predictions": rows})) < 300_000


def test_each_expression_goes_to_the_first_member_whose_grammar_accepts_it():
    small = CharCodec(Limits(terms=2, low=1, high=10), encoding="integer")  # listed first: it scores higher
    three = CharCodec(Limits(terms=3, low=0, high=99), encoding="integer")
    model = AdderModel().ready([("small", ExactModel(small), small), ("add2", ExactModel(CODEC), CODEC),
                                ("add3", ExactModel(three), three)])
    rows = model.predict(None, ["3+4", "12+50", "1+2+3", "1+2+3+4", "1++2", "100+1"]).to_dict("records")
    assert [(r["answer"], r["model"]) for r in rows[:3]] == [("7", "small"), ("62", "add2"), ("6", "add3")]
    assert all(r["answer"] is None and r["model"] is None for r in rows[3:])
    # Refused by all: the reasons of the members that parsed it, or that no grammar accepts it.
    assert "small: '1+2+3+4' has 4 terms" in rows[3]["error"] and "add3: '1+2+3+4' has 4 terms" in rows[3]["error"]
    assert rows[4]["error"] == "malformed expression '1++2': no served model's grammar accepts it"
    assert "add2: '100+1': operands must be in 0..99" in rows[5]["error"]


# --------------------------------------------------------------------------------------------------
# `adder serve`'s app (MLflow's scoring server behind guarded) over real HTTP, serving the stand-in

JSON = {"Content-Type": "application/json"}
# What a security probe sent: (id, body, headers, status, what the one-line message says).
PROBES = [
    ("no content type", b'{"inputs": ["12+50"]}', {}, 415, "no Content-Type"),
    ("text/csv", b"12+50\n1+1\n", {"Content-Type": "text/csv"}, 415, "send application/json"),
    ("deep json", ('{"inputs": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(), JSON, 400, "nested too deeply"),
    ("2-D inputs", json.dumps({"inputs": [["12+50", "1+1"]]}).encode(), JSON, 400, ONE_COLUMN),
    ("2-column split", json.dumps({"dataframe_split": {"columns": ["a", "b"], "data": [["12+50", "1+1"]]}}).encode(),
     JSON, 400, ONE_COLUMN),
    ("2-column records", json.dumps({"dataframe_records": [{"a": "12+50", "b": "1+1"}]}).encode(), JSON, 400,
     ONE_COLUMN),
    ("1 MB not json", b"x" * 1_000_000, JSON, 400, "not JSON: Expecting value at line 1 column 1"),
    ("not utf-8", b'{"inputs": ["\xff"]}', JSON, 400, "not JSON"),
    ("a list", b'["12+50"]', JSON, 400, "expected a JSON object with one of inputs"),
]


class StandIn(AdderModel):
    """The stand-in, logged as a pyfunc: MLflow loads it and calls load_context, as it does a trained model."""

    def load_context(self, context) -> None:
        self.ready([("add2", ExactModel(CODEC), CODEC)])


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> str:
    """What `adder serve` runs, guarded(init(model)), over the stand-in under uvicorn in a thread on a free port:
    a real server up in a second, with no training. Its log goes to the root logger, where caplog sees it."""
    import uvicorn
    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT
    from mlflow.pyfunc.scoring_server import init

    path = tmp_path_factory.mktemp("stand-in") / "model"
    with warnings.catch_warnings():  # that it has no input example: it needs none
        warnings.simplefilter("ignore")
        mlflow.pyfunc.save_model(path, python_model=StandIn(), signature=SIGNATURE, pip_requirements=[])
    before = os.environ.get(_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name)
    app = guarded(init(mlflow.pyfunc.load_model(str(path))))
    if before is None:  # init sets it for the whole process; the other tests here are not serving
        os.environ.pop(_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name, None)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the stand-in server did not start"
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(10)


def probed(url: str, body: bytes, headers: dict, status: int, says: str) -> None:
    """The probe is refused with `status` and one short line of JSON saying `says`."""
    import requests

    response = requests.post(f"{url}/invocations", data=body, headers=headers, timeout=60)
    assert response.status_code == status and len(response.content) < 300, (response.status_code, response.text[:300])
    assert "\n" not in response.text and set(response.json()) == {"error_code", "message"}, response.text
    assert says in response.json()["message"], response.text


@pytest.mark.parametrize("body, headers, status, says", [probe[1:] for probe in PROBES], ids=[p[0] for p in PROBES])
def test_a_malformed_request_gets_a_short_4xx_and_logs_no_traceback(stand_in, caplog, body, headers, status, says):
    with caplog.at_level(logging.WARNING):
        probed(stand_in, body, headers, status, says)
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()], caplog.text[-3000:]


def test_a_row_that_is_not_a_string_gets_its_own_error_in_its_place(stand_in):
    import requests

    def null(kind: str = "null") -> dict:
        return {"answer": None, "error": f"expected a string, got {kind}", "model": None}

    rows = ["12+50", None, "3+4", True, 7, [["1+1"]]]
    expected = answered("62") + [null()] + answered("7") + [null("boolean"), null("number"), null("array")]
    for payload in ({"inputs": rows}, {"instances": rows}, {"dataframe_records": [{"e": r} for r in rows]},
                    {"dataframe_split": {"columns": ["e"], "data": [[r] for r in rows]}}):
        assert rows_of(requests.post(f"{stand_in}/invocations", json=payload, timeout=10)) == expected, payload
    # No string at all, or no row: answered without a model (MLflow would refuse an empty input).
    assert rows_of(requests.post(f"{stand_in}/invocations", json={"inputs": [None]}, timeout=10)) == [null()]
    assert rows_of(requests.post(f"{stand_in}/invocations", json={"inputs": []}, timeout=10)) == []


def refused_while_sending(url: str, chunked: bool = False) -> None:
    """http.client sends a 10 MB body (declared, or chunked without a length) and reads the 413."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    body = b"x" * 10_000_000
    try:
        if chunked:
            connection.request("POST", "/invocations", body=(body[i:i + 1 << 20] for i in range(0, len(body), 1 << 20)),
                               headers=JSON, encode_chunked=True)
        else:
            connection.request("POST", "/invocations", body=body, headers=JSON)
        response = connection.getresponse()
        assert response.status == 413 and b"request body over 1,048,576 bytes" in response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_far_over_the_limit_gets_a_413_the_client_reads_not_a_reset(stand_in, chunked):
    import requests

    refused_while_sending(stand_in, chunked)
    assert rows_of(requests.post(f"{stand_in}/invocations", json={"inputs": ["3+4"]}, timeout=10)) == answered("7")


# --------------------------------------------------------------------------------------------------
# the champion decision, against a real registry in a temporary sqlite store


def test_only_a_strictly_higher_score_beats_the_champion():
    assert beats(0.5, None)
    assert beats(0.81, 0.8)
    assert not beats(0.8, 0.8)
    assert not beats(0.7, 0.8)


def test_champion_moves_only_to_a_higher_score_on_the_same_test_set(registry):
    scored = [candidate("add3", 0.5), candidate("add3", 0.7), candidate("add3", 0.7), candidate("add3", 0.6),
              candidate("add3", 0.4, test_sha256="another test set")]
    decisions = [decision for _, decision in scored]
    assert [(d["version"], d["decision"]) for d in decisions] == [
        ("1", "promoted"), ("2", "promoted"), ("3", "kept"), ("4", "kept"), ("5", "promoted")]
    assert [d["champion_exact_match"] for d in decisions] == [None, 0.5, 0.7, 0.7, 0.7]
    assert str(registry.get_model_version_by_alias("adder-add3", "champion").version) == "5"
    # The decision and both figures are on the candidate's run.
    kept = registry.get_run(registry.get_model_version("adder-add3", "4").run_id).data
    assert kept.tags["registry.decision"] == "kept" and kept.tags["registry.champion_version"] == "2"
    assert (kept.metrics["registry.candidate_exact_match"] == 0.6
            and kept.metrics["registry.champion_exact_match"] == 0.7)
    first = registry.get_run(registry.get_model_version("adder-add3", "1").run_id).data
    assert "registry.champion_exact_match" not in first.metrics


def test_scoring_the_same_run_again_reuses_its_version(registry):
    _, first = candidate("add3", 0.5)
    run_id = registry.get_model_version("adder-add3", first["version"]).run_id
    with mlflow.start_run(run_id=run_id):
        again = register_and_crown("add3", "models:/unused", run_id, 0.5, "same test set")
    # The champion scored again keeps its decision as it was made (not rewritten to "kept").
    assert (again["version"], again["decision"], again["reason"]) == ("1", "promoted", "no champion yet")
    assert [str(v.version) for v in registry.search_model_versions("name = 'adder-add3'")] == ["1"]


def test_default_served_model_is_the_champion_of_the_best_task(registry):
    with pytest.raises(AdderError, match="no champion in the model registry yet"):
        best_champion()
    candidate("add3", 0.9)
    candidate("terms", 0.95)
    candidate("ops", 0.5)
    assert best_champion() == "models:/adder-terms@champion"


def test_serving_a_task_without_a_champion_is_a_one_line_error(registry, tmp_path):
    with pytest.raises(AdderError, match=r"^no model at models:/adder-nosuch@champion: [^\n]*$"):
        served_model_uri(tmp_path, "nosuch")


# --------------------------------------------------------------------------------------------------
# end to end: a tiny model trained, registered, served and load-tested

TASK, EXPERIMENT = "add2", "add2-seq2seq"
TINY = {
    "seed": 1,
    "backend": "jax",
    "tasks": {TASK: {"terms": 2, "digits": 2, "train_size": 200, "val_size": 20, "test_size": 50}},
    "experiments": {EXPERIMENT: {"task": TASK, "model": "seq2seq", "units": [16, 8], "epochs": 2,
                                 "samples_per_epoch": 100, "batch_size": 20}},
}
# A second family for the one endpoint: 1-digit operands joined by +, - or *.
OPS_TASK, OPS = "ops", "ops-seq2seq"
FAMILIES = {**TINY, "tasks": {**TINY["tasks"], OPS_TASK: {"terms": 2, "digits": 1, "ops": "+-*", "train_size": 200,
                                                          "val_size": 20, "test_size": 50}},
            "experiments": {**TINY["experiments"], OPS: {**TINY["experiments"][EXPERIMENT], "task": OPS_TASK}}}
REQUESTS, CLIENTS, DEADLINE_S = 2000, 8, 90


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A temporary project with two tiny sequence experiments of two tasks trained, evaluated and registered,
    and adder-all built over their champions."""
    folder = tmp_path_factory.mktemp("adder-serving")
    (folder / "params.yaml").write_text(yaml.safe_dump(FAMILIES, sort_keys=False))
    for step in (["generate", TASK], ["generate", OPS_TASK], ["train", EXPERIMENT], ["train", OPS],
                 ["evaluate", EXPERIMENT, OPS]):
        started = time.monotonic()  # the steps' times are printed (pytest -s): most of this test's time
        result = adder(*step, cwd=folder)
        assert result.returncode == 0, shown(result)
        print(f"\nadder {' '.join(step)}: {time.monotonic() - started:.1f}s", end="")
    for task in (TASK, OPS_TASK):
        assert f"adder-{task} version 1: promoted" in result.stdout, shown(result)
    return folder


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def wait_until_up(self, timeout: float = 120) -> str:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"adder serve exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return self.url
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        pytest.fail(f"adder serve not up after {timeout}s:\n{self.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(project):
    """`adder serve` (the default model: the best task's champion) on a free local port, stopped afterwards.
    It starts in the background, so tests do other work while it loads: call wait_until_up()."""
    port = free_port()
    log = project / "serve.log"
    with log.open("w") as out:
        # A session of its own, so that teardown stops the server and the uvicorn process it starts.
        process = subprocess.Popen([str(BIN / "adder"), "serve", "--port", str(port)], cwd=project, env=cli_env(),
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield Server(f"http://127.0.0.1:{port}", process, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def members(project: Path) -> list[tuple[str, object, object]]:
    """adder-all's members as `adder serve` orders them (higher test exact match first, then by name), each
    (name, model, codec) loaded here from models/<experiment>/ without MLflow."""
    from pipeline.model_folder import load_trained

    ranked = sorted((-json.loads((project / "metrics" / f"{exp}.json").read_text())["exact_match"],
                     f"adder-{task}", exp)
                    for task, exp in ((TASK, EXPERIMENT), (OPS_TASK, OPS)))
    return [(f"models:/{name}/1", *load_trained(project / "models" / exp)) for _, name, exp in ranked]


def expected_rows(project: Path, expressions: list[str]) -> dict[str, dict]:
    """The row the endpoint owes each expression: the first member whose grammar accepts it answers it, as
    its model answers it here; the others are refused (their error is checked in the test)."""
    from pipeline.errors import AdderError
    from pipeline.evaluate import predict_answers

    rows = {}
    served = members(project)
    for expression in expressions:
        for name, model, codec in served:
            try:
                checked = codec.check(expression)
            except AdderError:
                continue
            rows[expression] = {"answer": str(predict_answers(model, codec, [checked])[0]), "error": None,
                                "model": name}
            break
        else:
            rows[expression] = None
    return rows


def invoke(session, url: str, payload: dict):
    return session.post(f"{url}/invocations", json=payload, timeout=10)


@pytest.mark.e2e
def test_serve_without_a_model_or_a_tracking_server_is_a_one_line_error(project, server):
    # `server` only starts loading here; these failures run meanwhile.
    cases = ((["nosuch"], cli_env(), "no model at models:/adder-nosuch@champion"),
             ([], cli_env(f"http://127.0.0.1:{free_port()}"), "unreachable"))
    with ThreadPoolExecutor(len(cases)) as pool:  # each spends its time importing MLflow: overlap them
        results = list(pool.map(lambda case: adder("serve", *case[0], cwd=project, env=case[1], timeout=120), cases))
    for result, (_, _, says) in zip(results, cases):
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), shown(result)
        assert says in lines[0], shown(result)


def rows_of(response) -> list[dict]:
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


@pytest.mark.e2e
def test_one_endpoint_answers_every_family_row_by_row_and_survives_load(project, server):
    import requests

    sums = ["12+50", "3+4", "99+99", " 7 + 10"] + [f"{a}+{b}" for a in range(1, 100, 7) for b in range(2, 100, 13)]
    ops = [f"{a}{op}{b}" for a in range(10) for b in (0, 3, 9) for op in "-*"]
    bad = ["1++1", "123+4", "", "7/2", "1*2*3"]
    expected = expected_rows(project, sums + ops + bad)  # while the server loads
    assert {row["model"] for e in ops if (row := expected[e])} == {f"models:/adder-{OPS_TASK}/1"}
    assert all(expected[e] is None for e in bad)
    started = time.monotonic()
    url = server.wait_until_up()
    print(f"\nadder serve: up {time.monotonic() - started:.1f}s later", end="")
    session = requests.Session()

    # Every family from one endpoint, each row answered by the member whose grammar accepts it.
    assert rows_of(invoke(session, url, {"inputs": ["12+50", "7*9", "9-3"]})) == [
        expected["12+50"], expected["7*9"], expected["9-3"]]
    assert rows_of(invoke(session, url, {"dataframe_split": {"columns": ["expression"], "data": [["3+4"], ["99+99"]]}})
                   ) == [expected["3+4"], expected["99+99"]]
    # Bad rows beside good ones: each bad row its own error, each good row its answer.
    rows = rows_of(invoke(session, url, {"inputs": ["3+4", "12++50", "123+4", "", "99+99"]}))
    assert [rows[0], rows[4]] == [expected["3+4"], expected["99+99"]], rows
    assert all(r["answer"] is None and r["model"] is None for r in rows[1:4]), rows
    assert rows[1]["error"] == "malformed expression '12++50': no served model's grammar accepts it", rows
    assert f"models:/adder-{TASK}/1: '123+4': operands must be in 0..99 for this model" in rows[2]["error"], rows
    assert rows[3]["error"] == "empty expression", rows
    # Malformed as a whole, or beyond the limits: refused, in a short body; the server goes on answering.
    for payload, status in (('{"inputs": ', 400), ('{"nothing": ["3+4"]}', 400),
                            (json.dumps({"inputs": ["1+1"] * 1001}), 413),
                            (json.dumps({"inputs": ["9" * 200_000]}), 400),
                            (json.dumps({"inputs": ["9" * 1_000_000]}), 400), ("x" * 10_000_000, 413)):
        response = session.post(f"{url}/invocations", data=payload, headers={"Content-Type": "application/json"},
                                 timeout=30)
        assert response.status_code == status and len(response.content) < 2_000, (status, response.text[:3000])
        assert rows_of(invoke(session, url, {"inputs": ["3+4"]})) == [expected["3+4"]]
    # What a security probe sent: each refused in one short line, a null row answered in its place, and a
    # client still sending a 10 MB body reads its 413.
    for _, body, headers, status, says in PROBES:
        probed(url, body, headers, status, says)
    assert rows_of(invoke(session, url, {"inputs": ["3+4", None]})) == [
        expected["3+4"], {"answer": None, "error": "expected a string, got null", "model": None}]
    refused_while_sending(url)

    # The load test: batches of 1 to 8 expressions of both families from concurrent clients, every 7th bad.
    good = sums + ops

    def one_request(i: int) -> tuple[str, float]:
        batch = [bad[(i + k) % len(bad)] if (i + k) % 7 == 0 else good[(i * 8 + k) % len(good)]
                 for k in range(1 + i % 8)]
        started = time.perf_counter()
        try:
            response = sessions[i % CLIENTS].post(f"{url}/invocations", json={"inputs": batch}, timeout=30)
        except requests.RequestException as e:
            print(f"\nlost: request {i}: {type(e).__name__}: {e}", end="")
            return "lost", time.perf_counter() - started
        seconds = time.perf_counter() - started
        if response.status_code != 200:
            return "wrong", seconds
        rows = response.json()["predictions"]
        ok = len(rows) == len(batch) and all(
            row == expected[e] if expected[e] else (row["answer"] is None and row["model"] is None and row["error"])
            for e, row in zip(batch, rows))
        return ("answered" if ok else "wrong"), seconds

    sessions = [requests.Session() for _ in range(CLIENTS)]
    started = time.monotonic()
    pool = ThreadPoolExecutor(CLIENTS)
    futures = [pool.submit(one_request, i) for i in range(REQUESTS)]
    done, late = wait(futures, timeout=DEADLINE_S)
    pool.shutdown(cancel_futures=True)  # past the deadline: drop what has not started, count it as lost
    elapsed = time.monotonic() - started
    results = [f.result() for f in done]
    outcomes = {kind: sum(1 for k, _ in results if k == kind) for kind in ("answered", "wrong", "lost")}
    outcomes["lost"] += len(late)
    latency_ms = np.array([s for _, s in results]) * 1000
    print(f"\nload test: {len(results)} requests ({sum(1 + i % 8 for i in range(REQUESTS))} expressions, both "
          f"families, every 7th bad) from {CLIENTS} clients in {elapsed:.1f}s ({len(results) / elapsed:.0f}/s): "
          f"{outcomes}; latency p50 {np.percentile(latency_ms, 50):.1f} ms, p99 {np.percentile(latency_ms, 99):.1f} ms")
    assert outcomes == {"answered": REQUESTS, "wrong": 0, "lost": 0}


@pytest.mark.e2e
def test_the_one_endpoint_is_registered_as_adder_all(project, server):
    """adder-all@champion, built by evaluate, lists both champions and loads with MLflow's own pyfunc loader."""
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    try:
        client = mlflow.MlflowClient()
        version = client.get_model_version_by_alias("adder-all", "champion")
        assert sorted(version.tags["members"].split(",")) == [f"adder-{TASK}/1", f"adder-{OPS_TASK}/1"]
        model = mlflow.pyfunc.load_model("models:/adder-all@champion")
        rows = model.predict(["12+50", "7*8", "1++1"]).to_dict("records")
        assert [r["model"] for r in rows] == [f"models:/adder-{TASK}/1", f"models:/adder-{OPS_TASK}/1", None]
    finally:
        mlflow.set_tracking_uri(None)
    result = adder("predict", "--model", "models:/adder-all@champion", "1+2", cwd=project)
    assert result.returncode == 2 and "serves several models, one per task" in result.stderr, shown(result)
