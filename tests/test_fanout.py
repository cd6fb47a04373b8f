"""kit push --fan-out, kit gather and the wheels a kernel image lacks, with the real kaggle client against the
stand-in on 127.0.0.1 (tests/kaggle_stub.py); nothing leaves this machine."""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import nbformat
import pytest

from kaggle_stub import stop_and_check_loopback, KaggleStub, KernelFarm, SimKernel, client_env, fake_credentials
from kit.kaggle import fanout, client as kaggle, kernel, deps as kernel_deps
from kit.runs import listing as runs
from kit.cli.app import main
from kit.core.errors import KitError

USER, KEY = "alice", "k3y-0f-al1ce-d0-n0t-l3ak"
QUOTA = {"gpuQuota": {"timeUsed": "18000s", "totalTimeAllowed": "108000s"},  # 5 of 30 hours used
         "tpuQuota": {"timeUsed": "0s", "totalTimeAllowed": "72000s"}}


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    fake_credentials(home, USER, KEY)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return home


@pytest.fixture
def stub(home, monkeypatch, request):
    # the rehearsal runs two notebooks before the stand-in serves their outputs: it lives longer
    lifetime = 900.0 if request.node.get_closest_marker("slow") else 60.0
    server = KaggleStub(responses={"GetAcceleratorQuotaStatistics": QUOTA}, max_requests=400,
                        lifetime=lifetime).start()
    client_env(monkeypatch, home, server)
    yield server
    stop_and_check_loopback(server)


@pytest.fixture
def notebook(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Melanoma folds"),
                nbformat.v4.new_code_cell("from kit.cli import run_kit\nfrom kit.kaggle.kernel import fold_args\nprint(fold_args())")]
    path = tmp_path / "melanoma_folds.ipynb"
    nbformat.write(nb, str(path))
    return path


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- fan-out through the client ---------------------------------------------------------------


def test_three_groups_two_at_a_time_the_failed_one_reported_the_others_finish(stub, notebook, capsys):
    farm = KernelFarm(stub, {
        "melanoma-folds-folds-0-1": SimKernel(polls=2),
        "melanoma-folds-folds-2-3": SimKernel(polls=1, final="error", failure="Your notebook hit an error",
                                              log=json.dumps([{"stream_name": "stderr", "data": f"line {i}\n"}
                                                              for i in range(15)] +
                                                             [{"stream_name": "stderr", "data": "KitError: boom\n"}])),
        "melanoma-folds-folds-4": SimKernel(polls=2),
    })
    code, out, err = _run(capsys, "push", notebook, "--accelerator", "t4", "--fan-out", "0,1", "2,3", "4",
                          "--wait", "--poll-seconds", "0.02", "--kit-dataset", "alice/kit-wheel")
    assert code == 1, err  # one kernel failed
    assert farm.max_running == 2  # never more than --concurrent 2
    assert len(stub.calls("SaveKernel")) == 3
    lines = out.splitlines()
    assert lines[0] == "quota: 25.0 GPU hours left; the first group's time will be the estimate"
    assert "alice/melanoma-folds-folds-2-3: error (Your notebook hit an error)" in lines
    tail = lines[lines.index("alice/melanoma-folds-folds-2-3: error (Your notebook hit an error)") + 1:][:10]
    assert tail == [f"  | line {i}" for i in range(6, 15)] + ["  | KitError: boom"]  # the log's last 10 lines
    # the third group was pushed only once one of the first two ended
    pushed = [ln for ln in lines if ": pushed (folds" in ln]
    assert [ln.split(":")[0] for ln in pushed] == ["alice/melanoma-folds-folds-0-1", "alice/melanoma-folds-folds-2-3",
                                                  "alice/melanoma-folds-folds-4"]
    assert lines.index(pushed[2]) > min(i for i, ln in enumerate(lines) if ln.endswith((": complete", ")")) and
                                        ln.startswith("alice/") and "pushed" not in ln)
    table = lines[-4:]
    assert table[0].split() == ["kernel", "folds", "state", "time"]
    assert [row.split()[:3] for row in table[1:]] == [["alice/melanoma-folds-folds-0-1", "0,1", "complete"],
                                                      ["alice/melanoma-folds-folds-2-3", "2,3", "error"],
                                                      ["alice/melanoma-folds-folds-4", "4", "complete"]]
    # each kernel got its folds in the notebook it was sent
    sent = {c.json()["slug"]: json.loads(c.json()["text"]) for c in stub.calls("SaveKernel")}
    tags = [c["metadata"].get("tags", []) for c in sent["alice/melanoma-folds-folds-2-3"]["cells"]]
    assert tags == [["kit-install"], [], ["kit-folds"], []]  # before the notebook's first code cell
    cell = sent["alice/melanoma-folds-folds-2-3"]["cells"][2]
    assert '{"folds": [2, 3], "group": 1, "groups": 3}' in cell["source"]
    assert KEY not in out + err


