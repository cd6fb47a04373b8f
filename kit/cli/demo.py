"""``kit demo``: the whole loop on a built-in synthetic competition, offline, in minutes on a CPU.

What it writes under ``out`` (the tree printed at the end)::

    competition/            a SIIM-ISIC-shaped download: train.csv, jpeg/train, jpeg/test, sample_submission.csv
    records/train, records/test   sharded TFRecords with leak-free folds (manifest.json beside them)
    runs/<member>/          one k-fold run per member (the files of kit.runs.folder.RunFolder)
    submissions/<member>.csv, submissions/blend.csv   (+ JSON sidecars)
    kernel/                 the Kaggle kernel folder `kit push --dry-run` renders for the SIIM-ISIC notebook
    runs/<member>/report.html   `kit report` of each member: curves, worst mistakes, Grad-CAM, leaderboard shake-up
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kit.runs import folder as runfolder
from kit.core.errors import KitError
from kit.runs.folder import RunFolder


@dataclass(frozen=True)
class DemoSize:
    """How big the demo competition and its training runs are."""

    n_train: int
    n_test: int
    image_size: int
    folds: int
    epochs: int
    batch: int
    tta: int  # test-time views per test image
    overlap: float  # how much benign and malignant lesions overlap (kit.data.synth.make_competition)


# How much the classes overlap in asymmetry, border, colour variety and size: with 0 every class has one
# look and a small CNN scores AUC 1.000 in its first epoch, which leaves a blend nothing to show; at 0.7
# the members land near 0.88 and miss different images. The tiny size (a test rehearsal: a third of the
# images, half the epochs) overlaps less so that its few positives still teach both members. Batches of
# 16 give twice the updates of 32 for the same compute, which a few-epoch run needs.
FULL = DemoSize(n_train=540, n_test=120, image_size=56, folds=3, epochs=8, batch=16, tta=4, overlap=0.7)
TINY = DemoSize(n_train=180, n_test=48, image_size=56, folds=3, epochs=4, batch=16, tta=1, overlap=0.4)

# Two members that learn the synthetic lesions from scratch on a CPU: the seeds' HAM10000 CNN and their
# PCam CNN. Different architectures make errors that differ, which is what a blend feeds on.
# No warm-up: with a few epochs in all, the first one at full rate teaches the most.
MEMBERS: dict[str, dict] = {
    "small_cnn": {"model": "small_cnn", "lr_max": 1e-3, "lr_start": 1e-3, "lr_min": 5e-5},
    "pcam_cnn": {"model": "pcam_cnn", "lr_max": 1e-3, "lr_start": 1e-3, "lr_min": 5e-5},
}


@dataclass
class DemoReport:
    """Where everything the demo wrote lies, and the scores it printed."""

    out: Path
    cv: dict[str, float] = field(default_factory=dict)  # pooled out-of-fold AUC (each run's CV summary)
    fold_mean: dict[str, float] = field(default_factory=dict)  # out-of-fold AUC, the mean over folds
    submissions: dict[str, Path] = field(default_factory=dict)
    blend_oof: float = float("nan")
    blend_weights: list[float] = field(default_factory=list)
    plots: dict[str, list[Path]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    kernel_folder: Path | None = None
    reports: dict[str, Path] = field(default_factory=dict)
    shakeup: dict[str, dict] = field(default_factory=dict)  # each member's kit report numbers, "shakeup"
    seconds: float = 0.0


def _step(log: Callable[[str], None], n: int, text: str) -> None:
    log(f"\n== {n}/6 {text}")


def run_demo(out: str | Path = "demo", *, tiny: bool = False, seed: int = 0,
             log: Callable[[str], None] = print, smoke: bool = False) -> DemoReport:
    """Generate a competition, write records, train two members, predict with TTA, blend, check, render a kernel,
    and write each member's report (``smoke``: as a smoke rehearsal, kit.training.config.smoke_config)."""
    from kit.ensemble import blend, predict, report as run_report, submission
    from kit.kaggle import client as kaggle, kernel_folder
    from kit.data import records, synth
    from kit.training import train
    from kit.training.config import Config

    t0 = time.perf_counter()
    size = TINY if tiny else FULL
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise KitError(f"{out}: already exists and is not empty; pass another --out or remove it")
    report = DemoReport(out=out)

    _step(log, 1, "a synthetic SIIM-ISIC competition (lesions on skin; malignancy in asymmetry, border, colour, size)")
    comp = synth.make_competition("siim", out / "competition", n_train=size.n_train, n_test=size.n_test,
                                  size=size.image_size * 2, seed=seed, overlap=size.overlap)
    log(f"wrote {size.n_train} train and {size.n_test} test images under {comp} "
        f"(classes overlap {size.overlap}: the spread of each cue over the gap between the class means)")

    _step(log, 2, "records with leak-free folds (grouped by patient, checked)")
    train_dir, test_dir = out / "records" / "train", out / "records" / "test"
    manifest = records.write_from_source(comp, train_dir, layout="siim", n_folds=size.folds,
                                         size=size.image_size, seed=seed, smoke=smoke)
    log(records.format_summary(manifest))
    records.write_from_source(comp, test_dir, layout="siim", size=size.image_size, test=True, seed=seed, smoke=smoke)

    _step(log, 3, f"training {len(MEMBERS)} members over {size.folds} folds, {size.epochs} epochs each "
                  "(Keras prints one line per epoch; val_metric is the fold's AUC)")
    runs: dict[str, Path] = {}
    for name, settings in MEMBERS.items():
        cfg = Config(records=str(train_dir), out=str(out / "runs" / name), epochs=size.epochs, batch=size.batch,
                     lr_ramp_epochs=0, lr_sustain_epochs=1, lr_decay=0.7, augment="default", seed=seed,
                     verbose=2, **settings)
        log(f"-- {name}")
        result = train.train_folds(cfg, log=log, smoke=smoke)
        log(train.format_result(result))
        runs[name] = result.run
        report.cv[name] = result.scores[-1]
        report.plots[name] = sorted(RunFolder(result.run).plots.glob("*.png"))

    _step(log, 4, "predicting the test set with TTA, blending with weights fit on OOF, checking")
    sample = comp / "sample_submission.csv"
    subs_dir = out / "submissions"
    for name, run in runs.items():
        pred = predict.predict_run(run, test_dir, subs_dir / f"{name}.csv", sample_submission=sample,
                                    tta=size.tta)
        log(predict.format_report(pred))
        report.submissions[name] = subs_dir / f"{name}.csv"
    # Each fold's model squashes its probabilities a little differently after a few epochs, so pooling
    # raw OOF predictions across folds understates a model; kit blend fits AUC weights on the mean of the
    # per-fold AUCs, with the members ranked within each fold.
    blended = blend.fit_and_blend([report.submissions[n] for n in MEMBERS], [runs[n] for n in MEMBERS],
                                  subs_dir / "blend.csv", method="rank", sample=sample)
    fit = blended.fit
    log(blend.format_report(blended))
    report.submissions["blend"] = subs_dir / "blend.csv"
    report.blend_oof, report.blend_weights = fit.blend_score, fit.weights
    report.fold_mean = dict(zip(MEMBERS, fit.member_scores))
    report.problems = submission.check_submission(report.submissions["blend"], sample)
    log(f"kit check {report.submissions['blend']}: " + ("OK" if not report.problems else "; ".join(report.problems)))

    _step(log, 5, "the Kaggle kernel `kit push notebooks/siim_isic_tpu.ipynb --dry-run` would send")
    defaults = kaggle.default_metadata()
    if defaults is None:
        raise KitError("kernel-metadata.json: not found beside kit/ (the demo runs from a kit checkout)")
    notebook = kernel_folder.checkout_root() / defaults["code_file"]
    pushed = kaggle.push(notebook, folder=out / "kernel", dry_run=True, defaults=defaults)
    log(kaggle.format_push(pushed))
    report.kernel_folder = pushed.kernel.folder

    _step(log, 6, "one HTML report per member (`kit report RUN`): curves, worst mistakes, Grad-CAM, shake-up")
    for name, run in runs.items():
        written = run_report.write_report(run)
        log(run_report.format_result(written))
        report.reports[name], report.shakeup[name] = written.path, written.shakeup

    report.seconds = time.perf_counter() - t0
    log(format_report(report))
    return report


