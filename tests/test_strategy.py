"""kit.training.strategy: the JAX DataParallel and MirroredStrategy rehearsals, each in its own process.

Backend and device layout are process-wide, so each route runs in a fresh interpreter that prints
one JSON line of what it found; the test asserts on that.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

from kit.core.errors import KitError

# One real training step under the chosen scope, with the batch split over the replicas.
_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from kit.training.strategy import get_strategy
    acc = get_strategy(sys.argv[1])
    import keras
    with acc.scope():
        inp = keras.Input((4,), name="x")
        model = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid", dtype="float32")(
            keras.layers.Dense(8, activation="relu")(inp)))
        model.compile(optimizer="adam", loss="binary_crossentropy")
    x = np.random.default_rng(0).normal(size=(acc.global_batch(2), 4)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    hist = model.fit(x, y, batch_size=acc.global_batch(2), epochs=1, verbose=0)
    out = dict(name=acc.name, replicas=acc.replicas, precision=acc.precision, backend=acc.backend,
               policy=keras.mixed_precision.global_policy().name, describe=acc.describe(),
               loss=float(hist.history["loss"][0]), compute_dtype=model.layers[1].compute_dtype)
    if acc.backend == "jax":
        out["kernel_devices"] = len(model.layers[1].kernel.value.sharding.device_set)
    else:
        out["kernel_replicas"] = len(getattr(model.layers[1].kernel.value, "values", [None]))
    print("RESULT " + json.dumps(out))
""")


def _run(kind, **env):
    full = dict(os.environ, CUDA_VISIBLE_DEVICES="", **env)
    full.pop("ISTPUVM", None)
    full.update(env)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, kind], env=full, capture_output=True,
                          text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_jax_data_parallel_over_8_host_devices():
    r = _run("auto", KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=8")
    assert (r["name"], r["replicas"], r["backend"]) == ("tpu-jax", 8, "jax")
    assert r["precision"] == r["policy"] == "mixed_bfloat16"
    assert r["compute_dtype"] == "bfloat16"
    assert r["kernel_devices"] == 8  # weights replicated on every device
    assert r["describe"] == ("found 8 JAX cpu devices; chose tpu-jax: 8 replicas, mixed_bfloat16, "
                             "Keras on jax")
    assert math.isfinite(r["loss"])


def test_tpu_vm_flag_switches_to_jax_before_keras_loads():
    # ISTPUVM=1 with KERAS_BACKEND=tensorflow in the environment: kit moves Keras onto JAX.
    r = _run("auto", ISTPUVM="1", KERAS_BACKEND="tensorflow",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
    assert (r["name"], r["replicas"], r["policy"]) == ("tpu-jax", 8, "mixed_bfloat16")
    assert r["describe"].startswith("found TPU VM (ISTPUVM=1), 8 JAX cpu devices; chose tpu-jax")


def test_mirrored_rehearsal_on_two_logical_cpus():
    r = _run("mirrored", KERAS_BACKEND="tensorflow")
    assert (r["name"], r["replicas"], r["backend"]) == ("mirrored", 2, "tensorflow")
    assert r["precision"] == r["policy"] == "float32"
    assert r["kernel_replicas"] == 2  # a MirroredVariable with one copy per device
    assert r["describe"] == ("found no GPU; rehearsal on 2 logical CPU devices; chose mirrored: "
                             "2 replicas, float32, Keras on tensorflow")


def test_auto_on_cpu():
    r = _run("auto", KERAS_BACKEND="tensorflow")
    assert (r["name"], r["replicas"], r["policy"]) == ("cpu", 1, "float32")
    assert r["describe"] == "found no GPU; chose cpu: 1 replica, float32, Keras on tensorflow"


def test_bad_kind_and_backend_clash(monkeypatch):
    import keras  # this test process runs Keras on TensorFlow

    from kit.training.strategy import get_strategy

    assert keras.backend.backend() == "tensorflow"
    with pytest.raises(KitError, match="unknown kind 'tpuv3'; known: auto, tpu, mirrored, gpu, cpu"):
        get_strategy("tpuv3")
    monkeypatch.setenv("ISTPUVM", "1")
    with pytest.raises(KitError, match=r"TPU route \(ISTPUVM=1\) needs Keras on jax, but Keras was "
                                       "already imported on tensorflow"):
        get_strategy()
    with pytest.raises(KitError, match="kind 'gpu' asked for, but TensorFlow sees no GPU"):
        get_strategy("gpu")