def test_without_wait_only_concurrent_groups_are_pushed(stub, notebook, capsys):
    KernelFarm(stub)
    code, out, err = _run(capsys, "push", notebook, "--fan-out", "0", "1", "2", "--concurrent", "1",
                          "--kit-dataset", "alice/kit-wheel")
    assert code == 0, err
    assert len(stub.calls("SaveKernel")) == 1
    assert out.splitlines()[-1] == ("not pushed: alice/melanoma-folds-folds-2 (folds 2): at most --concurrent 1 at "
                                    "once; --wait pushes it")


def test_a_plan_over_the_quota_is_refused_before_anything_is_pushed(stub, notebook, capsys):
    KernelFarm(stub)
    code, out, err = _run(capsys, "push", notebook, "--fan-out", "0,1", "2,3", "4", "--hours-per-group", "9",
                          "--kit-dataset", "alice/kit-wheel")
    assert code == 1
    assert err.strip() == ("kit push: error: --hours-per-group 9 x 3 group(s) = 27.0 GPU hours, but kaggle quota has "
                           "25.0 left this week; fan out fewer folds or wait for the reset")
    assert stub.calls("SaveKernel") == []
    code, out, err = _run(capsys, "push", notebook, "--fan-out", "0,1", "2,3", "4", "--hours-per-group", "8",
                          "--kit-dataset", "alice/kit-wheel")
    assert code == 0, err
    assert out.splitlines()[0] == "quota: 25.0 GPU hours left; the plan needs about 24.0"


def test_a_client_without_a_quota_command_says_so_and_goes_on(stub, notebook, capsys, monkeypatch):
    KernelFarm(stub)
    real = kaggle.run_client

    def old_client(args, **kw):
        if args[0] == "quota":
            return kaggle.ClientRun(list(args), 2, "", "kaggle: error: argument command: invalid choice: 'quota'")
        return real(args, **kw)

    monkeypatch.setattr(kaggle, "run_client", old_client)
    code, out, err = _run(capsys, "push", notebook, "--fan-out", "0", "--kit-dataset", "alice/kit-wheel")
    assert code == 0, err
    assert out.splitlines()[0] == "quota: this kaggle client has no `kaggle quota` command; the GPU hours left are not checked"
    assert len(stub.calls("SaveKernel")) == 1


def test_dry_run_renders_one_kernel_folder_per_group_and_sends_nothing(stub, notebook, tmp_path, capsys):
    code, out, err = _run(capsys, "push", notebook, "--fan-out", "0,1", "2,3", "4", "--dry-run",
                          "--folder", tmp_path / "fan", "--kit-dataset", "alice/kit-wheel")
    assert code == 0, err
    assert stub.requests == []
    folders = sorted(p.name for p in (tmp_path / "fan").iterdir())
    assert folders == ["melanoma-folds-folds-0-1", "melanoma-folds-folds-2-3", "melanoma-folds-folds-4"]
    for name, folds in zip(folders, ([0, 1], [2, 3], [4])):
        folder = tmp_path / "fan" / name
        assert sorted(p.name for p in folder.iterdir()) == ["kernel-metadata.json", "kit-folds.json",
                                                            "melanoma_folds.ipynb"]
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        assert meta["id"] == f"alice/{name}" and kaggle.slugify(meta["title"]) == name
        assert kernel.fold_group(folder) == folds
    assert out.splitlines()[2] == (f"dry run: alice/melanoma-folds-folds-4 (folds 4) rendered in "
                                   f"{tmp_path / 'fan' / 'melanoma-folds-folds-4'}; nothing sent")


def test_long_titles_are_cut_to_kaggles_fifty_and_keep_naming_the_slug():
    slug, title = fanout.group_identity("a" * 45, "a" * 45, [0, 1, 2])
    assert len(title) == 50 and title.endswith(" folds 0-1-2") and slug == kaggle.slugify(title)


