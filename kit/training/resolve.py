"""Resolving a training config against its records: the checks that fail before anything is written, and what
the user left out filled in (size, folds, classes, metadata columns, and kit.training.defaults' model, weights,
augmentation and metric). Example::

    cfg, manifest = resolve(Config(records="records/siim256", out="runs/b0"), accelerated=True, log=print)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

from kit.training import backbones, defaults, models, pipeline
from kit.data import competitions, records
from kit.core import metrics
from kit.training.config import SMOKE_FOLDS, Config, smoke_config
from kit.core.errors import KitError
from kit.training.fit_parts import make_loss


def chosen_meta_columns(names: Sequence[str], numeric: Sequence[str], categorical: Mapping[str, int],
                        manifest: records.Manifest, where: str) -> tuple[tuple[str, ...], dict[str, int]]:
    """The metadata inputs a user named, in the records' order; KitError naming a column that is not one.

    A column in the train download but not the test one (ISIC 2024's diagnosis, biopsy results, lesion
    id) is refused with its reason: it would score well in CV and be missing when predicting."""
    train_only = set(manifest.train_only_columns)
    known = [*numeric, *categorical]
    for name in names:
        if name in train_only:
            raise KitError(f"meta_columns: {name!r} is in the train download only (not in the test one), so it "
                           "can never be a model input")
        if name not in known:
            raise KitError(f"meta_columns: {name!r} is not a metadata column of {where} (columns: "
                           f"{', '.join(known) or 'none'})")
    wanted = set(names)
    return tuple(c for c in numeric if c in wanted), {c: n for c, n in categorical.items() if c in wanted}


def resolve(cfg: Config, *, accelerated: bool = False, log: Callable[[str], None] | None = None,
            smoke: bool = False) -> tuple[Config, records.Manifest]:
    """Check ``cfg`` against its records and fill in size, folds, classes, id_name and metadata columns, and what the
    user left out (model, weights, augmentation, metric: kit.training.defaults), saying so in one line to ``log``.

    ``accelerated``: a GPU or TPU trains this run (an ImageNet backbone is then worth fine-tuning by default);
    ``smoke``: a smoke rehearsal (kit.training.config.smoke_config) of at most SMOKE_FOLDS folds."""
    if not cfg.records:
        raise KitError("records: no records folder given (--records DIR)")
    cfg, _ = smoke_config(cfg, _smoke_swaps(cfg.model), smoke)
    if not cfg.out:
        raise KitError("out: no run folder given (--out RUN)")
    folder = Path(cfg.records)
    if not folder.is_dir():
        raise KitError(f"{folder}: records folder not found")
    manifest = records.read_manifest(folder, "train")
    where = f"{folder / 'manifest.json'}"
    if not manifest.labelled or manifest.split == "test":
        raise KitError(f"{where}: these are test records (unlabelled); train on the train split")
    size = manifest.image_size
    if cfg.size and cfg.size != size:
        raise KitError(f"{where}: image_size is {size} but size {cfg.size} was asked; write records at "
                       f"{cfg.size} px (kit records --size {cfg.size}) or leave size out")
    available = manifest.fold_ids
    if len(available) < 2:
        raise KitError(f"{where}: {len(available)} fold(s); k-fold training needs at least 2")
    folds = tuple(cfg.folds) or tuple(available)
    if smoke:
        folds = folds[:SMOKE_FOLDS]
    missing = [k for k in folds if k not in available]
    if missing:
        raise KitError(f"folds: fold {missing[0]} is not in {where} (folds there: "
                       f"{','.join(map(str, available))})")
    for k in folds:
        info = manifest.folds[k]
        if manifest.task.single_class(info):
            raise KitError(f"{where}: fold {k} holds one class only, so its AUC is undefined; write the records "
                           f"with fewer folds")
    if cfg.model:
        backbones.info(cfg.model)  # unknown: one line naming the known ones
    comp = competitions.of_manifest(manifest)
    choices = defaults.Choices()
    model, weights = defaults.choose_model(cfg.model, cfg.weights, accelerated=accelerated, choices=choices)
    models.check_weights(model, weights)  # a missing file, a preset of another architecture: one line
    cfg = cfg.replace(model=model, weights=weights)
    cfg.check_choices()
    augment = defaults.choose_augment(cfg.augment, comp.name if comp else None, comp.augment if comp else None, choices)
    cfg = cfg.with_schedule_defaults().replace(augment=augment)
    cfg.check_numbers()
    pipeline.resolve_augment(cfg.augment, cfg.augment_options)
    if cfg.epoch_positives and not cfg.oversample:
        raise KitError("epoch_positives: needs oversample, the positives' share of each epoch (e.g. 0.2 for 1:4)")
    meta = manifest.metadata
    numeric = meta.numeric
    # public SIIM records carry codes without their tables: those columns cannot be one-hot encoded
    categorical = {c: len(codes) for c, codes in meta.categorical.items() if codes}
    if cfg.meta_columns:
        cfg = cfg.replace(meta=True)  # naming the columns asks for them
        numeric, categorical = chosen_meta_columns(cfg.meta_columns, numeric, categorical, manifest, where)
    if cfg.meta and not (numeric or categorical):
        raise KitError(f"{where}: meta was asked but the records hold no metadata columns")
    stats = {c: [v.mean, v.std] for c, v in meta.numeric_stats.items() if c in numeric}
    classes = manifest.classes
    metric = defaults.choose_metric(cfg.metric, comp.name if comp else None, comp.metric if comp else None,
                                    manifest.n_classes or 2, choices)
    if metric not in metrics.METRICS:
        raise KitError(f"metric: unknown metric {metric!r} (known: {', '.join(metrics.METRICS)})")
    resolved = cfg.replace(
        metric=metric, competition=comp.name if comp else "",
        secondary_metrics=list(comp.secondary) if comp and not cfg.metric else list(cfg.secondary_metrics),
        size=size, folds=list(folds), n_classes=manifest.n_classes, classes=list(classes), id_name=manifest.id_name,
        meta_numeric=list(numeric) if cfg.meta else [], meta_categorical=categorical if cfg.meta else {},
        meta_stats=stats if cfg.meta else {},
    )
    make_loss(resolved)  # unknown or unfitting loss: fail before anything is written
    if log is not None and choices.line():
        log(choices.line())
    return resolved, manifest


def _imagenet(model: str) -> bool:
    return model in backbones.BACKBONES and backbones.is_imagenet_family(model)


def _smoke_swaps(model: str) -> bool:
    """Whether a smoke rehearsal trains its tiny CNN instead: for an ImageNet backbone, and for kit's own choice."""
    return not model or _imagenet(model)
