"""``kit`` verbs that work on what training wrote: predict, check, blend, stack, runs, report.

Parsing and printing only, as in kit.cli.app (which adds these verbs to its parser); each verb imports its module
lazily, so ``kit check``, ``kit blend`` and ``kit runs`` never import TensorFlow or Keras.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from kit.core.errors import KitError

if TYPE_CHECKING:  # kit.ensemble.stack imports pandas: only verbs that stack load it
    from kit.ensemble.stack import StackConfig


def _csv_floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


# --- predict / check / blend ---------------------------------------------------------------------


def add_predict(sub: argparse._SubParsersAction) -> None:
    """Add ``kit predict`` to the ``kit`` parser."""
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
    from kit.data import precheck
    from kit.runs.folder import RunFolder

    RunFolder(args.run).check_trained()
    precheck.predict_paths(args.records, args.out, args.sample_submission, force=args.force)
    from kit.ensemble import predict

    report = predict.predict_run(args.run, args.records, args.out, sample_submission=args.sample_submission,
                                 tta=args.tta, fold_weights=args.fold_weights, batch=args.batch)
    print(predict.format_report(report))
    return 0


def add_check(sub: argparse._SubParsersAction) -> None:
    """Add ``kit check`` to the ``kit`` parser."""
    p = sub.add_parser("check", help="check a submission against sample_submission.csv")
    p.add_argument("submission")
    p.add_argument("--sample-submission", required=True)
    p.set_defaults(func=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    from kit.ensemble import submission

    problems = submission.check_submission(args.submission, args.sample_submission)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 1
    print(f"{args.submission}: OK")
    return 0


def add_blend(sub: argparse._SubParsersAction) -> None:
    """Add ``kit blend`` to the ``kit`` parser."""
    from kit.training.config import BLEND_METHODS

    p = sub.add_parser("blend", help="blend submission CSVs (mean, rank, power, geomean; weights fit on OOF)")
    p.add_argument("inputs", nargs="+", help="submission CSVs")
    p.add_argument("--out", required=True)
    p.add_argument("--method", default="mean", choices=BLEND_METHODS,
                   help="how probabilities are averaged (default mean)")
    p.add_argument("--weights", type=_csv_floats, help="one weight per input")
    p.add_argument("--power", type=float, default=2.0, help="exponent for --method power, finite and > 0 (default 2.0)")
    p.add_argument("--oof", nargs="+", help="run folders whose out-of-fold predictions fit the weights (one per input, in any order: "
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
    from kit.ensemble import blend

    report = blend.blend_submissions(args.inputs, args.out, method=args.method, weights=args.weights, power=args.power,
                                     oof=args.oof, fit=args.fit, rank_per_fold=args.rank_per_fold,
                                     sample=args.sample_submission, scores=args.scores, force=args.force,
                                     pair_by_order=args.pair_by_order)
    print(blend.format_report(report))
    return 0


# --- stack ---------------------------------------------------------------------------------------


def add_stack(sub: argparse._SubParsersAction) -> None:
    """Add ``kit stack`` to the ``kit`` parser."""
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
    from kit.ensemble import stack

    result = stack.stack(stack_config(args), log=lambda line: print(line, flush=True), force=args.force)
    print(stack.format_result(result))
    return 0


def stack_config(args: argparse.Namespace) -> StackConfig:
    """``kit stack``'s parsed flags as the StackConfig that ``kit.ensemble.stack.stack`` takes."""
    from kit.ensemble.stack import StackConfig

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


