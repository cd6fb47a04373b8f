"""kit: leak-free TFRecords, k-fold training, TTA and exact submissions for Kaggle medical imaging.

Importing ``kit`` is cheap: TensorFlow and Keras are imported only by the modules that need them
(records, pipeline, models, train, predict), so ``kit check`` and ``kit blend`` start fast. It changes
nothing in the process' environment: the ``kit`` command (kit.cli.app's ``main``, which the notebooks call
too) settles the Keras backend and TensorFlow's log level before they load (kit.core.runtime.prepare); a
Python caller who wants the same calls ``kit.core.runtime.prepare()`` first.

The folder tree is the architecture (docs/architecture.md): ``kit.core`` < ``kit.data`` < ``kit.runs`` <
``kit.training`` < ``kit.ensemble`` < ``kit.kaggle`` < ``kit.cli``. The flat layout's module paths (``kit.kernel``,
``kit.records``, ...) still import for one release, with a DeprecationWarning (kit._moved).
"""

__version__ = "0.1.0"

from kit import _moved
from kit.core.errors import KitError

_moved.install()

__all__ = ["KitError", "__version__"]
