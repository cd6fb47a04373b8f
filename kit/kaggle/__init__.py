"""Kaggle: from your machine (``client``: push notebooks with kit's wheel, fan folds out over kernels, gather
their outputs) and inside a kernel (``kernel``: find inputs and weights, run kit's steps).

May import: every library package below it (``kit.ensemble`` and lower); never ``kit.cli``.
"""
