"""The results README's text (``core.readme``): every file it is given gets a line with what opens it, and no other;
the facts a reader needs; bounded whatever the task's size."""
from __future__ import annotations

import dataclasses
import itertools

import pytest

from core.readme import WIDTH, ReadmeFacts, pages_gone, readme_name, readme_text
from tests.readme_listing import listed_paths

FACTS = ReadmeFacts(
    task_id="task-0123456789abcdef0123", generation="", variant="", request_name="site A 2024",
    container="camera-traps", prefix="2024/site-a/", account_url="https://partner.blob.core.windows.net",
    image_list="", model="MDV5A", detector="md_v5a.0.0.pt", threshold=0.2, page_threshold=None, images=41,
    failed=1, damaged=1, detected="2026-12-05 17:55:03", removed_places=None,
    not_images="2 files are not images and were not run (.txt 2)", published=True,
    written="2026-12-05T17:56:10+00:00")
CAMTRAP = [f"exports/camtrap-dp/{n}" for n in ("datapackage.json", "deployments.csv", "media.csv",
                                               "observations.csv")]
FILES = ["README.txt", "detections.json", "detections.csv", "damaged.csv", "repeated-detections.json",
         "exports/coco.json", *CAMTRAP, "exports/camera-visits.csv", "exports/camera-days.csv",
         "exports/zooniverse/batch-001.csv", "exports/zooniverse/batch-002.csv", "detections.threshold-0.35.csv"]


def test_every_file_given_is_listed_once_with_what_opens_it_and_nothing_else() -> None:
    text = readme_text(FACTS, FILES)
    assert sorted(listed_paths(text)) == sorted(FILES)
    section = text.split("\nFiles\n-----\n", 1)[1]
    for words in ("Timelapse", "MegaDetector's postprocessing", "spreadsheet", "camtraptor", "camtrapR", "GBIF",
                  "panoptes subject-set upload-subjects", "trapbatch zooniverse task-0123456789abcdef0123",
                  "trapbatch repeats task-0123456789abcdef0123", "threshold 0.35", "LILA"):
        assert words in section, words
    assert listed_paths(text)[:4] == ["README.txt", "detections.json", "detections.csv",
                                      "detections.threshold-0.35.csv"]
    assert "has a ' added" in section and "remove one to get the name" in section  # the CSV guard, read back
    # a file the results do not have is not named: no damaged.csv, no Zooniverse line
    fewer = readme_text(FACTS, ["README.txt", "detections.json", "detections.csv"])
    assert listed_paths(fewer) == ["README.txt", "detections.json", "detections.csv"]
    assert "damaged.csv\n" not in fewer and "zooniverse/" not in fewer and "camtrap" not in fewer.lower()
    # a name it has no words for still gets its line
    odd = readme_text(FACTS, ["README.txt", "exports/something-new.parquet"])
    assert "exports/something-new.parquet\n    Another file of these results." in odd


def test_the_facts_a_reader_needs_and_no_secret() -> None:
    text = readme_text(FACTS, FILES)
    flat = " ".join(text.split())  # as read, whatever the wrapping
    for words in ("site A 2024", "task-0123456789abcdef0123", 'container "camera-traps", prefix "2024/site-a/"',
                  "account https://partner.blob.core.windows.net", "MDV5A (md_v5a.0.0.pt)", "Threshold: 0.2:",
                  "41 images, 1 failed", "1 cut short (damaged.csv)", "2026-12-05 17:55:03 UTC",
                  "2 files are not images", "Written: 2026-12-05T17:56:10+00:00", "published on the web"):
        assert words in flat, words
    # Camtrap DP media filePath is the photo's URL (externally hosted): the README says where the photos are
    assert "filePath, its URL in the images' container named above: the photos are not in the package" in flat
    assert "sig=" not in text and "AccountKey" not in text and "SharedAccessSignature" not in text
    unpublished = readme_text(dataclasses.replace(FACTS, published=False, failed=0, damaged=0), FILES)
    assert "not published" in unpublished and "failed" not in unpublished.split("Files\n")[0]
    moved = readme_text(dataclasses.replace(FACTS, page_threshold=0.35), FILES)
    assert "the preview page was last drawn at 0.35" in " ".join(moved.split())


