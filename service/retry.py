"""Waiting politely: exponential backoff with a cap and jitter, and the server's Retry-After.

Used by service.client for polling a job and for retrying answers that mean "not now".
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

import httpx

RETRIED = frozenset({429, 502, 503, 504})  # the server (or a proxy in front of it) says "not now", not "no"


@dataclass
class Backoff:
    """Exponential delays with a cap and jitter: initial, initial·factor, ... up to cap, each ±jitter.

    Jitter spreads the polls of many CI jobs that started together, so they do not hit the server
    in lockstep.
    """

    initial: float = 0.25
    factor: float = 2.0
    cap: float = 5.0
    jitter: float = 0.2  # each delay is scaled by a random factor in [1 - jitter, 1 + jitter]
    _next: float = 0.0

    def reset(self) -> None:
        self._next = 0.0

    def next(self) -> float:
        self._next = self.initial if self._next == 0.0 else min(self._next * self.factor, self.cap)
        return self._next * random.uniform(1.0 - self.jitter, 1.0 + self.jitter)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks us to wait: Retry-After as a number or an HTTP date; None when absent."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
