"""The data stage: a competition's download, detected and read (``kit.data.competitions``, one module per
competition), split into leak-free folds (``folds``), checked (``precheck``) and written as sharded, fold-aware
TFRecords with their manifest (``records``), plus the synthetic downloads tests and the demo use (``synth``).

May import: ``kit.core``. TensorFlow only where records are read as a tf.data pipeline.
"""
