"""What a Kaggle kernel image lacks, carried with the push: which of kit's kernel-side dependencies each image
holds, which a notebook needs, and their wheels embedded in a tagged cell (internet stays off).

``kaggle kernels push`` sends the notebook only, so a dependency's wheel travels the way kit's own does:
base64 inside a cell, installed with ``pip --no-deps --no-index`` on Kaggle and skipped elsewhere. Wheels
come from a folder the user gives (``kit push --wheels DIR``, filled beforehand with ``pip download``);
a needed package with no fitting wheel there is refused at push time with one line naming it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from kit.core.errors import KitError

DEPS_TAG = "kit-deps"


@dataclass(frozen=True)
class KernelImage:
    """One Kaggle kernel image: its Python and platform, and which of kit's kernel-side dependencies it holds."""

    name: str
    python: str  # the CPython tag of its interpreter, e.g. cp312
    platform: str  # the machine part of a wheel's platform tag that runs there
    holds: frozenset[str]
    source: str


# Taken from Kaggle/docker-python at its head of 2026-08-12: the GPU image is Colab's runtime image
# (Dockerfile.tmpl: FROM colab-images runtime, Python 3.12; TensorFlow, Keras, JAX, LightGBM, XGBoost and
# keras-hub come with it) plus kaggle_requirements.txt (catboost); the TPU VM image is python:3.12 plus
# tpu/requirements.in (tensorflow-cpu 2.20, jax[tpu], keras>3, keras-nlp, pandas, scikit-learn,
# matplotlib: no LightGBM, CatBoost or XGBoost). Only packages a notebook may need are listed.
IMAGES: dict[str, KernelImage] = {
    "t4": KernelImage("Kaggle GPU (T4 x2) image", "cp312", "x86_64",
                      frozenset({"tensorflow", "keras", "jax", "keras-hub", "h5py", "pandas", "scikit-learn",
                                 "matplotlib", "lightgbm", "xgboost", "catboost"}),
                      "Kaggle/docker-python Dockerfile.tmpl + kaggle_requirements.txt, 2026-08-12"),
    "tpu": KernelImage("Kaggle TPU v5e-8 image", "cp312", "x86_64",
                       frozenset({"tensorflow", "keras", "jax", "keras-hub", "h5py", "pandas", "scikit-learn",
                                  "matplotlib"}),
                       "Kaggle/docker-python tpu/config.txt + tpu/requirements.in, 2026-08-12"),
}
IMAGES["cpu"] = KernelImage("Kaggle CPU image", IMAGES["t4"].python, "x86_64", IMAGES["t4"].holds,
                            "Kaggle/docker-python Dockerfile.tmpl (the CPU runtime of the same Colab release)")

# What in a notebook's code means it needs a package: a kit verb that imports it, or its own import.
_NEEDS: dict[str, re.Pattern] = {
    "lightgbm": re.compile(r"run_kit\(\s*['\"]stack['\"]|^\s*(import|from) lightgbm\b|\blightgbm\b", re.M),
    "catboost": re.compile(r"\bcatboost\b"),
    "xgboost": re.compile(r"\bxgboost\b"),
    "keras-hub": re.compile(r"\bkeras[_-]hub\b"),
}


def canonical(name: str) -> str:
    """A distribution name as pip compares them: lower case, runs of '-', '_', '.' as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def needed_packages(code: str) -> list[str]:
    """The image-dependent packages a notebook's code needs (kit stack needs LightGBM, ...)."""
    return [name for name, pattern in _NEEDS.items() if pattern.search(code)]


def missing_packages(code: str, accelerator: str) -> list[str]:
    """The packages ``code`` needs that the ``accelerator``'s image does not hold."""
    image = IMAGES[accelerator]
    return [name for name in needed_packages(code) if name not in image.holds]


_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")


