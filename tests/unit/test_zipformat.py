"""The zip of members deflated in pieces (``core.zipformat``): CRCs composed from pieces, the cut into parts, and
headers that ``zipfile`` and Info-ZIP's ``unzip`` read, zip64 offsets past 4 GiB included."""
from __future__ import annotations

import io
import random
import shutil
import subprocess
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path

import pytest

from core import contracts as c
from core import zipformat
from core.zipformat import Chunk, Member, crc32_combine, cut


def test_crc32_combine_is_the_crc_of_the_concatenation() -> None:
    rng = random.Random(3)
    for _ in range(200):
        a = rng.randbytes(rng.randrange(0, 300))
        b = rng.randbytes(rng.choice([0, 1, 2, 7, rng.randrange(0, 5000)]))
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
    big = bytes(3_000_017)
    assert crc32_combine(zlib.crc32(b"head"), zlib.crc32(big), len(big)) == zlib.crc32(b"head" + big)


def test_cut_covers_every_byte_once_in_parts_of_the_given_size() -> None:
    rng = random.Random(5)
    for _ in range(300):
        sizes = [rng.choice([0, 1, rng.randrange(0, 50), rng.randrange(0, 500)]) for _ in range(rng.randrange(1, 9))]
        part_bytes = rng.choice([1, 3, rng.randrange(1, 200)])
        parts = cut(sizes, part_bytes)
        assert all(parts)
        loads = [sum(ch.length for ch in p) for p in parts]
        assert all(load == part_bytes for load in loads[:-1]) and 0 <= loads[-1] <= part_bytes
        chunks = [ch for p in parts for ch in p]
        assert [ch.file for ch in chunks] == sorted(ch.file for ch in chunks)  # zip order kept
        for i, size in enumerate(sizes):
            mine = [ch for ch in chunks if ch.file == i]
            assert mine, f"file {i} has no chunk"
            assert [ch.offset for ch in mine] == [sum(x.length for x in mine[:k]) for k in range(len(mine))]
            assert sum(ch.length for ch in mine) == size
            assert [ch.last for ch in mine] == [False] * (len(mine) - 1) + [True]
            assert all(ch.length for ch in mine[:-1])  # only a last chunk may be empty
    assert cut([0, 0], 10) == [[Chunk(0, 0, 0, True), Chunk(1, 0, 0, True)]]
    with pytest.raises(ValueError):
        cut([1], 0)


def assemble(files: dict[str, bytes], part_bytes: int, modified: datetime) -> bytes:
    """A zip made the way the parts make it, in memory: each chunk deflated alone, pieces laid out in order."""
    names = sorted(files)
    pieces: dict[int, list[tuple[int, int, bytes]]] = {}  # file -> [(crc, raw length, deflated)]
    for part in cut([len(files[n]) for n in names], part_bytes):
        for ch in part:
            data = files[names[ch.file]][ch.offset:ch.offset + ch.length]
            deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
            deflated = deflate.compress(data) + deflate.flush(zlib.Z_FINISH if ch.last else zlib.Z_SYNC_FLUSH)
            pieces.setdefault(ch.file, []).append((zlib.crc32(data), ch.length, deflated))
    out = io.BytesIO()
    members = []
    for i, name in enumerate(names):
        crc = 0
        for piece_crc, length, _ in pieces[i]:
            crc = crc32_combine(crc, piece_crc, length)
        data = b"".join(deflated for _, _, deflated in pieces[i])
        member = Member(name=name, crc=crc, size=len(files[name]), compressed=len(data), offset=out.tell(),
                        modified=modified)
        header = zipformat.local_header(member)
        assert len(header) == zipformat.header_length(name)
        out.write(header + data)
        members.append(member)
    out.write(zipformat.central_directory(members, out.tell()))
    return out.getvalue()


