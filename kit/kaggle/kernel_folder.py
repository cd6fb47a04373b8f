"""A Kaggle kernel folder, rendered on the user's machine: kernel-metadata.json, and the notebook with the kit
install cell (the kit wheel embedded in it) and the resume cell.

A kernel folder, as rendered by :func:`render_kernel`::

    FOLDER/kernel-metadata.json   id, title, code_file, machine_shape, sources (checked before sending)
    FOLDER/NAME.ipynb             the notebook, with a kernelspec and the kit install cell

``kaggle kernels push`` sends the code file only, so a bundled kit wheel travels base64-encoded inside
the install cell and nowhere else (a wheel file beside the notebook would never reach Kaggle). Nothing
holding a credential of this machine is rendered (kit.kaggle.credentials). Sending the folder is kit.kaggle.client's;
what runs inside the kernel (where a notebook reads and writes, attached inputs and Models, ``run_kit``)
is kit.kaggle.kernel.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import kit
from kit.kaggle import credentials
from kit.core import fsutil
from kit.core.errors import KitError
from kit.kaggle.kernel import MODEL_SOURCE, MODEL_SOURCE_FORM

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
# Placeholder owner in the repository's kernel-metadata.json; `kit push` puts the user's name there.
OWNER_PLACEHOLDER = "your-kaggle-username"

_OWNER = r"[A-Za-z0-9][A-Za-z0-9_-]*"
_SLUG = r"[a-z0-9][a-z0-9-]*"
KERNEL_ID = re.compile(rf"^({_OWNER})/({_SLUG})$")
_DATASET_SOURCE = re.compile(rf"^{_OWNER}/[A-Za-z0-9][A-Za-z0-9_.-]*(/\d+)?$")
_KERNEL_SOURCE = re.compile(rf"^{_OWNER}/{_SLUG}(/\d+)?$")
COMPETITION_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
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
    the run to resume (read by kit.kaggle.kernel.previous_run), tagged so that a later push replaces or drops it."""
    import nbformat

    source = (f"# {RESUME_TAG}: set by `kit push --resume-from`: resume the run found in this kernel's attached output\n"
              f"import os\nos.environ['KIT_RESUME_FROM'] = {kernel!r}")
    return nbformat.v4.new_code_cell(source, metadata={"tags": [RESUME_TAG]})


def check_resume_from(kernel: str) -> str:
    """``kernel`` when it is owner/slug (or owner/slug/version); else KitError naming --resume-from."""
    if not isinstance(kernel, str) or not _KERNEL_SOURCE.match(kernel):
        raise KitError(f"--resume-from {kernel!r} is not owner/slug (or owner/slug/version) of a kernel")
    return kernel


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
    if not isinstance(kid, str) or not KERNEL_ID.match(kid):
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
        "competition_sources": (COMPETITION_SLUG, "a competition slug"),
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


def checkout_root() -> Path:
    """The folder holding the ``kit`` package: a checkout's root (where pyproject.toml is), whatever module asks."""
    return Path(kit.__file__).resolve().parents[1]


def _project_root() -> Path:
    root = checkout_root()
    if not (root / "pyproject.toml").is_file():
        raise KitError(f"{root}: no pyproject.toml beside kit/ to build the kit wheel from; use --kit-dataset")
    return root


def wheel_files(root: Path) -> list[Path]:
    """The files the bundled kit wheel is built from (and so carries into a kernel)."""
    files = sorted(p for p in (root / "kit").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files + [root / "pyproject.toml"] + ([root / "README.md"] if (root / "README.md").is_file() else [])


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
    path = Path(root) if root else checkout_root()
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
    run it holds (kit.kaggle.kernel.previous_run).
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
    credentials.refuse_secrets(notebook.name, notebook.read_text(errors="replace"))
    credentials.refuse_secrets(METADATA_FILE, json.dumps(meta))
    if bundle and kit_dataset is None and credentials.configured_secrets():
        root = _project_root()
        for path in wheel_files(root):  # whatever sits in kit/ rides along in the wheel
            credentials.refuse_secrets(f"{path.relative_to(root)} (bundled in the kit wheel)", path.read_bytes())
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


__all__ = [
    "ACCELERATORS", "COMPETITION_SLUG", "INSTALL_TAG", "KERNELSPEC", "KERNEL_ID", "KernelFolder", "METADATA_FILE",
    "OWNER_PLACEHOLDER", "RESUME_TAG", "accelerator_settings", "build_wheel", "check_metadata", "check_resume_from",
    "default_metadata", "install_cell", "install_cell_source", "kernel_metadata", "kit_wheel",
    "notebook_kernel_defaults", "prepare_notebook", "render_kernel", "resume_cell", "slugify", "wheel_files",
    "write_wheel_dataset",
]
