"""Where training runs: TPU VM (Keras on JAX), several GPUs, one GPU or CPU, and the precision policy.

The routes (docs/training.md, "Where kit trains"):

- ``tpu-jax``: a TPU VM (``ISTPUVM=1``, or JAX reporting TPU devices). Kaggle's TPU image has no
  TensorFlow TPU support, so Keras runs on JAX with ``keras.distribution.DataParallel`` over all
  devices and ``mixed_bfloat16``; tf.data still feeds the host. Rehearsed on CPU with
  ``KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=8``.
- ``mirrored``: several GPUs under ``tf.distribute.MirroredStrategy`` (``mixed_float16`` when every
  GPU has tensor cores, compute capability >= 7). Asked for on a machine without GPUs, it splits the
  CPU into two logical devices: the rehearsal of a Kaggle T4 x2 kernel.
- ``gpu``: one GPU, TensorFlow's default strategy (``mixed_float16`` with tensor cores).
- ``cpu``: float32, no distribution.

``get_strategy`` sets the global Keras precision policy; build the model inside ``acc.scope()``.
The backend and device layout are process-wide. The ``kit`` command picks JAX on a TPU VM
(kit.core.runtime.prepare, which a Python caller may call too); elsewhere, to force the TPU route, call ``get_strategy("tpu")`` (or
``kit.core.runtime.choose_backend("tpu")``) before importing ``kit.training.models`` or ``kit.training.schedule`` (they import
Keras, which fixes the backend), and before any TensorFlow op runs.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, ContextManager

from kit.training.config import STRATEGIES
from kit.core import runtime
from kit.core.errors import KitError

KINDS = STRATEGIES  # the --strategy choices, declared with the settings
PRECISIONS = ("mixed_bfloat16", "mixed_float16", "float32")
REHEARSAL_CPU_REPLICAS = 2


@dataclass
class Accelerator:
    """What get_strategy chose: route name, replica count, precision and how to enter its scope."""

    name: str
    replicas: int
    precision: str
    backend: str
    found: str
    strategy: Any = field(default=None, repr=False)  # tf.distribute.Strategy on the TF routes
    distribution: Any = field(default=None, repr=False)  # keras.distribution.DataParallel on JAX
    accelerated: bool = False  # a real GPU or TPU trains (not the CPU, nor a rehearsal of one on it)

    def scope(self) -> ContextManager:
        """Context in which to build the model: the strategy's scope or the JAX distribution's."""
        if self.distribution is not None:
            return self.distribution.scope()
        if self.strategy is not None:
            return self.strategy.scope()
        return contextlib.nullcontext()

    @property
    def jit_compile(self) -> bool | str:
        """Keras' ``jit_compile`` for this route: XLA on a GPU or TPU and on JAX; not on TensorFlow's CPU route,
        where compiling each fold's model costs more than it saves (a fold of compact_cnn on 8 px digits
        trained 18% faster without it)."""
        return "auto" if self.accelerated or self.backend != "tensorflow" else False

    def global_batch(self, per_replica: int) -> int:
        """Global batch size for ``per_replica`` images on each replica."""
        return int(per_replica) * self.replicas

    def describe(self) -> str:
        """One line: what was found and what was chosen."""
        return (f"found {self.found}; chose {self.name}: {self.replicas} replica"
                f"{'s' if self.replicas != 1 else ''}, {self.precision}, Keras on {self.backend}")


def _want_backend(backend: str, why: str) -> None:
    """Make Keras start on ``backend``; fail clearly when it already runs on another one."""
    loaded = runtime.loaded_backend()
    if loaded is None:
        os.environ["KERAS_BACKEND"] = backend
        return
    if loaded != backend:
        # import kit chose the backend already, so only a KERAS_BACKEND set by hand gets here
        raise KitError(f"strategy: {why} needs Keras on {backend}, but Keras was already imported on "
                       f"{loaded} (KERAS_BACKEND={os.environ.get('KERAS_BACKEND', '')}): unset KERAS_BACKEND "
                       f"or set it to {backend}, or choose another strategy (e.g. cpu)")


def _requested_backend() -> str:
    loaded = runtime.loaded_backend()
    return loaded if loaded is not None else os.environ.get("KERAS_BACKEND", "tensorflow")


def get_strategy(kind: str = "auto", precision: str | None = None) -> Accelerator:
    """Detect the hardware (or obey ``kind``), set the precision policy and return the Accelerator.

    Args:
        kind: "auto", or force a route: "tpu" (Keras on JAX, DataParallel), "mirrored", "gpu", "cpu".
        precision: override the policy the route would pick ("mixed_bfloat16", "mixed_float16",
            "float32").

    Example:
        acc = get_strategy()
        print(acc.describe())
        with acc.scope():
            model = build_model("efficientnet_b0", n_classes=2, size=256)
    """
    if kind not in KINDS:
        raise KitError(f"strategy: unknown kind {kind!r}; known: {', '.join(KINDS)}")
    if precision is not None and precision not in PRECISIONS:
        raise KitError(f"strategy: unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    tpu_vm = runtime.on_tpu_vm()
    if kind == "tpu" or (kind == "auto" and tpu_vm):
        _want_backend("jax", "the TPU route" + (" (ISTPUVM=1)" if tpu_vm and kind == "auto" else ""))
        acc = _jax_route(kind, tpu_vm)
    elif _requested_backend() == "jax":
        if kind in ("mirrored", "gpu"):
            raise KitError(f"strategy: kind {kind!r} uses tf.distribute and needs Keras on tensorflow, "
                           "but KERAS_BACKEND is jax (use kind 'tpu' or 'auto' on JAX)")
        acc = _jax_route(kind, tpu_vm)
    else:
        _want_backend("tensorflow", f"kind {kind!r}")
        acc = _tf_route(kind)
    if precision is not None:
        acc.precision = precision
    import keras

    keras.mixed_precision.set_global_policy(acc.precision)
    return acc


def _jax_route(kind: str, tpu_vm: bool) -> Accelerator:
    """Keras on JAX: DataParallel over every device on a TPU (or several devices), else one device."""
    import jax
    import keras

    devices = jax.devices()
    platform = devices[0].platform
    found = f"{len(devices)} JAX {platform} device{'s' if len(devices) != 1 else ''}"
    if tpu_vm:
        found = "TPU VM (ISTPUVM=1), " + found
    if kind == "cpu":
        return Accelerator("cpu", 1, "float32", "jax", found)
    if kind == "tpu" or platform == "tpu" or len(devices) > 1:
        distribution = keras.distribution.DataParallel(devices=devices)
        # Set globally too: fit() shards each batch by the distribution active when it runs,
        # which may be outside the `with acc.scope():` block that built the model.
        keras.distribution.set_distribution(distribution)
        return Accelerator("tpu-jax", len(devices), "mixed_bfloat16", "jax", found,
                           distribution=distribution, accelerated=platform != "cpu")
    if platform == "gpu":
        cc = float(getattr(devices[0], "compute_capability", "0") or 0)
        return Accelerator("gpu", 1, "mixed_float16" if cc >= 7 else "float32", "jax", found, accelerated=True)
    return Accelerator("cpu", 1, "float32", "jax", found)


def _gpu_summary(tf: Any, gpus: list) -> tuple[str, bool]:
    """('2 GPUs (Tesla T4 cc 7.5 x2)', all have tensor cores)."""
    names, tensor_cores = [], True
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        cc = details.get("compute_capability") or (0, 0)
        names.append(f"{details.get('device_name', gpu.name)} cc {cc[0]}.{cc[1]}")
        tensor_cores = tensor_cores and tuple(cc) >= (7, 0)
    distinct = sorted(set(names))
    text = ", ".join(f"{n} x{names.count(n)}" if names.count(n) > 1 else n for n in distinct)
    return f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''} ({text})", tensor_cores


def _tf_route(kind: str) -> Accelerator:
    """Keras on TensorFlow: MirroredStrategy, the default strategy on one GPU, or CPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        found, tensor_cores = _gpu_summary(tf, gpus)
    else:
        found, tensor_cores = "no GPU", False
    half = "mixed_float16" if tensor_cores else "float32"
    if kind == "mirrored" or (kind == "auto" and len(gpus) > 1):
        if gpus:
            strategy = tf.distribute.MirroredStrategy()
            return Accelerator("mirrored", strategy.num_replicas_in_sync, half, "tensorflow", found,
                               strategy=strategy, accelerated=True)
        devices = _logical_cpus(tf, REHEARSAL_CPU_REPLICAS)
        strategy = tf.distribute.MirroredStrategy(devices)
        return Accelerator("mirrored", strategy.num_replicas_in_sync, "float32", "tensorflow",
                           f"{found}; rehearsal on {len(devices)} logical CPU devices",
                           strategy=strategy)
    if kind == "gpu" and not gpus:
        raise KitError("strategy: kind 'gpu' asked for, but TensorFlow sees no GPU")
    if kind in ("gpu", "auto") and gpus:
        return Accelerator("gpu", 1, half, "tensorflow", found, strategy=tf.distribute.get_strategy(), accelerated=True)
    if gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as err:
            raise KitError("strategy: kind 'cpu' must hide the GPUs before TensorFlow starts; "
                           "call get_strategy('cpu') before running any TensorFlow op") from err
        found += "; GPUs hidden"
    return Accelerator("cpu", 1, "float32", "tensorflow", found, strategy=tf.distribute.get_strategy())


def _logical_cpus(tf: Any, n: int) -> list[str]:
    """Names of ``n`` logical CPU devices, splitting the physical CPU if TF has not started yet."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        # TF already created its devices (this process ran TF ops before): keep them if they suffice.
        pass
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) < n:
        raise KitError(f"strategy: the mirrored rehearsal needs {n} logical CPU devices, but TensorFlow "
                       f"already started with {len(logical)}: call get_strategy('mirrored') before "
                       "running any TensorFlow op")
    return [d.name for d in logical[:n]]
