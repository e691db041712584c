"""The exports' fallback image size (``adapters.image_sizes.size_from_bytes``) is the size MegaDetector ran on."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from adapters.image_sizes import size_from_bytes


def _photo(mode: str, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[274] = orientation
    buf = io.BytesIO()
    Image.new(mode, (120, 80)).save(buf, format=fmt, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize(("mode", "fmt", "orientation", "size"), [
    ("RGB", "JPEG", 6, (80, 120)), ("RGB", "JPEG", 8, (80, 120)), ("RGB", "JPEG", 3, (120, 80)),
    ("RGB", "JPEG", 5, (120, 80)),  # mirrored: not turned
    # converted to RGB before MegaDetector reads the orientation: never turned (failed before the change)
    ("L", "JPEG", 6, (120, 80)), ("L", "JPEG", 8, (120, 80)), ("RGBA", "PNG", 6, (120, 80))])
def test_the_fallback_size_is_the_one_megadetector_ran_on(mode: str, fmt: str, orientation: int,
                                                          size: tuple[int, int]) -> None:
    assert size_from_bytes(_photo(mode, fmt, orientation)) == size


def test_a_refused_size_read_is_recorded_with_why_and_never_the_sas() -> None:
    """The exports' ``sizes_unknown_why`` names the first storage error: in the storage map's words, not the SDK's
    message, which can quote the request's URL with its SAS."""
    from azure.core.exceptions import ClientAuthenticationError

    from adapters.image_sizes import SizeMisses, with_sizes

    class Refused:
        def download_blob(self, **_: object) -> bytes:
            raise ClientAuthenticationError(
                message="Server failed to authenticate https://p.blob.core.windows.net/c/b.jpg?sv=1&sig=SECRET")

    class Store:
        class service:  # noqa: N801 - BlobStore.service, as the adapter uses it
            @staticmethod
            def get_blob_client(container: str, name: str) -> Refused:
                return Refused()

    misses = SizeMisses()
    got = list(with_sizes(Store(), "c", ["b.jpg", "a/../x.jpg", "a.jpg"], lambda n: n,  # type: ignore[arg-type]
                          misses=misses))
    assert got == [("b.jpg", None), ("a/../x.jpg", None), ("a.jpg", None)]
    record = misses.to_dict()
    assert record == {"reasons": {"unreadable": 2, "unsafe_name": 1}, "examples": ["a.jpg", "a/../x.jpg", "b.jpg"],
                      "error": "a.jpg: storage refused trapbatch's credentials (ClientAuthenticationError)"}
    assert SizeMisses.combine([None, record, {"reasons": {"not_found": 1}, "examples": ["0.jpg"]}]) == {
        "reasons": {"not_found": 1, "unreadable": 2, "unsafe_name": 1}, "examples": ["0.jpg", "a.jpg", "a/../x.jpg"],
        "error": record["error"]}
