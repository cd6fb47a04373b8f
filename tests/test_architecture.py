"""The house as docs/architecture.md describes it: packages that each say what they own and may import, no module
over 600 lines, the run folder's file names in one module, KIT_SMOKE read in one place, and binary-vs-multi-class
decided in a handful of places. (`lint-imports`, run by `make test`, checks the layer contracts themselves.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT / "kit"
MODULES = sorted(p for p in KIT.rglob("*.py") if "__pycache__" not in p.parts)
PACKAGES = ["core", "data", "runs", "training", "ensemble", "kaggle", "cli"]
RUN_FILES = {"config.toml", "records.json", "cv.json", "oof.csv", "error.txt", "stopped.json", "report.json",
             "best.keras", "last.keras", "state.json", "history.csv", "done.json"}


def _code_strings(path: Path) -> list[str]:
    """The string constants of a module's code (docstrings left out: they may name files in prose)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_folder_tree_is_the_architecture():
    assert sorted(p.name for p in KIT.iterdir() if (p / "__init__.py").is_file()) == sorted(PACKAGES)
    flat = sorted(p.name for p in KIT.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "_moved.py"]  # every module lives in its stage's package
    page = (ROOT / "docs" / "architecture.md").read_text()
    for name in PACKAGES:
        doc = ast.get_docstring(ast.parse((KIT / name / "__init__.py").read_text())) or ""
        assert "May import" in doc, f"kit.{name} does not say what it may import"
        assert f"`kit.{name}`" in page, f"docs/architecture.md does not name kit.{name}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_module_is_over_600_lines(path):
    assert len(path.read_text().splitlines()) <= 600


def test_the_run_folders_file_names_are_named_in_one_module():
    owners = {path.relative_to(ROOT).as_posix() for path in MODULES
              if RUN_FILES & {s.rsplit("/", 1)[-1] for s in _code_strings(path)}}
    assert owners == {"kit/runs/folder.py", "kit/core/layout.py"}


def test_kit_smoke_is_read_in_one_place():
    assert [p.relative_to(ROOT).as_posix() for p in MODULES if "KIT_SMOKE" in _code_strings(p)] == [
        "kit/training/config.py"]
    callers = [p.relative_to(ROOT).as_posix() for p in MODULES if re.search(r"\bsmoke_requested\(", p.read_text())
               and not p.name == "config.py"]
    assert callers == ["kit/cli/app.py"]


# a condition that tells binary from multi-class: a class count or a prediction width against 2 or 1, or a task's
# binary flag (the Task types in kit.core.task answer everything else)
BINARY = re.compile(r"n_classes\)?\s*(==|<=|<|>|>=|!=)\s*[12]\b|\bwidth\)?\s*(==|!=)\s*1\b|\.binary\b(?!\w)|"
                    r"task\.name\s*==\s*\"binary\"|is_binary\(")


def test_binary_or_multiclass_is_decided_in_a_handful_of_places():
    found = [f"{p.relative_to(ROOT).as_posix()}:{n}" for p in MODULES
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if BINARY.search(line.split("#")[0]) and not line.strip().startswith(("def ", '"""', "#"))]
    assert len(found) <= 10, found
