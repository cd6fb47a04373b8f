"""The ``kit`` command: parsing and printing only; every verb is one call into a kit module.

Verbs import their module lazily, so ``kit --help``, ``kit check`` and ``kit blend`` never import
TensorFlow or Keras, and ``kit train`` / ``kit predict`` check the paths they are given (kit.data.precheck)
before they import it. Bad input raises ``KitError``; ``main`` prints it as one line and exits 1; every other
failure is one line too, its exit status saying which kind (see ``main``).
TensorFlow's own log lines are hidden unless ``kit --verbose VERB`` (kit.core.runtime).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
from typing import Any, Callable, Iterable, Sequence, TextIO

from kit.core import runtime
from kit.cli.kaggle_verbs import add_kaggle
from kit.cli.result_verbs import add_blend, add_check, add_predict, add_report, add_runs, add_stack
from kit.cli.result_verbs import stack_config  # noqa: F401 - kit.cli.app.stack_config: the name callers import
from kit.core.errors import KitError

Handler = Callable[[argparse.Namespace], int]


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([hms]?)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}


class Duration(float):
    """Seconds, remembering how they were written (``8.5h``), so that a printed command says it the same way."""

    text: str

    def __new__(cls, seconds: float, text: str) -> "Duration":
        obj = super().__new__(cls, seconds)
        obj.text = text
        return obj


def _duration_s(text: str) -> Duration:
    """Seconds in ``8.5h``, ``30m``, ``90s`` or ``3600`` (plain seconds); more than zero."""
    match = _DURATION.fullmatch(text.strip().lower())
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration above zero such as 8.5h, 30m, 90s or 3600 (seconds), "
                                         f"got {text!r}")
    return Duration(seconds, text.strip())


# --- records -------------------------------------------------------------------------------------


def _add_records(sub: argparse._SubParsersAction) -> None:
    from kit.data import competitions, imaging
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
    from kit.data import records

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
    from kit.training.config import train_flags

    p = sub.add_parser(
        "train", help="k-fold training with out-of-fold predictions",
        description="Train one model per fold, keep each fold's best epoch by the competition's exact metric, "
                    "and write out-of-fold predictions and the CV summary. Epochs and learning rates default by what is "
                    "trained: fine-tuning rates with a warm-up when --weights is given, from-scratch rates "
                    "otherwise (the resolved values land in the run's config).")
    for flag in train_flags():  # one per setting, generated from its declaration in kit.training.config.Config
        p.add_argument(*flag.names, **{**flag.options, **_usage_typed(flag.options)})
    # how to run, not what to train: not settings of the run
    p.add_argument("--config", help="TOML file of settings; flags given here override it")
    p.add_argument("--resume", action="store_true", help="skip finished folds; restart an unfinished one at its last "
                   "saved epoch; train folds given with --folds that the run lacks")
    p.add_argument("--time-limit", type=_duration_s, metavar="DURATION", help="stop before this much time has passed "
                   "since kit started (8.5h, 30m, 90s or seconds), at the last epoch boundary from which the rest is "
                   "predicted to finish in time; the fold's state is saved, the command to resume is printed and kit "
                   "exits 0. Not a setting of the run: a resume may take another limit or none")
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
    from kit.training import defaults
    from kit.data import precheck
    from kit.core import runtime
    from kit.training.config import Config, train_flags

    flags = {f.dest: getattr(args, f.dest) for f in train_flags() if getattr(args, f.dest) is not None}
    cfg = Config.load(args.config, **flags) if args.config else Config.from_dict(flags, source="flags")
    cfg.check_numbers()
    cfg.check_choices()  # a TOML value the flags' choices= never saw: refused before the paths are checked
    precheck.train_paths(cfg.records, cfg.out)
    if not (args.resume or args.smoke):  # a resumed run keeps its saved weights; a smoke rehearsal swaps the backbone
        defaults.check_model_and_weights(cfg.model, cfg.weights)  # a typo fails here, before TensorFlow loads
    runtime.choose_backend(cfg.strategy)  # --strategy tpu means Keras on JAX: settled before kit.training.train imports Keras
    from kit.training import train

    if args.find_lr:
        print(train.format_lr_finding(train.find_lr(cfg, smoke=args.smoke)))
        return 0
    deadline = args.started + args.time_limit if args.time_limit else None
    result = train.train_folds(cfg, resume=args.resume, given=sorted(flags), deadline=deadline, smoke=args.smoke)
    if result.stopped is not None:
        print(train.format_stopped(result, _resume_command(args, str(result.run))))
        return 0  # a stop before the limit is a success: Kaggle keeps a kernel's output only when it ends well
    print(train.format_result(result))
    return 0


def _resume_command(args: argparse.Namespace, run: str) -> str:
    """The ``kit train`` line that resumes ``run`` (under the same time limit when one was given)."""
    words = ["kit", "train", "--records", str(args.records), "--out", run, "--resume"]
    if args.time_limit:
        words += ["--time-limit", args.time_limit.text]
    return shlex.join(words)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="the backbones kit knows: family, default size, parameters, weights routes")
    p.add_argument("--json", action="store_true", help="one JSON list instead of the table")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from kit.training import backbones  # the table without Keras: `kit models` answers at once

    rows = backbones.model_table()
    print(json.dumps(rows) if args.json else backbones.format_model_table(rows))
    return 0


def _add_export_backbone(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-backbone", help="save a run's backbone as --weights for the next run "
                       "(a .weights.h5 file, or a preset folder for keras-hub models)")
    p.add_argument("model", help="a saved model, e.g. a run's fold0 best model (see `kit runs`)")
    p.add_argument("--out", required=True, help="NAME.weights.h5 (or a new folder for a keras-hub backbone)")
    p.set_defaults(func=_run_export_backbone)


def _run_export_backbone(args: argparse.Namespace) -> int:
    from kit.training import models

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
    from kit.training import models

    print(f"wrote {models.convert_efficientnet_weights(args.source, args.out, args.model)}")
    return 0


# --- demo ----------------------------------------------------------------------------------------


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole loop on a built-in synthetic competition")
    p.add_argument("--out", default="demo", help="folder for everything the demo writes (default ./demo)")
    p.add_argument("--tiny", action="store_true", help="a reduced size, for tests")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from kit.cli import demo

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
    for add in (_add_records, _add_train, add_predict, add_blend, add_stack, add_check, add_kaggle, _add_models,
                _add_export_backbone, _add_convert_weights, _add_demo, add_runs, add_report):
        add(sub)
    return parser


# Exit statuses (docs/cli.md, "Exit statuses"): argparse itself exits 2 on a usage error.
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
    started = time.monotonic()  # a --time-limit counts from here
    args = build_parser().parse_args(argv)
    args.started = started
    # the Keras backend for this machine, and TensorFlow's own lines (oneDNN notices, rendezvous, retracing)
    # hidden: they drown kit's output; --verbose shows them
    runtime.prepare(args.tf_logs)
    from kit.training.config import smoke_requested

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
