"""The core every layer stands on: kit's one error type, atomic file writes, the metrics and the task specs,
and the runtime settings that must be settled before TensorFlow loads.

May import: nothing of kit outside ``kit.core``; no TensorFlow or Keras.
"""
