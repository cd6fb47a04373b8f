"""kit push / status / output / submit with the real kaggle client against a stub server on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import nbformat
import pytest

from kaggle_stub import stop_and_check_loopback, KaggleStub, client_env, fake_credentials
from kit.kaggle import client as kaggle
from kit.cli.app import main
from kit.core.errors import KitError

USER = "alice"
KEY = "k3y-0f-al1ce-d0-n0t-l3ak"
TOKEN = "KGAT_t0ken-d0-n0t-l3ak-0123"
REPO = Path(__file__).resolve().parent.parent
COMPETITION = "siim-isic-melanoma-classification"
SAVED = {"ref": "/code/alice/melanoma-tpu", "url": "https://www.kaggle.com/code/alice/melanoma-tpu", "versionNumber": 3}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A temporary HOME with a fake kaggle.json; the working folder is a temporary one too."""
    home = tmp_path / "home"
    fake_credentials(home, USER, KEY)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # kit's scratch folders stay in this test's folder
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def stub(home, monkeypatch):
    """A running stub; the client's traffic goes to it and nowhere else."""
    server = KaggleStub(responses={"SaveKernel": dict(SAVED)}).start()
    client_env(monkeypatch, home, server)
    yield server
    stop_and_check_loopback(server)


@pytest.fixture
def notebook(tmp_path):
    nb = nbformat.v4.new_notebook()  # no kernelspec: kit must add it
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Melanoma on TPU"),
        nbformat.v4.new_code_cell("print('install here')", metadata={"tags": ["kit-install"]}),
        nbformat.v4.new_code_cell("import kit\nprint(kit.__version__)"),
    ]
    path = tmp_path / "melanoma_tpu.ipynb"
    nbformat.write(nb, str(path))
    return path


def _embedded_wheels(install: str) -> list[bytes]:
    """The wheels base64-embedded in an install cell's source, decoded (one per ``_KIT_WHEEL_B64`` literal)."""
    blocks = re.findall(r'^_KIT_WHEEL_B64 = \(\n((?:\s+"[A-Za-z0-9+/=]+"\n)+)\)', install, re.M)
    return [base64.b64decode("".join(re.findall(r'"([A-Za-z0-9+/=]+)"', block))) for block in blocks]


def _sent_notebook(stub: KaggleStub) -> dict:
    (call,) = stub.calls("SaveKernel")
    return json.loads(call.json()["text"])


# --- push ---------------------------------------------------------------------------------------


