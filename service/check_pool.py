"""The upload checkers' slots, shared fairly between tenants.

Why: one global pool (2 running, 8 waiting) let one tenant's eleven CPU-heavy uploads answer every
other tenant's upload with 429 for minutes. Here:

- a tenant has at most `per_tenant` checks running or waiting (more: 429 at once, it is its own
  backlog that is full);
- a tenant runs at most `running - 1` checks at once (one when there are one or two slots), so a
  slot is always left for another tenant's upload;
- a freed slot goes to the waiting tenant with the fewest checks running, the oldest upload first;
- at most `waiting` uploads wait in all, except a tenant's first: a tenant with nothing running or
  waiting always gets in line, so a full line of other tenants' uploads never locks it out.

A waiter whose request is cancelled (its client went away) leaves the line; a running check's
cancellation kills its process (service.upload_check).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from core.settings import Settings
from service.errors import ApiError

Runner = Callable[[list[str], Settings], Awaitable[Any]]


@dataclass(eq=False)
class _Waiter:
    sequence: int
    tenant: str
    granted: asyncio.Future[None] = field(repr=False)


class CheckPool:
    """A bounded, tenant-fair pool of checker processes."""

    def __init__(self, running: int, waiting: int, runner: Runner | None = None, per_tenant: int = 2) -> None:
        self.capacity, self.max_waiting, self.per_tenant = running, waiting, per_tenant
        self.tenant_cap = max(1, running - 1)
        self.running: Counter[str] = Counter()
        self.line: list[_Waiter] = []
        self._sequence = itertools.count()
        if runner is None:
            from service.upload_check import run_checker

            runner = run_checker
        self.runner = runner

    @property
    def waiting(self) -> int:
        return len(self.line)

    def _waiting_of(self, tenant: str) -> int:
        return sum(1 for w in self.line if w.tenant == tenant)

    def _dispatch(self) -> None:
        """Hand free slots to waiters: fewest running checks of their tenant first, then the oldest."""
        while sum(self.running.values()) < self.capacity:
            eligible = [w for w in self.line if self.running[w.tenant] < self.tenant_cap]
            if not eligible:
                return
            chosen = min(eligible, key=lambda w: (self.running[w.tenant], w.sequence))
            self.line.remove(chosen)
            self.running[chosen.tenant] += 1
            chosen.granted.set_result(None)

    def _release(self, tenant: str) -> None:
        self.running[tenant] -= 1
        if self.running[tenant] <= 0:
            del self.running[tenant]
        self._dispatch()

    async def _acquire(self, tenant: str) -> None:
        held = self.running[tenant] + self._waiting_of(tenant)
        if held >= self.per_tenant:
            raise ApiError(429, "busy", f"{held} of this tenant's uploads are being checked or wait for a "
                           f"checker (at most {self.per_tenant}, ROBUSTLAB_MAX_CHECKS_PER_TENANT): retry when "
                           "one is done", headers={"Retry-After": "10"})
        waiter = _Waiter(next(self._sequence), tenant, asyncio.get_running_loop().create_future())
        self.line.append(waiter)
        self._dispatch()
        if waiter.granted.done():
            return
        if len(self.line) > self.max_waiting and held > 0:
            self.line.remove(waiter)
            raise ApiError(429, "busy", f"{sum(self.running.values())} uploads are being checked and "
                           f"{len(self.line)} wait: try again shortly", headers={"Retry-After": "10"})
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter in self.line:
                self.line.remove(waiter)
            elif waiter.granted.done() and not waiter.granted.cancelled():
                self._release(tenant)  # granted just as the request was cancelled: give the slot on
            raise

    async def run(self, command: list[str], settings: Settings, tenant: str = "") -> Any:
        """Wait for a slot fair to `tenant`, then run the checker; 429 past the tenant's or the line's bound."""
        await self._acquire(tenant)
        try:
            return await self.runner(command, settings)
        finally:
            self._release(tenant)
