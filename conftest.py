"""Fixtures for every test of the repository (tests/ and the task folders' own tests/)."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Embedded models built by tests go to a per-session cache, never the user's."""
    cache = tmp_path_factory.mktemp("soul-bench-cache")
    old = os.environ.get("SOUL_BENCH_CACHE")
    os.environ["SOUL_BENCH_CACHE"] = str(cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    yield cache
    if old is None:
        os.environ.pop("SOUL_BENCH_CACHE", None)
    else:
        os.environ["SOUL_BENCH_CACHE"] = old
