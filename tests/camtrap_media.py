"""Camtrap DP media rows in tests: ``filePath`` is the image's URL (``gpu_batch.formats.camtrapdp.media_url``), and
the tests key rows by the blob name it names."""
from __future__ import annotations

from typing import Iterable, Mapping
from urllib.parse import unquote, urlsplit


def blob_name(file_path: str) -> str:
    """The blob name of a media ``filePath``: the URL's path after the container, percent-decoded; Azurite's URLs
    hold the account before it (``http://127.0.0.1:10000/devstoreaccount1/<container>/...``), as the storage SDK
    reads an IP host's (path-style) URL."""
    url = urlsplit(file_path)
    host = url.hostname or ""
    skip = 2 if host == "localhost" or host.replace(".", "").isdigit() else 1
    return unquote(url.path.split("/", skip + 1)[skip + 1])


def by_blob_name(rows: Iterable[Mapping[str, str]]) -> dict[str, Mapping[str, str]]:
    """Media rows keyed by the blob name their ``filePath`` names."""
    return {blob_name(r["filePath"]): r for r in rows}
