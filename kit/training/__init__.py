"""Training: the settings (``config``) and the defaults chosen for the data and machine (``defaults``), the
learning-rate schedule, the distribution strategy, the backbone table and the Keras models, the tf.data input
pipeline, and the k-fold loop with out-of-fold predictions (``train``).

May import: ``kit.runs``, ``kit.data``, ``kit.core``.
"""