def test_the_repeats_removed_variant_says_so_and_names_its_own_file() -> None:
    facts = dataclasses.replace(FACTS, variant="repeats-removed", removed_places=3, generation="r261205175503ab")
    files = ["README.repeats-removed.txt", "detections.repeats-removed.json", "detections.repeats-removed.csv",
             "damaged.csv", "exports/repeats-removed/coco.json"]
    text = readme_text(facts, files)
    assert readme_name("repeats-removed") == "README.repeats-removed.txt" and readme_name("") == "README.txt"
    assert sorted(listed_paths(text)) == sorted(files)
    assert "README.repeats-removed.txt\n    This file." in text
    flat = " ".join(text.split())
    assert "repeated detections at 3 places removed" in flat and "(re-run r261205175503ab)" in flat


@pytest.mark.parametrize("batches", [1, 3, 1000])
def test_bounded_whatever_the_task_size_and_lines_fit_a_window(batches: int) -> None:
    """A thousand Zooniverse batches are one line (a run numbered without a gap); a gap starts another run."""
    files = [*FILES[:-3], *[f"exports/zooniverse/batch-{n:03d}.csv" for n in range(1, batches + 1)]]
    text = readme_text(FACTS, files)
    assert sorted(listed_paths(text)) == sorted(files)
    # 84: the CSV guard's rule (two lines) joined the 80 the file list took at 1,000 batches
    assert 40 <= len(text.splitlines()) <= 84 and max(len(line) for line in text.splitlines()) <= WIDTH
    gap = [f for f in files if not f.endswith("batch-002.csv")]
    assert sorted(listed_paths(readme_text(FACTS, gap))) == sorted(gap)


def test_pages_gone_restates_only_the_preview_field() -> None:
    text = readme_text(FACTS, FILES)
    assert "published on the web" in text
    gone = pages_gone(text, "2026-12-06T09:00:00+00:00")
    assert gone is not None and "published on the web" not in gone and "Preview:" in gone
    assert "Preview: taken off the web at 2026-12-06T09:00:00+00:00 (deleted or expired)" in " ".join(gone.split())
    before, after = text.split("Preview:")[0], gone.split("Preview:")[0]
    assert before == after and text.split("\nWritten:")[1] == gone.split("\nWritten:")[1]  # the rest as it was
    assert all(len(line) <= WIDTH for line in gone.splitlines())
    assert pages_gone("a README without the field\n", "2026-12-06T09:00:00+00:00") is None


def test_a_model_of_no_known_megadetector_release_is_said_to_be_one() -> None:
    """The exports' Camtrap DP names such a model by its file, as no known release (``mdformat.classified_by``);
    the README said 'MegaDetector finds animals...' of the demo's random weights as of MDv5a."""
    from core import mdformat

    def model_line(model: str, detector: str) -> str:
        text = readme_text(dataclasses.replace(FACTS, model=model, detector=detector), FILES)
        start = text.index("Model:")
        return " ".join(text[start:text.index("Threshold:")].split())

    odd = model_line("/srv/models/demo-yolov5n-random.pt", "demo-yolov5n-random.pt")
    assert mdformat.NO_RELEASE in odd and "only as good as its weights" in odd
    assert mdformat.NO_RELEASE not in model_line("MDV5A", "md_v5a.0.0.pt")


