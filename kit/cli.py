"""The ``kit`` command: parsing and printing only; every verb is one call into a kit module.

Verbs import their module lazily, so ``kit --help``, ``kit check`` and ``kit blend`` never import
TensorFlow or Keras, and ``kit train`` / ``kit predict`` check the paths they are given (kit.precheck)
before they import it. Bad input raises ``KitError``; ``main`` prints it as one line and exits 1; every other
failure is one line too, its exit status saying which kind (see ``main``).
TensorFlow's own log lines are hidden unless ``kit --verbose VERB`` (kit.runtime).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, TextIO

from kit import runtime
from kit.errors import KitError

if TYPE_CHECKING:  # kit.stack imports pandas: only verbs that stack load it
    from kit.stack import StackConfig

Handler = Callable[[argparse.Namespace], int]


def _csv_floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


# --- records -------------------------------------------------------------------------------------


def _add_records(sub: argparse._SubParsersAction) -> None:
    from kit import competitions, imaging
    p = sub.add_parser("records", help="write sharded, fold-aware TFRecords from a competition download")
    p.add_argument("source", help="the competition folder (or its train CSV with --images)")
    p.add_argument("--out", required=True, help="folder for the shards and manifest.json (must not hold records)")
    p.add_argument("--layout", default="auto", choices=["auto", *competitions.layouts()],
                   help="the download's layout (default auto: recognised from its files)")
    p.add_argument("--id-col", help="id column (csv layout)")
    p.add_argument("--label-col", help="label column (csv layout)")
    p.add_argument("--group-col", help="patient/lesion column folds must not split (csv layout)")
    p.add_argument("--images", help="image folder (csv layout, or to override a layout's default)")
    p.add_argument("--n-folds", "--folds", dest="folds", type=int, default=5,
                   help="how many folds to cut (default 5); --folds is its older name")
    p.add_argument("--size", type=int, help="image side in pixels after resizing (default: the images' median "
                   "shorter side, at most 256, said in one line; a test split takes its train split's)")
    p.add_argument("--shards", type=int, help="number of shards (default: about 100 MB each, at least one per fold)")
    p.add_argument("--test", action="store_true", help="write the test split (fold -1) instead of train")
    p.add_argument("--seed", type=int, default=42, help="fold-assignment seed (default 42)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images and list them in the manifest")
    p.add_argument("--resize", default="crop", choices=imaging.RESIZE_POLICIES,
                   help="crop: shorter side to --size, centred square (default); squash: ignore aspect ratio")
    p.add_argument("--workers", type=int, help="image-preparing processes (default: one per core)")
    p.set_defaults(func=_run_records)


def _run_records(args: argparse.Namespace) -> int:
    from kit import records

    manifest = records.write_from_source(
        args.source,
        args.out,
        layout=args.layout,
        id_col=args.id_col,
        label_col=args.label_col,
        group_col=args.group_col,
        images=args.images,
        n_folds=args.folds,
        size=args.size,
        n_shards=args.shards,
        test=args.test,
        seed=args.seed,
        skip_bad=args.skip_bad,
        resize=args.resize,
        workers=args.workers,
        smoke=args.smoke,
    )
    print(records.format_summary(manifest))
    if args.size is None:
        print(f"size: {manifest.image_size} px, chosen from the images (their median shorter side, at most 256); "
              f"--size N to choose")
    print(f"wrote {args.out}")
    return 0


# --- train ---------------------------------------------------------------------------------------


def _add_train(sub: argparse._SubParsersAction) -> None:
    from kit.config import train_flags

    p = sub.add_parser(
        "train", help="k-fold training with out-of-fold predictions",
        description="Train one model per fold, keep each fold's best epoch by the competition's exact metric, "
                    "and write out-of-fold predictions and cv.json. Epochs and learning rates default by what is "
                    "trained: fine-tuning rates with a warm-up when --weights is given, from-scratch rates "
                    "otherwise (the resolved values land in RUN/config.toml).")
    for flag in train_flags():  # one per setting, generated from its declaration in kit.config.Config
        p.add_argument(*flag.names, **{**flag.options, **_usage_typed(flag.options)})
    p.add_argument("--config", help="TOML file of settings; flags given here override it")
    p.add_argument("--resume", action="store_true", help="skip finished folds; restart an unfinished one")
    p.add_argument("--find-lr", action="store_true", help="train nothing: sweep the learning rate over a few hundred "
                   "steps of fold 0's training data, write OUT/lr_find.png and lr_find.csv, and suggest --lr-max")
    p.set_defaults(func=_run_train)


def _usage_typed(options: dict[str, Any]) -> dict[str, Any]:
    """A setting's own parser (``type``) whose ValueError becomes argparse's usage error with its message."""
    parse = options.get("type")
    if parse is None or parse in (int, float, str):
        return {}

    def typed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return {"type": typed}


def _run_train(args: argparse.Namespace) -> int:
    from kit import defaults, precheck, runtime
    from kit.config import Config, train_flags

    flags = {f.dest: getattr(args, f.dest) for f in train_flags() if getattr(args, f.dest) is not None}
    cfg = Config.load(args.config, **flags) if args.config else Config.from_dict(flags, source="flags")
    cfg.check_numbers()
    cfg.check_choices()  # a TOML value the flags' choices= never saw: refused before the paths are checked
    precheck.train_paths(cfg.records, cfg.out)
    if not (args.resume or args.smoke):  # a resumed run keeps its saved weights; a smoke rehearsal swaps the backbone
        defaults.check_model_and_weights(cfg.model, cfg.weights)  # a typo fails here, before TensorFlow loads
    runtime.choose_backend(cfg.strategy)  # --strategy tpu means Keras on JAX: settled before kit.train imports Keras
    from kit import train

    if args.find_lr:
        print(train.format_lr_finding(train.find_lr(cfg, smoke=args.smoke)))
        return 0
    result = train.train_folds(cfg, resume=args.resume, given=sorted(flags), smoke=args.smoke)
    print(train.format_result(result))
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="the backbones kit knows: family, default size, parameters, weights routes")
    p.add_argument("--json", action="store_true", help="one JSON list instead of the table")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from kit import backbones  # the table without Keras: `kit models` answers at once

    rows = backbones.model_table()
    print(json.dumps(rows) if args.json else backbones.format_model_table(rows))
    return 0


def _add_export_backbone(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-backbone", help="save a run's backbone as --weights for the next run "
                       "(a .weights.h5 file, or a preset folder for keras-hub models)")
    p.add_argument("model", help="a saved model, e.g. RUN/fold0/best.keras")
    p.add_argument("--out", required=True, help="NAME.weights.h5 (or a new folder for a keras-hub backbone)")
    p.set_defaults(func=_run_export_backbone)


def _run_export_backbone(args: argparse.Namespace) -> int:
    from kit import models

    print(f"wrote {models.export_backbone(args.model, args.out)}")
    return 0


def _add_convert_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert-weights", help="rewrite an `efficientnet` package .h5 (imagenet, noisy-student) "
                       "for kit's EfficientNet B0-B7, which also run on JAX")
    p.add_argument("source", help="e.g. efficientnet-b3_noisy-student_notop.h5")
    p.add_argument("--model", required=True, help="efficientnet_b0 .. efficientnet_b7")
    p.add_argument("--out", required=True, help="converted file, ending in .weights.h5 (give it to --weights)")
    p.set_defaults(func=_run_convert_weights)


def _run_convert_weights(args: argparse.Namespace) -> int:
    from kit import models

    print(f"wrote {models.convert_efficientnet_weights(args.source, args.out, args.model)}")
    return 0


# --- predict / check / blend ---------------------------------------------------------------------


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="TTA prediction with every fold model; a submission aligned to the sample")
    p.add_argument("--run", required=True, help="run folder written by `kit train`")
    p.add_argument("--records", required=True, help="test records folder (`kit records --test`)")
    p.add_argument("--sample-submission", help="the competition's sample_submission.csv")
    p.add_argument("--out", required=True, help="submission CSV to write")
    p.add_argument("--tta", type=int, default=1, help="number of test-time views (default 1: none)")
    p.add_argument("--fold-weights", type=_csv_floats, help="weights per fold model (default equal)")
    p.add_argument("--batch", type=int, default=64, help="images per prediction batch (default 64)")
    p.add_argument("--force", action="store_true", help="replace --out (and its .json) if they exist")
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from kit import precheck

    precheck.predict_paths(args.run, args.records, args.out, args.sample_submission, force=args.force)
    from kit import predict

    report = predict.predict_run(args.run, args.records, args.out, sample_submission=args.sample_submission,
                                 tta=args.tta, fold_weights=args.fold_weights, batch=args.batch)
    print(predict.format_report(report))
    return 0


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check a submission against sample_submission.csv")
    p.add_argument("submission")
    p.add_argument("--sample-submission", required=True)
    p.set_defaults(func=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    from kit import submission

    problems = submission.check_submission(args.submission, args.sample_submission)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 1
    print(f"{args.submission}: OK")
    return 0


def _add_blend(sub: argparse._SubParsersAction) -> None:
    from kit.config import BLEND_METHODS

    p = sub.add_parser("blend", help="blend submission CSVs (mean, rank, power, geomean; weights fit on OOF)")
    p.add_argument("inputs", nargs="+", help="submission CSVs")
    p.add_argument("--out", required=True)
    p.add_argument("--method", default="mean", choices=BLEND_METHODS,
                   help="how probabilities are averaged (default mean)")
    p.add_argument("--weights", type=_csv_floats, help="one weight per input")
    p.add_argument("--power", type=float, default=2.0, help="exponent for --method power, finite and > 0 (default 2.0)")
    p.add_argument("--oof", nargs="+", help="run folders whose oof.csv fit the weights (one per input, in any order: "
                   "each submission's sidecar NAME.json names the run that wrote it)")
    p.add_argument("--fit", action="store_true", help="fit weights on --oof")
    p.add_argument("--pair-by-order", action="store_true", help="with --fit: pair the submissions with the --oof runs "
                   "in the order given, for submissions without a sidecar (NAME.json from `kit predict`)")
    p.add_argument("--rank-per-fold", action=argparse.BooleanOptionalAction, default=None,
                   help="rank OOF within each fold before fitting (default: on for AUC, whose fit then maximises "
                        "the mean per-fold AUC; off otherwise)")
    p.add_argument("--sample-submission", help="write the blend in this sample's id order (and check its ids)")
    p.add_argument("--scores", action="store_true", help="the inputs are scores (any finite number), not "
                   "probabilities in [0, 1], which are otherwise required")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_run_blend)


def _run_blend(args: argparse.Namespace) -> int:
    from kit import blend

    report = blend.blend_submissions(args.inputs, args.out, method=args.method, weights=args.weights, power=args.power,
                                     oof=args.oof, fit=args.fit, rank_per_fold=args.rank_per_fold,
                                     sample=args.sample_submission, scores=args.scores, force=args.force,
                                     pair_by_order=args.pair_by_order)
    print(blend.format_report(report))
    return 0


# --- stack ---------------------------------------------------------------------------------------


def _add_stack(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stack", help="gradient-boosted trees on metadata, image runs' OOF and per-patient features")
    p.add_argument("--records", required=True, help="train records folder (`kit records`); its folds are the stack's")
    p.add_argument("--runs", nargs="*", default=[], help="image run folders (`kit train`) on those records")
    p.add_argument("--out", required=True, help="the stack's run folder (must not exist)")
    p.add_argument("--test-records", help="test records folder (`kit records --test`)")
    p.add_argument("--predictions", nargs="+", help="each run's test submission (`kit predict`), in --runs order")
    p.add_argument("--sample-submission", help="the competition's sample_submission.csv (id order and columns)")
    p.add_argument("--submission", help="also write the stack's submission here (it is always in OUT/submission.csv)")
    p.add_argument("--force", action="store_true", help="let --submission replace an existing file (never the sample)")
    p.add_argument("--models", nargs="+", default=["lightgbm"],
                   help="lightgbm (default), catboost, xgboost, comma- or space-separated, or all (every installed)")
    p.add_argument("--seeds", type=int, default=1, help="tree models per fold and kind, averaged (default 1)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--undersample", type=float, default=0.0,
                   help="keep at most this many majority-class rows per other row in each fit (default 0: all)")
    p.add_argument("--metadata", action=argparse.BooleanOptionalAction, default=True,
                   help="the records' metadata columns as features (default on)")
    p.add_argument("--group-features", action=argparse.BooleanOptionalAction, default=True,
                   help="group size, z-score, ratio to mean and rank within the patient (default on)")
    p.add_argument("--drop", nargs="+", help="metadata columns or features to leave out")
    p.add_argument("--rounds", type=int, default=2000, help="most trees per model (default 2000)")
    p.add_argument("--early-stopping", type=int, default=100, help="trees without gain before stopping (default 100)")
    p.add_argument("--learning-rate", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=0, help="tree-library threads (default: every core)")
    p.set_defaults(func=_run_stack)


def _run_stack(args: argparse.Namespace) -> int:
    from kit import stack

    result = stack.stack(stack_config(args), log=lambda line: print(line, flush=True), force=args.force)
    print(stack.format_result(result))
    return 0


def stack_config(args: argparse.Namespace) -> StackConfig:
    """``kit stack``'s parsed flags as the StackConfig that ``kit.stack.stack`` takes."""
    from kit.stack import StackConfig

    # --models takes kinds space- or comma-separated: `--models lightgbm,catboost` and `--models lightgbm catboost`
    models = tuple(m for part in args.models for m in part.split(",") if m.strip())
    return StackConfig(
        records=args.records, runs=tuple(args.runs or ()), out=args.out, test_records=args.test_records or "",
        predictions=tuple(args.predictions or ()), sample_submission=args.sample_submission or "",
        submission=args.submission or "", models=models, seeds=args.seeds, seed=args.seed,
        undersample=args.undersample, metadata=args.metadata, group_features=args.group_features,
        drop=tuple(args.drop or ()), rounds=args.rounds, early_stopping=args.early_stopping,
        learning_rate=args.learning_rate, threads=args.threads)


