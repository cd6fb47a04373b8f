"""Kaggle kernels from kit: kernel-metadata.json, a notebook bundled with the kit wheel, and
push / status / output / submit through the real ``kaggle`` client.

kit never talks to Kaggle itself and never passes, prints, logs or writes a credential: the
``kaggle`` client (run as a subprocess, the one installed beside this Python) finds them in its own
places (``~/.kaggle/kaggle.json``, ``KAGGLE_USERNAME`` / ``KAGGLE_KEY``, an access token). kit uses
the user name to build a kernel id, and compares the secret values only to keep them out of a kernel
folder and out of what it prints. The client exits 0 when the server answers with an error and
``kernels status`` exits 0 on a failed kernel, so every call here reads what the client printed.

A kernel folder, as rendered by :func:`render_kernel`::

    FOLDER/kernel-metadata.json   id, title, code_file, machine_shape, sources (checked before sending)
    FOLDER/NAME.ipynb             the notebook, with a kernelspec and the kit install cell

``kaggle kernels push`` sends the code file only, so a bundled kit wheel travels base64-encoded inside
the install cell and nowhere else (a wheel file beside the notebook would never reach Kaggle).

This module runs on the user's machine. What runs inside the kernel (where a notebook reads and
writes, attached inputs and Models, ``run_kit``) is kit.kernel; here is only the install cell that
puts kit there (:func:`install_cell_source`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from kit import fsutil
from kit.errors import KitError
from kit.kernel import MODEL_SOURCE, MODEL_SOURCE_FORM

METADATA_FILE = "kernel-metadata.json"
INSTALL_TAG = "kit-install"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
# What Kaggle accepts for machine_shape today (docs/kaggle.md): T4 x2 and the TPU VM v5e-8.
ACCELERATORS: dict[str, dict[str, Any]] = {
    "t4": {"machine_shape": "NvidiaTeslaT4", "enable_gpu": True, "enable_tpu": False},
    "tpu": {"machine_shape": "TpuV5E8", "enable_gpu": False, "enable_tpu": True},
    "cpu": {"machine_shape": None, "enable_gpu": False, "enable_tpu": False},
}
_SHAPE_TO_ACCELERATOR = {v["machine_shape"]: k for k, v in ACCELERATORS.items()}
# Statuses after which a kernel never changes again (the client prints KernelWorkerStatus names).
FINAL_STATUSES = ("complete", "error", "cancel_acknowledged")
# Placeholder owner in the repository's kernel-metadata.json; `kit push` puts the user's name there.
OWNER_PLACEHOLDER = "your-kaggle-username"

_OWNER = r"[A-Za-z0-9][A-Za-z0-9_-]*"
_SLUG = r"[a-z0-9][a-z0-9-]*"
_KERNEL_ID = re.compile(rf"^({_OWNER})/({_SLUG})$")
_DATASET_SOURCE = re.compile(rf"^{_OWNER}/[A-Za-z0-9][A-Za-z0-9_.-]*(/\d+)?$")
_KERNEL_SOURCE = re.compile(rf"^{_OWNER}/{_SLUG}(/\d+)?$")
_COMPETITION = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_KIT_IMPORT = re.compile(r"^\s*(import kit\b|from kit\b)", re.M)


# --- the install cell a kernel starts with ------------------------------------------------------


def install_cell_source(wheel: str | os.PathLike | None = None) -> str:
    """The notebook cell that installs kit offline with ``--no-deps`` (Kaggle's TensorFlow, Keras, JAX stay).

    With ``wheel`` the wheel's bytes are embedded in the cell (bundled at push time); without, the cell
    installs the newest ``kit-*.whl`` found in an attached dataset. Off Kaggle it installs nothing and
    imports the kit already installed.
    """
    pip = '[sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", "--quiet"'
    head = [
        f"# {INSTALL_TAG}: install kit offline; --no-deps keeps the image's TensorFlow, Keras and JAX",
    ]
    if wheel is None:
        body = [
            "import glob, importlib, os, subprocess, sys",
            "if os.environ.get('KAGGLE_KERNEL_RUN_TYPE'):",
            "    _wheels = sorted(glob.glob('/kaggle/input/**/kit-*.whl', recursive=True))",
            "    if not _wheels:",
            "        raise FileNotFoundError('no kit-*.whl under /kaggle/input: attach the dataset holding the kit wheel')",
            f"    subprocess.run({pip}, _wheels[-1]], check=True)",
            "    importlib.invalidate_caches()",
        ]
    else:
        wheel = Path(wheel)
        b64 = base64.b64encode(wheel.read_bytes()).decode("ascii")
        chunks = "\n".join(f'    "{b64[i:i + 96]}"' for i in range(0, len(b64), 96))
        body = [
            "import base64, importlib, os, pathlib, subprocess, sys, tempfile",
            f"_KIT_WHEEL = {wheel.name!r}  # sha256 {hashlib.sha256(wheel.read_bytes()).hexdigest()[:16]}",
            "_KIT_WHEEL_B64 = (",
            chunks,
            ")",
            "if os.environ.get('KAGGLE_KERNEL_RUN_TYPE'):",
            "    _path = pathlib.Path(tempfile.mkdtemp()) / _KIT_WHEEL",
            "    _path.write_bytes(base64.b64decode(_KIT_WHEEL_B64))",
            f"    subprocess.run({pip}, str(_path)], check=True)",
            "    importlib.invalidate_caches()",
        ]
    tail = ["import kit", "print('kit', kit.__version__)"]
    return "\n".join(head + body + tail)


def install_cell(wheel: str | os.PathLike | None = None) -> Any:
    """The install cell as an nbformat code cell, tagged so ``kit push`` can replace it."""
    import nbformat

    return nbformat.v4.new_code_cell(install_cell_source(wheel), metadata={"tags": [INSTALL_TAG]})


RESUME_TAG = "kit-resume"


def resume_cell(kernel: str) -> Any:
    """The cell ``kit push --resume-from KERNEL`` puts after the install cell: it names the kernel whose output holds
    the run to resume (read by kit.kernel.previous_run), tagged so that a later push replaces or drops it."""
    import nbformat

    source = (f"# {RESUME_TAG}: set by `kit push --resume-from`: resume the run found in this kernel's attached output\n"
              f"import os\nos.environ['KIT_RESUME_FROM'] = {kernel!r}")
    return nbformat.v4.new_code_cell(source, metadata={"tags": [RESUME_TAG]})


def check_resume_from(kernel: str) -> str:
    """``kernel`` when it is owner/slug (or owner/slug/version); else KitError naming --resume-from."""
    if not isinstance(kernel, str) or not _KERNEL_SOURCE.match(kernel):
        raise KitError(f"--resume-from {kernel!r} is not owner/slug (or owner/slug/version) of a kernel")
    return kernel


# --- credentials: the user name only; secrets are only ever compared, to keep them out ------------


def _config_files() -> list[Path]:
    """Where the client looks for kaggle.json, in its order."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return [Path(os.environ["KAGGLE_CONFIG_DIR"]) / "kaggle.json"]
    home = Path(os.path.expanduser("~"))
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [home / ".kaggle" / "kaggle.json", xdg / "kaggle" / "kaggle.json"]


def _read_config() -> dict:
    for path in _config_files():
        if path.is_file():
            try:
                data = json.loads(path.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                return {}
            return data if isinstance(data, dict) else {}
    return {}


def kaggle_username() -> str | None:
    """The Kaggle user name from KAGGLE_USERNAME or kaggle.json (None when only a token is configured)."""
    name = os.environ.get("KAGGLE_USERNAME") or _read_config().get("username")
    return str(name) if name else None


def _secrets() -> list[str]:
    """The credential values configured on this machine, so kit can keep them out of what it writes."""
    values = [os.environ.get("KAGGLE_KEY"), _read_config().get("key")]
    token = os.environ.get("KAGGLE_API_TOKEN")
    home = Path(os.path.expanduser("~"))
    for path in (Path(token) if token else None, home / ".kaggle" / "access_token", home / ".kaggle" / "access_token.txt"):
        try:
            if path is not None and path.is_file():
                values.append(path.read_text().strip())
        except OSError:
            pass
    if token and not Path(token).exists():
        values.append(token)
    return sorted({str(v) for v in values if v and len(str(v)) >= 6}, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every configured Kaggle credential replaced by ``***``."""
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text


# A run of base64 long enough to hide a key: an HTTP basic-auth header carries base64("user:key")
_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{16,}={0,2}")
_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _holds_secret(data: bytes, secrets: list[str]) -> bool:
    """Whether ``data`` holds one of ``secrets`` as it is or base64-encoded (alone or inside "user:key")."""
    raw = [s.encode() for s in secrets]
    if any(s in data for s in raw):
        return True
    for m in _BASE64_RUN.finditer(data):
        token = m.group().rstrip(b"=").translate(_URLSAFE)
        try:
            decoded = base64.b64decode(token + b"=" * (-len(token) % 4))
        except ValueError:  # binascii.Error: not base64 after all
            continue
        if any(s in decoded for s in raw):
            return True
    return False


def _refuse_secrets(name: str, text: str | bytes) -> None:
    secrets = _secrets()
    if secrets and _holds_secret(text.encode(errors="replace") if isinstance(text, str) else text, secrets):
        raise KitError(f"{name}: holds a Kaggle credential of this machine; remove it before pushing")


def wheel_files(root: Path) -> list[Path]:
    """The files the bundled kit wheel is built from (and so carries into a kernel)."""
    files = sorted(p for p in (root / "kit").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files + [root / "pyproject.toml"] + ([root / "README.md"] if (root / "README.md").is_file() else [])


# --- kernel metadata ----------------------------------------------------------------------------


def slugify(text: str) -> str:
    """The kernel slug Kaggle derives from a title: lower case, runs of other characters become '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def accelerator_settings(accelerator: str) -> dict[str, Any]:
    """machine_shape / enable_gpu / enable_tpu for ``t4``, ``tpu`` or ``cpu``."""
    key = (accelerator or "").lower()
    if key not in ACCELERATORS:
        raise KitError(f"accelerator {accelerator!r}: not one of {', '.join(ACCELERATORS)}")
    return dict(ACCELERATORS[key])


def kernel_metadata(code_file: str, *, owner: str, slug: str | None = None, title: str | None = None,
                    accelerator: str = "t4", competition: str | None = None,
                    datasets: Sequence[str] = (), kernels: Sequence[str] = (), models: Sequence[str] = (),
                    private: bool = True, internet: bool = False) -> dict[str, Any]:
    """kernel-metadata.json contents in the schema the kaggle client 2.2 accepts (private, offline by default).

    No ``docker_image`` is written: a pinned image on a TPU kernel silently runs the CPU image.
    """
    stem = Path(code_file).stem
    title = title if title is not None else re.sub(r"[_\s-]+", " ", stem).strip()
    slug = slug or slugify(title)
    acc = accelerator_settings(accelerator)
    meta: dict[str, Any] = {
        "id": f"{owner}/{slug}",
        "title": title,
        "code_file": code_file,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": bool(private),
        "enable_gpu": acc["enable_gpu"],
        "enable_tpu": acc["enable_tpu"],
        "enable_internet": bool(internet),
        "dataset_sources": list(dict.fromkeys(datasets)),
        "competition_sources": [competition] if competition else [],
        "kernel_sources": list(dict.fromkeys(kernels)),
        "model_sources": list(dict.fromkeys(models)),
    }
    if acc["machine_shape"]:
        meta["machine_shape"] = acc["machine_shape"]
    return meta


def check_metadata(meta: dict[str, Any], folder: str | os.PathLike | None = None, *,
                   name: str = METADATA_FILE) -> None:
    """Refuse metadata the client or Kaggle would reject (or run wrongly), with one line naming the field.

    ``folder`` is where ``code_file`` must exist; None skips that check.
    """
    kid = meta.get("id")
    if not isinstance(kid, str) or not _KERNEL_ID.match(kid):
        raise KitError(f"{name}: id {kid!r} is not owner/slug (slug: lower-case letters, digits, '-')")
    title = meta.get("title")
    if not isinstance(title, str) or len(title.strip()) < 5:
        raise KitError(f"{name}: title {title!r} is too short (Kaggle needs at least 5 characters)")
    if len(title) > 50:
        raise KitError(f"{name}: title {title!r} is longer than Kaggle's 50 characters")
    if len(kid.split("/")[1]) < 5:
        raise KitError(f"{name}: id {kid!r}: the slug is too short (Kaggle needs at least 5 characters)")
    code = meta.get("code_file")
    if not isinstance(code, str) or not code:
        raise KitError(f"{name}: code_file is missing")
    if folder is not None and not (Path(folder) / code).is_file():
        raise KitError(f"{name}: code_file {code!r} not found in {folder}")
    if meta.get("language") != "python":
        raise KitError(f"{name}: language {meta.get('language')!r} is not 'python'")
    kind = meta.get("kernel_type")
    if kind not in ("notebook", "script"):
        raise KitError(f"{name}: kernel_type {kind!r} is not 'notebook' or 'script'")
    if kind == "notebook" and not code.endswith(".ipynb"):
        raise KitError(f"{name}: code_file {code!r} of a notebook kernel must end in .ipynb")
    for key in ("is_private", "enable_gpu", "enable_tpu", "enable_internet"):
        if key in meta and not isinstance(meta[key], bool):
            raise KitError(f"{name}: {key} {meta[key]!r} is not true or false")
    shape = meta.get("machine_shape")
    if shape not in _SHAPE_TO_ACCELERATOR:
        known = ", ".join(s for s in _SHAPE_TO_ACCELERATOR if s)
        raise KitError(f"{name}: machine_shape {shape!r} is not one Kaggle offers ({known})")
    expected = ACCELERATORS[_SHAPE_TO_ACCELERATOR[shape]]
    for key in ("enable_gpu", "enable_tpu"):
        if bool(meta.get(key, False)) != expected[key]:
            raise KitError(f"{name}: {key} {meta.get(key)!r} contradicts machine_shape {shape!r}")
    if meta.get("docker_image") and (shape == "TpuV5E8" or meta.get("enable_tpu")):
        raise KitError(f"{name}: docker_image {meta['docker_image']!r} on a TPU kernel runs the CPU image; remove it")
    rules = {
        "dataset_sources": (_DATASET_SOURCE, "owner/slug"),
        "kernel_sources": (_KERNEL_SOURCE, "owner/slug"),
        "competition_sources": (_COMPETITION, "a competition slug"),
        "model_sources": (MODEL_SOURCE, MODEL_SOURCE_FORM),
    }
    for key, (pattern, form) in rules.items():
        values = meta.get(key, [])
        if not isinstance(values, list):
            raise KitError(f"{name}: {key} {values!r} is not a list")
        for value in values:
            if not isinstance(value, str) or not pattern.match(value):
                raise KitError(f"{name}: {key} entry {value!r} is not {form}")


# --- the kit wheel ------------------------------------------------------------------------------


_WHEELS: dict[str, Path] = {}
_CACHE: list[Path] = []


def _wheel_cache() -> Path:
    """A folder for this process's wheels, removed when the process ends."""
    if not _CACHE:
        import atexit

        _CACHE.append(Path(tempfile.mkdtemp(prefix="kit-wheels-")))
        atexit.register(shutil.rmtree, _CACHE[0], True)
    return _CACHE[0]


def _project_root() -> Path:
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise KitError(f"{root}: no pyproject.toml beside kit/ to build the kit wheel from; use --kit-dataset")
    return root


def kit_wheel() -> Path:
    """The kit wheel built (offline, ``pip wheel --no-deps``) from this checkout, in this process's scratch cache.

    The sources are copied to a scratch folder first so the checkout gets no build/ or egg-info,
    and a wheel is built once per process for the same sources. The cache is removed when the
    process ends: copy the wheel (:func:`build_wheel`) to keep it.
    """
    root = _project_root()
    files = wheel_files(root)
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    key = digest.hexdigest()
    cached = _WHEELS.get(key)
    if cached is None or not cached.is_file():
        with tempfile.TemporaryDirectory(prefix="kit-wheel-") as scratch:
            src = Path(scratch) / "src"
            for path in files:
                target = src / path.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                   "--quiet", "--wheel-dir", str(Path(scratch) / "dist"), str(src)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wheels = sorted((Path(scratch) / "dist").glob("kit-*.whl"))
            if proc.returncode != 0 or not wheels:
                last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel written"]
                raise KitError(f"{root}: building the kit wheel failed: {last[0]}")
            cached = _wheel_cache() / key[:16] / wheels[0].name
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(wheels[0], cached)
        _WHEELS[key] = cached
    return cached


def build_wheel(dest: str | os.PathLike) -> Path:
    """Build the kit wheel (:func:`kit_wheel`) and copy it into ``dest``; returns the copy's path."""
    wheel = kit_wheel()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / wheel.name
    shutil.copyfile(wheel, out)
    return out


def write_wheel_dataset(folder: str | os.PathLike, dataset: str, title: str = "kit wheel") -> Path:
    """A dataset folder (the wheel + dataset-metadata.json) to upload once with ``kaggle datasets create -p``."""
    if not _DATASET_SOURCE.match(dataset) or dataset.count("/") != 1:
        raise KitError(f"dataset {dataset!r} is not owner/slug")
    folder = Path(folder)
    build_wheel(folder)
    fsutil.write_json(folder / "dataset-metadata.json",
                      {"title": title, "id": dataset, "licenses": [{"name": "CC0-1.0"}]})
    return folder


# --- rendering a kernel folder ------------------------------------------------------------------


@dataclass
class KernelFolder:
    """A rendered kernel folder: what would be sent."""

    folder: Path
    metadata: dict[str, Any]
    wheel: Path | None = None  # the wheel embedded in the install cell (in a scratch cache, not in folder)
    files: list[str] = field(default_factory=list)

    def embedded_wheel(self) -> str:
        """One line on the wheel embedded in the install cell (name, size, sha256); '' when none is."""
        if self.wheel is None:
            return ""
        data = self.wheel.read_bytes()
        return (f"{self.wheel.name} ({len(data) / 1024:.0f} KiB, sha256 {hashlib.sha256(data).hexdigest()[:16]}) "
                f"embedded in the install cell of {self.metadata['code_file']}")


def _read_notebook(path: Path) -> Any:
    import nbformat

    if not path.is_file():
        raise KitError(f"{path}: notebook not found")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types for a bad file
        raise KitError(f"{path}: not a readable notebook ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _installs_kit(nb: Any) -> bool:
    """Whether a notebook gets the kit install cell: it has one (tagged) or imports kit."""
    tagged = any(INSTALL_TAG in c.get("metadata", {}).get("tags", []) for c in nb.cells)
    return tagged or any(c.cell_type == "code" and _KIT_IMPORT.search(c.source) for c in nb.cells)


def prepare_notebook(src: str | os.PathLike, dest: str | os.PathLike, wheel: str | os.PathLike | None = None,
                     *, install: bool | None = None, resume_from: str | None = None) -> Path:
    """Copy a notebook to ``dest`` with ``metadata.kernelspec`` set and the kit install cell in place.

    The cell tagged ``kit-install`` is replaced; a notebook that imports kit but has no such cell gets
    one first. ``install=False`` leaves the cells alone. A cell tagged ``kit-resume`` is dropped, and with
    ``resume_from`` (a kernel) a new one follows the install cell.
    """
    import nbformat

    src = Path(src)
    nb = _read_notebook(src)
    nb.metadata.setdefault("kernelspec", dict(KERNELSPEC))
    nb.metadata.kernelspec.setdefault("name", "python3")
    nb.metadata.kernelspec.setdefault("display_name", "Python 3")
    nb.metadata.kernelspec.setdefault("language", "python")
    nb.metadata.setdefault("language_info", {"name": "python"})
    tagged = [i for i, c in enumerate(nb.cells) if INSTALL_TAG in c.get("metadata", {}).get("tags", [])]
    if install is None:
        install = _installs_kit(nb)
    if install:
        cell = install_cell(wheel)
        if tagged:
            nb.cells[tagged[0]] = cell
        else:
            nb.cells.insert(0, cell)
    nb.cells = [c for c in nb.cells if RESUME_TAG not in c.get("metadata", {}).get("tags", [])]
    if resume_from:
        installs = [i for i, c in enumerate(nb.cells) if INSTALL_TAG in c.get("metadata", {}).get("tags", [])]
        nb.cells.insert(installs[0] + 1 if installs else 0, resume_cell(resume_from))
    for cell in nb.cells:  # outputs of a local run are not the kernel's
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise KitError(f"{src}: not a valid notebook: {str(exc).splitlines()[0]}") from None
    dest = Path(dest)
    with fsutil.atomic_path(dest) as tmp:
        nbformat.write(nb, str(tmp))
    return dest


def default_metadata(root: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The repository's kernel-metadata.json (the default kernel), or None when there is none."""
    path = Path(root) if root else Path(__file__).resolve().parent.parent
    path = path / METADATA_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise KitError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def notebook_kernel_defaults(notebook: str | os.PathLike) -> dict[str, Any]:
    """Kernel settings a notebook carries in ``metadata.kit`` (title, slug, accelerator, competition,
    datasets, models), as kernel-metadata.json keys; {} when it carries none."""
    kit_meta = _read_notebook(Path(notebook)).metadata.get("kit", {})
    if not kit_meta:
        return {}
    out: dict[str, Any] = {"code_file": Path(notebook).name}
    if kit_meta.get("title"):
        out["title"] = kit_meta["title"]
    if kit_meta.get("slug"):
        out["id"] = f"{OWNER_PLACEHOLDER}/{kit_meta['slug']}"
    if kit_meta.get("accelerator"):
        out["machine_shape"] = accelerator_settings(kit_meta["accelerator"])["machine_shape"]
    if kit_meta.get("competition"):
        out["competition_sources"] = [kit_meta["competition"]]
    out["dataset_sources"] = list(kit_meta.get("datasets", []))
    out["model_sources"] = list(kit_meta.get("models", []))
    return out


def render_kernel(notebook: str | os.PathLike, folder: str | os.PathLike, *, owner: str,
                  slug: str | None = None, title: str | None = None, accelerator: str | None = None,
                  competition: str | None = None, datasets: Sequence[str] = (), kernels: Sequence[str] = (),
                  models: Sequence[str] = (), private: bool = True, internet: bool = False,
                  kit_dataset: str | None = None, bundle: bool = True,
                  defaults: dict[str, Any] | None = None, resume_from: str | None = None) -> KernelFolder:
    """Render a kernel folder for ``notebook``: checked metadata and the notebook, the kit wheel embedded in it.

    ``defaults`` (a kernel-metadata.json dict whose code_file names the same notebook, e.g. the
    repository's default kernel), else the notebook's own ``metadata.kit``, fills the title, slug,
    accelerator and sources not given here; ``models`` (Kaggle Model sources) are added to theirs.
    With ``kit_dataset`` the kernel installs kit from that attached dataset; otherwise (``bundle``)
    the wheel is built and embedded in the install cell, its only copy: the folder holds no .whl file.
    ``resume_from`` (a kernel, usually this one) attaches that kernel's output and makes the notebook resume the
    run it holds (kit.kernel.previous_run).
    """
    notebook = Path(notebook)
    if resume_from is not None:
        check_resume_from(resume_from)
        kernels = [*kernels, resume_from]
    if not notebook.is_file():
        raise KitError(f"{notebook}: notebook not found")
    d = defaults if defaults and Path(str(defaults.get("code_file", ""))).name == notebook.name else {}
    d = d or notebook_kernel_defaults(notebook)
    if d:
        title = title if title is not None else d.get("title")
        slug = slug or str(d.get("id", "")).partition("/")[2] or None
        if accelerator is None:
            accelerator = _SHAPE_TO_ACCELERATOR.get(d.get("machine_shape"), "cpu")
        competition = competition or next(iter(d.get("competition_sources") or []), None)
        datasets = [*d.get("dataset_sources", []), *datasets]
        kernels = [*d.get("kernel_sources", []), *kernels]
        models = [*d.get("model_sources", []), *models]
    accelerator = accelerator or "t4"
    if kit_dataset is not None and not (_DATASET_SOURCE.match(kit_dataset) and kit_dataset.count("/") == 1):
        raise KitError(f"--kit-dataset {kit_dataset!r} is not owner/slug")
    meta = kernel_metadata(notebook.name, owner=owner, slug=slug, title=title, accelerator=accelerator,
                           competition=competition, datasets=[*datasets, *([kit_dataset] if kit_dataset else [])],
                           kernels=kernels, models=models, private=private, internet=internet)
    check_metadata(meta)  # before any file is written or wheel built
    _refuse_secrets(notebook.name, notebook.read_text(errors="replace"))
    _refuse_secrets(METADATA_FILE, json.dumps(meta))
    if bundle and kit_dataset is None and _secrets():
        root = _project_root()
        for path in wheel_files(root):  # whatever sits in kit/ rides along in the wheel
            _refuse_secrets(f"{path.relative_to(root)} (bundled in the kit wheel)", path.read_bytes())
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not (folder / METADATA_FILE).is_file():
        raise KitError(f"{folder}: exists and is not a kernel folder; choose an empty or new folder")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("kit-*.whl"):  # left by an older kit, which wrote the wheel beside the notebook too
        old.unlink()
    embed = bundle and kit_dataset is None and _installs_kit(_read_notebook(notebook))
    wheel = kit_wheel() if embed else None
    prepare_notebook(notebook, folder / notebook.name, wheel, resume_from=resume_from)
    check_metadata(meta, folder)
    fsutil.write_json(folder / METADATA_FILE, meta)
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    return KernelFolder(folder, meta, wheel, files)


# --- running the client -------------------------------------------------------------------------


def client_path() -> Path:
    """The ``kaggle`` client installed beside this Python (else the one on PATH)."""
    here = Path(sys.executable).parent / "kaggle"
    if here.is_file():
        return here
    found = shutil.which("kaggle")
    if found:
        return Path(found)
    raise KitError(f"{here}: the kaggle client is not installed (pip install 'kaggle==2.2.*')")


@dataclass
class ClientRun:
    """What the client printed (credentials redacted) and its exit status."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def lines(self) -> list[str]:
        """Non-empty output lines, stdout first."""
        return [ln.strip() for ln in (self.stdout + "\n" + self.stderr).splitlines() if ln.strip()]

    def failure(self) -> str:
        """One line saying why the client failed."""
        if any(ln.startswith("Authentication required") for ln in self.lines()):
            return ("Authentication required: Kaggle refused the credentials or found none "
                    "(run `kaggle auth login`, or put an API token in ~/.kaggle/kaggle.json)")
        text = [ln for ln in self.lines() if not ln.startswith("Warning:")] or self.lines()
        return text[-1] if text else f"exited with status {self.returncode}"


def run_client(args: Sequence[str], *, timeout: float = 600.0) -> ClientRun:
    """Run ``kaggle ARGS`` and capture what it printed; the credentials stay in the client's hands."""
    cmd = [str(client_path()), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise KitError(f"kaggle {' '.join(args[:2])}: no answer within {timeout:.0f} s") from None
    return ClientRun(list(args), proc.returncode, redact(proc.stdout or ""), redact(proc.stderr or ""))


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _client_error(run: ClientRun) -> KitError:
    return KitError(_one_line(f"kaggle {' '.join(run.args[:2])}: {run.failure()}"))


# --- push ---------------------------------------------------------------------------------------


@dataclass
class PushResult:
    """A rendered kernel folder, and what Kaggle answered when it was sent."""

    kernel: KernelFolder
    sent: bool
    url: str | None = None
    version: int | None = None
    messages: list[str] = field(default_factory=list)


_PUSHED = re.compile(r"Kernel version\s*(\d*)\s*successfully pushed\.\s*Please check progress at (\S+)")


def push(notebook: str | os.PathLike, *, folder: str | os.PathLike | None = None, owner: str | None = None,
         dry_run: bool = False, slug: str | None = None, title: str | None = None, accelerator: str | None = None,
         competition: str | None = None, datasets: Sequence[str] = (), kernels: Sequence[str] = (),
         models: Sequence[str] = (), private: bool = True, internet: bool = False, kit_dataset: str | None = None,
         bundle: bool = True, defaults: dict[str, Any] | None = None, resume_from: str | None = None,
         record_dir: str | os.PathLike = "runs/kernels", timeout: float = 600.0) -> PushResult:
    """Render a kernel folder for ``notebook`` and send it with ``kaggle kernels push -p FOLDER``.

    The kernel settings (``slug`` ... ``defaults``) are :func:`render_kernel`'s. A dry run renders and
    sends nothing. A pushed kernel's id, version and URL are recorded in ``record_dir/OWNER-SLUG/push.json``
    so that ``kit output`` can name its files by version.
    """
    owner = owner or kaggle_username()
    if not owner:
        if not dry_run:
            raise KitError("no Kaggle user name: set KAGGLE_USERNAME, add it to ~/.kaggle/kaggle.json, or pass --owner")
        owner = OWNER_PLACEHOLDER
    scratch = not folder and not dry_run  # a folder nobody asked to see: removed once sent
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="kit-kernel-"))
    try:
        kernel = render_kernel(notebook, folder, owner=owner, slug=slug, title=title, accelerator=accelerator,
                               competition=competition, datasets=datasets, kernels=kernels, models=models,
                               private=private, internet=internet, kit_dataset=kit_dataset, bundle=bundle,
                               defaults=defaults, resume_from=resume_from)
        if dry_run:
            return PushResult(kernel, sent=False)
        run = run_client(["kernels", "push", "-p", str(kernel.folder)], timeout=timeout)
    finally:
        if scratch:
            shutil.rmtree(folder, ignore_errors=True)
    lines = run.lines()
    errors = [ln for ln in lines if ln.startswith("Kernel push error")]
    refused = [ln for ln in lines if ln.startswith("The following are not valid")]
    match = next((m for m in map(_PUSHED.search, lines) if m), None)
    if run.returncode != 0 or errors or not match:
        raise _client_error(run) if not errors else KitError(_one_line(f"kaggle kernels push: {errors[0]}"))
    version = int(match.group(1)) if match.group(1) else None
    result = PushResult(kernel, True, match.group(2), version, lines)
    owner_, slug = kernel.metadata["id"].split("/")
    fsutil.write_json(Path(record_dir) / f"{owner_}-{slug}" / "push.json", {
        "kernel": kernel.metadata["id"], "version": version, "url": result.url,
        "pushed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    if refused:
        raise KitError(_one_line(f"kaggle kernels push: {refused[0]} (version {version} was saved at {result.url})"))
    return result


def format_push(result: PushResult) -> str:
    """What `kit push` prints: the folder and metadata (dry run) or the kernel URL and version."""
    meta = result.kernel.metadata
    privacy = "private" if meta["is_private"] else "public"
    if not result.sent:
        lines = [f"dry run: nothing sent; kernel folder {result.kernel.folder}"]
        if meta["id"].startswith(OWNER_PLACEHOLDER + "/"):
            lines.append(f"  (no Kaggle user name configured: the id says {OWNER_PLACEHOLDER!r}; see --owner)")
        lines += [f"  {name}" for name in result.kernel.files]
        if result.kernel.wheel is not None:
            lines.append(f"  (kit: {result.kernel.embedded_wheel()})")
        lines += [f"{METADATA_FILE}:", json.dumps(meta, indent=2)]
        return "\n".join(lines)
    version = f"version {result.version}" if result.version else "new version"
    return f"pushed {meta['id']} {version} ({privacy}): {result.url}"


# --- status -------------------------------------------------------------------------------------


@dataclass
class KernelStatus:
    """A kernel's latest run: queued, running, complete, error, ..."""

    kernel: str
    status: str
    failure_message: str | None = None


_STATUS = re.compile(r'has status "([^"]*)"')
_FAILURE = re.compile(r'Failure message: "(.*)"')


def _kernel_ref(kernel: str) -> tuple[str, str, int | None]:
    """owner, slug and the version (if given as owner/slug/N)."""
    parts = kernel.strip().split("/")
    if len(parts) in (2, 3) and _KERNEL_ID.match("/".join(parts[:2])) and (len(parts) == 2 or parts[2].isdigit()):
        return parts[0], parts[1], int(parts[2]) if len(parts) == 3 else None
    raise KitError(f"kernel {kernel!r} is not owner/slug (or owner/slug/version)")


def kernel_status(kernel: str, wait: bool = False, interval: float = 30.0, timeout: float | None = None,
                  on_change: Callable[[KernelStatus], None] | None = None) -> KernelStatus:
    """The kernel's status from ``kaggle kernels status``; with ``wait``, poll until it is final.

    ``on_change`` is called with each new status seen while waiting (e.g. to print progress).
    """
    owner, slug, _ = _kernel_ref(kernel)
    ref = f"{owner}/{slug}"
    start = time.monotonic()
    last = None
    while True:
        run = run_client(["kernels", "status", ref])
        text = "\n".join(run.lines())
        match = _STATUS.search(text)
        if run.returncode != 0 or not match:
            raise _client_error(run)
        status = match.group(1).split(".")[-1].lower()
        failure = _FAILURE.search(text)
        result = KernelStatus(ref, status, failure.group(1) if failure else None)
        if not wait or status in FINAL_STATUSES:
            return result
        if on_change is not None and status != last:
            on_change(result)
        last = status
        if timeout is not None and time.monotonic() - start + interval > timeout:
            raise KitError(f"{ref}: still {status} after {timeout:.0f} s")
        time.sleep(interval)


def format_status(status: KernelStatus) -> str:
    """One line: kernel and status, plus Kaggle's failure message if any."""
    line = f"{status.kernel}: {status.status}"
    return line + (f" ({_one_line(status.failure_message)})" if status.failure_message else "")


# --- output -------------------------------------------------------------------------------------


@dataclass
class KernelOutput:
    """A kernel's downloaded outputs, and where its submission.csv was copied."""

    kernel: str
    version: int | None
    folder: Path
    files: list[Path]
    submission: Path | None = None


def _recorded_version(owner: str, slug: str, record_dir: str | os.PathLike) -> int | None:
    path = Path(record_dir) / f"{owner}-{slug}" / "push.json"
    try:
        version = json.loads(path.read_text()).get("version")
    except (OSError, json.JSONDecodeError):
        return None
    return int(version) if isinstance(version, int) else None


_DOWNLOADED = re.compile(r"^(?:Output file|Kernel log) downloaded to (.+?)\s*$")


def kernel_output(kernel: str, out: str | os.PathLike | None = None, *, submissions: str | os.PathLike = "submissions",
                  record_dir: str | os.PathLike = "runs/kernels") -> KernelOutput:
    """Download a kernel's outputs (``kaggle kernels output``); copy its submission.csv into ``submissions``.

    The copy is named ``OWNER-SLUG-vN.csv``: N from ``owner/slug/N``, else from the version
    ``kit push`` recorded, else ``latest`` plus the UTC time.
    """
    owner, slug, version = _kernel_ref(kernel)
    version = version if version is not None else _recorded_version(owner, slug, record_dir)
    tag = f"v{version}" if version is not None else "latest-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(out) if out else Path(record_dir) / f"{owner}-{slug}" / tag
    folder.mkdir(parents=True, exist_ok=True)
    run = run_client(["kernels", "output", f"{owner}/{slug}", "-p", str(folder), "-o"])
    if run.returncode != 0:
        raise _client_error(run)
    files = [Path(m.group(1)) for m in map(_DOWNLOADED.match, run.stdout.splitlines()) if m]
    result = KernelOutput(f"{owner}/{slug}", version, folder, files)
    found = [f for f in files if f.name == "submission.csv" and f.is_file()]
    if found:
        dest = Path(submissions) / f"{owner}-{slug}-{tag}.csv"
        with fsutil.atomic_path(dest) as tmp:
            shutil.copyfile(min(found, key=lambda p: len(p.parts)), tmp)
        result.submission = dest
    return result


def format_output(result: KernelOutput) -> str:
    """What `kit output` prints: where the files are, and the submission copy."""
    lines = [f"{result.kernel}: {len(result.files)} file(s) in {result.folder}"]
    lines += [f"  {f.name}" for f in result.files]
    lines.append(f"submission: {result.submission}" if result.submission else "no submission.csv in the outputs")
    return "\n".join(lines)


# --- submit -------------------------------------------------------------------------------------


def _check_before_submit(path: Path, sample: str | os.PathLike) -> None:
    from kit import submission

    problems = submission.check_submission(str(path), str(sample))
    if problems:
        more = f" (and {len(problems) - 1} more; run kit check)" if len(problems) > 1 else ""
        raise KitError(_one_line(f"{path}: {problems[0]}{more}"))


def submit(path: str | os.PathLike, competition: str, message: str, sample: str | os.PathLike | None = None,
           *, kernel: str | None = None, record_dir: str | os.PathLike = "runs/kernels") -> str:
    """Submit a CSV (``kaggle competitions submit``), checked against the sample first when it is known.

    Code competitions submit a kernel version's output instead: pass ``kernel`` as owner/slug/N
    (or owner/slug, taking the version ``kit push`` recorded) and ``path`` as the output file name.
    Returns Kaggle's answer.
    """
    if not _COMPETITION.match(competition or ""):
        raise KitError(f"competition {competition!r} is not a competition slug")
    if not message or not message.strip():
        raise KitError("--message is empty; Kaggle needs a description")
    path = Path(path)
    if kernel:
        owner, slug, version = _kernel_ref(kernel)
        version = version if version is not None else _recorded_version(owner, slug, record_dir)
        if version is None:
            raise KitError(f"kernel {kernel!r}: no version known; give it as {owner}/{slug}/N")
        args = ["competitions", "submit", competition, "-k", f"{owner}/{slug}", "-v", str(version),
                "-f", path.name, "-m", message]
    else:
        if not path.is_file():
            raise KitError(f"{path}: submission file not found")
        if sample is not None:
            _check_before_submit(path, sample)
        args = ["competitions", "submit", competition, "-f", str(path), "-m", message, "-q"]
    run = run_client(args)
    lines = [ln for ln in run.stdout.splitlines() if ln.strip()]
    bad = [ln for ln in lines if ln.startswith(("Could not", "Upload of"))]
    if run.returncode != 0 or bad or not lines:
        raise KitError(_one_line(f"kaggle competitions submit: {bad[0] if bad else run.failure()}"))
    return lines[-1].strip()


__all__: Iterable[str] = [
    "ACCELERATORS", "KernelFolder", "KernelOutput", "KernelStatus", "PushResult", "accelerator_settings",
    "build_wheel", "check_metadata", "client_path", "default_metadata", "format_output", "format_push",
    "format_status", "install_cell", "install_cell_source", "kaggle_username", "kernel_metadata", "kernel_output",
    "kernel_status", "kit_wheel", "notebook_kernel_defaults", "prepare_notebook", "push", "redact", "render_kernel",
    "run_client", "slugify", "submit", "write_wheel_dataset",
]