@pytest.mark.parametrize("argv, line", [
    (["--fan-out", "0,x"], "--fan-out '0,x': not comma-separated fold numbers (e.g. --fan-out 0,1 2,3 4)"),
    (["--fan-out", "0,1", "1,2"], "--fan-out: fold 1 is in two groups"),
    (["--fan-out", "0", "--concurrent", "0"], "--concurrent 0: must be at least 1"),
    (["--fan-out", "0", "--poll-seconds", "0"], "--poll-seconds 0: must be more than 0"),
    (["--fan-out", "0", "--hours-per-group", "-1"], "--hours-per-group -1: must be more than 0"),
    (["--fan-out", "0", "--dry-run"],
     "--fan-out --dry-run needs --folder DIR (one kernel folder per group is rendered under it)"),
    (["--fan-out", "0", "--dry-run", "--folder", "x", "--wait"],
     "--wait with --dry-run: nothing is sent, so there is nothing to wait for"),
    (["--wait"], "--wait needs --fan-out"),
    (["--hours-per-group", "2"], "--hours-per-group needs --fan-out"),
])
def test_bad_fan_out_flags_are_one_line(stub, notebook, capsys, argv, line):
    code, out, err = _run(capsys, "push", notebook, *argv, "--kit-dataset", "alice/kit-wheel")
    assert (code, err.strip()) == (1, f"kit push: error: {line}")
    assert stub.calls("SaveKernel") == []


# --- kit.kaggle.kernel reads the group --------------------------------------------------------------


def test_fold_args_come_from_kit_folds_json(tmp_path):
    assert kernel.fold_group(tmp_path) is None and kernel.fold_args(tmp_path) == []
    (tmp_path / "kit-folds.json").write_text('{"folds": [2, 3], "group": 1, "groups": 3}')
    assert kernel.fold_args(tmp_path) == ["--folds", "2,3"]
    (tmp_path / "kit-folds.json").write_text('{"folds": "2"}')
    with pytest.raises(KitError) as exc:
        kernel.fold_group(tmp_path)
    assert str(exc.value) == (f"{tmp_path / 'kit-folds.json'}: not a fold group ({{\"folds\": [0, 1]}} expected); "
                              "push again with kit push --fan-out")


# --- what the image lacks --------------------------------------------------------------------


def _wheel(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / name, "w") as z:
        z.writestr("lightgbm/__init__.py", "__version__ = '4.5.0'\n")
    return folder / name


@pytest.fixture
def stacking_notebook(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from kit.cli import run_kit\nrun_kit('stack', '--runs', 'run')")]
    path = tmp_path / "stacker.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_the_tpu_image_lacks_lightgbm_so_a_stacking_notebook_is_refused_without_its_wheel(stub, stacking_notebook,
                                                                                         tmp_path, capsys):
    KernelFarm(stub)
    assert "lightgbm" not in kernel_deps.IMAGES["tpu"].holds and "lightgbm" in kernel_deps.IMAGES["t4"].holds
    code, out, err = _run(capsys, "push", stacking_notebook, "--accelerator", "tpu", "--kit-dataset", "alice/kit-wheel")
    assert code == 1
    assert err.strip().startswith("kit push: error: stacker.ipynb: needs lightgbm, which the Kaggle TPU v5e-8 image "
                                  "lacks (Kaggle/docker-python tpu/config.txt + tpu/requirements.in, 2026-08-12); give "
                                  "--wheels DIR (pip download lightgbm")
    assert len(err.strip().splitlines()) == 1 and stub.calls("SaveKernel") == []
    wrong = _wheel(tmp_path / "wheels", "lightgbm-4.5.0-cp310-cp310-manylinux_2_28_x86_64.whl")
    code, out, err = _run(capsys, "push", stacking_notebook, "--accelerator", "tpu", "--wheels", wrong.parent,
                          "--kit-dataset", "alice/kit-wheel")
    assert code == 1 and f"no cp312 x86_64 wheel of it in {wrong.parent}" in err
    # on the T4 image it is there: nothing to bundle
    code, out, err = _run(capsys, "push", stacking_notebook, "--accelerator", "t4", "--kit-dataset", "alice/kit-wheel")
    assert code == 0, err
    assert "bundled" not in out


