"""kit: leak-free TFRecords, k-fold training, TTA and exact submissions for Kaggle medical imaging.

Importing ``kit`` is cheap: TensorFlow and Keras are imported only by the modules that need them
(records, pipeline, models, train, predict), so ``kit check`` and ``kit blend`` start fast. It changes
nothing in the process' environment: the ``kit`` command (kit.cli's ``main``, which the notebooks call
too) settles the Keras backend and TensorFlow's log level before they load (kit.runtime.prepare); a
Python caller who wants the same calls ``kit.runtime.prepare()`` first.
"""

__version__ = "0.1.0"

from kit.errors import KitError

__all__ = ["KitError", "__version__"]
