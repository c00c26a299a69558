"""The model registry: one registered model per task (adder-<task>), its best version under the alias
`champion`; adder-all, every task's champion behind one endpoint; and which model `adder serve` serves.
Only evaluate (which registers and crowns), retraining reports and the CLI use it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import mlflow

from pipeline import tracking
from pipeline.codec import load_codec
from pipeline.errors import AdderError
from pipeline.serving import log_serving_model

CHAMPION = "champion"


def registered_name(task: str) -> str:
    return f"adder-{task}"


def beats(candidate: float, champion: float | None) -> bool:
    """Only a strictly higher score takes the alias: a tie keeps the model already serving."""
    return champion is None or candidate > champion


def champion_of(client, name: str) -> dict | None:
    """The champion version of a registered model with the test figures logged to its run, or None."""
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None  # no such registered model, or no champion yet
    run = client.get_run(version.run_id)
    return {"version": str(version.version), "exact_match": run.data.metrics.get("test_exact_match"),
            "test_sha256": run.data.tags.get("test_sha256")}


# Promotion can be switched off, so that CI on a pull request registers candidates without moving any
# champion; `adder retrain-report --promote` (the main branch) switches it on and crowns what was held.
PROMOTE = "ADDER_PROMOTE"


def promotion_on() -> bool:
    """$ADDER_PROMOTE: unset or anything but 0/false/no/off lets evaluate move the champion alias."""
    return os.environ.get(PROMOTE, "1").strip().lower() not in ("0", "false", "no", "off")


# Registration can be switched off as well: CI on a pull request then records what each candidate would
# do without adding versions, of which every push would otherwise register one per sequence experiment.
REGISTER = "ADDER_REGISTER"


def registration_on() -> bool:
    """$ADDER_REGISTER: unset or anything but 0/false/no/off lets evaluate register new model versions."""
    return os.environ.get(REGISTER, "1").strip().lower() not in ("0", "false", "no", "off")


def register_and_crown(task: str, model_uri: str, run_id: str, exact_match: float, test_sha256: str,
                       labels: dict[str, str] | None = None) -> dict:
    """Registers model_uri as a new version of adder-<task>, tagged with labels (experiment, model, framing)
    and its test exact match; moves the champion alias to it only if it beats the champion's test exact
    match on the same test set, and promotion is on. Logs the decision to the active run."""
    client = mlflow.MlflowClient()
    name = registered_name(task)
    champion = champion_of(client, name)
    # Scoring the same run again (evaluate reruns for every experiment) reuses its version.
    registered = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if not registered and not registration_on():
        return crown(client, name, None, champion, exact_match, test_sha256, promote=False)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        try:
            client.create_registered_model(name, description=MODEL_NOTE.format(task=task))
        except mlflow.exceptions.MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":  # else a parallel evaluate (a queued sweep) made it
                raise
    # The client, unlike mlflow.register_model, prints nothing: the stage's stderr holds errors only.
    version = registered[0] if registered else client.create_model_version(
        name, source=model_uri, run_id=run_id, model_id=model_uri.removeprefix("models:/"))
    run = client.get_run(run_id)  # a sweep's versions differ by the DVC experiment that trained them
    sweep = {key: value for key, value in run.data.tags.items() if key in ("dvc_experiment", "dvc_changes")}
    describe_version(client, name, str(version.version), run.info.run_name,
                     {**(labels or {}), **sweep, "test_exact_match": f"{exact_match:.6g}"})
    link_version(client, version)
    return crown(client, name, str(version.version), champion, exact_match, test_sha256, promotion_on())


MODEL_NOTE = ("Models that answer `{task}` problems as strings, one version per scored experiment run; each "
              "version's tags name its experiment, model, framing and test exact match. The alias `champion` is "
              "the version with the highest test exact match.")


def describe_version(client, name: str, version: str, run_name: str, tags: dict[str, str]) -> None:
    """Tags a version and describes it in a sentence starting with its run's name (the experiment's, or in
    a sweep also the DVC experiment's), so the registered model's page tells versions apart."""
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    model = f" {tags['model']} ({tags['framing']});" if "model" in tags else ""
    client.update_model_version(name, version, description=f"{run_name}:{model} test exact match "
                                                           f"{float(tags['test_exact_match']):.2%}.")


VERSIONS_TAG = "mlflow.modelVersions"  # on a logged model: the registered versions made from it


def link_version(client, version) -> None:
    """Lists the version on its logged model, so the model's page shows it registered: a tracking server
    does that when it creates a version, the client on a local store does not."""
    model = client.get_logged_model(version.source.removeprefix("models:/"))
    versions = json.loads(model.tags.get(VERSIONS_TAG, "[]"))
    if not any((v["name"], str(v["version"])) == (version.name, str(version.version)) for v in versions):
        entry = {"name": version.name, "version": version.version}  # as mlflow.register_model writes it
        client.set_logged_model_tags(model.model_id, {VERSIONS_TAG: json.dumps([*versions, entry])})


def crown(client, name: str, version: str | None, champion: dict | None, exact_match: float, test_sha256: str,
          promote: bool) -> dict:
    """The champion decision for one version: "promoted", "kept" (it does not win), "held" (it wins
    but promotion is off), or "not registered" (no version: registration is off), whose reason still
    says whether it would win. Logs the decision and both figures to the active run."""
    holds = version is not None and champion is not None and champion["version"] == version
    if holds:  # scored again (evaluate reruns every experiment): it keeps the alias, and its decision
        decided = registry_decision(client, mlflow.active_run().info.run_id)
        if decided and decided["decision"] == "promoted":
            return decided
        wins, reason = True, "already the champion"
    elif champion is None or champion["exact_match"] is None:
        wins, reason = True, "no champion yet"
    elif champion["test_sha256"] != test_sha256:
        wins, reason = True, "the champion was scored on another test set"
    else:
        wins = beats(exact_match, champion["exact_match"])
        reason = "higher test exact match" if wins else "not higher than the champion's test exact match"
    if version is None:
        reason += f"; registration is off ({REGISTER}=0)"
    elif wins and promote and not holds:
        settled, displaced = settle_champion(client, name, version, exact_match, test_sha256)
        if settled["version"] != version:  # a concurrent evaluate's version scored higher, and holds the alias
            wins, champion = False, settled
            reason = "not higher than the test exact match of a version crowned meanwhile"
        elif displaced != champion:  # another moved the alias since it was read: the figures of the one replaced
            champion = displaced
            reason = ("no champion yet" if champion is None else "the champion was scored on another test set"
                      if champion["test_sha256"] != test_sha256 else "higher test exact match")
    elif wins and not holds:
        reason += f"; promotion is off ({PROMOTE}=0)"
    outcome = ("not registered" if version is None else "kept" if not wins else
               "promoted" if promote or holds else "held")
    decision = {"model": name, "version": version or "–", "decision": outcome,
                "reason": reason, "candidate_exact_match": exact_match,
                "champion_version": champion and champion["version"],
                "champion_exact_match": champion and champion["exact_match"]}
    mlflow.set_tags({f"registry.{k}": str(v) for k, v in decision.items() if not k.endswith("exact_match")})
    mlflow.log_metrics({f"registry.{k}": v for k, v in decision.items() if k.endswith("exact_match") and v is not None})
    return decision


# Moving the alias is a compare-and-set in effect: MLflow has no atomic one, so an evaluate that wins sets
# the alias to the best eligible version, then reads back until alias and best agree. Whatever the
# interleaving of concurrent evaluates, the last one to write also reads last, after every version it
# could have missed was registered, so the alias ends on the best version.
SETTLE_TRIES = 20


def settle_champion(client, name: str, candidate: str, exact_match: float,
                    test_sha256: str) -> tuple[dict, dict | None]:
    """Points the alias at the best version scored on this test set (candidate, or one registered with
    promotion on: not "held") until a read-back agrees; returns the champion it settled on, and the one
    the last move replaced (None if there was none, or the alias already agreed)."""
    scores: dict[str, tuple] = {candidate: (exact_match, test_sha256, None)}
    displaced = champion_of(client, name)
    for _ in range(SETTLE_TRIES):
        best = best_version(client, name, test_sha256, scores)
        current = champion_of(client, name)
        if current is not None and current["version"] == best:
            return current, displaced
        displaced = current
        client.set_registered_model_alias(name, CHAMPION, best)
    raise AdderError(f"the champion of {name} kept moving under {SETTLE_TRIES} concurrent changes; evaluate again")


def best_version(client, name: str, test_sha256: str, scores: dict) -> str:
    """The eligible version with the highest test exact match; of equals, the champion, else the first
    registered (which a sequence of evaluates would have crowned). scores caches each version's figures
    and decision; the candidate's is there from the start (its decision is still to be made)."""
    try:
        champion = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        champion = None
    ranked = []
    for version in client.search_model_versions(f"name = '{name}'"):
        number = str(version.version)
        if number not in scores:
            data = client.get_run(version.run_id).data
            scores[number] = (data.metrics.get("test_exact_match"), data.tags.get("test_sha256"),
                              data.tags.get("registry.decision"))
        exact_match, sha256, decision = scores[number]
        if exact_match is not None and sha256 == test_sha256 and decision != "held":
            ranked.append((exact_match, number == champion, -int(number), number))
    return max(ranked)[-1]