def test_a_fitting_wheel_is_bundled_in_the_notebook(stub, stacking_notebook, tmp_path, capsys):
    KernelFarm(stub)
    good = _wheel(tmp_path / "wheels", "lightgbm-4.5.0-py3-none-manylinux_2_28_x86_64.whl")
    _wheel(tmp_path / "wheels", "lightgbm-4.5.0-cp312-cp312-win_amd64.whl")
    code, out, err = _run(capsys, "push", stacking_notebook, "--accelerator", "tpu", "--wheels", good.parent,
                          "--kit-dataset", "alice/kit-wheel")
    assert code == 0, err
    assert out.splitlines()[-1] == f"  (bundled: {good.name}, which the kernel's image lacks)"
    sent = json.loads(stub.calls("SaveKernel")[0].json()["text"])
    deps = [c for c in sent["cells"] if c["metadata"].get("tags") == ["kit-deps"]]
    assert len(deps) == 1 and good.name in deps[0]["source"] and "win_amd64" not in deps[0]["source"]
    assert "--no-index" in deps[0]["source"]


# --- gather ----------------------------------------------------------------------------------


def _run_files(folds: list[int]) -> dict[str, bytes]:
    files = {"run/config.toml": f"folds = {folds}\n".encode(), "submission.csv": b"id,target\n"}
    for f in folds:
        files[f"run/fold{f}/done.json"] = b"{}"
        files[f"run/fold{f}/best.keras"] = b"model"
        files[f"run/fold{f}/history.csv"] = b"epoch\n0\n"
    return files


@pytest.fixture
def merged(monkeypatch):
    """kit.runs.listing.merge_runs recorded (the merge itself is kit runs merge's, tested there)."""
    calls = []

    def merge_runs(sources, out):
        calls.append(([Path(s) for s in sources], Path(out)))
        Path(out).mkdir()
        return Path(out)

    monkeypatch.setattr(runs, "merge_runs", merge_runs, raising=False)
    return calls


def test_gather_downloads_every_page_and_merges_the_run_folders(stub, merged, capsys):
    farm = KernelFarm(stub, {"k-folds-0-1": SimKernel(polls=0, files=_run_files([0, 1])),
                             "k-folds-2": SimKernel(polls=0, files=_run_files([2]))}, page_size=2)
    for k in farm.kernels.values():
        k.pushed = True
    code, out, err = _run(capsys, "gather", "alice/k-folds-0-1", "alice/k-folds-2", "--out", "merged")
    assert code == 0, err
    (sources, out_dir), = merged
    assert out_dir == Path("merged")
    assert [s.parts[-3:] for s in sources] == [("alice-k-folds-0-1", s.parts[-2], "run") for s in sources[:1]] + \
        [("alice-k-folds-2", sources[1].parts[-2], "run")]
    got = sorted(str(p.relative_to(sources[0])) for p in sources[0].rglob("*") if p.is_file())
    assert got == ["config.toml", "fold0/best.keras", "fold0/done.json", "fold0/history.csv", "fold1/best.keras",
                   "fold1/done.json", "fold1/history.csv"]  # 8 files in 4 pages of 2, every page fetched
    assert len([c for c in stub.calls("ListKernelSessionOutput") if c.json()["kernelSlug"] == "k-folds-0-1"]) == 4
    assert out.splitlines()[-1] == "merged 2 run folder(s) from 2 kernel(s) into merged"


def test_gather_refuses_a_running_kernel_and_skips_it_with_partial(stub, merged, capsys):
    farm = KernelFarm(stub, {"k-folds-0": SimKernel(polls=0, files=_run_files([0])),
                             "k-folds-1": SimKernel(polls=50, files=_run_files([1])),
                             "k-folds-2": SimKernel(polls=0, final="error", failure="boom")})
    for k in farm.kernels.values():
        k.pushed = True
    code, out, err = _run(capsys, "gather", "alice/k-folds-0", "alice/k-folds-1", "--out", "merged")
    assert (code, err.strip()) == (1, "kit gather: error: alice/k-folds-1 is still running: wait for it, or give "
                                      "--partial to gather the others")
    assert merged == [] and stub.calls("ListKernelSessionOutput") == []
    code, out, err = _run(capsys, "gather", "alice/k-folds-2", "--out", "merged")
    assert (code, err.strip()) == (1, "kit gather: error: alice/k-folds-2 ended with error (boom): wait for it, or "
                                      "give --partial to gather the others")
    code, out, err = _run(capsys, "gather", "alice/k-folds-0", "alice/k-folds-1", "alice/k-folds-2", "--out", "merged",
                          "--partial")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("alice/k-folds-0: 5 file(s), run folder(s) runs/kernels/alice-k-folds-0/gather-")
    assert lines[1:3] == ["skipped: alice/k-folds-1 is still running", "skipped: alice/k-folds-2 ended with error (boom)"]
    assert lines[-3:] == ["merged 1 run folder(s) from 1 kernel(s) into merged", "left out: alice/k-folds-1 (running)",
                          "left out: alice/k-folds-2 (error)"]
    assert len(merged) == 1 and len(merged[0][0]) == 1