def format_report(report: DemoReport) -> str:
    """The closing summary: OOF scores of each member and the blend, and where every file is."""
    names = list(report.cv)
    width = max(len(n) for n in [*names, "blend"])
    weights = report.blend_weights or [float("nan")] * len(names)
    lines = ["", f"== done in {report.seconds:.0f} s", f"out-of-fold AUC: pooled ({runfolder.CV}) and the mean over folds (what the blend is fit on)",
             f"  {'':<{width}}  {'pooled':>7}  {'folds':>7}  {'blend weight':>12}"]
    for name, w in zip(names, weights):
        folds = report.fold_mean.get(name, float("nan"))
        lines.append(f"  {name:<{width}}  {report.cv[name]:>7.4f}  {folds:>7.4f}  {w:>12.2f}")
    lines.append(f"  {'blend':<{width}}  {'':>7}  {report.blend_oof:>7.4f}  (rank blend, weights fit on OOF)")
    check = "passes kit check" if not report.problems else "FAILS kit check: " + "; ".join(report.problems)
    lines.append("submissions:")
    lines += [f"  {name:<{width}}  {path}" for name, path in report.submissions.items()]
    lines.append(f"  (blend {check} against {report.out / 'competition' / 'sample_submission.csv'})")
    lines.append("plots:")
    for name, paths in report.plots.items():
        if paths:
            lines.append(f"  {name:<{width}}  {paths[0].parent}/ " + ", ".join(p.name for p in paths))
    lines.append(f"kernel folder (kit push --dry-run): {report.kernel_folder}")
    if report.reports:
        lines.append("reports (open in a browser):")
        lines += [f"  {name:<{width}}  {path}" for name, path in report.reports.items()]
    return "\n".join(lines)
