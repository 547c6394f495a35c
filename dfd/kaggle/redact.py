"""Keeping credentials and signed URLs out of messages and logs.

Kaggle answers a download with a redirect to a signed storage URL (the signature grants access
on its own), and the HTTP stack logs every request line at DEBUG: ``dfd -v`` would print it.
``redact`` strips query strings and user:password parts from URLs and blanks every credential
value this process knows; ``redact_http_logs`` applies it to urllib3's request log.
"""
from __future__ import annotations

import logging
import os
import re

# user:password@ in a URL, and a query string (which is where signatures go) after a URL or a
# bare request path as urllib3 logs it.
_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/@'\"<>]*@")
_QUERY_RE = re.compile(r"\?[^\s'\"<>?]*=[^\s'\"<>]*")
_CREDENTIAL_ENV = ("KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_USERNAME")
_MIN_SECRET = 6  # shorter values would blank ordinary words
_known: set[str] = set()
HIDDEN = "***"


def register_secret(value: str | None) -> None:
    """A credential value to blank wherever it would appear in a message."""
    if value and len(value) >= _MIN_SECRET:
        _known.add(value)


def _secrets() -> set[str]:
    found = set(_known)
    for name in _CREDENTIAL_ENV:
        value = os.environ.get(name)
        if value and len(value) >= _MIN_SECRET:
            found.add(value)
    return found


def redact(text: str) -> str:
    """text with URL query strings and userinfo removed and known credentials blanked."""
    text = _USERINFO_RE.sub(lambda m: m["scheme"], str(text))
    text = _QUERY_RE.sub("?" + HIDDEN, text)
    for secret in sorted(_secrets(), key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = _RedactingFilter()
# urllib3 logs each request line (method, path with query, status) to this logger.
_HTTP_LOGGERS = ("urllib3.connectionpool",)


def redact_http_logs() -> None:
    """Redact the HTTP stack's request log in this process (idempotent)."""
    for name in _HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
