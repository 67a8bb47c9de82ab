"""One settings loader for every stage: `.env` < environment variables < CLI flags.

`.env` is looked up at the repository root whatever the working directory, and relative paths
written in it are relative to that root. Every key is documented, with its default, in
`.env.example`; `SETTINGS` below is the single list of keys and defaults.

Importing this module also exports the `.env`'s `FIFTYONE_*` keys into the environment (without
overriding real environment variables), because FiftyOne reads its database settings from the
environment when it is first imported.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote

from dotenv import dotenv_values

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_FILE_VARIABLE = "REEFSEG_ENV_FILE"  # points at another .env (tests use it to ignore the developer's)


@dataclass(frozen=True)
class Settings:
    """Resolved settings; paths are absolute."""

    cvat_url: str = "http://localhost:8080"
    cvat_username: str = ""
    cvat_password: str = ""
    cvat_access_token: str = ""
    cvat_organization: str = ""
    cvat_webhook_secret: str = ""
    fiftyone_database_uri: str = ""
    fiftyone_database_name: str = ""
    data_root: Path = REPO_ROOT / "data"
    media_dir: Path = REPO_ROOT / "data" / "media"
    runs_dir: Path = REPO_ROOT / "runs"
    gt_field_name: str = "gt_polylines"
    label_taxonomy: str = "finegrained"
    taxonomy_dirs: str = ""
    filename_pattern: str = "{site}_{year}_{quadrat}"
    demo_dataset: str = "reef_demo"
    dino_weights: str = ""
    device: str = "auto"
    seed: int = 0
    workers: int = 2
    app_address: str = "127.0.0.1"
    app_port: int = 5151

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict that is safe to print or log: secrets are masked."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_KEYS and value:
                value = "***"
            elif f.name == "fiftyone_database_uri":
                from common.database import display_uri

                value = display_uri(value)
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out

    @property
    def secrets(self) -> list[str]:
        """Every form the secret values could be printed in (longest first), so output can be scrubbed of them."""
        forms: set[str] = set()
        for key in SECRET_KEYS:
            forms |= secret_forms(getattr(self, key))
        if self.cvat_password:  # HTTP basic authentication sends base64("user:password")
            forms.add(base64.b64encode(f"{self.cvat_username}:{self.cvat_password}".encode()).decode())
        from common.database import uri_password  # here: it imports the CLI module, which settings need not load

        password = uri_password(self.fiftyone_database_uri)
        if password:
            user = unquote(self.fiftyone_database_uri.partition("://")[2].partition(":")[0])
            forms |= secret_forms(password) | {base64.b64encode(f"{user}:{unquote(password)}".encode()).decode()}
        return sorted(forms, key=len, reverse=True)


def secret_forms(secret: str) -> set[str]:
    """A secret as written, URL-decoded (a URI's password is written encoded), URL-encoded, repr'd and in base64."""
    if not secret:
        return set()
    forms: set[str] = set()
    for value in {secret, unquote(secret)}:
        forms |= {
            value,
            quote(value, safe=""),
            quote_plus(value),
            repr(value)[1:-1],
            base64.b64encode(value.encode()).decode(),
        }
    return {form for form in forms if form}


SECRET_KEYS = ("cvat_password", "cvat_access_token", "cvat_webhook_secret")
PATH_KEYS = ("data_root", "media_dir", "runs_dir")


def env_file() -> Path:
    """The `.env` in force: `$REEFSEG_ENV_FILE` if set, else the repository root's."""
    return Path(os.environ.get(ENV_FILE_VARIABLE) or REPO_ROOT / ".env")


def _read_env_file() -> dict[str, str]:
    path = env_file()
    if not path.is_file():
        return {}
    return {k.upper(): v for k, v in dotenv_values(path).items() if v is not None}


def _coerce(name: str, raw: Any, base: Path) -> Any:
    default = getattr(Settings, name)
    if name in PATH_KEYS:
        path = Path(str(raw)).expanduser()
        return path if path.is_absolute() else (base / path).resolve()
    if name == "dino_weights" and raw != "hub" and not str(raw).startswith("hf:"):
        path = Path(str(raw)).expanduser()  # a file or folder; "hub"/"hf:<repo>" name a download instead
        return str(path if path.is_absolute() else (base / path).resolve())
    if isinstance(default, int) and not isinstance(raw, int):
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ValueError(
                f"setting {name.upper()} must be a whole number, got {raw!r}; fix it in .env or the environment"
            ) from None
    return raw


def load_settings(**overrides: Any) -> Settings:
    """Settings from `.env`, then the environment, then `overrides` (CLI flags; None means unset)."""
    values: dict[str, Any] = {}
    from_file = _read_env_file()
    for f in fields(Settings):
        key = f.name.upper()
        if key in os.environ and os.environ[key] != "":
            values[f.name] = _coerce(f.name, os.environ[key], Path.cwd())
        elif key in from_file and from_file[key] != "":
            values[f.name] = _coerce(f.name, from_file[key], REPO_ROOT)
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in {f.name for f in fields(Settings)}:
            raise TypeError(f"unknown setting {name!r}")
        values[name] = _coerce(name, value, Path.cwd())
    settings = Settings(**values)
    if "media_dir" not in values and "data_root" in values:
        settings = replace(settings, media_dir=settings.data_root / "media")
    return settings


def export_fiftyone_env() -> None:
    """Copy `.env`'s FIFTYONE_* keys into the environment so FiftyOne sees them (the environment wins)."""
    for key, value in _read_env_file().items():
        if key.startswith("FIFTYONE_") and value != "":
            os.environ.setdefault(key, value)


export_fiftyone_env()
