"""Fixtures shared by several test modules."""

from __future__ import annotations

import os

import mlflow
import pytest

from pipeline.backend import DEFAULT

# Tests that import Keras run on the pipeline's default backend unless KERAS_BACKEND names the other.
os.environ.setdefault("KERAS_BACKEND", DEFAULT)


def unavailable(reason: str):
    """A service a test needs is missing: on a developer's machine the test skips; in CI (CI=true, which
    .ci/run sets) it fails, so a run that silently lost its PostgreSQL or Chromium tests cannot pass."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def registry(tmp_path):
    """A throwaway sqlite MLflow store with the experiment `adder` active; yields its client."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("adder", (tmp_path / "art").as_uri()))
    yield mlflow.MlflowClient()
    mlflow.set_tracking_uri(None)
    if before is not None:
        os.environ["MLFLOW_TRACKING_URI"] = before
