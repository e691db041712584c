"""Fixtures for end-to-end tests: a tiny real YOLOv5 checkpoint, sample images in Azurite, app settings."""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Iterator

import pytest

from adapters.blobs import BlobStore, service_client


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test network, run at 256 px (``gpu_batch/tests/conftest.py``'s ``with_small_input``: its
    ``megadetector_info.json`` names the input size, as MDv1000 files do). Why: these tests' 96x72 photos were
    scaled up to 1280x960 for every forward pass, ~0.25 s of CPU a photo on one thread (~3 s of an end-to-end test's
    ~24 s); at 256 px ~1/17 of that. Every worker still loads the checkpoint and runs the real network, whose boxes
    the tests need (some success has detections), and nothing here depends on the input size."""
    from gpu_batch.tests.conftest import with_small_input
    from gpu_batch.worker.make_test_checkpoint import write_test_checkpoint

    folder = tmp_path_factory.mktemp("model")
    full = write_test_checkpoint(folder / "full" / "tiny-yolov5n.pt")
    return with_small_input(full, folder / "tiny-yolov5n.pt")


def _jpeg(seed: int, size: tuple[int, int] = (96, 72)) -> bytes:
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    im = Image.new("RGB", size, (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255)))
    d = ImageDraw.Draw(im)
    for _ in range(10):
        x, y = rng.randint(0, size[0]), rng.randint(0, size[1])
        d.rectangle([x, y, x + 15, y + 10], fill=(rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255)))
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    return buf.getvalue()


def upload_images(store: BlobStore, container: str, count: int, corrupt: int = 1) -> list[str]:
    """``count`` small JPEGs in two camera folders, the first ``corrupt`` of them truncated. Returns the names."""
    store.ensure_container(container)
    names = []
    for i in range(count):
        name = f"cam{i % 2}/img {i:03d}.jpg"
        data = _jpeg(i)
        if i < corrupt:
            data = data[: len(data) // 3]
        store.write_bytes(container, name, data)
        names.append(name)
    store.write_bytes(container, "cam0/readme.txt", b"not an image")
    return sorted(names)


@pytest.fixture
def app_env(storage_connection: str, unique_name: str, monkeypatch: pytest.MonkeyPatch,
            tiny_checkpoint: Path) -> Iterator[dict[str, str]]:
    """Environment for the Functions app: fast polls, small shards, CPU worker, this test's own containers."""
    env = {
        "AzureWebJobsStorage": storage_connection,
        "TRAPBATCH_CONTAINER": unique_name + "-state",
        "TRAPBATCH_POOL": "local",
        "TRAPBATCH_MODEL": str(tiny_checkpoint),
        # fast polls: the orchestrations notice ended shards within a second (queued shards start without a poll)
        "TRAPBATCH_POLL_MIN_S": "0.5",
        "TRAPBATCH_POLL_MAX_S": "1",
        "TRAPBATCH_IMAGES_PER_SHARD": "4",
        "TRAPBATCH_LOCAL_CONCURRENCY": "2",
        "TRAPBATCH_DEVICE": "cpu",
        "TRAPBATCH_PUBLIC_WEB_URL": "https://trapbatchweb.z6.web.core.windows.net/",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield env


@pytest.fixture
def store(storage_connection: str) -> BlobStore:
    return BlobStore(service_client(storage_connection))


@pytest.fixture
def incoming(store: BlobStore, unique_name: str) -> Iterator[str]:
    """The shared drop container, with this test's requests (``<unique_name>*``) removed afterwards: every devhost
    in the session watches it, and a later test's host (another task hub, other receipts) would start a leftover."""
    from gpu_batch.layout import INCOMING_CONTAINER

    store.ensure_container(INCOMING_CONTAINER)
    yield INCOMING_CONTAINER
    from adapters.compose import delete_prefix

    delete_prefix(store, INCOMING_CONTAINER, unique_name)


@pytest.fixture
def source(app_env: dict[str, str], store: BlobStore, unique_name: str) -> str:
    """The test's image container, with the drop container and the task state (the joined drops' registry) there."""
    from gpu_batch import layout

    store.ensure_container(unique_name)
    store.ensure_container(layout.INCOMING_CONTAINER)
    store.ensure_container(app_env["TRAPBATCH_CONTAINER"])
    return unique_name
