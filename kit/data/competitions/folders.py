"""Generic class folders: ``[Train|train/]<class>/*.jpg`` and ``[Test|test/]<class>/*.jpg`` (class names may hold
spaces; a test folder of bare images is unlabelled). Two competitions come as class folders (``isic9``,
``melanoma10k``), told apart by their class names; any other class folders are a generic download: ROC AUC for
two classes, balanced accuracy for more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.data.competitions._base import Layout
from kit.data.competitions._read import (IMAGE_EXTENSIONS, Source, absolute, class_dirs, class_images, class_root,
                                    image_files)
from kit.core.errors import KitError


def recognise_folder(path: Path) -> bool:
    """Whether ``path`` holds class folders (or a test folder of images)."""
    return class_root(path, test=False) is not None or class_root(path, test=True) is not None


def read(path: Path, *, id_col, label_col, group_col, images, test, skip_bad) -> Source:
    """The train (or ``test``) split of class folders: the folder names are the classes, each image its own group."""
    import pandas as pd
    if not path.is_dir():
        raise KitError(f"{path}: --layout folders needs a folder of class folders")
    train_root = class_root(path, test=False)
    split_root = class_root(path, test=True) if test else train_root
    if split_root is None:
        split = "Test/ or test/" if test else "Train/ or train/ (or class folders)"
        raise KitError(f"{path}: no {split} folder with images")
    dirs = class_dirs(split_root)
    labelled = bool(dirs)
    # Test labels must use the training folder's class order.
    classes = [d.name for d in class_dirs(train_root)] if train_root is not None else [d.name for d in dirs]
    rows = []
    if labelled:
        for d in dirs:
            if d.name not in classes:
                raise KitError(f"{d}: class folder not among the training classes ({', '.join(classes)})")
            images = class_images(d)
            if not images and not test:
                raise KitError(f"{d}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} images); remove it or "
                               "add its images")
            rows.extend((f, classes.index(d.name)) for f in images)
        if not test and len(classes) < 2:
            raise KitError(f"{split_root}: one class folder ({classes[0]}); a classifier needs at least two")
    else:
        rows = [(f, -1) for f in image_files(split_root)]
    if not rows:
        raise KitError(f"{split_root}: empty folder (no {'/'.join(IMAGE_EXTENSIONS)} images)")
    files = [f for f, _ in rows]
    stems = [f.stem for f in files]
    # The file stem is the id when it is unique (as in the real downloads); otherwise the path
    # below the split folder, so that two classes' "0001.jpg" stay two images.
    if len(set(stems)) == len(stems):
        ids = stems
    else:
        ids = [f.relative_to(split_root).with_suffix("").as_posix() for f in files]
    table = pd.DataFrame({
        "image_name": ids,
        "path": [absolute(f) for f in files],
        "target": np.array([t for _, t in rows], dtype=np.int64),
        "group": ids,
    })
    return Source(table, classes, "folders", "id", [], [], labelled, {}, [], str(path))


LAYOUT = Layout("folders", read, None, recognise_folder, train_beside_test=True, generic=True)