@pytest.mark.parametrize("part_bytes", [1, 17, 1000, 10**9])
def test_a_zip_of_pieces_reads_back_in_zipfile_and_unzip(part_bytes: int, tmp_path: Path) -> None:
    rng = random.Random(part_bytes)
    files = {"t/detections.json": b"".join(b'{"file": "cam/%d.jpg", "conf": 0.%d}\n' % (i, i % 97)
                                           for i in range(700)),
             "t/random.bin": rng.randbytes(5000), "t/empty.csv": b"", "t/one.txt": b"x",
             "t/ünïcødé 森/写真.csv": "名前,値\n".encode() * 50}
    when = datetime(2026, 12, 3, 4, 5, 7, tzinfo=timezone.utc)
    data = assemble(files, part_bytes, when)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None  # every member's CRC checked
        assert sorted(zf.namelist()) == sorted(files)
        for name, body in files.items():
            assert zf.read(name) == body
            assert zf.getinfo(name).date_time == (2026, 12, 3, 4, 5, 6)  # DOS time: two-second steps
            assert zf.getinfo(name).compress_type == zipfile.ZIP_DEFLATED
    if shutil.which("unzip"):  # Info-ZIP too, where installed (a second, independent reader)
        (tmp_path / "z.zip").write_bytes(data)
        tested = subprocess.run(["unzip", "-tq", str(tmp_path / "z.zip")], capture_output=True, text=True)
        assert tested.returncode == 0, tested.stdout + tested.stderr


def test_zip64_fields_past_four_gib_are_read_from_the_extra_fields(tmp_path: Path) -> None:
    """A central directory 5 GiB into a sparse file, naming members whose offsets and sizes pass 32 bits."""
    when = datetime(2026, 1, 2, 3, 4, 6)
    big = 5 * 2**30
    members = [Member("a.json", 0x1234, 2**33 + 5, 2**32 + 7, 0, when),
               Member("b.csv", 0xBEEF, 10, 3, 2**32 + 77, when)]
    path = tmp_path / "sparse.zip"
    with open(path, "wb") as f:
        f.seek(big)
        f.write(zipformat.central_directory(members, big))
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
    assert infos["a.json"].file_size == 2**33 + 5 and infos["a.json"].compress_size == 2**32 + 7
    assert infos["b.csv"].header_offset == 2**32 + 77 and infos["b.csv"].CRC == 0xBEEF


def test_part_inputs_name_each_chunks_file_and_etag() -> None:
    made = c.ZipPlan(files=[c.ZipFileEntry(name="r/a", size=5, etag="e1", modified="2026-12-03T00:00:00+00:00"),
                            c.ZipFileEntry(name="r/b", size=0, etag="e2", modified="2026-12-03T00:00:00+00:00")],
                     parts=[[list(ch) for ch in p] for p in cut([5, 0], 3)])
    assert zipformat.part_inputs("t", made) == [
        {"task_id": "t", "part": 0, "chunks": [["r/a", "e1", 0, 3, False]]},
        {"task_id": "t", "part": 1, "chunks": [["r/a", "e1", 3, 2, True], ["r/b", "e2", 0, 0, True]]}]


def test_a_plans_build_names_its_parts_work_blobs_and_one_recorded_before_keeps_the_old_names() -> None:
    """A plan with ``build`` hands it to every part (whose work blob is then ``<work>/<build>/part-…``: a terminated
    build's part still running cannot write over the next build's); a plan recorded in a history before builds were
    named has none, and its parts are asked, and write, as then."""
    from gpu_batch import layout

    made = c.ZipPlan(files=[c.ZipFileEntry(name="r/a", size=5, etag="e1", modified="2026-12-03T00:00:00+00:00")],
                     parts=[[list(ch) for ch in p] for p in cut([5], 3)], build="0a1b2c3d")
    assert [p.get("build") for p in zipformat.part_inputs("t", made)] == ["0a1b2c3d", "0a1b2c3d"]
    assert layout.results_zip_part_blob("t", 1, "0a1b2c3d") == layout.results_zip_work_prefix("t") + \
        "0a1b2c3d/part-00001.deflate"
    assert layout.results_zip_part_blob("t", 1) == layout.results_zip_work_prefix("t") + "part-00001.deflate"
    assert "build" not in zipformat.part_inputs("t", {"files": made["files"], "parts": made["parts"]})[0]
