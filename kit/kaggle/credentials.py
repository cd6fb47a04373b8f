"""Kaggle credentials on this machine: the user name only; the secrets are only ever compared, to keep them out.

kit never passes, prints, logs or writes a credential: the ``kaggle`` client finds them in its own places
(``~/.kaggle/kaggle.json``, ``KAGGLE_USERNAME`` / ``KAGGLE_KEY``, an access token). kit uses the user name to
build a kernel id, and compares the secret values only to keep them out of a kernel folder (kit.kaggle.kernel_folder)
and out of what it prints (kit.kaggle.client).
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

from kit.core.errors import KitError


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


def configured_secrets() -> list[str]:
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
    for secret in configured_secrets():
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


def refuse_secrets(name: str, text: str | bytes) -> None:
    """KitError naming ``name`` when ``text`` holds a credential of this machine (as it is or base64-encoded)."""
    secrets = configured_secrets()
    if secrets and _holds_secret(text.encode(errors="replace") if isinstance(text, str) else text, secrets):
        raise KitError(f"{name}: holds a Kaggle credential of this machine; remove it before pushing")


__all__ = ["configured_secrets", "kaggle_username", "redact", "refuse_secrets"]
