"""pytest fixtures for the fake upstream.

Use them from a conftest.py with
``from tests.fakes.fixtures import fake_upstream, make_fake_upstream  # noqa: F401``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from tests.fakes.upstream import FakeUpstream

FakeUpstreamFactory = Callable[..., Awaitable[FakeUpstream]]


@pytest_asyncio.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    """A started FakeUpstream without auth (default replies: "Hello from fake <model>")."""
    async with FakeUpstream() as fake:
        yield fake


@pytest_asyncio.fixture
async def make_fake_upstream() -> AsyncIterator[FakeUpstreamFactory]:
    """Factory for more/other upstreams: `fake = await make_fake_upstream(api_key="sk-test")`.
    Everything it started is stopped at teardown."""
    started: list[FakeUpstream] = []

    async def factory(**options: Any) -> FakeUpstream:
        fake = FakeUpstream(**options)
        await fake.start()
        started.append(fake)
        return fake

    yield factory
    for fake in reversed(started):
        await fake.stop()
