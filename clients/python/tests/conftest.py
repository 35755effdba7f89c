import asyncio

import pytest

from support import Database


@pytest.fixture(scope="session")
def db():
    d = Database()
    yield d
    d.teardown()


@pytest.fixture
def run():
    """Run a coroutine to the end in a fresh event loop."""
    return asyncio.run
