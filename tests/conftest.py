"""Shared test set-up: quiet TensorFlow, the TF backend unless a test asks for JAX, no Kaggle creds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Tests never reach Kaggle: a user's real credentials must not leak into a test's subprocess.
for _name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
    os.environ.pop(_name, None)
