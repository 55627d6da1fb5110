"""What the store tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


@asynccontextmanager
async def stores(*made: Any) -> AsyncIterator[None]:
    """
    Shut the stores down after the block, whatever happens in it.
    """
    try:
        yield
    finally:
        for store in made:
            await store.shutdown()