def test_push_tpu_sends_the_save_kernel_request(stub, notebook, home, capsys):
    code = main(["push", str(notebook), "--accelerator", "tpu", "--competition", COMPETITION,
                 "--dataset", "cdeotte/melanoma-256x256", "--kernel-source", "bob/tfrec-maker",
                 "--folder", str(home.parent / "kernel")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.strip() == "pushed alice/melanoma-tpu version 3 (private): https://www.kaggle.com/code/alice/melanoma-tpu"

    (call,) = stub.calls("SaveKernel")
    assert call.url == "http://localhost/api/v1/kernels.KernelsApiService/SaveKernel"
    body = call.json()
    assert body["slug"] == "alice/melanoma-tpu"
    assert body["newTitle"] == "melanoma tpu"
    assert (body["language"], body["kernelType"]) == ("python", "notebook")
    assert body["machineShape"] == "TpuV5E8"
    assert body["enableTpu"] is True and body["enableGpu"] is False
    assert body["enableInternet"] is False and body["isPrivate"] is True
    assert body["competitionDataSources"] == [COMPETITION]
    assert body["datasetDataSources"] == ["cdeotte/melanoma-256x256"]
    assert body["kernelDataSources"] == ["bob/tfrec-maker"]
    assert "dockerImage" not in body  # a pinned image on TPU would run the CPU image
    # The client authenticated with the key from its own kaggle.json (kit never handed it over).
    assert call.headers["Authorization"] == "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()

    sent = json.loads(body["text"])
    assert sent["metadata"]["kernelspec"] == {"display_name": "Python 3", "language": "python", "name": "python3"}
    assert [c["cell_type"] for c in sent["cells"]] == ["markdown", "code", "code"]
    install = sent["cells"][1]["source"]
    assert install.startswith("# kit-install:") and "--no-deps" in install and "--no-index" in install
    # The embedded wheel is the kit package itself, installable offline.
    (embedded,) = _embedded_wheels(install)
    wheel = zipfile.ZipFile(io.BytesIO(embedded))
    assert {"kit/__init__.py", "kit/kaggle/client.py", "kit/cli/app.py"} <= set(wheel.namelist())
    assert "kit-0.1.0.dist-info/METADATA" in wheel.namelist()

    folder = home.parent / "kernel"
    # the wheel travels in the install cell only: `kaggle kernels push` sends the code file, nothing beside it
    assert sorted(p.name for p in folder.iterdir()) == ["kernel-metadata.json", "melanoma_tpu.ipynb"]
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["id"] == "alice/melanoma-tpu" and meta["code_file"] == "melanoma_tpu.ipynb"
    assert json.loads(Path("runs/kernels/alice-melanoma-tpu/push.json").read_text())["version"] == 3


def test_push_t4_public_with_internet_and_kit_dataset(stub, notebook, capsys):
    stub.responses["SaveKernel"] = {"url": "https://www.kaggle.com/code/alice/ham", "versionNumber": 1}
    code = main(["push", str(notebook), "--accelerator", "t4", "--public", "--internet", "--slug", "ham10000-t4",
                 "--title", "HAM10000 on T4", "--kit-dataset", "alice/kit-wheel", "--dataset", "kmader/skin-cancer-mnist-ham10000"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.strip() == "pushed alice/ham10000-t4 version 1 (public): https://www.kaggle.com/code/alice/ham"
    body = stub.calls("SaveKernel")[0].json()
    assert (body["slug"], body["newTitle"]) == ("alice/ham10000-t4", "HAM10000 on T4")
    assert body["machineShape"] == "NvidiaTeslaT4"
    assert body["enableGpu"] is True and body["enableTpu"] is False
    assert body["enableInternet"] is True and body["isPrivate"] is False
    assert body["datasetDataSources"] == ["kmader/skin-cancer-mnist-ham10000", "alice/kit-wheel"]
    install = json.loads(body["text"])["cells"][1]["source"]
    assert "/kaggle/input/**/kit-*.whl" in install and "_KIT_WHEEL_B64" not in install


def test_push_cpu_sends_no_machine_shape(stub, notebook, tmp_path, capsys):
    assert main(["push", str(notebook), "--accelerator", "cpu"]) == 0
    assert list(tmp_path.glob("kit-kernel-*")) == []  # the scratch kernel folder is gone once sent
    body = stub.calls("SaveKernel")[0].json()
    assert "machineShape" not in body and body["enableGpu"] is False and body["enableTpu"] is False


def test_server_side_error_is_one_line_and_non_zero(stub, notebook, capsys):
    # The client exits 0 here; kit reads what it printed.
    stub.responses["SaveKernel"] = {"error": "Notebook slug is already taken by another user"}
    assert main(["push", str(notebook)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kit push: error: kaggle kernels push: Kernel push error: Notebook slug is already taken by another user"]
    assert not Path("runs/kernels").exists()  # nothing recorded for a failed push


def test_http_error_from_the_server_exits_non_zero_in_a_real_process(stub, notebook, home):
    stub.responses["SaveKernel"] = (400, {"code": 400, "message": "Invalid machine shape for this account"})
    proc = subprocess.run([sys.executable, "-m", "kit", "push", str(notebook), "--accelerator", "tpu"],
                          capture_output=True, text=True, cwd=Path.cwd(), timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kit push: error: kaggle kernels push:")
    assert "Invalid machine shape for this account" in lines[0]


def test_sources_refused_by_kaggle_are_an_error(stub, notebook, capsys):
    stub.responses["SaveKernel"] = {**SAVED, "invalidDatasetSources": ["bob/gone"]}
    assert main(["push", str(notebook), "--dataset", "bob/gone"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid dataset sources" in err[0] and "bob/gone" in err[0]
    assert "version 3 was saved" in err[0]


@pytest.mark.parametrize("options, message", [
    ({"title": "abc"}, "title 'abc' is too short (Kaggle needs at least 5 characters)"),
    ({"title": "x" * 51}, "is longer than Kaggle's 50 characters"),
    ({"accelerator": "v100"}, "accelerator 'v100': not one of t4, tpu, cpu"),
    ({"accelerator": "p100"}, "accelerator 'p100': not one of t4, tpu, cpu"),
    ({"datasets": ["no-owner"]}, "dataset_sources entry 'no-owner' is not owner/slug"),
    ({"datasets": ["a/b/c/d"]}, "dataset_sources entry 'a/b/c/d' is not owner/slug"),
    ({"kernels": ["bob"]}, "kernel_sources entry 'bob' is not owner/slug"),
    ({"competition": "SIIM ISIC"}, "competition_sources entry 'SIIM ISIC' is not a competition slug"),
    ({"slug": "Bad_Slug"}, "id 'alice/Bad_Slug' is not owner/slug"),
    ({"slug": "ham"}, "id 'alice/ham': the slug is too short (Kaggle needs at least 5 characters)"),
    ({"kit_dataset": "kitwheel"}, "--kit-dataset 'kitwheel' is not owner/slug"),
    ({"models": ["keras/efficientnet/keras/efficientnet_b0_ra_imagenet"]},
     "model_sources entry 'keras/efficientnet/keras/efficientnet_b0_ra_imagenet' is not "
     "owner/model/framework/variation/version (version a number)"),
    ({"models": ["keras/efficientnet/keras/efficientnet_b0_ra_imagenet/latest"]}, "version a number"),
    ({"models": ["keras//keras/efficientnet_b0_ra_imagenet/2"]}, "model_sources entry 'keras//keras/"),
])
def test_bad_metadata_is_refused_before_anything_is_sent(stub, notebook, tmp_path, options, message):
    with pytest.raises(KitError) as exc:
        kaggle.push(notebook, folder=tmp_path / "k", **options)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert stub.requests == []
    assert not (tmp_path / "k").exists()


MODEL = "keras/efficientnet/keras/efficientnet_b0_ra_imagenet/2"


def test_model_sources_reach_the_kernel_folder_and_kaggle(stub, notebook, home, capsys):
    folder = home.parent / "kernel"
    code = main(["push", str(notebook), "--model-source", MODEL, "--model-source", "bob/ham-b3/keras/fold0/3",
                 "--model-source", MODEL, "--folder", str(folder)])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["model_sources"] == [MODEL, "bob/ham-b3/keras/fold0/3"]  # in order, once each
    # the real client accepted them and sent them to Kaggle
    assert stub.calls("SaveKernel")[0].json()["modelDataSources"] == [MODEL, "bob/ham-b3/keras/fold0/3"]


def test_a_malformed_model_source_is_one_line_and_nothing_is_sent(stub, notebook, capsys):
    assert main(["push", str(notebook), "--model-source", "keras/efficientnet/keras/2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("kit push: error: kernel-metadata.json: model_sources entry 'keras/efficientnet/keras/2' is not "
                   "owner/model/framework/variation/version (version a number)")
    assert stub.requests == []


def test_check_metadata_refuses_missing_code_file_and_tpu_docker_image(tmp_path):
    meta = kaggle.kernel_metadata("nb.ipynb", owner=USER, title="Melanoma TPU", accelerator="tpu")
    with pytest.raises(KitError, match=r"^kernel-metadata.json: code_file 'nb.ipynb' not found in "):
        kaggle.check_metadata(meta, tmp_path)
    with pytest.raises(KitError, match="docker_image 'gcr.io/kaggle-images/python' on a TPU kernel runs the CPU image"):
        kaggle.check_metadata({**meta, "docker_image": "gcr.io/kaggle-images/python"})
    with pytest.raises(KitError, match="machine_shape 'NvidiaTeslaP100' is not one Kaggle offers"):
        kaggle.check_metadata({**meta, "machine_shape": "NvidiaTeslaP100"})
    with pytest.raises(KitError, match="enable_gpu True contradicts machine_shape 'TpuV5E8'"):
        kaggle.check_metadata({**meta, "enable_gpu": True})
    with pytest.raises(KitError, match="code_file"):
        kaggle.check_metadata({**meta, "code_file": ""})


def test_missing_notebook_is_one_line(stub, tmp_path, capsys):
    assert main(["push", str(tmp_path / "nope.ipynb"), "--dry-run"]) == 1
    assert capsys.readouterr().err.strip() == f"kit push: error: {tmp_path / 'nope.ipynb'}: notebook not found"
    assert stub.requests == []


def test_dry_run_shows_folder_and_metadata_and_sends_nothing(stub, notebook, tmp_path, capsys):
    folder = tmp_path / "dry"
    assert main(["push", str(notebook), "--accelerator", "tpu", "--dry-run", "--folder", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"dry run: nothing sent; kernel folder {folder}\n")
    shown = json.loads(out[out.index("{"):])
    assert shown == json.loads((folder / "kernel-metadata.json").read_text())
    assert shown["machine_shape"] == "TpuV5E8" and shown["is_private"] is True and shown["enable_internet"] is False
    assert stub.requests == []
    assert not Path("runs").exists()


def test_credentials_never_reach_the_folder_the_notebook_or_the_output(stub, notebook, home, tmp_path, monkeypatch, capsys):
    # Every place the client looks: kaggle.json (fixture), the environment, an access-token file.
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    (home / ".kaggle" / "access_token").write_text(TOKEN + "-file")
    stub.responses.update({
        "GetKernelSessionStatus": {"status": "ERROR", "failureMessage": f"bad token {TOKEN}"},
        "ListKernelSessionOutput": {"files": [{"url": "http://localhost/files/submission.csv", "fileName": "submission.csv"}],
                                    "log": "ran"},
    })
    stub.files["submission.csv"] = b"image_name,target\nISIC_1,0.5\n"
    folder = tmp_path / "kernel"
    codes = [
        main(["push", str(notebook), "--folder", str(folder)]),
        main(["push", str(notebook), "--folder", str(tmp_path / "dry"), "--dry-run"]),
        main(["status", "alice/melanoma-tpu"]),
        main(["output", "alice/melanoma-tpu"]),
    ]
    stub.responses["SaveKernel"] = {"error": f"server echoed {KEY}"}
    codes.append(main(["push", str(notebook), "--folder", str(folder)]))
    captured = capsys.readouterr()
    assert codes == [0, 0, 1, 0, 1]
    secrets = [KEY, TOKEN, base64.b64encode(f"{USER}:{KEY}".encode()).decode()]
    text = captured.out + captured.err
    assert "***" in text  # what the server echoed was redacted, not printed
    written = [p for root in (folder, tmp_path / "dry", Path.cwd()) for p in root.rglob("*") if p.is_file()]
    assert len(written) >= 6
    for path in written:
        data = path.read_bytes()
        if path.suffix == ".ipynb":  # the wheel embedded in the install cell is a zip: look inside it too
            for embedded in _embedded_wheels(path.read_text()):
                wheel = zipfile.ZipFile(io.BytesIO(embedded))
                data += b"".join(wheel.read(n) for n in wheel.namelist())
        for secret in secrets:
            assert secret.encode() not in data, path
    for secret in secrets:
        assert secret not in text


def test_a_notebook_holding_the_key_is_refused(stub, home, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"import os\nos.environ['KAGGLE_KEY'] = '{KEY}'")]
    path = tmp_path / "leaky_notebook.ipynb"
    nbformat.write(nb, str(path))
    with pytest.raises(KitError, match="^leaky_notebook.ipynb: holds a Kaggle credential of this machine"):
        kaggle.push(path, folder=tmp_path / "k")
    assert stub.requests == [] and not (tmp_path / "k").exists()


def test_missing_or_refused_credentials_are_one_line(stub, notebook, home, capsys):
    (home / ".kaggle" / "kaggle.json").unlink()
    assert main(["push", str(notebook)]) == 1
    assert capsys.readouterr().err.strip() == (
        "kit push: error: no Kaggle user name: set KAGGLE_USERNAME, add it to ~/.kaggle/kaggle.json, or pass --owner")
    assert main(["push", str(notebook), "--owner", USER]) == 1
    auth = ("Authentication required: Kaggle refused the credentials or found none "
            "(run `kaggle auth login`, or put an API token in ~/.kaggle/kaggle.json)")
    assert capsys.readouterr().err.strip() == f"kit push: error: kaggle kernels push: {auth}"
    assert stub.calls("SaveKernel") == []
    fake_credentials(home, USER, KEY)
    stub.responses["SaveKernel"] = (401, {"code": 401, "message": "Unauthenticated"})
    assert main(["push", str(notebook)]) == 1
    assert capsys.readouterr().err.strip() == f"kit push: error: kaggle kernels push: {auth}"


# --- status / output / submit -------------------------------------------------------------------


def test_status_waits_until_complete(stub, capsys):
    stub.responses["GetKernelSessionStatus"] = [{"status": "QUEUED"}, {"status": "RUNNING"}, {"status": "COMPLETE"}]
    status = kaggle.kernel_status("alice/melanoma-tpu", wait=True, interval=0.05)
    assert (status.status, status.failure_message) == ("complete", None)
    calls = stub.calls("GetKernelSessionStatus")
    assert len(calls) == 3
    assert calls[0].json() == {"userName": "alice", "kernelSlug": "melanoma-tpu"}
    stub.responses["GetKernelSessionStatus"] = [{"status": "RUNNING"}, {"status": "RUNNING"}, {"status": "COMPLETE"}]
    assert main(["status", "alice/melanoma-tpu", "--wait", "--interval", "0.05"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "alice/melanoma-tpu: running\n"  # each new status once while waiting
    assert captured.out == "alice/melanoma-tpu: complete\n"


def test_failed_kernel_is_a_non_zero_status(stub, capsys):
    # `kaggle kernels status` itself exits 0 here.
    stub.responses["GetKernelSessionStatus"] = {"status": "ERROR", "failureMessage": "ResourceExhausted: TPU OOM"}
    assert main(["status", "alice/melanoma-tpu"]) == 1
    assert capsys.readouterr().out.strip() == "alice/melanoma-tpu: error (ResourceExhausted: TPU OOM)"


def test_status_of_an_unknown_kernel_is_one_line(stub, capsys):
    stub.responses["GetKernelSessionStatus"] = (403, {"code": 403, "message": "Permission denied"})
    assert main(["status", "alice/no-such-kernel"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kit status: error: kaggle kernels status: Cannot access kernel 'alice/no-such-kernel'")
    assert main(["status", "not a kernel"]) == 1
    assert capsys.readouterr().err.strip() == "kit status: error: kernel 'not a kernel' is not owner/slug (or owner/slug/version)"


def test_output_downloads_and_names_the_submission_by_kernel_and_version(stub, capsys):
    csv = b"image_name,target\nISIC_0052060,0.031\nISIC_0052349,0.912\n"
    stub.files.update({"submission.csv": csv, "oof.csv": b"image_name,target,pred,fold\n"})
    stub.responses["ListKernelSessionOutput"] = {
        "files": [{"url": "http://localhost/files/submission.csv", "fileName": "submission.csv"},
                  {"url": "http://localhost/files/oof.csv", "fileName": "oof.csv"}],
        "log": "[{\"data\": \"training fold 0\"}]",
    }
    assert main(["output", "alice/melanoma-tpu/7"]) == 0
    out = capsys.readouterr().out.splitlines()
    folder = Path("runs/kernels/alice-melanoma-tpu/v7")
    assert out[0] == f"alice/melanoma-tpu: 3 file(s) in {folder}"
    assert sorted(out[1:4]) == ["  melanoma-tpu.log", "  oof.csv", "  submission.csv"]
    assert out[4] == "submission: submissions/alice-melanoma-tpu-v7.csv"
    assert Path("submissions/alice-melanoma-tpu-v7.csv").read_bytes() == csv
    assert (folder / "oof.csv").is_file()
    assert stub.calls("ListKernelSessionOutput")[0].json()["userName"] == "alice"
    # Without a version in the name, the one `kit push` recorded is used.
    Path("runs/kernels/alice-melanoma-tpu/push.json").write_text(json.dumps({"version": 4}))
    result = kaggle.kernel_output("alice/melanoma-tpu")
    assert result.version == 4 and result.submission == Path("submissions/alice-melanoma-tpu-v4.csv")


def test_submit_uploads_the_file_and_reports_kaggle_answer(stub, tmp_path, capsys):
    sub = tmp_path / "sub.csv"
    sub.write_text("image_name,target\nISIC_1,0.25\n")
    stub.responses.update({
        "StartSubmissionUpload": {"token": "blob-token-1", "createUrl": "http://localhost/upload/blob-1"},
        "CreateSubmission": {"message": "Successfully submitted to SIIM-ISIC Melanoma Classification", "ref": 11},
    })
    assert main(["submit", str(sub), "--competition", COMPETITION, "--message", "b0 256 5 folds"]) == 0
    assert capsys.readouterr().out.strip() == "Successfully submitted to SIIM-ISIC Melanoma Classification"
    start = stub.calls("StartSubmissionUpload")[0].json()
    assert (start["competitionName"], start["fileName"], start["contentLength"]) == (COMPETITION, "sub.csv", sub.stat().st_size)
    (upload,) = [r for r in stub.requests if r.method == "PUT"]
    assert upload.url == "http://localhost/upload/blob-1" and upload.body == sub.read_bytes()
    create = stub.calls("CreateSubmission")[0].json()
    assert create == {"competitionName": COMPETITION, "blobFileTokens": "blob-token-1", "submissionDescription": "b0 256 5 folds"}


def test_submit_server_error_is_one_line(stub, tmp_path, capsys):
    sub = tmp_path / "sub.csv"
    sub.write_text("image_name,target\nISIC_1,0.25\n")
    stub.responses.update({
        "StartSubmissionUpload": {"token": "t", "createUrl": "http://localhost/upload/b"},
        "CreateSubmission": (400, {"code": 400, "message": "You have reached the daily submission limit"}),
    })
    assert main(["submit", str(sub), "--competition", COMPETITION, "--message", "m"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "daily submission limit" in err[0] and err[0].startswith("kit submit: error: ")


def test_code_competition_submits_a_kernel_version(stub, capsys):
    stub.responses["CreateCodeSubmission"] = {"message": "Your submission was queued", "ref": 5}
    assert main(["submit", "submission.csv", "--competition", "isic-2024-challenge", "--message", "v9",
                 "--kernel", "alice/melanoma-tpu/9"]) == 0
    assert capsys.readouterr().out.strip() == "Your submission was queued"
    body = stub.calls("CreateCodeSubmission")[0].json()
    assert body["competitionName"] == "isic-2024-challenge"
    assert (body["kernelSlug"], body["kernelVersion"], body["fileName"]) == ("melanoma-tpu", 9, "submission.csv")
    assert stub.calls("StartSubmissionUpload") == []


def test_submit_checks_against_the_sample_first(stub, tmp_path, capsys):
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("image_name,target\nISIC_1,0\nISIC_2,0\n")
    sub = tmp_path / "sub.csv"
    sub.write_text("image_name,target\nISIC_9,0.25\nISIC_2,0.5\n")
    assert main(["submit", str(sub), "--competition", COMPETITION, "--message", "m",
                 "--sample-submission", str(sample)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kit submit: error: {sub}: ") and "ISIC_9" in err and err.endswith("run kit check)")
    assert len(err.splitlines()) == 1 and stub.requests == []


def test_repository_kernel_metadata_is_the_tpu_default_kernel():
    meta = json.loads((REPO / "kernel-metadata.json").read_text())
    kaggle.check_metadata(meta)  # the notebook itself may not exist yet
    assert meta["code_file"] == "notebooks/siim_isic_tpu.ipynb"
    assert (meta["machine_shape"], meta["enable_tpu"], meta["enable_gpu"]) == ("TpuV5E8", True, False)
    assert "docker_image" not in meta
    assert meta["is_private"] is True and meta["enable_internet"] is False
    assert meta["competition_sources"] == [COMPETITION]
    assert kaggle.slugify(meta["title"]) == meta["id"].split("/")[1]


def test_push_of_the_default_notebook_takes_the_repository_defaults(stub, tmp_path, capsys):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import kit")]
    path = tmp_path / "siim_isic_tpu.ipynb"
    nbformat.write(nb, str(path))
    result = kaggle.push(path, folder=tmp_path / "k", defaults=kaggle.default_metadata(REPO))
    meta = result.kernel.metadata
    assert meta["id"] == "alice/siim-isic-melanoma-tpu" and meta["title"] == "SIIM-ISIC Melanoma TPU"
    assert meta["machine_shape"] == "TpuV5E8" and meta["competition_sources"] == [COMPETITION]
    assert meta["dataset_sources"] == ["cdeotte/melanoma-256x256"]
    assert meta["model_sources"] == [MODEL]
    assert stub.calls("SaveKernel")[0].json()["modelDataSources"] == [MODEL]
    sent = _sent_notebook(stub)
    assert sent["cells"][0]["metadata"]["tags"] == ["kit-install"]  # inserted: the notebook imports kit


def test_install_cells_compile_and_run_locally_without_installing(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    wheel = kaggle.build_wheel(tmp_path)
    for source in (kaggle.install_cell_source(), kaggle.install_cell_source(wheel)):
        assert "--no-deps" in source and "--no-index" in source
        exec(compile(source, "install-cell", "exec"), {})  # off Kaggle: imports the installed kit only
    assert capsys.readouterr().out == "kit 0.1.0\nkit 0.1.0\n"


def test_bundled_install_cell_installs_the_embedded_wheel_offline(tmp_path):
    wheel = kaggle.build_wheel(tmp_path / "wheel")
    target = tmp_path / "site"
    # As on Kaggle, but pip installs into a scratch folder (PIP_TARGET) instead of this environment.
    env = {**__import__("os").environ, "KAGGLE_KERNEL_RUN_TYPE": "Batch", "PIP_TARGET": str(target),
           "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONPATH": str(REPO)}
    # A file, not `-c`: the cell embeds the whole wheel, longer than one command-line argument may be.
    cell = tmp_path / "install_cell.py"
    cell.write_text(kaggle.install_cell_source(wheel))
    proc = subprocess.run([sys.executable, str(cell)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "kit 0.1.0"
    for module in ("kaggle/client.py", "data/competitions/siim.py", "cli/app.py"):  # every package travels
        assert (target / "kit" / module).read_text() == (REPO / "kit" / module).read_text()
    installed = {p.name for p in target.iterdir()}
    assert installed == {"kit", "kit-0.1.0.dist-info"} | ({"bin"} if (target / "bin").exists() else set())


def test_rendered_kernel_folder_holds_the_wheel_once_embedded_in_the_install_cell(tmp_path, notebook, capsys):
    stale = tmp_path / "k" / "kit-0.0.9-py3-none-any.whl"  # what an older kit wrote beside the notebook
    stale.parent.mkdir()
    (tmp_path / "k" / "kernel-metadata.json").write_text("{}")
    stale.write_bytes(b"old")
    assert main(["push", str(notebook), "--dry-run", "--owner", "alice", "--folder", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "k"
    assert sorted(p.name for p in folder.rglob("*")) == ["kernel-metadata.json", "melanoma_tpu.ipynb"]
    built = kaggle.build_wheel(tmp_path / "built")
    digest = hashlib.sha256(built.read_bytes()).hexdigest()
    nb = nbformat.read(folder / "melanoma_tpu.ipynb", as_version=4)
    embedded = [w for c in nb.cells for w in _embedded_wheels(c.source)]
    assert [hashlib.sha256(w).hexdigest() for w in embedded] == [digest]
    # one copy in the whole folder: the wheel's opening base64 line appears once, in that cell
    head = base64.b64encode(built.read_bytes()).decode()[:96]
    assert sum(p.read_text().count(head) for p in folder.iterdir()) == 1
    size = round(built.stat().st_size / 1024)
    assert (f"  (kit: kit-0.1.0-py3-none-any.whl ({size} KiB, sha256 {digest[:16]}) embedded in the install cell "
            "of melanoma_tpu.ipynb)\n") in out


def test_wheel_dataset_folder(tmp_path):
    folder = kaggle.write_wheel_dataset(tmp_path / "ds", "alice/kit-wheel")
    assert sorted(p.name for p in folder.iterdir()) == ["dataset-metadata.json", "kit-0.1.0-py3-none-any.whl"]
    meta = json.loads((folder / "dataset-metadata.json").read_text())
    assert meta == {"title": "kit wheel", "id": "alice/kit-wheel", "licenses": [{"name": "CC0-1.0"}]}
    with pytest.raises(KitError, match="dataset 'kit-wheel' is not owner/slug"):
        kaggle.write_wheel_dataset(tmp_path / "bad", "kit-wheel")


def test_resume_from_attaches_the_kernel_and_makes_the_notebook_resume(stub, notebook, tmp_path, capsys):
    folder = tmp_path / "dry"
    assert main(["push", str(notebook), "--dry-run", "--folder", str(folder), "--resume-from", "alice/melanoma-tpu"]) == 0
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["kernel_sources"] == ["alice/melanoma-tpu"]
    cells = nbformat.read(folder / notebook.name, as_version=4).cells
    assert cells[2].metadata["tags"] == ["kit-resume"] and cells[1].metadata["tags"] == ["kit-install"]
    assert cells[2].source.endswith("os.environ['KIT_RESUME_FROM'] = 'alice/melanoma-tpu'")
    assert stub.requests == []
    # pushed for real: the kernel source reaches Kaggle; a push without --resume-from drops the cell again
    assert main(["push", str(folder / notebook.name), "--resume-from", "alice/melanoma-tpu/3"]) == 0
    body = stub.calls("SaveKernel")[0].json()
    assert body["kernelDataSources"] == ["alice/melanoma-tpu/3"]
    assert sum("KIT_RESUME_FROM" in c["source"] for c in json.loads(body["text"])["cells"]) == 1
    kaggle.prepare_notebook(folder / notebook.name, tmp_path / "plain.ipynb")
    assert not any("KIT_RESUME_FROM" in c.source for c in nbformat.read(tmp_path / "plain.ipynb", as_version=4).cells)


def test_a_bad_resume_from_is_one_line_and_nothing_is_sent(stub, notebook, capsys):
    assert main(["push", str(notebook), "--resume-from", "not a kernel"]) == 1
    assert capsys.readouterr().err.strip() == ("kit push: error: --resume-from 'not a kernel' is not owner/slug (or "
                                               "owner/slug/version) of a kernel")
    assert stub.requests == []
