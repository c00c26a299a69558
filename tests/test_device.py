"""Every training run says where it ran: the device and the backend's version, as MLflow tags, in run.json
and in the report."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import subprocess
import sys

from helpers import PROJECT

from pipeline.device import PLUGIN_ERRORS, Device, cpu, cuda_build, keep_plugin_error, require_requested_gpu
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


def test_a_cuda_build_without_a_gpu_is_one_line_before_training(tmp_path):
    """A fresh process that finds JAX's CUDA plugin installed (faked: its dist-info alone, on PYTHONPATH, so
    that importlib.metadata finds it while JAX loads no plugin) and no GPU: adder refuses to train on the CPU."""
    info = tmp_path / "jax_cuda12_plugin-0.10.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jax-cuda12-plugin\nVersion: 0.10.2\n")
    script = ("from pipeline import backend, device\nfrom pipeline.errors import AdderError\nbackend.use('jax')\n"
              "try:\n    device.require_requested_gpu('jax', device.current())\n"
              "except AdderError as error:\n    print(error)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    [line] = result.stdout.splitlines()
    assert line.startswith("jax-cuda12-plugin is installed (make setup GPU=1) but jax sees no GPU: "), line
    assert line.endswith("or make setup GPU=0 to train on the CPU") and "gpu" in line.split(": ", 1)[1].lower()


def test_the_cpu_build_trains_on_the_cpu(monkeypatch):
    # Faked: importlib.metadata answers as an install without any CUDA build would.
    def version(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert cuda_build("jax") is None and cuda_build("tensorflow") is None
    require_requested_gpu("tensorflow", cpu())  # no error: nothing asked for a GPU
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.0")  # every distribution present
    assert cuda_build("tensorflow") == "tensorflow + nvidia-cudnn-cu12"
    require_requested_gpu("jax", Device("gpu", "NVIDIA H200", 1, 139.8, "jax 0.10.2"))  # on its GPU: fine


def test_a_cuda_plugin_that_fails_to_start_is_recorded_not_printed():
    """JAX logs its CUDA plugin's failure with a traceback; adder keeps its last line for its own one-line error.
    The record is built here as JAX's logger builds it (checked against jax-cuda12-plugin 0.10.2 with no GPU)."""
    try:
        raise RuntimeError("jaxlib/cuda/versions_helpers.cc:135: operation cuInit(0) failed: Unknown CUDA error 303")
    except RuntimeError:
        record = logging.LogRecord("jax._src.xla_bridge", logging.ERROR, __file__, 1, "Jax plugin configuration "
                                   "error: Exception when calling jax_plugins.xla_cuda12.initialize()", (),
                                   sys.exc_info())
    other = logging.LogRecord("jax._src.xla_bridge", logging.WARNING, __file__, 1, "something else", (), None)
    assert keep_plugin_error(record) is False and keep_plugin_error(other) is True
    assert PLUGIN_ERRORS[-1] == ("RuntimeError: jaxlib/cuda/versions_helpers.cc:135: operation cuInit(0) failed: "
                                 "Unknown CUDA error 303")
