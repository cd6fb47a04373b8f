"""Synthetic competitions: small, deterministic downloads in each competition's exact layout.

``make_competition(name, root, ...)`` writes a folder that looks like the real Kaggle download (file names,
folder names, CSV columns) of one of the competitions kit serves, filled with small dermoscopy-like (or, for
PCam, histology-like) images whose class is visible to a tiny CNN. Each competition's module in
``kit.data.competitions`` owns its generator; the shared drawing lives in ``kit.data.competitions._draw``:

    siim         train.csv (8 columns), test.csv, sample_submission.csv, jpeg/train/*.jpg, jpeg/test/*.jpg
    ham10000     HAM10000_metadata.csv, HAM10000_images_part_1/*.jpg, HAM10000_images_part_2/*.jpg
    pcam         train_labels.csv, train/<hex id>.tif, test/<hex id>.tif, sample_submission.csv
    isic9        Train/<class name>/*.jpg, Test/<class name>/*.jpg (9 class names with spaces)
    melanoma10k  train/{Benign,Malignant}/*.jpg, test/{Benign,Malignant}/*.jpg
    isic2024     {train,test}-metadata.csv, {train,test}-image.hdf5 (or image/*.jpg), sample_submission.csv

Each patient (SIIM) or lesion (HAM10000) has several images that share its skin tone, so a split that ignores
groups leaks. ``write_public_siim_tfrecords`` writes shards in the public SIIM-ISIC TFRecord schema. Only numpy
and Pillow are used (TensorFlow is not imported), so tests and notebooks can make data quickly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.data import competitions
from kit.data.competitions._draw import (BINARY_STYLE, SynthSpec, binary_cue_style, histology_tile, jpeg_bytes,
                                    lesion_image, skin_tone)
from kit.data.competitions.ham10000 import CLASSES as _HAM
from kit.data.competitions.isic9 import CLASSES as _ISIC9
from kit.data.competitions.melanoma10k import CLASSES as _MELANOMA10K
from kit.data.competitions.siim import PUBLIC_SIIM_FIELDS, write_public_siim_tfrecords

__all__ = ["HAM_CLASSES", "ISIC9_CLASSES", "LAYOUTS", "MELANOMA10K_CLASSES", "PUBLIC_SIIM_FIELDS",
           "binary_cue_style", "histology_tile", "lesion_image", "make_competition", "write_public_siim_tfrecords"]

LAYOUTS = tuple(n for n in competitions.names() if competitions.get(n).synthesise)  # the registry's competitions
HAM_CLASSES, ISIC9_CLASSES, MELANOMA10K_CLASSES = list(_HAM), list(_ISIC9), list(_MELANOMA10K)
# Older names some notebooks and tests draw single images with.
_BINARY_STYLE, _skin, _jpeg_bytes = BINARY_STYLE, skin_tone, jpeg_bytes


def make_competition(
    layout: str,
    root: str | Path,
    *,
    n_train: int = 60,
    n_test: int = 20,
    size: int | None = None,
    seed: int = 0,
    overlap: float = 0.0,
    image_store: str = "hdf5",
) -> Path:
    """Write a synthetic download of competition ``layout`` under ``root``; returns ``root``.

    ``size`` is the image side (default 64; 96 for PCam, as the real tiles). HAM10000 images are
    4:3 like the real ones (``size`` high), so writers must resize non-square images. ``overlap``
    (siim, melanoma10k and isic2024 only) is the spread of each malignancy cue around its class mean, in units
    of the gap between the benign and malignant means: 0 keeps one fixed look per class (perfectly
    separable, the same bytes as always), about 0.5-1 makes a small CNN's AUC fall short of 1.
    ``image_store`` (isic2024 only): the images in ``{split}-image.hdf5``, as ``{split}-image/image/*.jpg``
    files, or both, as the real downloads come.
    """
    known = [n for n in competitions.names() if competitions.get(n).synthesise]
    if layout not in known:
        raise ValueError(f"unknown synthetic layout {layout!r}; known: {', '.join(known)}")
    comp = competitions.get(layout)
    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0. Received: n_train={n_train}, n_test={n_test}")
    if not (overlap >= 0 and np.isfinite(overlap)):
        raise ValueError(f"need a finite overlap >= 0. Received: overlap={overlap}")
    if overlap and not comp.synth_overlap:
        able = [n for n in known if competitions.get(n).synth_overlap]
        raise ValueError(f"overlap applies to the binary lesion layouts {', '.join(able[:-1])} and {able[-1]}, "
                         f"not {layout!r}")
    if image_store not in ("hdf5", "jpg", "both"):
        raise ValueError(f"image_store must be hdf5, jpg or both. Received: image_store={image_store!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # the competition's place in the registry seeds it: every download keeps its bytes when others are added
    rng = np.random.default_rng([seed, competitions.names().index(layout)])
    comp.synthesise(root, rng, SynthSpec(n_train, n_test, size or comp.synth_size, overlap, image_store))
    return root
