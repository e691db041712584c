"""`trapbatch zooniverse`'s pure parts: fitting a photo for Zooniverse (cli.photo_fit), reading a manifest's photos
as the Panoptes CLI does, the upload command, photo paths, and which manifests a task's results answer names."""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from cli.errors import CliError
from cli.photo_fit import (COPIED, REENCODED, SHRUNK, Unfittable, fit, strip_gif_metadata, strip_jpeg_metadata,
                           strip_png_metadata)
from cli.zooniverse_upload import MAX_BYTES, manifest_photos, manifests, photo_path, upload_command


def noisy(width: int, height: int, fmt: str = "JPEG", orientation: int | None = None, **save: Any) -> bytes:
    """A photo that compresses badly, as camera-trap photos of grass and leaves do."""
    rng = random.Random(width * height)
    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    out = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif
    image.save(out, fmt, **save)
    return out.getvalue()


def photo_like(width: int, height: int, **save: Any) -> bytes:
    """Coarse structure and fine grain, which shrink as photos do (pure noise does not: downscaled, it smooths)."""
    rng = random.Random(width + height)
    coarse = Image.frombytes("RGB", (width // 10, height // 10), rng.randbytes(width * height * 3 // 100))
    grain = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    out = io.BytesIO()
    Image.blend(coarse.resize((width, height), Image.Resampling.BICUBIC), grain, 0.25).save(out, "JPEG", **save)
    return out.getvalue()


def _gps_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0110] = "TrailCam 9"  # model
    exif.get_ifd(0x8825)[2] = (1.0, 17.0, 44.0)  # GPSLatitude
    if orientation is not None:
        exif[0x0112] = orientation
    return exif


def test_a_small_png_or_gif_is_written_as_it_is() -> None:
    for fmt in ("PNG", "GIF"):
        data = noisy(80, 60, fmt)
        assert fit(data, len(data)) == (data, COPIED)


def test_a_small_jpeg_loses_only_its_exif_xmp_and_iptc_segments() -> None:
    """The camera's GPS position is what poachers of rare species look for; the pixels are not decoded again."""
    data = noisy(200, 150, exif=_gps_exif(), icc_profile=b"\0" * 200)
    fitted, how = fit(data, len(data))
    assert how == COPIED and len(fitted) < len(data)
    with Image.open(io.BytesIO(fitted)) as kept, Image.open(io.BytesIO(data)) as original:
        assert not kept.getexif() and original.getexif().get_ifd(0x8825)
        assert kept.info.get("icc_profile") == b"\0" * 200  # the colours' profile stays
        assert kept.tobytes() == original.tobytes()  # the same scan, byte for byte
    assert fit(data, len(data), keep_metadata=True) == (data, COPIED)
    assert strip_jpeg_metadata(b"not a jpeg") is None and strip_jpeg_metadata(b"\xff\xd8\xff\xe1\x00") is None


def test_a_jpeg_loses_its_comments_and_what_a_camera_appended_after_its_end() -> None:
    """A COM segment can hold a position in words; a preview appended after EOI carries its own EXIF."""
    out = io.BytesIO()
    Image.frombytes("RGB", (64, 48), random.Random(3).randbytes(64 * 48 * 3)).save(out, "JPEG",
                                                                                       comment=b"GPS 1,2N")
    preview = noisy(32, 24, exif=_gps_exif())
    fitted, how = fit(out.getvalue() + preview, 10**6)
    assert how == COPIED and b"GPS 1,2N" not in fitted and b"Exif" not in fitted
    assert fitted.endswith(b"\xff\xd9") and fitted == strip_jpeg_metadata(out.getvalue())
    assert b"GPS 1,2N" not in fit(out.getvalue(), 100 * 1000 * 1000, max_side=32)[0]  # nor when written again


def test_a_png_or_gif_within_the_limits_loses_its_metadata_too() -> None:
    """A PNG's eXIf and text chunks (XMP travels in iTXt), each chunk carrying its own CRC, are dropped without
    decoding it; a GIF with a comment is written again without it."""
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>GPS</x:xmpmeta>")
    data = noisy(80, 60, "PNG", exif=_gps_exif(), pnginfo=text)
    fitted, how = fit(data, len(data))
    assert how == COPIED and b"xmpmeta" not in fitted and b"eXIf" not in fitted and fitted == strip_png_metadata(data)
    with Image.open(io.BytesIO(fitted)) as kept, Image.open(io.BytesIO(data)) as original:
        assert kept.tobytes() == original.tobytes() and not kept.getexif()
    assert fit(data, len(data), keep_metadata=True) == (data, COPIED)
    gif = noisy(40, 30, "GIF", comment=b"GPS 1,2N")
    fitted, how = fit(gif, len(gif) * 2)
    assert how == COPIED and b"GPS 1,2N" not in fitted  # its blocks walked, the comment dropped


def test_a_turned_photo_whose_exif_pillow_cannot_write_back_is_still_turned() -> None:
    """Camera firmware writes odd EXIF blocks: Pillow's exif_transpose raised struct.error on one, which ended the
    whole run at that photo, every time it was run again."""
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Cam"
    out = io.BytesIO()
    Image.new("RGB", (300, 200), "gray").save(out, "JPEG", exif=exif.tobytes())
    bad = bytearray(out.getvalue())
    bad[bytes(bad).index(b"Exif") + 6 + 11] = 0  # the Make tag's type: ASCII (2) -> 0, which Pillow cannot write
    for keep in (False, True):
        fitted, how = fit(bytes(bad), len(bad) // 2, keep_metadata=keep)
        with Image.open(io.BytesIO(fitted)) as upright:
            assert upright.height > upright.width and upright.getexif().get(0x0112) in (None, 1), keep


def test_a_larger_jpeg_is_scaled_down_to_fit_keeping_its_shape_and_format() -> None:
    data = photo_like(1600, 1200, quality=95, exif=_gps_exif())
    limit = len(data) // 5
    fitted, how = fit(data, limit)
    assert how == SHRUNK and 0.8 * limit < len(fitted) <= limit  # close to the limit: no more detail lost than needed
    with Image.open(io.BytesIO(fitted)) as small:
        assert small.format == "JPEG" and small.width < 1600
        assert abs(small.width / small.height - 4 / 3) < 0.01
        assert not small.getexif()  # no EXIF block: no camera position reaches the volunteers
    with Image.open(io.BytesIO(fit(data, limit, keep_metadata=True)[0])) as small:
        assert small.getexif().get_ifd(0x8825)


def test_the_default_limit_is_under_both_zooniverse_limits() -> None:
    """The Panoptes CLI refuses files over 1024 * 1024 bytes (panoptes-cli commands/subject_set.py); the Project
    Builder over 1,000 KB."""
    assert MAX_BYTES <= min(1024 * 1024, 1000 * 1000)
    data = noisy(2400, 1800, quality=95)
    assert len(data) > MAX_BYTES and len(fit(data, MAX_BYTES)[0]) <= MAX_BYTES


def test_max_side_scales_a_photo_that_is_small_in_bytes() -> None:
    """The manual workflow compressed every photo to 1,440 pixels on its longer side."""
    data = noisy(900, 600, quality=60)
    fitted, how = fit(data, len(data) * 2, max_side=450)
    with Image.open(io.BytesIO(fitted)) as small:
        assert how == SHRUNK and small.size == (450, 300)
    assert fit(data, len(data) * 2, max_side=900)[1] == COPIED


def test_a_shrunk_photo_is_turned_upright_by_its_exif_orientation() -> None:
    """The copy carries no EXIF, so the orientation tag must be applied to the pixels or the photo shows sideways."""
    data = noisy(1200, 800, exif=_gps_exif(orientation=6), quality=95)  # 6: rotate 90 degrees to view
    with Image.open(io.BytesIO(fit(data, len(data) // 3)[0])) as small:
        assert small.height > small.width


def test_a_turned_photo_within_the_limit_is_written_upright_at_its_size() -> None:
    data = noisy(300, 200, exif=_gps_exif(orientation=6), quality=95)
    fitted, how = fit(data, len(data) * 3)
    with Image.open(io.BytesIO(fitted)) as upright:
        assert how == REENCODED and upright.size == (200, 300) and not upright.getexif()
    assert fit(data, len(data) * 3, keep_metadata=True) == (data, COPIED)  # the tag stays and turns it


def test_a_photo_in_a_format_zooniverse_refuses_is_written_as_a_jpeg() -> None:
    """panoptes-client types a file by its bytes and allows JPEG, PNG and GIF images: a WebP named .jpg would stop
    the upload part-way."""
    data = noisy(120, 90, "WEBP")
    fitted, how = fit(data, len(data) * 10)
    with Image.open(io.BytesIO(fitted)) as written:
        assert how == REENCODED and written.format == "JPEG" and written.size == (120, 90)


def test_an_mpo_jpeg_is_shrunk_as_a_jpeg() -> None:
    """Pillow reads a JPEG with an MPF segment (many consumer cameras) as MPO; it was saved at Pillow's default
    quality and without conversion."""
    first, second = Image.new("RGB", (800, 600), "green"), Image.new("RGB", (800, 600), "blue")
    out = io.BytesIO()
    first.save(out, "MPO", save_all=True, append_images=[second])
    data = out.getvalue()
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.format == "MPO"
    fitted, how = fit(data, len(data) - 1)
    with Image.open(io.BytesIO(fitted)) as written:
        assert written.format == "JPEG" and how in (SHRUNK, REENCODED)


def test_a_png_stays_a_png() -> None:
    data = noisy(600, 400, "PNG")
    fitted, how = fit(data, len(data) // 3)
    assert len(fitted) <= len(data) // 3 and how == SHRUNK
    with Image.open(io.BytesIO(fitted)) as small:
        assert small.format == "PNG"


def test_a_file_that_is_no_photo_cannot_be_fitted() -> None:
    with pytest.raises(Unfittable, match="cannot be decoded"):
        fit(b"\xff\xd8 not really a jpeg" * 100, 100)


def test_a_photo_that_fits_at_no_size_is_refused_not_shrunk_to_nothing() -> None:
    data = noisy(800, 600, quality=95)
    with pytest.raises(Unfittable, match="does not fit in 200 bytes .the smallest tried: [0-9]+x[0-9]+ pixels"):
        fit(data, 200)


def test_a_manifests_photos_are_its_image_columns_cells_once_each() -> None:
    """Captures and visits manifests have image_name_1..N, a shorter capture's last cells empty; ``#file`` and
    ``folder`` are not photos."""
    text = ("image_name_1,image_name_2,image_name_3,folder,#file,#capture_id\r\n"
            "cam/a.jpg,cam/b.jpg,cam/c.jpg,cam,cam/a.jpg,e1\r\n"
            "cam/d.jpg,,,cam,cam/d.jpg,e2\r\n"
            "\"cam/with, comma.jpg\",cam/a.jpg,,cam,x,e3\r\n")
    columns, photos = manifest_photos(text)
    assert columns == [0, 1, 2]
    assert photos == ["cam/a.jpg", "cam/b.jpg", "cam/c.jpg", "cam/d.jpg", "cam/with, comma.jpg"]
    with pytest.raises(CliError, match="no image_name_1"):
        manifest_photos("file,folder\r\na.jpg,\r\n")


def test_the_upload_command_names_the_image_columns() -> None:
    """Without -f the Panoptes CLI takes every cell that is an existing path as a file (``folder`` too)."""
    assert upload_command(Path("t/exports/zooniverse/batch-001.csv"), [0]) == (
        "panoptes subject-set upload-subjects -f 1 <subject set id> t/exports/zooniverse/batch-001.csv")
    assert upload_command(Path("b.csv"), [0, 1, 2]).startswith(
        "panoptes subject-set upload-subjects -f 1 -f 2 -f 3 -M ")
    assert upload_command(Path("b.csv"), [0], missing=True).startswith("panoptes subject-set upload-subjects -f 1 -M ")
    assert upload_command(Path("Site A/batch-001.csv"), [0]).endswith(" <subject set id> 'Site A/batch-001.csv'")


def test_a_photo_goes_where_the_panoptes_cli_looks_unless_its_name_leaves_the_folder(tmp_path: Path) -> None:
    """Photo names are the user's blob names: a colon is a file name on Linux (a timestamped photo), but nothing may
    leave the folder."""
    assert photo_path(tmp_path, "cam/2023-01-01 12:00:00.jpg") == tmp_path / "cam" / "2023-01-01 12:00:00.jpg"
    assert photo_path(tmp_path, "cam//a.jpg") == tmp_path / "cam" / "a.jpg"
    for bad in ("../a.jpg", "/etc/a.jpg", "cam/../../a.jpg", "cam/a\x01.jpg", ""):
        assert photo_path(tmp_path, bad) is None, bad


def test_a_photo_whose_folder_a_link_leads_out_of_the_folder_goes_nowhere(tmp_path: Path) -> None:
    """On Linux and macOS the photo was joined under the folder unchecked: ``cam -> /elsewhere`` put it there. A link
    that stays in the folder is followed; a link at the photo's own name is no way out (it is replaced)."""
    from tests.links import plant_link

    folder = tmp_path / "out"
    (tmp_path / "elsewhere").mkdir()
    (folder / "inside").mkdir(parents=True)
    plant_link(folder / "cam", Path("..") / "elsewhere")
    plant_link(folder / "also", Path("inside"))
    plant_link(folder / "x.jpg", Path("..") / "elsewhere" / "x.jpg")
    assert photo_path(folder, "cam/a.jpg") is None and photo_path(folder, "cam/sub/a.jpg") is None
    assert photo_path(folder, "also/a.jpg") == folder / "also" / "a.jpg"
    assert photo_path(folder, "x.jpg") == folder / "x.jpg"


def _answer(variants: tuple[str, ...]) -> dict[str, Any]:
    files = {}
    for v in variants:
        base = "results/task-1/exports/" + ("" if v == "original" else f"{v}/")
        files[v] = {"results": "results/task-1/detections.json",
                    "exports": {"coco.json": base + "coco.json",
                                **{f"zooniverse/batch-00{b}.csv": f"{base}zooniverse/batch-00{b}.csv"
                                   for b in (1, 2)}}}
    return {"results": {"container": "trapbatch", "blob": "results/task-1/detections.json", "files": files},
            "source": {"container": "cams", "account_url": ""}}


def test_the_manifests_are_the_repeats_removed_ones_when_there_are_any() -> None:
    variant, found = manifests(_answer(("original", "repeats-removed")), {}, None)
    assert variant == "repeats-removed"
    assert [path for _, _, path in found] == ["exports/repeats-removed/zooniverse/batch-001.csv",
                                               "exports/repeats-removed/zooniverse/batch-002.csv"]
    variant, found = manifests(_answer(("original", "repeats-removed")), {}, "original", [2])
    assert (variant, [path for _, _, path in found]) == ("original", ["exports/zooniverse/batch-002.csv"])
    assert manifests(_answer(("original",)), {}, None)[0] == "original"
    with pytest.raises(CliError, match="no repeats-removed results") as no_variant:
        manifests(_answer(("original",)), {}, "repeats-removed")
    with pytest.raises(CliError, match="no Zooniverse manifest batch-007.csv") as no_batch:
        manifests(_answer(("original",)), {}, None, [7])
    with pytest.raises(CliError, match="no Zooniverse manifest batch-003.csv") as absent:  # one asked for is not there
        manifests(_answer(("original",)), {}, None, [1, 3])
    assert "it has 2" in absent.value.hint and "trapbatch results" in absent.value.hint
    assert "GET /api" not in absent.value.hint  # the CLI's own words, not the app's route
    # an option naming what the task does not have is a bad argument (docs/cli.md: exit 2), not an app's refusal (4)
    assert no_variant.value.exit_code == no_batch.value.exit_code == absent.value.exit_code == 2



def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    import zlib

    return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")


def test_only_what_a_viewer_needs_is_kept_of_a_jpeg_or_png_whatever_carries_the_position() -> None:
    """A deny-list (APP1, APP13, COM) let a Content Credentials store (C2PA: APP11 in a JPEG, caBX in a PNG) carry
    exif:GPSLatitude through; now only JFIF, the ICC profile and Adobe's transform are kept of the APPn segments,
    and the PNG chunks a viewer needs."""
    jpeg = noisy(80, 60, icc_profile=b"\x00" * 128)
    gps = b'{"exif:GPSLatitude": "1,17.44N"}'
    salted = jpeg[:2] + _segment(0xEB, b"JP\x00\x00" + gps) + _segment(0xE2, b"FPXR\x00" + gps) + \
        _segment(0xEE, b"Adobe\x00d\x00\x00\x00\x00\x01") + jpeg[2:]
    fitted, how = fit(salted, len(salted))
    assert how == COPIED and gps not in fitted and b"ICC_PROFILE" in fitted and b"Adobe" in fitted
    with Image.open(io.BytesIO(fitted)) as kept, Image.open(io.BytesIO(jpeg)) as original:
        assert kept.tobytes() == original.tobytes()
    png = noisy(40, 30, "PNG")
    end = png.rindex(b"IEND") - 4
    salted_png = png[:end] + _png_chunk(b"caBX", gps) + _png_chunk(b"tIME", b"\x07\xe8\x01\x01\x00\x00\x00") + \
        _png_chunk(b"gAMA", (45455).to_bytes(4, "big")) + png[end:]
    fitted, how = fit(salted_png, len(salted_png))
    assert how == COPIED and gps not in fitted and b"tIME" not in fitted and b"gAMA" in fitted


def test_a_comment_between_a_progressive_jpegs_scans_goes() -> None:
    jpeg = noisy(120, 90, progressive=True)
    second_scan = jpeg.index(b"\xff\xda", jpeg.index(b"\xff\xda") + 2)
    salted = jpeg[:second_scan] + _segment(0xFE, b"GPS 1,2N") + jpeg[second_scan:]
    fitted, how = fit(salted, len(salted))
    assert how == COPIED and b"GPS 1,2N" not in fitted and fitted == jpeg


def test_a_gifs_comments_and_xmp_go_wherever_they_are_and_its_frames_stay() -> None:
    """Pillow sees neither a GIF's XMP nor a comment after its first frame: the GIF was copied with them."""
    frames = [Image.new("L", (20, 10), 80 * i) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], loop=0, duration=100)
    gif = out.getvalue()
    assert gif.endswith(b"\x3b")
    xmp = b"\x21\xff\x0bXMP DataXMP" + b"\x0cGPS 1,17.44N" + b"\x00"
    salted = gif[:-1] + b"\x21\xfe\x08GPS 1,2N\x00" + xmp + gif[-1:]  # after the frames, before the trailer
    fitted, how = fit(salted, len(salted))
    assert how == COPIED and b"GPS" not in fitted and b"NETSCAPE2.0" in fitted and fitted == gif
    assert strip_gif_metadata(salted[:-5]) is None  # cut short: decoded instead
    with Image.open(io.BytesIO(fitted)) as kept:
        assert kept.n_frames == 3
    big = io.BytesIO()
    noisy_frames = [Image.frombytes("L", (200, 200), random.Random(i).randbytes(40000)) for i in range(4)]
    noisy_frames[0].save(big, "GIF", save_all=True, append_images=noisy_frames[1:])
    with pytest.raises(Unfittable, match="an animation of 4 frames that must be made smaller"):
        fit(big.getvalue(), len(big.getvalue()) // 2)  # a still of its first frame would stand for it


def test_pixels_a_jpeg_cannot_hold_are_scaled_not_clipped_and_cmyk_loses_no_profile_match() -> None:
    """A 16-bit TIFF (thermal cameras) came out white; a CMYK photo kept its CMYK profile on RGB pixels."""
    import struct

    deep = Image.frombytes("I;16", (60, 40), struct.pack("<2400H", *([30000] * 2400)))
    out = io.BytesIO()
    deep.save(out, "TIFF")
    fitted, how = fit(out.getvalue(), 10**6)
    with Image.open(io.BytesIO(fitted)) as got:
        assert (how, got.format) == (REENCODED, "JPEG") and 110 <= sum(got.convert("L").getdata()) / 2400 <= 124
    cmyk = Image.new("CMYK", (64, 48), (0, 255, 255, 0))  # red
    fake_profile = b"\x00" * 16 + b"CMYK" + b"\x00" * 108  # labelled CMYK, unusable: converted without it
    for icc in (None, fake_profile):
        out = io.BytesIO()
        cmyk.save(out, "JPEG", **({"icc_profile": icc} if icc else {}))
        fitted, how = fit(out.getvalue(), 10**6, max_side=32)
        with Image.open(io.BytesIO(fitted)) as got:
            assert got.mode == "RGB" and "icc_profile" not in got.info
            r, g, b = got.getpixel((10, 10))
            assert r > 200 and g < 60 and b < 60


def test_an_orientation_that_turns_nothing_is_no_reason_to_encode_again() -> None:
    for orientation in (0, 1, 9):
        data = noisy(80, 60, orientation=orientation)
        fitted, how = fit(data, len(data))
        assert how == COPIED and fitted == strip_jpeg_metadata(data)


@pytest.mark.parametrize("switch", [False, True])
def test_a_jpeg_cut_short_is_kept_as_far_as_it_goes_whatever_pillows_process_wide_switch_says(
        switch: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A camera that lost power while writing leaves a JPEG without its end; the worker reads it (MegaDetector's
    LOAD_TRUNCATED_IMAGES, gray below what was written) and the manifest names it. Copied, it is ended so that every
    viewer shows it (its position-bearing segments gone); shrunk, it is decoded the same way whatever Pillow's
    process-wide switch says (the app's previews and the worker set it: a test run that imported them first). An EXIF
    thumbnail's own end (before the photo's first scan) is not the photo's."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", switch)
    jpeg = noisy(120, 90, exif=_gps_exif())
    thumbnail = b"\xff\xd8\xff\xda\x00\x02" + b"\x11" * 40 + b"\xff\xd9"
    with_thumbnail = jpeg[:2] + _segment(0xE1, b"Exif\x00\x00" + thumbnail) + jpeg[2:]
    for data in (jpeg, with_thumbnail):
        cut = data[:len(data) * 2 // 3]
        fitted, how = fit(cut, len(cut))
        assert how == COPIED and fitted.endswith(b"\xff\xd9") and b"Exif" not in fitted
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)  # a strict viewer opens it
        with Image.open(io.BytesIO(fitted)) as copied:
            copied.load()
            assert copied.size == (120, 90)
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", switch)
        fitted, how = fit(cut, len(cut), max_side=60)
        with Image.open(io.BytesIO(fitted)) as shrunk:
            assert how == SHRUNK and shrunk.size == (60, 45)


def test_a_tiffs_pages_are_no_animation() -> None:
    """Pillow counts a TIFF's pages (a thumbnail beside the photo) as frames: such a still under a .jpg name was
    refused as an animation; it is written as a JPEG of its main page, as before."""
    out = io.BytesIO()
    Image.new("RGB", (400, 300), (10, 120, 30)).save(out, "TIFF", save_all=True,
                                                     append_images=[Image.new("RGB", (40, 30))])
    fitted, how = fit(out.getvalue(), 10**7)
    with Image.open(io.BytesIO(fitted)) as got:
        assert (how, got.format, got.size) == (REENCODED, "JPEG", (400, 300))


def test_keep_metadata_keeps_all_of_a_copied_photo_but_only_what_pillow_writes_of_one_written_again() -> None:
    """``--keep-metadata`` copies a photo that fits byte for byte, every segment kept; a photo scaled down or
    written again keeps what Pillow writes back, its EXIF (a JPEG's XMP and comment too), never its IPTC (APP13),
    which Pillow does not write. ``zooniverse --help`` said the flag kept "EXIF, XMP, IPTC and comments" whatever
    was done to the photo, and README "kept them"; docs/cli.md left out the comment."""
    import struct

    from click.testing import CliRunner

    from cli.main import cli

    iptc = b"Photoshop 3.0\x00" + b"8BIM\x04\x04\x00\x00\x00\x00\x00\x0b" + b"\x1c\x02\x5c\x00\x06Site 9"
    data = photo_like(1600, 1200, quality=95, exif=_gps_exif(), comment=b"GPS 1,2N", xmp=b"<x:xmpmeta>GPS</x:xmpmeta>")
    data = data[:2] + b"\xff\xed" + struct.pack(">H", len(iptc) + 2) + iptc + data[2:]
    assert fit(data, len(data), keep_metadata=True) == (data, COPIED)
    fitted, how = fit(data, len(data) // 5, keep_metadata=True)
    assert how == SHRUNK and b"Photoshop 3.0" not in fitted  # IPTC gone
    assert b"GPS 1,2N" in fitted and b"xmpmeta" in fitted
    with Image.open(io.BytesIO(fitted)) as small:
        assert small.getexif().get_ifd(0x8825)
    root = Path(__file__).resolve().parents[2]
    helped = " ".join(CliRunner().invoke(cli, ["zooniverse", "--help"], terminal_width=400).output.split())
    said = "a photo scaled down or written again keeps only its EXIF, and a JPEG its XMP and comment: not its IPTC"
    assert said in helped, helped
    for doc in ("docs/cli.md", "README.md"):
        text = " ".join((root / doc).read_text(encoding="utf-8").split())
        assert "`--keep-metadata` keeps them)" not in text and "keeps EXIF and XMP of a photo written again" not in text
        assert "of a photo written again only its EXIF (a JPEG's XMP and comment too), not its IPTC" in text, doc


def test_the_problems_table_guards_its_cells_as_the_exports_csvs_do() -> None:
    """``batch-NNN.problems.csv`` is opened in a spreadsheet like detections.csv: a photo named like a formula is
    text there, and the guard reads back without doubt (``'=x.jpg`` and ``=x.jpg`` are two rows, not one cell)."""
    import csv as csv_module
    import io as io_module

    from cli.zooniverse_upload import problems_csv
    from gpu_batch.formats.detections_csv import unguarded

    problems = [("=x.jpg", "-1 bytes"), ("'=x.jpg", "gone"), ("cam/a.jpg", "gone")]
    rows = list(csv_module.reader(io_module.StringIO(problems_csv(problems).decode("utf-8"), newline="")))
    assert rows == [["photo", "problem"], ["''=x.jpg", "gone"], ["'=x.jpg", "'-1 bytes"], ["cam/a.jpg", "gone"]]
    assert sorted((unguarded(a), unguarded(b)) for a, b in rows[1:]) == sorted(problems)

