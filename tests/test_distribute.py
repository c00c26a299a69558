"""distribute: mirrored trains under TensorFlow's MirroredStrategy or Keras's DataParallel (JAX): on one CPU
exactly like the default, and on two replicas (two CPU devices standing in for two GPUs, in a fresh process)
with the batch split evenly."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import PROJECT, without_clock  # noqa: E402
from test_train import SPLITS, TASK  # noqa: E402  its tiny task; pytest puts tests/ on sys.path

from pipeline.config import Experiment, parse_params  # noqa: E402
from pipeline.errors import AdderError  # noqa: E402
from pipeline.train import train  # noqa: E402

SEQ2SEQ = Experiment(task="tiny", model="seq2seq", units=(8, 8), epochs=2, samples_per_epoch=20, batch_size=6)


@pytest.fixture(scope="module")
def default_run(two_replicas):
    """SEQ2SEQ on TensorFlow's default placement, trained while the two-replica process runs beside it."""
    return train(SEQ2SEQ, TASK, SPLITS["train"], SPLITS["val"], seed=3)


def test_mirrored_on_one_cpu_trains_like_the_default(default_run, tmp_path):
    mirrored = train(SEQ2SEQ.model_copy(update={"distribute": "mirrored"}), TASK, SPLITS["train"], SPLITS["val"],
                     seed=3)
    assert mirrored.replicas == 1 == default_run.replicas
    assert without_clock(mirrored.history) == without_clock(default_run.history)
    # Saved like any model, and loads back without the strategy (as evaluate and serving load it).
    mirrored.model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    x = mirrored.codec.encode_inputs(SPLITS["val"].text)
    np.testing.assert_allclose(loaded.predict_on_batch(x), mirrored.model.predict_on_batch(x), rtol=1e-6)


def test_distribute_is_validated_naming_the_key():
    params = {"seed": 0, "tasks": {"tiny": TASK.model_dump()},
              "experiments": {"tiny-seq2seq": {**SEQ2SEQ.model_dump(), "distribute": "horovod"}}}
    with pytest.raises(AdderError) as e:
        parse_params(params)
    assert "experiments.tiny-seq2seq.distribute" in str(e.value) and "'mirrored'" in str(e.value), e.value
    assert Experiment(task="t", model="seq2seq", epochs=1, batch_size=1).distribute == "none"


# Devices must be set before the backend starts, so this runs in its own process. MirroredStrategy() takes
# every GPU, or the CPU alone; here it is pointed at two logical CPUs. JAX gets two CPU devices from XLA_FLAGS.
TWO_REPLICAS = textwrap.dedent("""
    import functools, json, sys
    import keras
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        tf.distribute.MirroredStrategy = functools.partial(tf.distribute.MirroredStrategy, devices=["/cpu:0", "/cpu:1"])
    from pipeline.config import Experiment, Task
    from pipeline.errors import AdderError
    from pipeline.problems import split_problems
    from pipeline.train import train
    task = Task.model_validate_json(sys.argv[1])
    exp = Experiment.model_validate_json(sys.argv[2])
    splits = split_problems(task, 0)
    trained = train(exp, task, splits["train"], splits["val"], seed=3)
    try:
        train(exp.model_copy(update={"batch_size": 5}), task, splits["train"], splits["val"], seed=3)
        uneven = None
    except AdderError as e:
        uneven = str(e)
    print(json.dumps({"replicas": trained.replicas,
                      "history": trained.history, "uneven": uneven}))
""")


@pytest.fixture(scope="module")
def two_replicas():
    """The two-replica run, started at once in its own process; yields a function that waits for its result."""
    exp = SEQ2SEQ.model_copy(update={"distribute": "mirrored"})
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    process = subprocess.Popen([sys.executable, "-c", TWO_REPLICAS, TASK.model_dump_json(), exp.model_dump_json()],
                               cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def result() -> dict:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        return json.loads(out.strip().splitlines()[-1])

    yield result
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_mirrored_on_two_replicas_splits_each_batch(two_replicas, default_run):
    out = two_replicas()
    assert out["replicas"] == 2
    assert len(out["history"]) == SEQ2SEQ.epochs
    # The same training, summed in another order; held-out scores count every row once (Keras's
    # predict_on_batch would answer each twice, and scoring would fail on the extra rows).
    for two, one in zip(out["history"], default_run.history):
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-4)
        for score in ("val_exact_match", "val_char_accuracy"):  # a near tie may flip a character
            assert two[score] == pytest.approx(one[score], abs=0.1), score
    assert out["uneven"] and "batch_size (5)" in out["uneven"] and "multiples of 2" in out["uneven"], out["uneven"]
