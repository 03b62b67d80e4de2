"""Helpers for config-first request streams (Riva / Cloud Speech style)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from services.kit.errors import InvalidArgument

T = TypeVar("T")
R = TypeVar("R")


async def config_first(
    requests: AsyncIterator[Any], oneof: str = "payload", config_field: str = "config"
) -> tuple[Any, AsyncIterator[Any]]:
    """Read the first message, which must set ``config_field``; return it and an iterator over the rest.

    The rest yields each message's payload field name and value; a second config is INVALID_ARGUMENT.
    """
    it = requests.__aiter__()
    try:
        first = await it.__anext__()
    except StopAsyncIteration:
        raise InvalidArgument(f"empty stream: send a message with '{config_field}' first") from None
    kind = first.WhichOneof(oneof)
    if kind != config_field:
        raise InvalidArgument(f"the first message must carry '{config_field}', got '{kind or 'nothing'}'")

    async def rest() -> AsyncIterator[Any]:
        async for msg in it:
            k = msg.WhichOneof(oneof)
            if k == config_field:
                raise InvalidArgument(f"'{config_field}' may only be sent once, as the first message")
            if k is None:
                raise InvalidArgument("empty message: set one of the payload fields")
            yield k, getattr(msg, k)

    return getattr(first, config_field), rest()


async def queue_stream(first: R, queue: asyncio.Queue[T | None], wrap: Callable[[T], R]) -> AsyncIterator[R]:
    """A request stream fed from code: ``first`` (the config), then ``wrap(item)`` per queued item; a queued None
    half-closes the stream."""
    yield first
    while (item := await queue.get()) is not None:
        yield wrap(item)
