"""The run folder: ``RunFolder`` owns every file a training run writes (config, per-fold state, histories,
out-of-fold predictions, ``cv.json``, plots) and how each is written and read; ``listing`` is ``kit runs``
(and ``kit runs merge``); ``plots`` draws the run's PNGs.

May import: ``kit.data``, ``kit.core``; no TensorFlow or Keras (``kit runs`` starts in a fraction of a second).
"""