# --- runs / report ------------------------------------------------------------------------------


def _add_runs(sub: argparse._SubParsersAction) -> None:
    from kit import runs

    p = sub.add_parser("runs", help="every run folder under the given folders, one row each, best CV first",
                       description="List run (and stack) folders: model, the records it trained on, size, epochs, "
                                   "folds finished / planned, CV by the run's metric and its spread over folds, when, "
                                   "and the state (finished, running, error, resumable, or bad cv.json / config.toml). "
                                   "Reads the runs' small files; never loads TensorFlow. --top and --names rank runs "
                                   "of one records folder and one metric only: pick them with --records / --metric.")
    p.add_argument("folders", nargs="*", default=["runs"], help="folders to search (default: runs)")
    p.add_argument("--sort", default="cv", choices=runs.SORT_KEYS,
                   help="cv: mean of the folds' scores (default); pooled: all OOF predictions scored together")
    p.add_argument("--top", type=int, help="only the first N rows")
    p.add_argument("--records", metavar="DIR", help="only runs trained on these records (config.toml's records)")
    p.add_argument("--metric", metavar="NAME", help="only runs scored by this metric, e.g. auc")
    p.add_argument("--competition", metavar="NAME", help="only runs of this competition (config.toml's competition)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="a JSON list instead of the table")
    out.add_argument("--names", action="store_true",
                     help="only the run folders, one a line: kit blend ... --fit --oof $(kit runs runs/ --top 5 --names)")
    p.set_defaults(func=_run_runs)


def _run_runs(args: argparse.Namespace) -> int:
    from kit import runs

    rows = runs.scan(args.folders, sort=args.sort, top=args.top, records=args.records, metric=args.metric,
                     competition=args.competition, names=args.names,
                     warn=lambda line: print(f"kit runs: warning: {line}", file=sys.stderr))
    print(runs.format_json(rows) if args.json else runs.format_names(rows) if args.names else runs.format_table(rows))
    return 0


def _whole_number(text: str) -> int:
    """An integer, also written as 1e6: a size of a million images is easier to type so."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


def _add_report(sub: argparse._SubParsersAction) -> None:
    # the bounds are kit.report's MAX_LEADERBOARD and MAX_DRAWS, written out: importing kit.report loads pandas
    p = sub.add_parser("report", help="one self-contained HTML page about a run: CV, curves, worst mistakes, "
                       "Grad-CAM, the leaderboard shake-up estimate")
    p.add_argument("run", help="run folder written by `kit train` (or a stack folder)")
    p.add_argument("--out", help="the HTML file (default RUN/report.html); never a file of the run or another file "
                   "that is not a kit report page")
    p.add_argument("--records", help="the records the run trained on, if they moved (default: config.toml's)")
    p.add_argument("--public", type=_whole_number, help="public leaderboard size in images, 0 to 1,000,000 "
                   "(default: the competition's; else the test split's size as one leaderboard)")
    p.add_argument("--private", type=_whole_number, help="private leaderboard size in images, 1 to 1,000,000 "
                   "(default: as --public)")
    p.add_argument("--test-records", metavar="DIR", help="test records (`kit records --test`) whose size is the "
                   "leaderboard's when the competition's is not known (default: a stack's config.toml test_records, "
                   "else the test split of the records' download)")
    p.add_argument("--draws", type=_whole_number, default=200, help="bootstrap draws for the shake-up estimate, "
                   "2 to 10,000 (default 200)")
    p.add_argument("--mistakes", type=int, default=16, help="worst out-of-fold mistakes shown (default 16)")
    p.add_argument("--no-gradcam", dest="gradcam", action="store_false", help="leave out the Grad-CAM heatmaps")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from kit import report

    result = report.write_report(args.run, args.out, records=args.records, public=args.public, private=args.private,
                                 draws=args.draws, mistakes=args.mistakes, with_gradcam=args.gradcam,
                                 test_records=args.test_records)
    print(report.format_result(result))
    return 0


# --- kaggle --------------------------------------------------------------------------------------


def _add_kaggle(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="push a notebook as a Kaggle kernel with the kaggle client")
    p.add_argument("notebook")
    p.add_argument("--accelerator", choices=["t4", "tpu", "cpu"],
                   help="t4 (two T4 GPUs), tpu (TPU v5e-8) or cpu (default: the repository's kernel-metadata.json "
                        "for its notebook, else t4)")
    p.add_argument("--competition", help="competition slug to attach")
    p.add_argument("--dataset", action="append", default=[], help="owner/slug dataset to attach (repeatable)")
    p.add_argument("--kernel-source", action="append", default=[], help="owner/slug kernel to attach (repeatable)")
    p.add_argument("--model-source", action="append", default=[],
                   help="Kaggle Model to attach, owner/model/framework/variation/version (repeatable), e.g. "
                        "keras/efficientnet/keras/efficientnet_b0_ra_imagenet/2")
    p.add_argument("--owner", help="Kaggle user name for the kernel id (default: the kaggle client's configuration)")
    p.add_argument("--slug", help="kernel slug (default from the title)")
    p.add_argument("--title", help="kernel title, at least 5 characters (default from the notebook name)")
    p.add_argument("--public", action="store_true", help="make the kernel public (default private)")
    p.add_argument("--internet", action="store_true", help="enable internet in the kernel (default off)")
    p.add_argument("--kit-dataset", help="owner/slug of a dataset holding the kit wheel (default: bundle the wheel)")
    p.add_argument("--dry-run", action="store_true", help="render the kernel folder and show it; send nothing")
    p.add_argument("--folder", help="where to render the kernel folder (default: a temporary one)")
    p.set_defaults(func=_run_push)

    p = sub.add_parser("status", help="status of a Kaggle kernel")
    p.add_argument("kernel", help="owner/slug")
    p.add_argument("--wait", action="store_true", help="poll until complete or error")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between polls with --wait (default 30)")
    p.set_defaults(func=_run_status)

    p = sub.add_parser("output", help="download a kernel's outputs; submission.csv lands in submissions/")
    p.add_argument("kernel", help="owner/slug, or owner/slug/VERSION to name the files by that version")
    p.add_argument("--out", help="folder for the outputs (default runs/kernels/OWNER-SLUG/vN)")
    p.set_defaults(func=_run_output)

    p = sub.add_parser("submit", help="submit a CSV to a competition (runs `kit check` first when it can)")
    p.add_argument("submission", help="the CSV; for a code competition, the output file name of the kernel")
    p.add_argument("--competition", required=True)
    p.add_argument("--message", required=True)
    p.add_argument("--sample-submission", help="check against this sample before submitting")
    p.add_argument("--kernel", help="code competitions: submit this kernel's output (owner/slug/VERSION)")
    p.set_defaults(func=_run_submit)


def _run_push(args: argparse.Namespace) -> int:
    from kit import kaggle

    result = kaggle.push(
        args.notebook, folder=args.folder, owner=args.owner, dry_run=args.dry_run, slug=args.slug, title=args.title,
        accelerator=args.accelerator, competition=args.competition, datasets=args.dataset,
        kernels=args.kernel_source, models=args.model_source, private=not args.public, internet=args.internet,
        kit_dataset=args.kit_dataset, defaults=kaggle.default_metadata())  # the repository's default kernel
    print(kaggle.format_push(result))
    return 0


def _run_status(args: argparse.Namespace) -> int:
    from kit import kaggle

    status = kaggle.kernel_status(args.kernel, wait=args.wait, interval=args.interval,
                                  on_change=lambda s: print(kaggle.format_status(s), file=sys.stderr, flush=True))
    print(kaggle.format_status(status))
    return 1 if status.status == "error" else 0


def _run_output(args: argparse.Namespace) -> int:
    from kit import kaggle

    print(kaggle.format_output(kaggle.kernel_output(args.kernel, out=args.out)))
    return 0


def _run_submit(args: argparse.Namespace) -> int:
    from kit import kaggle

    print(kaggle.submit(args.submission, args.competition, args.message, sample=args.sample_submission,
                        kernel=args.kernel))
    return 0


# --- demo ----------------------------------------------------------------------------------------


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole loop on a built-in synthetic competition")
    p.add_argument("--out", default="demo", help="folder for everything the demo writes (default ./demo)")
    p.add_argument("--tiny", action="store_true", help="a reduced size, for tests")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from kit import demo

    demo.run_demo(args.out, tiny=args.tiny, smoke=args.smoke)
    return 0


# --- entry point ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The full ``kit`` argument parser (one subcommand per verb of the CLI contract)."""
    parser = argparse.ArgumentParser(
        prog="kit",
        description="Kaggle medical-image classification: records, k-fold training, TTA, submissions, blends.",
    )
    from kit import __version__

    parser.add_argument("--version", action="version", version=f"kit {__version__}")
    parser.add_argument("--verbose", dest="tf_logs", action="store_true",
                        help="before the verb: show TensorFlow's, XLA's and JAX's own log lines (hidden by default; "
                             "also KIT_VERBOSE=1)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for add in (_add_records, _add_train, _add_predict, _add_blend, _add_stack, _add_check, _add_kaggle, _add_models,
                _add_export_backbone, _add_convert_weights, _add_demo, _add_runs, _add_report):
        add(sub)
    return parser


# Exit statuses (README, "When things go wrong"): argparse itself exits 2 on a usage error.
EXIT_BAD_INPUT = 1  # a KitError: the file, row, field or setting is named
EXIT_ENVIRONMENT = 3  # the machine refused: disk full, read-only, permission denied, name too long
EXIT_UNEXPECTED = 70  # a bug in kit (EX_SOFTWARE): one line, the traceback in a file
EXIT_INTERRUPTED = 130


def _os_error_line(exc: OSError) -> str:
    """One line for an OSError: the path(s) it names, then what the system said."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def write_traceback(verb: str) -> str:
    """Write the traceback being handled to a new file (KIT_TRACEBACK_DIR, else the temp folder); its path."""
    import tempfile
    import traceback

    folder = os.environ.get("KIT_TRACEBACK_DIR") or tempfile.gettempdir()
    try:
        fd, path = tempfile.mkstemp(prefix=f"kit-{verb}-", suffix=".traceback.txt", dir=folder)
        with os.fdopen(fd, "w") as f:
            f.write(f"kit {verb}: {' '.join(sys.argv)}\n")
            traceback.print_exc(file=f)
        return path
    except OSError:  # nowhere to write it (a full disk): the traceback is lost, the line still says what broke
        return "(could not be written)"


class _ClosableStdout:
    """Standard output that a reader closing its end of the pipe (``kit train | head -3``) cannot break.

    A closed standard output is not a failure of the work (the Unix convention): on the first
    BrokenPipeError, file descriptor 1 is pointed at the null device, so the rest of kit's lines, Keras'
    progress and anything buffered go nowhere and the verb ends with the status of its work.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.closed_by_reader = False

    def write(self, text: str) -> int:
        """Write ``text``; nothing (and no error) once the reader has gone."""
        if not self.closed_by_reader:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        """Write each of ``lines``."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Flush, unless the reader has gone."""
        if not self.closed_by_reader:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        self.closed_by_reader = True
        try:
            fd = self._stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError, AttributeError):  # no descriptor (a test's capture): nothing to redirect
            return
        os.dup2(null, fd)  # what is still buffered, and Python's flush at exit, land in the null device
        os.close(null)
        try:
            self._stream.flush()
        except OSError:
            pass

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...: the real stream's
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kit`` with ``argv``; returns the exit status (always one line on stderr when it fails).

    1: bad input (KitError), 2: usage (argparse), 3: the environment (an OSError: disk full, read-only,
    permission), 130: interrupted, 70: anything else, with the path of the file holding its traceback.
    A reader that closes kit's standard output early changes nothing but what is printed.
    """
    args = build_parser().parse_args(argv)
    # the Keras backend for this machine, and TensorFlow's own lines (oneDNN notices, rendezvous, retracing)
    # hidden: they drown kit's output; --verbose shows them
    runtime.prepare(args.tf_logs)
    from kit.config import smoke_requested

    args.smoke = smoke_requested(os.environ)  # KIT_SMOKE=1: the one place it is read
    stdout = sys.stdout
    guarded = sys.stdout = _ClosableStdout(stdout) if stdout is not None else stdout
    try:
        return _run_verb(args)
    finally:
        if guarded is not None:
            guarded.flush()  # a reader gone by now is found here, not by Python's flush at exit
        sys.stdout = stdout


def _run_verb(args: argparse.Namespace) -> int:
    """``args.func(args)``, every failure turned into its exit status and one line on stderr."""
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"kit {args.verb}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the boundary: a bug still ends in one line, never a wall of text
        status, line = failure(exc, args.verb)
        print(f"kit {args.verb}: error: {line}", file=sys.stderr)
        return status


def failure(exc: Exception, verb: str) -> tuple[int, str]:
    """The exit status and the one line for ``exc`` (called while it is handled: a bug's traceback goes to a file)."""
    if isinstance(exc, KitError):
        return EXIT_BAD_INPUT, _one_line(str(exc))
    if isinstance(exc, OSError):
        return EXIT_ENVIRONMENT, _one_line(_os_error_line(exc))
    if isinstance(exc, MemoryError):
        return EXIT_ENVIRONMENT, "out of memory"
    where = write_traceback(verb)
    return EXIT_UNEXPECTED, f"unexpected {type(exc).__name__}: {_one_line(str(exc)) or 'no message'} (traceback: {where})"


def _one_line(text: str, limit: int = 400) -> str:
    """``text`` folded onto one line (TensorFlow's messages span dozens), at most ``limit`` characters: a long
    name or id inside it is shortened to its start and end first, so that the reason after it survives."""
    words = text.split()
    line = " ".join(words)
    if len(line) > limit:
        line = " ".join(_shortened(w) for w in words)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _shortened(word: str, head: int = 60, tail: int = 20) -> str:
    """``word`` (a path, an id) as its first ``head`` and last ``tail`` characters when it is longer than both."""
    return word if len(word) <= head + tail + 3 else f"{word[:head]}...{word[-tail:]}"


if __name__ == "__main__":
    raise SystemExit(main())
