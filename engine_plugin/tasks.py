"""Stopping the service's background asyncio tasks.

::

    await cancel_and_wait(self._task, self._poller)   # None is skipped

Shared by the service (``service``) and its oVirt side (``ovirt``); the relay has its own
stopping code (``vdsm_hooks`` may not import this package).
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional


async def cancel_and_wait(*tasks: Optional[asyncio.Future[Any]]) -> None:
    """Cancel every task, then wait for each to end. The CancelledError each one ends with
    is expected and swallowed; any other exception a task ended with is raised (after the
    tasks before it in order were awaited), as an ``await`` of it would."""
    pending = [task for task in tasks if task is not None]
    for task in pending:
        task.cancel()
    for task in pending:
        try:
            await task
        except asyncio.CancelledError:
            pass
