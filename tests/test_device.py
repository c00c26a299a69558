"""Every training run says where it ran: the device and the backend's version, as MLflow tags, in run.json
and in the report."""

from __future__ import annotations

import subprocess
import sys

from helpers import PROJECT

from pipeline.device import Device, cpu
from pipeline.model_folder import malformed
from pipeline.report import devices_line

GOOD_RUN = {"run_id": "a" * 32, "sha256": {"model.keras": "0" * 64, "codec.json": "1" * 64}}


def test_a_device_in_words_and_tags():
    gpu = Device("gpu", "NVIDIA H200", 1, 139.8, "jax 0.7.2")
    assert gpu.summary == "gpu: 1 x NVIDIA H200, 140 GiB"
    assert gpu.tags() == {"device": "gpu: 1 x NVIDIA H200, 140 GiB", "device.kind": "gpu", "device.name": "NVIDIA H200",
                          "device.count": "1", "backend.version": "jax 0.7.2"}
    here = cpu()
    assert here.kind == "cpu" and here.count >= 1 and here.name
    assert here.summary == f"cpu: {here.count} cores, {here.name}"


def test_the_loaded_backend_reports_its_device_and_version():
    """In a fresh process (Keras picks its backend once): JAX on this CPU-only machine."""
    script = ("from pipeline import backend, device; backend.use('jax'); d = device.current(); "
              "print(d.kind, d.backend.split()[0], d.count >= 1)")
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["cpu", "jax", "True"]


def test_run_json_device_is_checked():
    assert malformed({**GOOD_RUN, "device": "cpu: 2 cores, Intel"}) is None
    assert malformed({**GOOD_RUN, "device": ["gpu"]}) == "device"
    assert malformed({**GOOD_RUN, "device": "x" * 201}) == "device"


def test_the_report_says_where_its_seconds_come_from():
    one = {"a": {"device": "cpu: 2 cores, Intel"}, "b": {"device": "cpu: 2 cores, Intel"}}
    assert devices_line(one) == "\nTrained on cpu: 2 cores, Intel (train s).\n"
    two = {"a": {"device": "cpu: 2 cores, Intel"}, "b": {"device": "gpu: 1 x NVIDIA H200, 140 GiB"}, "c": {}}
    assert devices_line(two) == ("\nTrained on cpu: 2 cores, Intel: a; gpu: 1 x NVIDIA H200, 140 GiB: b; "
                                 "unknown: c.\n")
