"""Fast argument checks (kit.data.precheck) and quiet logs (kit.core.runtime): a typo fails before TensorFlow loads."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit.data import precheck
from kit.core import runtime
from kit.core.errors import KitError
from kit.runs.folder import RunFolder

ROOT = Path(__file__).resolve().parent.parent


def _kit(*args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kit", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, timeout=60)
    return proc, time.perf_counter() - t0


def test_a_typo_in_kit_train_fails_in_well_under_a_second(tmp_path):
    proc, seconds = _kit("train", "--records", "/nonexistent", "--out", str(tmp_path / "run"))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["kit train: error: /nonexistent: no such records folder (--records)"]
    assert seconds < 3.0  # about 0.05 s when the machine is idle; TensorFlow alone takes seconds to import
    assert not (tmp_path / "run").exists()


def test_a_typo_in_kit_predict_fails_fast_too(tmp_path):
    proc, seconds = _kit("predict", "--run", str(tmp_path / "no-run"), "--records", str(tmp_path),
                         "--out", str(tmp_path / "sub.csv"))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"kit predict: error: {tmp_path / 'no-run'}: no such run folder"]
    assert seconds < 3.0


def test_the_checks_import_neither_tensorflow_nor_pandas():
    code = ("import sys\n"
            "from kit.cli.app import main\n"
            "codes = [main(['train', '--records', '/nonexistent', '--out', 'x']),\n"
            "         main(['predict', '--run', '/nonexistent', '--records', '/x', '--out', 's.csv'])]\n"
            "print(codes, sorted(m for m in ('tensorflow', 'keras', 'jax', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[1, 1] []"


def _records(folder: Path, manifest: str | None = "{}", shard: bool = False) -> Path:
    folder.mkdir(parents=True)
    if manifest is not None:
        (folder / "manifest.json").write_text(manifest)
    if shard:
        (folder / "train00-2182.tfrec").write_bytes(b"")
    return folder


def test_records_folder(tmp_path):
    assert precheck.records_folder(_records(tmp_path / "kit")) == tmp_path / "kit"
    assert precheck.records_folder(_records(tmp_path / "public", None, shard=True)) == tmp_path / "public"
    with pytest.raises(KitError, match=r"empty: no manifest.json and no .tfrec shards \(--records\); write records"):
        precheck.records_folder(_records(tmp_path / "empty", None))
    with pytest.raises(KitError, match=r"bad/manifest.json: not valid JSON"):
        precheck.records_folder(_records(tmp_path / "bad", "{nope"))
    with pytest.raises(KitError, match=r"^.*/x.csv: no such records folder \(--records\)$"):
        precheck.records_folder((tmp_path / "x.csv"))


def test_run_folder_sample_and_outputs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(KitError, match=r"run/config.toml: missing; is .*run a folder written by `kit train`\?"):
        RunFolder(run).check_trained()
    (run / "config.toml").write_text("model = 'tiny_cnn'\n")
    assert RunFolder(run).check_trained().path == run
    with pytest.raises(KitError, match=r"sample.csv: no such file \(--sample-submission\)$"):
        precheck.input_file(tmp_path / "sample.csv", "--sample-submission")
    with pytest.raises(KitError, match=r"is a folder, not a file \(--sample-submission\)"):
        precheck.input_file(run, "--sample-submission")
    # missing parents are created later; an existing folder is not a CSV, nor a file a run folder
    assert precheck.output_path(tmp_path / "a" / "b" / "sub.csv", "--out") == tmp_path / "a" / "b" / "sub.csv"
    with pytest.raises(KitError, match=r"run: is a folder, expected a file \(--out\)"):
        precheck.output_path(run, "--out")
    with pytest.raises(KitError, match=r"config.toml: is a file, expected a folder \(--out\)"):
        precheck.output_path(run / "config.toml", "--out", folder=True)
    with pytest.raises(KitError, match=r"config.toml is a file \(--out\)"):
        precheck.output_path(run / "config.toml" / "sub.csv", "--out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_output_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(KitError, match=r"locked is not writable \(--out\)"):
            precheck.output_path(locked / "run", "--out", folder=True)
    finally:
        locked.chmod(0o700)


def test_tensorflow_python_warnings_hidden_unless_verbose(caplog):
    tf_logger = logging.getLogger("tensorflow")
    retracing = "5 out of the last 5 calls to <function f> triggered tf.function retracing."
    try:
        runtime.quiet_logs(False)
        tf_logger.setLevel(logging.INFO)  # what TensorFlow does itself in an interactive session
        with caplog.at_level(logging.INFO):
            tf_logger.warning(retracing)
            logging.getLogger("jax._src.xla_bridge").warning("An NVIDIA GPU may be present on this machine")
            tf_logger.error("a real error still shows")
        assert [r.getMessage() for r in caplog.records] == ["a real error still shows"]
        caplog.clear()
        runtime.quiet_logs(True)
        with caplog.at_level(logging.INFO):
            tf_logger.warning(retracing)
        assert [r.getMessage() for r in caplog.records] == [retracing]
    finally:
        runtime.quiet_logs(False)


def test_cli_verbose_shows_tensorflows_own_lines():
    # The oneDNN notice is an INFO line of TensorFlow's C++ logging; that it is hidden by default is
    # asserted by test_tpu_route, whose kit train processes start TensorFlow quietly.
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KIT_VERBOSE")}
    loud = subprocess.run([sys.executable, "-c", "from kit.cli.app import main; main(['--verbose', 'check', 'a', "
                           "'--sample-submission', 'b']); import tensorflow"],
                          capture_output=True, text=True, cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)})
    assert "oneDNN custom operations are on" in loud.stderr  # shown, and oneDNN itself stays on