def add_runs(sub: argparse._SubParsersAction) -> None:
    """Add ``kit runs`` to the ``kit`` parser."""
    from kit.runs import listing as runs

    p = sub.add_parser("runs", help="every run folder under the given folders, one row each, best CV first",
                       description="List run (and stack) folders: model, the records it trained on, size, epochs, "
                                   "folds finished / planned, CV by the run's metric and its spread over folds, when, "
                                   "and the state (finished, running, error, resumable, or bad <file>). "
                                   "Reads the runs' small files; never loads TensorFlow. --top and --names rank runs "
                                   "of one records folder and one metric only: pick them with --records / --metric. "
                                   "`kit runs merge RUN_A RUN_B ... --out RUN` joins runs that trained different folds "
                                   "of the same records with the same settings into one run folder.")
    p.add_argument("folders", nargs="*", default=["runs"],
                   help="folders to search (default: runs); or merge RUN_A RUN_B ... (a folder named merge: ./merge)")
    p.add_argument("--sort", default="cv", choices=runs.SORT_KEYS,
                   help="cv: mean of the folds' scores (default); pooled: all OOF predictions scored together")
    p.add_argument("--top", type=int, help="only the first N rows")
    p.add_argument("--records", metavar="DIR", help="only runs trained on these records (the run config's records)")
    p.add_argument("--metric", metavar="NAME", help="only runs scored by this metric, e.g. auc")
    p.add_argument("--competition", metavar="NAME", help="only runs of this competition (the run config's competition)")
    p.add_argument("--out", metavar="RUN", help="with merge: the merged run folder to write (must not exist)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="a JSON list instead of the table")
    out.add_argument("--names", action="store_true",
                     help="only the run folders, one a line: kit blend ... --fit --oof $(kit runs runs/ --top 5 --names)")
    p.set_defaults(func=_run_runs)


def _run_runs(args: argparse.Namespace) -> int:
    from kit.runs import listing as runs

    if args.folders[:1] == ["merge"]:
        return _run_runs_merge(args)
    if args.out:
        raise KitError("--out: only with `kit runs merge RUN_A RUN_B ... --out RUN`")
    rows = runs.scan(args.folders, sort=args.sort, top=args.top, records=args.records, metric=args.metric,
                     competition=args.competition, names=args.names,
                     warn=lambda line: print(f"kit runs: warning: {line}", file=sys.stderr))
    print(runs.format_json(rows) if args.json else runs.format_names(rows) if args.names else runs.format_table(rows))
    return 0


def _run_runs_merge(args: argparse.Namespace) -> int:
    """``kit runs merge RUN_A RUN_B ... --out RUN``."""
    from kit.runs import listing as runs

    if not args.out:
        raise KitError("runs merge: --out RUN is required (the merged run folder to write)")
    for flag, given in (("--top", args.top is not None), ("--records", args.records), ("--metric", args.metric),
                        ("--competition", args.competition), ("--json", args.json), ("--names", args.names)):
        if given:
            raise KitError(f"{flag}: not with `kit runs merge`")
    out = runs.merge_runs(args.folders[1:], args.out)
    print(runs.format_merged(out))
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


def add_report(sub: argparse._SubParsersAction) -> None:
    """Add ``kit report`` to the ``kit`` parser."""
    # the bounds are kit.ensemble.report's MAX_LEADERBOARD and MAX_DRAWS, written out: importing kit.ensemble.report loads pandas
    p = sub.add_parser("report", help="one self-contained HTML page about a run: CV, curves, worst mistakes, "
                       "Grad-CAM, the leaderboard shake-up estimate")
    p.add_argument("run", help="run folder written by `kit train` (or a stack folder)")
    p.add_argument("--out", help="the HTML file (default RUN/report.html); never a file of the run or another file "
                   "that is not a kit report page")
    p.add_argument("--records", help="the records the run trained on, if they moved (default: the run config's)")
    p.add_argument("--public", type=_whole_number, help="public leaderboard size in images, 0 to 1,000,000 "
                   "(default: the competition's; else the test split's size as one leaderboard)")
    p.add_argument("--private", type=_whole_number, help="private leaderboard size in images, 1 to 1,000,000 "
                   "(default: as --public)")
    p.add_argument("--test-records", metavar="DIR", help="test records (`kit records --test`) whose size is the "
                   "leaderboard's when the competition's is not known (default: a stack config's test_records, "
                   "else the test split of the records' download)")
    p.add_argument("--draws", type=_whole_number, default=200, help="bootstrap draws for the shake-up estimate, "
                   "2 to 10,000 (default 200)")
    p.add_argument("--mistakes", type=int, default=16, help="worst out-of-fold mistakes shown (default 16)")
    p.add_argument("--no-gradcam", dest="gradcam", action="store_false", help="leave out the Grad-CAM heatmaps")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from kit.ensemble import report

    result = report.write_report(args.run, args.out, records=args.records, public=args.public, private=args.private,
                                 draws=args.draws, mistakes=args.mistakes, with_gradcam=args.gradcam,
                                 test_records=args.test_records)
    print(report.format_result(result))
    return 0
