"""Browser fixtures: the shared Playwright ones, and the three services run as real processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.browser import chromium_browser, page, playwright_sync
from tests.support.fixtures import pytest_runtest_makereport

from .stack import Stack, start_stack, stop_stack

__all__ = [
    "chromium_browser",
    "page",
    "playwright_sync",
    "pytest_runtest_makereport",
    "stack",
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("stack"))
    yield running
    stop_stack(running)
