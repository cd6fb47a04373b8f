"""``kit`` verbs that talk to Kaggle with its client: push, status, output, submit.

Parsing and printing only, as in kit.cli (which adds these verbs to its parser); kit.kaggle does the work.
"""

from __future__ import annotations

import argparse
import sys


# --- kaggle --------------------------------------------------------------------------------------


def add_kaggle(sub: argparse._SubParsersAction) -> None:
    """Add ``kit push``, ``kit status``, ``kit output`` and ``kit submit`` to the ``kit`` parser."""
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
