"""Blocking calls (boto3's) awaited from asyncio code, each in a thread so the event loop keeps going."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


def off_loop[**Params, Result](call: Callable[Params, Result]) -> Callable[Params, Awaitable[Result]]:
    """``call`` as a coroutine function that runs it in a thread, off the event loop."""

    async def in_thread(*args: Params.args, **kwargs: Params.kwargs) -> Result:
        return await asyncio.to_thread(call, *args, **kwargs)

    return in_thread
