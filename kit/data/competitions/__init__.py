"""The competitions kit serves, one module each, and the registry that lists them.

A competition module (``siim``, ``ham10000``, ``pcam``, ``isic9``, ``melanoma10k``, ``isic2024``) owns
everything that differs between competitions: how its download is recognised and read (its ``Layout``), its
classes, metric, leaderboard sizes, augmentation preset, its Kaggle notebook's parameters (``NotebookParams``:
kernel, inputs, image size, folds, epochs, batch, TTA; notebooks/build_notebooks.py writes the notebook from
them) and its synthetic download, as one ``Competition``. ``folders`` and ``csv_file`` are the generic layouts
(class folders, any CSV) that a download no competition claims is read with: ROC AUC for two classes, balanced
accuracy for more. The shared toolkits
are ``_read`` (the ``Source`` table, CSV and image helpers) and ``_draw`` (synthetic images, ids, groups).

Adding a competition is one new module that builds a ``Competition`` and one line in ``_MODULES`` below (or a
``register(...)`` call from anywhere, as tests do). ``kit records`` stores the competition's name in the
records' ``manifest.json``; ``kit train`` scores CV with its metric; ``kit.data.sources`` reads and ``kit.data.synth``
fakes downloads through this registry.

This package sits in the data layer: it imports kit.core.errors and kit.data.imaging only, never kit.data.records or
anything above. No TensorFlow, and pandas only inside the functions that read or write a table: the CLI
reads this registry to start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol, Sequence

from kit.data.competitions import csv_file, folders, ham10000, isic2024, isic9, melanoma10k, pcam, siim
from kit.data.competitions._base import PRETRAINED, PRETRAINED_NAME, Competition, Generator, Layout, NotebookParams, Reader
from kit.core.task import task_for
from kit.data.competitions._draw import SynthSpec
from kit.data.competitions._read import Source
from kit.core.errors import KitError

__all__ = ["PRETRAINED", "PRETRAINED_NAME", "Competition", "Generator", "Layout", "NotebookParams", "Reader", "Source",
           "SynthSpec", "default_metric", "get", "identify", "layout", "layouts", "list_competitions", "metric_of",
           "names", "of_manifest", "recognise", "register", "unregister"]

# The competitions in registration order (a synthetic download's seed depends on its place here).
_MODULES = (siim, ham10000, pcam, isic9, melanoma10k, isic2024)
# Layouts no competition claims; recognised after every competition's own layout.
_GENERIC = (folders.LAYOUT, csv_file.LAYOUT)

_REGISTRY: dict[str, Competition] = {}
_LAYOUTS: dict[str, Layout] = {}


class Recorded(Protocol):
    """What the registry reads of a records manifest (kit.data.records.Manifest)."""

    competition: Optional[str]
    layout: str
    classes: Sequence[str]
    n_classes: int


def register(competition: Competition) -> Competition:
    """Add ``competition`` (and its layout) to the registry; a name registered twice is an error."""
    if competition.name in _REGISTRY:
        raise ValueError(f"competition {competition.name!r} registered twice")
    known = _LAYOUTS.get(competition.layout)
    if known is not None and known != competition.download:
        raise ValueError(f"layout {competition.layout!r} registered twice, as two different readers")
    _REGISTRY[competition.name] = competition
    _LAYOUTS[competition.layout] = competition.download
    return competition


def unregister(name: str) -> None:
    """Take competition ``name`` out of the registry (its layout too, unless another competition reads with it)."""
    comp = _REGISTRY.pop(name)
    if comp.download not in (*_GENERIC, *(c.download for c in _REGISTRY.values())):
        del _LAYOUTS[comp.layout]


def list_competitions() -> list[str]:
    """Registered competition names, in registration order."""
    return list(_REGISTRY)


names = list_competitions


def get(name: str) -> Competition:
    """The competition registered as ``name``; KitError naming the known ones otherwise."""
    if name not in _REGISTRY:
        raise KitError(f"competition: unknown competition {name!r} (known: {', '.join(_REGISTRY)})")
    return _REGISTRY[name]


def layouts() -> list[str]:
    """The layout readers the registry's competitions use, then the generic ones (the --layout choices)."""
    named = list(dict.fromkeys(c.layout for c in _REGISTRY.values()))
    return named + [g.name for g in _GENERIC if g.name not in named]


def layout(name: str) -> Layout | None:
    """The layout called ``name`` (a competition's name stands for its layout), or None."""
    if name in _REGISTRY:
        return _REGISTRY[name].download
    return _LAYOUTS.get(name)


def recognise(path: Path) -> Layout | None:
    """The layout of the download at ``path`` (a folder, or one of its files), or None when none recognises it.

    The competitions' own layouts are tried latest registered first (a new competition claims its downloads
    before siim's loose check, any CSV with image_name and patient_id, can), the generic ones last.
    """
    own = [lay for lay in reversed(_LAYOUTS.values()) if not lay.generic]
    for lay in (*own, *_GENERIC):
        test = lay.recognise_file if path.is_file() else lay.recognise_folder
        if test is not None and test(path):
            return lay
    return None


def identify(layout: str, classes: list[str] | tuple[str, ...]) -> Competition | None:
    """The competition a download of ``layout`` with ``classes`` is, or None for a generic download.

    Class folders serve two competitions, told apart by their class names (case and spaces as written).
    """
    matches = [c for c in _REGISTRY.values() if c.layout == layout
               and (layout != "folders" or [k.lower() for k in c.classes] == [str(k).lower() for k in classes])]
    return matches[0] if len(matches) == 1 else None


def of_manifest(manifest: Recorded) -> Competition | None:
    """The competition records were written from (their manifest's ``competition``, else recognised)."""
    if manifest.competition:
        return get(manifest.competition)
    return identify(manifest.layout, list(manifest.classes))


def metric_of(manifest: Recorded) -> str:
    """The metric that scores records: the competition's, else ``default_metric`` for their classes."""
    comp = of_manifest(manifest)
    return comp.metric if comp is not None else default_metric(manifest.n_classes or 2)


def default_metric(n_classes: int) -> str:
    """The metric of a download no competition claims: ROC AUC for 2 classes, balanced accuracy beyond."""
    return task_for(n_classes).default_metric


for _layout in _GENERIC:
    _LAYOUTS[_layout.name] = _layout
for _module in _MODULES:
    register(_module.COMPETITION)
