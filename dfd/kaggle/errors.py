"""Failures of Kaggle access, each with a message that names no credential."""
from __future__ import annotations

from dfd.errors import DfdError


class MissingCredentials(DfdError):
    """No usable Kaggle credentials where the kaggle client looks for them."""


class AccessDenied(DfdError):
    """Kaggle refused the credentials or the competition (rules not accepted): every file would
    fail the same way, so a batch stops at the first one."""


class FetchFailed(DfdError):
    """One file could not be fetched and verified within the retry budget."""


class Mismatch(Exception):
    """The bytes on disk are not the file Kaggle lists; resuming would keep the bad bytes."""
