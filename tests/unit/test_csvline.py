"""gpu_batch.formats.csvline writes what csv.writer writes, on adversarial fields."""
from __future__ import annotations

import csv
import io
import random

import pytest

from gpu_batch.formats import csvline

ODD = ["", " ", ",", '"', '""', "\r", "\n", "\r\n", "a,b", 'say "hi"', " lead", "trail ", "\t", "\x00", "\x1f",
       "\x7f", "\u2028", "\u2029", "\ufeff", "\ud800", "é", "日本", "=1+2", "'", ";", "\\", "a\rb", "x\n,\"y",
       "\x0b\x0c\x1c\x1d\x1e\x85"]


def writer_line(fields: list[str]) -> str:
    out = io.StringIO(newline="")
    csv.writer(out).writerow(fields)
    return out.getvalue()


@pytest.mark.parametrize("text", ODD)
def test_a_field_is_quoted_exactly_as_csv_writer_quotes_it(text: str) -> None:
    assert csvline.field(text) + "," + csvline.field("z") + "\r\n" == writer_line([text, "z"])
    assert csvline.line([text, text, "z"]) == writer_line([text, text, "z"])


def test_every_character_below_u3000_and_random_strings() -> None:
    for code in range(0x3000):
        text = chr(code)
        for s in (text, f"a{text}b", f"{text}{text}", f" {text}"):
            assert csvline.line([s, "z"]) == writer_line([s, "z"]), repr(s)
    rng = random.Random(11)
    alphabet = [*',"\r\n \t\x00', "a", "b", "é", "\u2028", "\ud800"]
    for _ in range(20_000):
        row = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(8))) for _ in range(rng.randrange(2, 6))]
        assert csvline.line(row) == writer_line(row), repr(row)


def test_a_single_field_row_is_refused() -> None:
    with pytest.raises(ValueError):
        csvline.line([""])


@pytest.mark.parametrize("text", ODD)
def test_a_manifest_field_reads_back_as_the_panoptes_cli_reads_it(text: str) -> None:
    """zooniverse/panoptes-cli subject_set.py reads manifests with ``csv.reader(..., skipinitialspace=True)``: a
    field written by ``field`` alone loses its leading spaces (`` IMG_0001.JPG`` was looked up as ``IMG_0001.JPG``)."""
    line = csvline.manifest_line([text, text, "z"])
    assert next(csv.reader(io.StringIO(line, newline=""), skipinitialspace=True)) == [text, text, "z"]
    if not text.startswith(" "):
        assert line == writer_line([text, text, "z"])  # as csv.writer writes it otherwise
