"""Start-up budgets: each light verb, run in a fresh interpreter on tiny real inputs, loads none of the
heavy libraries it has no use for (docs/development.md, "Start-up").

TensorFlow, Keras and JAX take seconds to import; pandas about 0.2 s. `kit --help`, `check`, `blend`,
`runs`, `models` and the writing path of `kit records` never import the first three; `kit push` and
`kit status` (the user's side of Kaggle) not pandas either.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ML = {"tensorflow", "keras", "jax"}
WATCHED = ML | {"pandas", "sklearn"}
# `python -m kit ARGS`, then the watched top-level modules the process loaded, on stderr's last line
WRAPPER = f"""
import json, runpy, sys
sys.argv = ["kit", *sys.argv[1:]]
try:
    runpy.run_module("kit", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as exc:
    code = exc.code
print(json.dumps([code, sorted(m for m in sys.modules if m in {sorted(WATCHED)!r})]), file=sys.stderr)
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A small submission pair with its sample, an empty runs folder, a tiny download and a notebook."""
    from kit.data import synth

    root = tmp_path_factory.mktemp("startup")
    ids = [f"ISIC_{i:07d}" for i in range(50)]
    (root / "sample.csv").write_text("image_name,target\n" + "".join(f"{i},0\n" for i in ids))
    for name, shift in (("a.csv", 0.1), ("b.csv", 0.3)):
        (root / name).write_text("image_name,target\n" + "".join(f"{i},{(k * 0.013 + shift) % 1:.4f}\n"
                                                                  for k, i in enumerate(ids)))
    (root / "runs").mkdir()
    synth.make_competition("melanoma10k", root / "mel", n_train=20, n_test=0, size=32)
    (root / "nb.ipynb").write_text((REPO / "notebooks" / "pcam_t4.ipynb").read_text())
    return root


def _run_kit(argv: list[str], cwd: Path) -> tuple[int, set[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("KAGGLE_KERNEL_RUN_TYPE", None)
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    code, loaded = json.loads(proc.stderr.strip().splitlines()[-1])
    return code, set(loaded)


CASES = {
    # name: (argv, exit status, modules it must not load)
    "help": (["--help"], 0, ML),
    "check": (["check", "a.csv", "--sample-submission", "sample.csv"], 0, ML | {"pandas"}),
    "blend": (["blend", "a.csv", "b.csv", "--out", "out/blend.csv", "--method", "rank"], 0, ML | {"pandas"}),
    "runs": (["runs", "runs"], 0, ML | {"pandas"}),
    "models": (["models"], 0, ML | {"pandas"}),
    "records": (["records", "mel", "--out", "out/records", "--size", "32", "--folds", "2", "--workers", "1"], 0, ML),
    "push --help": (["push", "--help"], 0, ML | {"pandas"}),
    "push --dry-run": (["push", "nb.ipynb", "--dry-run", "--owner", "alice", "--kit-dataset", "alice/kit-wheel",
                        "--folder", "out/kernel"], 0, ML | {"pandas"}),
    "status": (["status", "not-a-kernel"], 1, ML | {"pandas"}),  # refused before the client runs; same imports
}


@pytest.mark.parametrize("name", list(CASES))
def test_light_verbs_do_not_load_heavy_libraries(name, inputs, tmp_path):
    argv, status, forbidden = CASES[name]
    verb, *rest = argv  # the other names are files of `inputs`, or outputs under out/ (this test's folder)
    argv = [verb, *(str(inputs / a) if (inputs / a).exists() else str(tmp_path / a[4:]) if a.startswith("out/")
                    else a for a in rest)]
    code, loaded = _run_kit(argv, inputs)
    assert code == status, name
    assert not loaded & forbidden, f"kit {name} imported {sorted(loaded & forbidden)}"