def test_the_model_is_named_as_its_users_know_it_never_by_a_machines_path() -> None:
    """The demo's README said ``Model: <checkout>/.cache/models/demo-yolov5n-random.pt (demo-yolov5n-random.pt)``:
    the app's default model is a path where one machine keeps the file (a node's cache on Batch), which says nothing
    to the people who get the results and is not theirs to see."""
    def model_line(model: str, detector: str) -> str:
        text = readme_text(dataclasses.replace(FACTS, model=model, detector=detector), FILES)
        return " ".join(text[text.index("Model:"):text.index("Threshold:")].split())

    for path in ("/home/ann/.cache/models/demo-yolov5n-random.pt",
                 "/mnt/batch/tasks/shared/trapbatch/models/demo-yolov5n-random.pt",
                 "C:\\Users\\ann\\models\\demo-yolov5n-random.pt"):
        line = model_line(path, "demo-yolov5n-random.pt")
        assert line.startswith("Model: demo-yolov5n-random.pt, no known MegaDetector release"), line
        assert "ann" not in line and "/mnt" not in line and "cache" not in line
    local = model_line("/srv/models/md_v5a.0.0.pt", "md_v5a.0.0.pt")
    assert local.startswith("Model: md_v5a.0.0.pt; MegaDetector finds"), local  # its release, from the file's name
    signed = model_line("https://models.example/md/md_v5b.0.0.pt?sv=2024&sig=SECRET", "md_v5b.0.0.pt")
    assert signed.startswith("Model: md_v5b.0.0.pt;") and "SECRET" not in signed and "example" not in signed
    assert model_line("MDV5A", "MDV5A").startswith("Model: MDV5A; MegaDetector finds")
    assert model_line("blob://models/ours.pt", "ours.pt").startswith("Model: blob://models/ours.pt (ours.pt), no known")


def test_the_camera_tables_say_a_visit_counts_in_each_kind_it_had() -> None:
    """camera-visits.csv's kind columns count a visit once for each kind it had (``core.camtrap_events``: a visit
    with an animal and a photo cut short in which nothing was detected is in animal_visits and unknown_visits), so
    they may add up to more than its visits; the README the ecologist reads says so, and what blank means, instead
    of "with an animal, a person, a vehicle or nothing", which read as one column per visit."""
    flat = " ".join(readme_text(FACTS, FILES).split())
    assert "A visit counts once in each kind it had" in flat
    assert "so those columns may add up to more than its visits; a blank visit had none of them" in flat
    assert "(counted as in camera-visits.csv)" in flat


def test_the_observations_table_is_described_by_the_values_its_columns_hold() -> None:
    """observations.csv's ``observationType`` says ``human`` for MegaDetector's person (Camtrap DP's vocabulary,
    ``camtrapdp.OBSERVATION_TYPES``), and its media- and event-level rows describe the same animals: the README named
    the types "animal, person, vehicle", a value no row holds, and said nothing of summing both levels."""
    from gpu_batch.formats.camtrapdp import OBSERVATION_TYPES

    text = readme_text(FACTS, FILES)
    line = " ".join(text.split("exports/camtrap-dp/observations.csv\n", 1)[1].split("\nexports/", 1)[0].split())
    for kind in (*OBSERVATION_TYPES.values(), "blank", "unknown"):
        assert kind in line
    assert "person" not in line.replace("human (a person", "")
    assert "observationLevel media" in line and "event" in line and "count one level" in line


def test_the_tables_say_which_clock_and_zone_their_times_are_in_and_which_photos_they_count() -> None:
    """detections.csv's capture_time is the camera's EXIF clock without a zone, while camera-visits.csv writes its
    first and last photo as the Camtrap DP package does, ``+00:00`` standing in where the task gave no utc_offset
    (``camtrapdp.camtrap_timestamp``): a reader of the README alone took that for UTC. The camera tables count the
    photos with a capture time (13 of a camera's 14 rows in detections.csv, in the demo)."""
    text = readme_text(FACTS, FILES)

    def line(path: str) -> str:  # the indented lines under the path's own line
        lines = text.split(f"\n{path}\n", 1)[1].split("\n")
        return " ".join(" ".join(itertools.takewhile(lambda t: t.startswith("    "), lines)).split())

    assert "the camera's clock, from EXIF, no time zone" in line("detections.csv")
    visits = line("exports/camera-visits.csv")
    assert "utc_offset" in visits and "+00:00" in visits and "not UTC" in visits
    assert "photos with a capture time" in visits and "photos with a capture time" in line("exports/camera-days.csv")
