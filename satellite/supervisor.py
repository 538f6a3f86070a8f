"""Background tasks under supervision: each runs forever; one that raises is logged once with its
traceback and started again after a backoff, and readiness reports a task that keeps failing.

A task handles the failures it expects (a node or the database going away) inside its own retry loop.
Anything else reaches the supervisor: a bug, a broken schema, a value nobody foresaw. Restarting with a
growing backoff bounds both the retries and the log, and the task's state stays visible in `states()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("satellite.supervisor")


@dataclass
class TaskState:
    name: str
    failures: int = 0  # in a row: reset once the task has run `stable_after` seconds without failing
    restarts: int = 0
    last_error: str | None = None
    last_failure_at: float | None = None  # Unix time
    running: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "running": self.running,
            "failures": self.failures,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_failure_at": self.last_failure_at,
        }


class Supervisor:
    def __init__(
        self,
        *,
        base_backoff: float = 0.5,
        max_backoff: float = 60.0,
        stable_after: float = 60.0,
        failing_after: int = 3,
    ) -> None:
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.failing_after = failing_after
        self._states: dict[str, TaskState] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        state = TaskState(name)
        self._states[name] = state
        self._tasks.append(asyncio.create_task(self._keep(state, run), name=f"supervised {name}"))

    def states(self) -> dict[str, TaskState]:
        return dict(self._states)

    def failing(self) -> list[str]:
        """The tasks that have failed `failing_after` times in a row."""
        return [s.name for s in self._states.values() if s.failures >= self.failing_after]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _keep(self, state: TaskState, run: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await self._run_once(state, run)
                error: BaseException = RuntimeError("the task returned")  # tasks are meant to run forever
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            state.failures += 1
            state.last_error = f"{type(error).__name__}: {error}"
            state.last_failure_at = time.time()
            delay = min(self.max_backoff, self.base_backoff * 2 ** (state.failures - 1))
            delay *= 0.5 + random.random() / 2
            log.error(
                "background task failed; restarting",
                task=state.name,
                failures=state.failures,
                in_s=round(delay, 2),
                exc_info=error,
            )
            await asyncio.sleep(delay)
            state.restarts += 1

    async def _run_once(self, state: TaskState, run: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.ensure_future(run())
        state.running = True
        try:
            done, _ = await asyncio.wait({task}, timeout=self.stable_after)
            if not done:
                if state.failures:
                    log.info("background task recovered", task=state.name, after_failures=state.failures)
                state.failures = 0
            await task
        finally:
            state.running = False
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
