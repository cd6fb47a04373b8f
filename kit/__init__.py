"""kit: leak-free TFRecords, k-fold training, TTA and exact submissions for Kaggle medical imaging.

Importing ``kit`` is cheap: TensorFlow and Keras are imported only by the modules that need them
(records, pipeline, models, train, predict), so ``kit check`` and ``kit blend`` start fast. It first
settles what must be settled before they load (kit.runtime): the Keras backend (JAX on a TPU VM)
and quiet TensorFlow logs, so ``import kit.train`` works the same from Python as from the CLI.
"""

__version__ = "0.1.0"

from kit import runtime as _runtime

_runtime.prepare()

from kit.errors import KitError  # noqa: E402

__all__ = ["KitError", "__version__"]
