"""The CLI shell: fast start without TensorFlow, one-line errors."""

import subprocess
import sys

import pytest

from kit.cli import build_parser, main

VERBS = ["records", "train", "predict", "blend", "stack", "check", "push", "status", "output", "submit", "gather", "models",
         "convert-weights", "export-backbone", "demo", "runs", "report"]


def test_every_contract_verb_is_present():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    assert sorted(sub.choices) == sorted(VERBS)


def test_help_does_not_import_tensorflow_or_keras():
    code = (
        "import sys\n"
        "from kit.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_unknown_verb_exits_non_zero():
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
