"""The CLI shell: fast start without TensorFlow, one-line errors."""

import subprocess
import sys

import pytest

from kit.cli.app import build_parser, main

VERBS = ["records", "train", "predict", "blend", "stack", "check", "push", "status", "output", "submit", "gather", "models",
         "convert-weights", "export-backbone", "demo", "runs", "report"]


def test_every_contract_verb_is_present():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    assert sorted(sub.choices) == sorted(VERBS)


def test_help_does_not_import_tensorflow_or_keras():
    code = (
        "import sys\n"
        "from kit.cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_unknown_verb_exits_non_zero():
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


@pytest.mark.parametrize("text", ["abc", "0", "-5m", "8.5x", "h", ""])
def test_a_bad_time_limit_is_one_line_naming_the_flag(text, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--records", "r", "--out", "o", f"--time-limit={text}"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"kit train: error: argument --time-limit: expected a duration above zero such as 8.5h, 30m, 90s or 3600 "
        f"(seconds), got {text!r}")


@pytest.mark.parametrize(("text", "seconds"), [("8.5h", 30600), ("30m", 1800), ("90s", 90), ("3600", 3600), ("1.5H", 5400)])
def test_time_limit_takes_hours_minutes_seconds(text, seconds):
    from kit.cli.app import build_parser

    args = build_parser().parse_args(["train", "--records", "r", "--out", "o", "--time-limit", text])
    assert args.time_limit == seconds and args.time_limit.text == text
