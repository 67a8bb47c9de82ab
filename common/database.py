"""Check the MongoDB that FIFTYONE_DATABASE_URI names before FiftyOne uses it: one sentence instead of a hang.

    check_database()   # no-op without FIFTYONE_DATABASE_URI (FiftyOne then runs its own mongod); else UserError
    load_dataset(name, "import one with data_engineering first")   # checked, then one sentence if it is not there

Given an unreachable URI, FiftyOne waits 30 s for server selection and ends in a pymongo traceback; given
wrong credentials, it raises pymongo's OperationFailure. Here a ping with a short timeout, authenticated
as the URI says, turns each case into one sentence that shows the URI with its password masked (never
the password in any form: `Settings.secrets` lists its encoded forms so `common.cli.run` scrubs them too).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from common.errors import UserError

if TYPE_CHECKING:
    import fiftyone as fo

URI_VARIABLE = "FIFTYONE_DATABASE_URI"
NAME_VARIABLE = "FIFTYONE_DATABASE_NAME"
TIMEOUT_MS = 5000  # a reachable server answers in milliseconds, a remote cluster with TLS in about a second
_checked: set[tuple[str, str]] = set()


def uri_password(uri: str) -> str | None:
    """The password part of a mongodb:// URI as written (URL-encoded), or None; generous: a raw `@` in it is kept."""
    rest = uri.partition("://")[2]
    userinfo = rest.rpartition("@")[0].split("/")[0] if "@" in rest else ""
    password = userinfo.partition(":")[2]
    return password or None


def display_uri(uri: str) -> str:
    """The URI with its password replaced by ***, safe to print."""
    password = uri_password(uri)
    return uri.replace(f":{password}@", ":***@", 1) if password else uri


def _reason(error: Exception) -> str:
    """pymongo's first clause ('127.0.0.1:1: [Errno 111] Connection refused'), without its topology dump."""
    text = re.split(r" \(configured timeouts|, Timeout:|, full error:", str(error))[0].strip()
    return text[:200] or type(error).__name__


def check_database(uri: str | None = None, name: str | None = None) -> None:
    """Ping the database FiftyOne will use and list its collections (so credentials and rights are tried)."""
    uri = os.environ.get(URI_VARIABLE, "") if uri is None else uri
    if not uri:
        return
    name = name or os.environ.get(NAME_VARIABLE) or "fiftyone"
    if (uri, name) in _checked:
        return
    import pymongo
    from pymongo import errors

    shown = display_uri(uri)
    where = f"the MongoDB at {shown} (FIFTYONE_DATABASE_URI)"
    try:
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=TIMEOUT_MS, connectTimeoutMS=TIMEOUT_MS, appname="reefseg-check"
        )
    except (errors.ConfigurationError, errors.InvalidURI, ValueError, TypeError) as error:
        raise UserError(
            f"FIFTYONE_DATABASE_URI {shown!r} is not a valid MongoDB URI ({_scrubbed(error, uri)}); fix it in .env or the environment "
            "(a password with @, : or / must be URL-encoded)"
        ) from None
    try:
        client.admin.command("ping")
        client[name].list_collection_names()
    except errors.OperationFailure as error:
        if error.code in (18, 11) or "auth" in str(error).lower():
            raise UserError(
                f"{where} refused its credentials; check the user name and password in FIFTYONE_DATABASE_URI "
                "(URL-encoded) and its authSource"
            ) from None
        if error.code == 13:
            raise UserError(
                f"the account in FIFTYONE_DATABASE_URI may not read database {name!r} at {shown}; grant it readWrite "
                "or set FIFTYONE_DATABASE_NAME to a database it may use"
            ) from None
        raise UserError(f"{where} refused the request ({_scrubbed(error, uri)}); check FIFTYONE_DATABASE_URI") from None
    except errors.PyMongoError as error:
        raise UserError(
            f"cannot reach {where} within {TIMEOUT_MS // 1000} s ({_scrubbed(error, uri)}); check that it runs and the address, "
            "or leave FIFTYONE_DATABASE_URI empty to use FiftyOne's own database"
        ) from None
    finally:
        client.close()
    _checked.add((uri, name))


def load_dataset(name: str, how_to_fix: str) -> fo.Dataset:
    """The persistent FiftyOne dataset `name`, after the database check; else one sentence listing those there are.

    Every stage opens datasets here, so a missing one reads the same everywhere; `how_to_fix` is the stage's advice.
    """
    check_database()
    import common.settings  # noqa: F401  (exports .env's FIFTYONE_* keys before fiftyone is imported)

    # isort: split
    import fiftyone as fo  # here: `common` stays importable without FiftyOne (the commands' --help is instant)

    if not fo.dataset_exists(name):
        known = ", ".join(fo.list_datasets()) or "none"
        raise UserError(f"FiftyOne dataset {name!r} not found (datasets: {known}); {how_to_fix}")
    return fo.load_dataset(name)


def _scrubbed(error: Exception, uri: str) -> str:
    from common.settings import secret_forms  # here: settings imports nothing from this module, and stays light

    text = _reason(error)
    for secret in secret_forms(uri_password(uri) or ""):
        text = text.replace(secret, "***")
    return text
