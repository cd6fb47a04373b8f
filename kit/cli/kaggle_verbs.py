"""``kit`` verbs that talk to Kaggle with its client: push (one kernel, or a fan-out), gather, status, output, submit.

Parsing and printing only, as in kit.cli.app (which adds these verbs to its parser); kit.kaggle.client, kit.kaggle.fanout and
kit.kaggle.gather do the work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kit.core.errors import KitError


# --- kaggle --------------------------------------------------------------------------------------


def add_kaggle(sub: argparse._SubParsersAction) -> None:
    """Add ``kit push``, ``kit gather``, ``kit status``, ``kit output`` and ``kit submit`` to the ``kit`` parser."""
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
    p.add_argument("--folder", help="where to render the kernel folder (default: a temporary one); with --fan-out, "
                   "one folder per group under it")
    p.add_argument("--wheels", metavar="DIR", help="wheels of packages the kernel's image lacks (e.g. LightGBM on the "
                   "TPU image), from `pip download`; the needed ones are bundled in the notebook")
    p.add_argument("--fan-out", nargs="+", metavar="FOLDS", help="one kernel per fold group, e.g. --fan-out 0,1 2,3 4 "
                   "(ids and titles get -folds-0-1 ...; each kernel reads its folds from kit-folds.json)")
    p.add_argument("--concurrent", type=int, default=2, help="with --fan-out: kernels running at once (default 2, "
                   "Kaggle's GPU sessions per account)")
    p.add_argument("--wait", action="store_true", help="with --fan-out: watch the kernels, push the next group as "
                   "one ends, and print a table of every kernel's state")
    p.add_argument("--poll-seconds", type=float, default=60.0, help="with --wait: seconds between status polls, "
                   "growing while nothing changes (default 60)")
    p.add_argument("--hours-per-group", type=float, help="with --fan-out: accelerator hours one group takes, checked "
                   "against kaggle quota before anything is pushed")
    p.add_argument("--resume-from", metavar="KERNEL", help="owner/slug[/version] of a kernel whose output holds a run "
                   "stopped by --time-limit (usually this kernel's previous version): attached, and the notebook "
                   "resumes that run")
    p.set_defaults(func=_run_push)

    p = sub.add_parser("gather", help="download fold-group kernels' outputs and merge their run folders into one run")
    p.add_argument("kernels", nargs="+", metavar="KERNEL", help="owner/slug of each kernel")
    p.add_argument("--out", required=True, help="the merged run folder (must not exist)")
    p.add_argument("--partial", action="store_true", help="skip (and name) kernels still running or failed")
    p.add_argument("--downloads", default="runs/kernels", help="where each kernel's outputs are downloaded "
                   "(default runs/kernels/OWNER-SLUG/gather-TIME)")
    p.set_defaults(func=_run_gather)

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
    from kit.kaggle import fanout, client as kaggle

    render = dict(slug=args.slug, title=args.title, accelerator=args.accelerator, competition=args.competition,
                  datasets=args.dataset, kernels=args.kernel_source, models=args.model_source,
                  private=not args.public, internet=args.internet, kit_dataset=args.kit_dataset,
                  defaults=kaggle.default_metadata(),  # the repository's default kernel
                  resume_from=args.resume_from)
    push = dict(folder=args.folder, owner=args.owner, dry_run=args.dry_run)
    if args.fan_out and args.resume_from:
        raise KitError("--resume-from with --fan-out: resume each group's kernel with its own `kit push "
                       "--resume-from KERNEL` (each kernel's output holds only its folds)")
    if not args.fan_out:
        for flag in ("wait", "hours_per_group"):
            if getattr(args, flag):
                raise KitError(f"--{flag.replace('_', '-')} needs --fan-out")
        result, bundled = fanout.push_notebook(args.notebook, render=render, push=push, wheels=args.wheels)
        print(kaggle.format_push(result))
        for wheel in bundled:
            print(f"  (bundled: {wheel.name}, which the kernel's image lacks)")
        return 0
    fan = fanout.FanOut(Path(args.notebook), fanout.parse_groups(args.fan_out), render, push, wheels=args.wheels,
                        concurrent=args.concurrent, wait=args.wait, poll_seconds=args.poll_seconds,
                        hours_per_group=args.hours_per_group)
    runs = fanout.fan_out(fan, say=lambda line: print(line, flush=True))
    if args.wait:
        print(fanout.format_table(runs))
    bad = fanout.failed(runs) if args.wait else [r for r in runs if r.state == "push failed"]
    return 1 if bad else 0


def _run_gather(args: argparse.Namespace) -> int:
    from kit.kaggle import gather

    result = gather.gather(args.kernels, args.out, partial=args.partial, downloads=args.downloads,
                           say=lambda line: print(line, flush=True))
    print(gather.format_result(result))
    return 0


def _run_status(args: argparse.Namespace) -> int:
    from kit.kaggle import client as kaggle

    status = kaggle.kernel_status(args.kernel, wait=args.wait, interval=args.interval,
                                  on_change=lambda s: print(kaggle.format_status(s), file=sys.stderr, flush=True))
    print(kaggle.format_status(status))
    return 1 if status.status == "error" else 0


def _run_output(args: argparse.Namespace) -> int:
    from kit.kaggle import client as kaggle

    print(kaggle.format_output(kaggle.kernel_output(args.kernel, out=args.out)))
    return 0


def _run_submit(args: argparse.Namespace) -> int:
    from kit.kaggle import client as kaggle

    print(kaggle.submit(args.submission, args.competition, args.message, sample=args.sample_submission,
                        kernel=args.kernel))
    return 0