def wheel_fits(filename: str, image: KernelImage) -> bool:
    """Whether a wheel file installs on ``image``'s Python and platform."""
    m = _WHEEL.match(filename)
    if not m:
        return False
    minor = image.python[2:]
    pys = set(m["py"].split("."))
    abis = set(m["abi"].split("."))
    plats = m["plat"].split(".")
    py_ok = bool(pys & {image.python, "py3", f"py{minor}", "py2"} or any(p.startswith("cp3") and p <= image.python
                                                                          and "abi3" in abis for p in pys))
    abi_ok = bool(abis & {image.python, "abi3", "none"})
    plat_ok = "any" in plats or any(p.startswith(("manylinux", "linux")) and p.endswith(image.platform) for p in plats)
    return py_ok and abi_ok and plat_ok


def find_wheel(package: str, wheels: str | os.PathLike | None, image: KernelImage) -> Path | None:
    """The newest wheel of ``package`` in the folder ``wheels`` that fits ``image``; None where there is none."""
    if wheels is None:
        return None
    folder = Path(wheels)
    if not folder.is_dir():
        raise KitError(f"--wheels {folder}: no such folder")
    found = [p for p in folder.glob("*.whl")
             if (m := _WHEEL.match(p.name)) and canonical(m["name"]) == canonical(package) and wheel_fits(p.name, image)]
    return max(found, key=lambda p: p.name) if found else None


def dependency_wheels(code: str, accelerator: str, wheels: str | os.PathLike | None,
                      notebook: str = "the notebook") -> list[Path]:
    """The wheels to bundle for what the image lacks; KitError naming the first package no wheel is given for."""
    image = IMAGES[accelerator]
    chosen = []
    for package in missing_packages(code, accelerator):
        wheel = find_wheel(package, wheels, image)
        if wheel is None:
            where = f"no {image.python} {image.platform} wheel of it in {wheels}" if wheels else "give --wheels DIR"
            raise KitError(f"{notebook}: needs {package}, which the {image.name} lacks ({IMAGES[accelerator].source}); "
                           f"{where} (pip download {package} --only-binary=:all: --no-deps --python-version "
                           f"{image.python[2:3]}.{image.python[3:]} --platform manylinux2014_{image.platform} -d DIR)")
        chosen.append(wheel)
    return chosen


def deps_cell_source(wheels: Sequence[Path]) -> str:
    """A cell that installs the embedded ``wheels`` offline with ``--no-deps`` on Kaggle, and nothing elsewhere."""
    lines = [f"# {DEPS_TAG}: what the kernel image lacks, installed offline (kit push bundled it)",
             "import base64, os, pathlib, subprocess, sys, tempfile",
             "_KIT_DEPS = {"]
    for wheel in wheels:
        data = wheel.read_bytes()
        b64 = base64.b64encode(data).decode("ascii")
        lines.append(f"    {wheel.name!r}: (  # sha256 {hashlib.sha256(data).hexdigest()[:16]}")
        lines += [f'        "{b64[i:i + 96]}"' for i in range(0, len(b64), 96)]
        lines.append("    ),")
    lines += [
        "}",
        "if os.environ.get('KAGGLE_KERNEL_RUN_TYPE') and _KIT_DEPS:",
        "    _dir = pathlib.Path(tempfile.mkdtemp())",
        "    for _name, _b64 in _KIT_DEPS.items():",
        "        (_dir / _name).write_bytes(base64.b64decode(_b64))",
        '    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",',
        "                    *map(str, sorted(_dir.glob('*.whl')))], check=True)",
        "print('bundled:', ', '.join(_KIT_DEPS) or 'nothing')",
    ]
    return "\n".join(lines)


def notebook_code(nb: Any) -> str:
    """The code cells of a notebook, joined (kit's own install and fan-out cells left out)."""
    own = (DEPS_TAG, "kit-install", "kit-folds")
    return "\n".join(c.source for c in nb.cells
                     if c.cell_type == "code" and not set(c.get("metadata", {}).get("tags", [])) & set(own))


__all__ = ["DEPS_TAG", "IMAGES", "KernelImage", "canonical", "deps_cell_source", "dependency_wheels", "find_wheel",
           "missing_packages", "needed_packages", "notebook_code", "wheel_fits"]
