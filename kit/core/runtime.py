"""What kit settles before TensorFlow, Keras or JAX load: the Keras backend, and how much they log.

Both are fixed for the whole process by the first ``import keras`` / ``import tensorflow``, so
the ``kit`` command (kit.cli.app's ``main``, also what the notebooks run) calls :func:`prepare` first, before
any kit module imports them; ``import kit`` itself changes no environment variable. A Python caller
who wants the command's behaviour calls ``kit.core.runtime.prepare()`` before importing kit.training.train:

- ``KERAS_BACKEND`` set by the user: kept, whatever it says.
- a TPU VM (``ISTPUVM=1``, as Kaggle's TPU image sets, or a TPU device with libtpu installed):
  ``jax``. Kaggle's TPU image ships tensorflow-cpu only; the TPU is reached by Keras on JAX
  (docs/training.md, "Where kit trains").
- otherwise nothing is set, and Keras starts on its default (TensorFlow).

:func:`choose_backend` may be called again with a training strategy (``kit train --strategy tpu``
asks for JAX on any machine) as long as Keras is not imported yet.

Logs: TensorFlow's and XLA's C++ lines (oneDNN notices, ``Local rendezvous is aborting``), and
the Python warnings TensorFlow, absl and JAX log (tf.function retracing), are hidden unless the
user asks for them (``kit --verbose``, ``KIT_VERBOSE=1``, or ``TF_CPP_MIN_LOG_LEVEL`` set by hand).
Errors still reach the user as Python exceptions. Hiding the oneDNN notice does not turn oneDNN
off: the numbers are the same either way.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

# TF_CPP_MIN_LOG_LEVEL: 0 all, 1 no INFO (oneDNN notice, rendezvous), 2 no WARNING, 3 no ERROR.
# 3, because the GPU images print harmless ERROR lines at start-up (cuDNN/cuFFT factories registered
# twice); a real failure still raises.
QUIET_CPP_LEVEL = "3"
QUIET_LOGGERS = ("tensorflow", "absl", "jax")

# Environment values kit itself set, so that a later call can tell them from the user's own.
_SET_BY_KIT: dict[str, str] = {}


def _user_value(name: str) -> str | None:
    """The variable's value when the user set it (not kit); None otherwise."""
    value = os.environ.get(name)
    return value if value and value != _SET_BY_KIT.get(name) else None


def _set(name: str, value: str | None) -> None:
    """Set (or with None, remove) a variable on kit's behalf."""
    if value is None:
        os.environ.pop(name, None)
        _SET_BY_KIT.pop(name, None)
    else:
        os.environ[name] = _SET_BY_KIT[name] = value


def on_tpu_vm() -> bool:
    """True on a TPU VM: ``ISTPUVM=1`` (Kaggle's TPU image), or a TPU device with libtpu installed."""
    if os.environ.get("ISTPUVM") == "1":
        return True
    return Path("/dev/accel0").exists() and importlib.util.find_spec("libtpu") is not None


def loaded_backend() -> str | None:
    """The backend of an already imported Keras, or None when Keras is not imported yet."""
    keras = sys.modules.get("keras")
    return keras.backend.backend() if keras is not None and hasattr(keras, "backend") else None


def choose_backend(strategy: str = "auto") -> str | None:
    """Set ``KERAS_BACKEND`` for ``strategy`` before Keras loads; returns the backend Keras will use.

    The user's own ``KERAS_BACKEND`` always wins; ``strategy`` "tpu", or "auto" on a TPU VM, picks
    ``jax``; otherwise kit sets nothing and None means Keras' own default. Once Keras is imported,
    nothing changes and its backend is returned.
    """
    loaded = loaded_backend()
    if loaded is not None:
        return loaded
    users = _user_value("KERAS_BACKEND")
    if users:
        return users
    if strategy == "tpu" or (strategy == "auto" and on_tpu_vm()):
        _set("KERAS_BACKEND", "jax")
        return "jax"
    # no JAX wanted: drop what an earlier call chose (e.g. --strategy cpu on a TPU VM runs TensorFlow)
    _set("KERAS_BACKEND", None)
    return None


class _BelowError(logging.Filter):
    """Drops records below ERROR: TensorFlow sets its logger's level itself in a notebook, over ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


_FILTER = _BelowError()


def quiet_logs(verbose: bool = False) -> None:
    """Hide TensorFlow's, XLA's, absl's and JAX's own log lines, or with ``verbose`` let them through.

    The C++ level only takes effect when TensorFlow and JAX load, so call this first (the ``kit``
    command does, in :func:`prepare`); a level the user set by hand is left alone.
    """
    users = _user_value("TF_CPP_MIN_LOG_LEVEL")
    if users is None:
        _set("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else QUIET_CPP_LEVEL)
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        # the level reaches child loggers (jax._src.xla_bridge); the filter outlasts TF's own setLevel
        logger.setLevel(logging.NOTSET if verbose else logging.ERROR)
        if verbose:
            logger.removeFilter(_FILTER)
        else:
            logger.addFilter(_FILTER)


def verbose_requested() -> bool:
    """True when ``KIT_VERBOSE`` asks for TensorFlow's own log lines (1, true, yes)."""
    return os.environ.get("KIT_VERBOSE", "").strip().lower() in ("1", "true", "yes")


def prepare(verbose: bool = False) -> None:
    """What the ``kit`` command settles first: the backend for this machine and quiet logs (unless ``verbose``
    or KIT_VERBOSE)."""
    choose_backend()
    quiet_logs(verbose or verbose_requested())
