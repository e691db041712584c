"""Blob names and listings that tell two Azurite blob services apart if their listings differ: folders at several
depths, names that sort next to each other across folders (``site1`` and ``site10``), characters that need escaping,
and page sizes that cut folders and prefixes in the middle. Used by the tests that compare devhost's and the
benchmark's Azurite with the stock one."""
from __future__ import annotations

from adapters import listing
from adapters.blobs import service_client

NAMES = sorted(
    [f"site{s}/cam{c:02d}/IMG_{i:04d}.JPG" for s in range(3) for c in range(4) for i in range(12)]
    + [f"flat/IMG_{i:03d}.jpg" for i in range(40)]
    + ["top.jpg", "z/é space/+plus!.JPG", "site1/readme.txt", "site10/cam00/IMG_0000.JPG", "a/b/c/d/e.jpg"]
)
LISTINGS = [  # (prefix, delimiter, page size)
    (None, "/", 5000), (None, "/", 2), (None, None, 7), (None, None, 5000), ("site1", "/", 3), ("site1/", "/", 2),
    ("site1/cam0", None, 5), ("flat/", "/", 9), ("z/", "/", 1), ("site", "/", 5000), ("nothing/", "/", 5),
]


def walk(connection: str, container: str, prefix: str | None, delimiter: str | None,
         page_size: int) -> list[tuple[list[str], list[str], bool]]:
    """Every page of one listing: its blob names, its folder prefixes and whether it had a continuation marker."""
    client = service_client(connection).get_container_client(container)
    pages = []
    for page in listing.iter_pages(client, prefix, page_size, delimiter):
        pages.append(([b.name for b in page.blobs], page.prefixes, page.next_marker is not None))
    return pages
