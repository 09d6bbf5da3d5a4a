"""Guards for request bodies: nesting depth, and CPU-heavy parsing kept off the event loop.

- Depth: JSON or YAML nested deeper than MAX_DEPTH is a 422 before anything recurses over it
  (Python's json, PyYAML and pydantic all recurse, and a RecursionError would be a 500). A spec is
  at most ~6 levels deep; 32 leaves room for free-form `params` objects.
- Off the loop: parsing and validating a spec of a few hundred KiB takes seconds of pure-Python
  work. `off_loop` runs it in a parser process (PARSERS per kind of request and API process, at a
  lower CPU priority than the API; the rest wait their turn, up to WAITING, then 429). A thread
  would still hold the API's GIL: /healthz went from 5 ms to seconds while a client flooded the
  validator; one pool for everything would let that flood delay every job submission; parsers at
  the API's priority would take the cores the API needs to answer polls. `shutdown` (the app's
  lifespan end) stops them with the API: `robustlab api` leaves no parser process behind on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from service.errors import ApiError

MAX_DEPTH = 32
MAX_ITEMS = 100_000
PARSERS = {"jobs": 2, "validate": 1}  # processes per pool: a validation flood keeps a core free
PARSER_NICENESS = 10
T = TypeVar("T")
WAITING = 32  # calls queued or running per pool before a 429
_executors: dict[str, ProcessPoolExecutor] = {}
_waiting: dict[str, list[int]] = {}


def too_deep(where: str = "") -> ApiError:
    return ApiError(422, "too_deep", f"the {where or 'body'} is nested more than {MAX_DEPTH} levels deep: a spec "
                    "needs a handful", problems=[(where, f"nested more than {MAX_DEPTH} levels")])


def check_shape(value: Any, where: str = "spec") -> None:
    """422 for data nested past MAX_DEPTH or with more than MAX_ITEMS values once YAML aliases are
    expanded (an alias bomb: a few lines of anchors that stand for billions of values)."""
    if depth(value) > MAX_DEPTH:
        raise too_deep(where)
    count = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_ITEMS:
            raise ApiError(422, "too_large", f"the {where} holds more than {MAX_ITEMS} values (YAML aliases "
                           "expanded): a spec needs a few hundred", problems=[(where, "too many values")])
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of dicts and lists (iterative: no recursion, stops counting past `limit`)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    seen = 0
    while stack:
        item, level = stack.pop()
        seen += 1
        if seen > MAX_ITEMS:
            return deepest
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def text_depth(text: str | bytes) -> int:
    """Bracket nesting depth of JSON or flow-style YAML text, ignoring brackets inside quoted strings.

    A cheap pre-check that needs no parser (so nothing can recurse); block-style YAML nesting is
    bounded by the body size and checked on the parsed data."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    level = deepest = 0
    quote = ""
    escaped = False
    for char in text:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "[{":
            level += 1
            deepest = max(deepest, level)
        elif char in "]}":
            level -= 1
    return deepest


def loads(body: bytes, where: str = "body") -> Any:
    """json.loads with the depth limit; ValueError subclasses (bad JSON) pass through to the caller."""
    if text_depth(body) > MAX_DEPTH:
        raise too_deep(where)
    try:
        data = json.loads(body)
    except RecursionError:
        raise too_deep(where) from None
    return data


def _guarded(function: Callable[..., T], *args: Any) -> T:
    try:
        return function(*args)
    except RecursionError:
        raise too_deep() from None


def _background() -> None:
    """Parser processes run at a lower CPU priority than the API: while they are busy, polls and
    submissions still get the cores first."""
    os.nice(PARSER_NICENESS)


def _pool(name: str) -> ProcessPoolExecutor:
    if name not in _executors:
        # spawn: a fresh interpreter, not a fork of a process with an event loop and threads
        _executors[name] = ProcessPoolExecutor(max_workers=PARSERS.get(name, 1), initializer=_background,
                                               mp_context=multiprocessing.get_context("spawn"))
    return _executors[name]


async def off_loop(function: Callable[..., T], *args: Any, pool: str = "jobs") -> T:
    """Run a CPU-heavy parse in a parser process, so neither the event loop nor the GIL of the API
    process is held while it runs; a RecursionError is a 422. Each `pool` (job submissions, spec
    validation) has PARSERS processes of its own and at most WAITING calls queued: a flood of
    validations never delays a job submission, and past WAITING callers get a 429 to retry later.
    `function` and its arguments must be picklable (module-level functions, bytes)."""
    waiting = _waiting.setdefault(pool, [0])
    if waiting[0] >= WAITING:
        raise ApiError(429, "busy", f"too many {pool} requests are being parsed right now: retry shortly",
                       headers={"Retry-After": "2"})
    waiting[0] += 1
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_pool(pool), _guarded, function, *args)
    except BrokenProcessPool:  # a parser process died (killed, out of memory): a new pool for the next one
        _executors.pop(pool, None)
        raise ApiError(503, "unavailable", "the spec parser was restarted: try again",
                       headers={"Retry-After": "1"}) from None
    finally:
        waiting[0] -= 1


def shutdown() -> None:
    """Stop every parser pool and its processes now (the API is stopping): cancel what waits, kill
    what runs (a parse has no state worth finishing), and reap them."""
    for name in list(_executors):
        executor = _executors.pop(name)
        processes = list(getattr(executor, "_processes", {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join(timeout=5)
