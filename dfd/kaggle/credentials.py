"""Kaggle credentials, found where the kaggle client looks, and the authenticated client.

They are never printed, logged or written: messages name their source, never their value.
``import kaggle`` authenticates at import time and prints a banner when it cannot, so it is
imported lazily, after our own check, with its stdout swallowed.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import stat
from pathlib import Path

from dfd.errors import DfdError
from dfd.kaggle.errors import AccessDenied, MissingCredentials
from dfd.kaggle.redact import redact_http_logs, register_secret
from dfd.kaggle.retries import describe

log = logging.getLogger(__name__)


def _kaggle_config_dir() -> Path:
    # The client's own search (fixed when `kaggle` is imported): KAGGLE_CONFIG_DIR, ~/.kaggle
    # if it exists, else the XDG config folder.
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"]).expanduser()
    home = Path.home() / ".kaggle"
    if home.exists():
        return home
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def _read_kaggle_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        # The message must not quote the file: it holds the key.
        raise MissingCredentials(f"{path} is not readable JSON; expected "
                                 '{"username": ..., "key": ...}') from None
    if not isinstance(data, dict):
        raise MissingCredentials(f"{path}: expected a JSON object with username and key")
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s is readable by other users; run: chmod 600 %s", path, path)
    return data


def credential_source() -> str:
    """Where the kaggle client will find credentials, named without their values.

    Raises MissingCredentials (one line, no value in it) when there are none.
    """
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "the KAGGLE_API_TOKEN environment variable"
    for name in ("access_token", "access_token.txt"):
        path = Path.home() / ".kaggle" / name
        if path.is_file() and path.read_text().strip():
            return str(path)
    env_user, env_key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if env_user and env_key:
        return "the KAGGLE_USERNAME and KAGGLE_KEY environment variables"
    # The client reads kaggle.json first and lets the environment override it field by field.
    json_path = _kaggle_config_dir() / "kaggle.json"
    from_file = _read_kaggle_json(json_path)
    user, key = env_user or from_file.get("username"), env_key or from_file.get("key")
    if user and key:
        if not (env_user or env_key):
            return str(json_path)
        return f"KAGGLE_USERNAME/KAGGLE_KEY and {json_path}"
    oauth = Path.home() / ".kaggle" / "credentials.json"
    if oauth.is_file():
        return f"{oauth} (kaggle auth login)"
    if user or key:
        missing = "KAGGLE_KEY" if user else "KAGGLE_USERNAME"
        raise MissingCredentials(
            f"incomplete Kaggle credentials: {missing} is not set and {json_path} does not "
            f"provide it")
    raise MissingCredentials(
        "no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN), or "
        f"save kaggle.json from https://www.kaggle.com/settings/api as {json_path}")


@functools.lru_cache(maxsize=1)
def _api_class():
    with contextlib.redirect_stdout(io.StringIO()):
        import kaggle  # noqa: F401  (authenticates on import; prints a banner when it cannot)
        from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk.kaggle_client import KaggleClient
    from kagglesdk.kaggle_env import get_env

    class EnvAwareKaggleApi(KaggleApi):
        """KaggleApi whose HTTP client honours KAGGLE_API_ENVIRONMENT.

        kaggle 2.2's KaggleApi.build_kaggle_client picks PROD unless its own argv flags say
        otherwise, although kagglesdk reads the variable (TEST is http://localhost:7777). It is
        also never verbose here: the verbose client prints request headers, Authorization too.
        """

        def build_kaggle_client(self):
            try:
                env = get_env()
            except Exception as exc:  # kagglesdk raises a bare Exception for unknown values
                raise DfdError(str(exc)) from None
            values = self.config_values
            return KaggleClient(env=env, verbose=False,
                                username=values.get(self.CONFIG_NAME_USER),
                                password=values.get(self.CONFIG_NAME_KEY),
                                api_token=values.get(self.CONFIG_NAME_TOKEN))

    return EnvAwareKaggleApi


def authenticated_api(source: str):
    redact_http_logs()
    api = _api_class()()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            api.authenticate()
    except SystemExit:  # the client prints help and calls exit(1)
        raise AccessDenied(f"Kaggle did not accept the credentials from {source}") from None
    except DfdError:
        raise
    except Exception as exc:  # a token is introspected over the network
        raise DfdError(f"could not check the Kaggle credentials from {source}: "
                       f"{describe(exc)}") from None
    values = getattr(api, "config_values", {}) or {}
    for name in (api.CONFIG_NAME_KEY, api.CONFIG_NAME_TOKEN):
        register_secret(values.get(name))  # blanked in any message that would quote it
    return api
