"""When to retry a Kaggle request, how long to wait, and how to say what went wrong."""
from __future__ import annotations

import dataclasses
import random

from dfd.kaggle.errors import Mismatch


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry one file (or one listing)."""
    attempts: int = 6
    backoff_s: float = 2.0  # wait after the first failure; doubles after each further one
    max_backoff_s: float = 300.0

    def __post_init__(self):
        if self.attempts < 1 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"bad retry policy {self}")

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the given number of consecutive failures."""
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1))
        # Jitter spreads out parallel fetchers (Beam workers) that failed together.
        return base * random.uniform(0.5, 1.0)


def http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def describe(exc: BaseException) -> str:
    """A reason for logs and errors. Never str(exc) of a network error: those quote URLs, and
    the download URL is a signed one."""
    import requests
    import urllib3.exceptions

    status = http_status(exc)
    if status is not None:
        return f"HTTP {status}"
    if isinstance(exc, Mismatch):
        return str(exc)
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        return "timed out"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError,
                        urllib3.exceptions.ProtocolError)):
        return "connection dropped mid-transfer"
    if isinstance(exc, requests.ConnectionError):
        return "could not connect"
    return type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: network trouble, throttling, server errors, wrong bytes."""
    import http.client

    import requests
    import urllib3.exceptions

    status = http_status(exc)
    if status is not None:
        return status in (408, 429) or status >= 500
    return isinstance(exc, (Mismatch, requests.RequestException, http.client.HTTPException,
                            urllib3.exceptions.HTTPError))


def retrying(call, *, policy: RetryPolicy, what: str, fatal, log, on_mismatch=None):
    """call() until it succeeds, backing off between attempts.

    fatal(exc) raises whatever must not be retried (a refusal); a Mismatch (wrong bytes) runs
    on_mismatch() first, so the next attempt starts from zero instead of resuming from bad
    bytes. Raises FetchFailed, naming `what`, when the attempts are spent."""
    import time

    from dfd.kaggle.errors import FetchFailed

    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except Exception as exc:
            fatal(exc)
            failure = exc
        if isinstance(failure, Mismatch) and on_mismatch is not None:
            on_mismatch()
        if attempt == policy.attempts:
            raise FetchFailed(f"{what}: gave up after {attempt} attempt(s): "
                              f"{describe(failure)}")
        wait = policy.delay(attempt, retry_after(failure))
        log.warning("%s: %s; retrying in %.1fs (attempt %d of %d)", what, describe(failure),
                    wait, attempt + 1, policy.attempts)
        time.sleep(wait)
    raise AssertionError("unreachable")