def registry_decision(client, run_id: str) -> dict | None:
    """The champion decision logged to a training run, or None if its model was never registered."""
    data = client.get_run(run_id).data
    if "registry.decision" not in data.tags:
        return None
    return {**{k.removeprefix("registry."): v for k, v in data.tags.items() if k.startswith("registry.")},
            **{k.removeprefix("registry."): v for k, v in data.metrics.items() if k.startswith("registry.")}}


def promote_held(run_ids: list[str]) -> list[dict]:
    """Decides again, with promotion on, for the versions these runs registered while it was off (DVC
    need not rerun evaluate for them), against today's champion; returns the new decisions."""
    client = mlflow.MlflowClient()
    decisions = []
    for run_id in run_ids:
        held = registry_decision(client, run_id)
        if held is None or held["decision"] != "held":
            continue
        run = client.get_run(run_id)
        with tracking.resume_run(run_id):
            decisions.append(crown(client, held["model"], held["version"], champion_of(client, held["model"]),
                                   run.data.metrics["test_exact_match"], run.data.tags["test_sha256"], promote=True))
    return decisions


ALL_FAMILIES = "adder-all"  # every task's champion behind one endpoint (pipeline.serving), what `adder serve` serves


def champions(client) -> list[dict]:
    """Every task's champion (registered name, version, test exact match, test set), the highest first."""
    found = []
    for model in client.search_registered_models(filter_string="name LIKE 'adder-%'"):
        if model.name != ALL_FAMILIES and (champion := champion_of(client, model.name)):
            if champion["exact_match"] is not None:
                found.append({"name": model.name, **champion})
    return sorted(found, key=lambda c: (-c["exact_match"], c["name"]))


