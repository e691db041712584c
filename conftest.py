"""Fixtures shared by every test tree (tests/ and gpu_batch/tests/).

Azurite is started once per test module, in memory, on free loopback ports. If it cannot start the tests FAIL with the
reason (never skip): storage code is only trusted when it ran against the real protocol.
"""
from __future__ import annotations

import os
import sys
import uuid
from typing import Iterator

import pytest
from PIL import Image

from devhost.azurite import Azurite, AzuriteError, start_azurite

# Under pytest-xdist (``make test``: two workers on CI's two cores) each test process, and each worker process it
# starts, runs torch on one OpenMP thread: more threads than cores only spin-wait against each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


_PIL_OPEN = Image.open


@pytest.fixture(autouse=True)
def _oracle_patches_do_not_leak() -> Iterator[None]:
    """Undo the global patches the MegaDetector oracle's packages make when a test imports them.

    ``yolov5.utils`` imports ultralytics, which replaces ``PIL.Image.open`` (ultralytics/utils/patches.py: on a file
    PIL cannot identify it runs ``check_requirements("pi-heif")``, an online check and pip "AutoUpdate" that stall
    offline) and ``torch.save``. devhost runs in the test process, so a later test's activities (previews of the
    corrupt test images) went through that patch and a CI run timed out. After each test the originals are back.
    """
    yield
    if Image.open is not _PIL_OPEN:
        Image.open = _PIL_OPEN  # type: ignore[assignment]
    torch = sys.modules.get("torch")
    serialization = sys.modules.get("torch.serialization")
    if torch is not None and serialization is not None and torch.save is not serialization.save:
        torch.save = serialization.save


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    """A fresh Azurite for each test module (about a second to start), not one for the whole session.

    Why: an in-memory ``azurite-blob`` slows with every blob it holds and the tests never delete theirs. It finds a
    blob by scanning all of the account's blobs (stock; see ``devhost.azurite``), and every ten minutes its garbage
    collector (``BlobGCManager.markSweep``) holds its one JavaScript thread for the whole pass, whose stock sweep
    grows with the blobs held and deleted (39.8 s at 20,000 blobs and 5,000 deleted; ``devhost/azurite_blob.js``
    now batches it). Measured with 100,000 small blobs (a late CI worker's share): each blob request ~30 ms instead
    of ~2 ms, and the process answered nothing for over 60 s at a time: CI runs failed on an Azurite read timeout,
    on devhost tasks not ending in 300 s, and on fixtures taking 205 s, always in a worker's last tests. With
    ``--dist loadfile`` a module runs whole on one worker, so no module's Azurite lives long or grows large.
    """
    yield from _running_azurite(stock_blob=False)


@pytest.fixture(scope="module")
def stock_azurite() -> Iterator[Azurite]:
    """Azurite with its blob service as npm publishes it, without ``devhost/azurite_blob.js``'s fixes: the tests that
    check devhost's and the benchmark's Azurite answer as the stock one compare with it."""
    yield from _running_azurite(stock_blob=True)


def _running_azurite(stock_blob: bool) -> Iterator[Azurite]:
    try:
        instance = start_azurite(stock_blob=stock_blob)
    except AzuriteError as exc:
        pytest.fail(f"Azurite could not start: {exc}", pytrace=False)
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def storage_connection(azurite: Azurite) -> str:
    return azurite.connection_string


@pytest.fixture
def unique_name() -> str:
    """A fresh, valid container / task-hub name for one test."""
    return "t" + uuid.uuid4().hex[:20]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the longest files first (``tests.file_order``: the Makefile's ``--no-loadscope-reorder`` keeps this order
    under xdist), and skip ``slow`` tests unless TRAPBATCH_RUN_SLOW=1, with the reason printed (-rs)."""
    from tests.file_order import load_seconds, longest_files_first

    items[:] = [items[i] for i in longest_files_first([item.nodeid for item in items], load_seconds())]
    if os.environ.get("TRAPBATCH_RUN_SLOW") == "1":
        return
    skip_slow = pytest.mark.skip(reason="slow test: set TRAPBATCH_RUN_SLOW=1 to run it (CI skips it to stay under 30 min)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