@pytest.mark.parametrize("argv, line", [
    (["alice/k-folds-0", "--out", "exists"], "--out exists: exists; kit gather writes a new run folder"),
    (["alice/k-folds-0", "alice/k-folds-0", "--out", "m"], "kernel alice/k-folds-0 is given twice"),
    (["not a kernel", "--out", "m"], "kernel 'not a kernel' is not owner/slug (or owner/slug/version)"),
])
def test_bad_gather_arguments_are_one_line(stub, capsys, argv, line):
    Path("exists").mkdir()
    code, out, err = _run(capsys, "gather", *argv)
    assert (code, err.strip()) == (1, f"kit gather: error: {line}")
    assert stub.requests == []


def test_a_kernel_output_without_a_run_folder_is_one_line(stub, merged, capsys):
    farm = KernelFarm(stub, {"k-folds-0": SimKernel(polls=0, files={"submission.csv": b"id\n"})})
    farm.kernels["k-folds-0"].pushed = True
    code, out, err = _run(capsys, "gather", "alice/k-folds-0", "--out", "m")
    assert code == 1
    assert err.strip().startswith("kit gather: error: alice/k-folds-0: no run folder (config.toml) in its 1 output "
                                  "file(s) in runs/kernels/alice-k-folds-0/gather-")


# --- the rehearsal: fold-group kernels run here, served by the stand-in, gathered ----------------

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_rehearsal_fold_kernels_gathered_equal_one_local_train(stub, tmp_path, monkeypatch, capsys):
    from nbclient import NotebookClient

    from kit.data import synth

    comp = synth.make_competition("pcam", tmp_path / "comp", n_train=40, n_test=12, size=32)
    code, out, err = _run(capsys, "push", REPO / "notebooks" / "pcam_t4.ipynb", "--fan-out", "0", "1", "--dry-run",
                          "--folder", tmp_path / "fan", "--kit-dataset", "alice/kit-wheel")
    assert code == 0, err
    farm = KernelFarm(stub, page_size=3)
    for folder in sorted((tmp_path / "fan").iterdir()):
        work = tmp_path / "work" / folder.name
        for key, value in {"KIT_INPUT": comp, "KIT_WORKING": work, "KIT_TINY": "1", "PYTHONPATH": REPO,
                           "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}.items():
            monkeypatch.setenv(key, str(value))
        nb = nbformat.read(folder / "pcam_t4.ipynb", as_version=4)  # run where Jupyter runs it: beside kit-folds.json
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
        files = {str(p.relative_to(work)): p.read_bytes() for p in (work / "run").rglob("*") if p.is_file()}
        assert sorted(f for f in files if f.endswith("done.json")) == [f"run/fold{k}/done.json"
                                                                      for k in kernel.fold_group(folder)]
        farm.kernels[folder.name] = SimKernel(polls=0, files=files, pushed=True)
    code, out, err = _run(capsys, "gather", *(f"alice/{slug}" for slug in sorted(farm.kernels)), "--out", tmp_path / "merged")
    assert code == 0, err
    records = tmp_path / "work" / sorted(farm.kernels)[0] / "scratch" / "records"
    code, out, err = _run(capsys, "train", "--records", records, "--out", tmp_path / "single", "--model", "tiny_cnn",
                          "--epochs", 1, "--batch", 8, "--augment", "pcam")
    assert code == 0, err
    assert (tmp_path / "merged" / "oof.csv").read_bytes() == (tmp_path / "single" / "oof.csv").read_bytes()