def best_champion() -> str:
    """What `adder serve` serves by default, as a models:/ URI: adder-all's champion (every task's champion
    from one endpoint) when evaluate has built it, else the champion of the task whose champion scores highest."""
    client = mlflow.MlflowClient()
    try:
        client.get_model_version_by_alias(ALL_FAMILIES, CHAMPION)
        return f"models:/{ALL_FAMILIES}@{CHAMPION}"
    except mlflow.exceptions.MlflowException:
        pass
    found = champions(client)
    if not found:
        raise AdderError("no champion in the model registry yet; run `dvc repro` (evaluate registers models) "
                         "or name a MODEL")
    return f"models:/{found[0]['name']}@{CHAMPION}"


def served_model_uri(root: Path, model: str | None) -> str:
    """MODEL as an MLflow URI of a string-answering model: a URI as given, an experiment's logged pyfunc,
    else a task's (or registered model's) champion; raises AdderError if no such model loads."""
    from pipeline.model_folder import experiment_folder, verified

    if model is None:
        uri = best_champion()
    elif ":/" in model:
        uri = model
    elif (folder := experiment_folder(root, model)).is_dir():
        run_id = verified(folder)["run_id"]  # the run that logged exactly these files
        if (uri := serving_model_of(run_id, model)) is None:
            raise AdderError(f"experiment {model!r} has no serving model: only sequence models answer strings, "
                             "once evaluate has scored them (dvc repro)")
    else:
        experiment_folder(root, model)  # a name, never a path
        uri = f"models:/{model if model.startswith('adder-') else registered_name(model)}@{CHAMPION}"
    try:
        flavor = mlflow.models.get_model_info(uri).flavors.get("python_function", {})
    except (mlflow.exceptions.MlflowException, OSError) as e:
        raise AdderError(f"no model at {uri}: {str(e).strip().splitlines()[0]}") from None
    if flavor.get("loader_module") != "mlflow.pyfunc.model":
        raise AdderError(f"{uri} is not a model that answers expressions as strings; "
                         "serve an experiment's serving model or a task's champion")
    return uri


def serving_name(exp_name: str) -> str:
    """The name of an experiment's serving model in MLflow, beside its Keras model named after it."""
    return f"{exp_name}-serving"


def serving_model_of(run_id: str, exp_name: str) -> str | None:
    """The URI of the serving model that evaluate logged to exp_name's training run, None if none yet. Found
    by the run, in the tracking store: run.json names the run, never the model to serve."""
    found = mlflow.search_logged_models(
        filter_string=f"source_run_id = '{run_id}' AND name = '{serving_name(exp_name)}'",
        max_results=1, output_format="list")
    return f"models:/{found[0].model_id}" if found else None


# --- adder-all: every task's champion behind one endpoint, rebuilt whenever the champions change

MEMBERS_TAG = "members"  # on an adder-all version: its members' versions, "adder-add3/4,adder-ops/2"
BUILD_TRIES = 3


def publish_all_families(root: Path, backend: str) -> str | None:
    """Registers a version of adder-all serving every task's champion (the best-scoring first) and points its
    alias `champion` at it, unless it already serves exactly those; returns its version, None without
    champions. Reads the champions back afterwards and builds again if one moved meanwhile."""
    client = mlflow.MlflowClient()
    for _ in range(BUILD_TRIES):
        members = champions(client)
        if not members:
            return None
        wanted = ",".join(f"{m['name']}/{m['version']}" for m in members)
        try:
            current = client.get_model_version_by_alias(ALL_FAMILIES, CHAMPION)
            if current.tags.get(MEMBERS_TAG) == wanted:
                return str(current.version)
        except mlflow.exceptions.MlflowException:
            pass  # none yet
        build_all_families(root, client, members, wanted, backend)
    return str(client.get_model_version_by_alias(ALL_FAMILIES, CHAMPION).version)


def build_all_families(root: Path, client, members: list[dict], wanted: str, backend: str) -> None:
    tracking.open_experiment(tracking.SERVED, None if tracking.tracking_uri(root).startswith("http")
                                          else (root / "mlartifacts").as_uri())
    experiment_id = mlflow.get_experiment_by_name(tracking.SERVED).experiment_id
    with tempfile.TemporaryDirectory(prefix="adder-all-") as tmp, \
            mlflow.start_run(experiment_id=experiment_id, run_name=ALL_FAMILIES,
                             tags={tracking.NOTE: f"Serves {wanted.replace(',', ', ')}."}) as run:
        folders = [Path(mlflow.artifacts.download_artifacts(f"models:/{m['name']}/{m['version']}",
                                                            dst_path=f"{tmp}/{i}")) / "artifacts"
                   for i, m in enumerate(members)]
        example = load_codec(folders[0] / "codec.json").limits.example
        uri = log_serving_model([(f"models:/{m['name']}/{m['version']}", folder, m["exact_match"])
                                 for m, folder in zip(members, folders)], example, backend, name="serving-all")
    if not client.search_registered_models(filter_string=f"name = '{ALL_FAMILIES}'"):
        try:
            client.create_registered_model(ALL_FAMILIES, description=ALL_NOTE)
        except mlflow.exceptions.MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":  # else a concurrent evaluate made it
                raise
    version = client.create_model_version(ALL_FAMILIES, source=uri, run_id=run.info.run_id,
                                          model_id=uri.removeprefix("models:/"), tags={MEMBERS_TAG: wanted})
    client.update_model_version(ALL_FAMILIES, version.version, description=f"Serves {wanted.replace(',', ', ')}.")
    client.set_registered_model_alias(ALL_FAMILIES, CHAMPION, version.version)


ALL_NOTE = ("Every task's champion behind one endpoint: each expression goes to the champion whose grammar "
            "accepts it, the one with the higher test exact match first. A version per change of champions; "
            "its tag `members` lists them. The alias `champion` is the latest: what `adder serve` serves.")
