"""What a task's status, its notification and the preview page say to do about failed images
(``core.failure_advice``): a ``completed_with_errors`` status named how many failed and why, never what to do."""
from __future__ import annotations

import pytest

from core.failure_advice import advice, failures_hint, without_counts


def test_a_task_whose_every_image_failed_says_no_image_has_a_result() -> None:
    hint = failures_hint({"undecodable": 4}, failed=4, images=4)
    assert hint.startswith("no image has a result: every one of the 4 failed (undecodable 4)"), hint
    assert "undecodable: these stay failed however often they run" in hint
    assert "only_new" not in hint  # nothing a re-run would change


def test_some_failed_says_how_many_which_a_re_run_retries_and_what_to_fix_first() -> None:
    hint = failures_hint({"auth": 3, "timeout": 2, "undecodable": 1}, failed=6, images=100)
    assert hint.startswith("6 of 100 images failed (auth 3, timeout 2, undecodable 1). "), hint
    assert 'auth, timeout: the task\'s request posted again with "only_new": true (a re-run) runs these' in hint
    assert "undecodable: these stay failed" in hint
    assert "Storage Blob Data Reader" in hint and "before that re-run" in hint  # a re-run alone is refused again
    assert "account_not_found" not in hint


def test_account_not_found_names_the_account_not_the_photos() -> None:
    lines = advice({"account_not_found": 2})
    assert lines[0].startswith("account_not_found: the task's request posted again"), lines
    assert any("source_account_url" in line and "not the photos" in line for line in lines), lines


def test_names_an_image_list_holds_but_the_container_does_not_say_to_correct_the_list() -> None:
    """They were advised as photos that "stay failed however often they run: the file is missing, unreadable, or one
    MegaDetector refuses": the list is what is wrong (a mistyped name, another case, a path from another folder)."""
    hint = failures_hint({"listed_not_found": 1, "undecodable": 2}, failed=3, images=10)
    assert "undecodable: these stay failed" in hint and "listed_not_found, undecodable" not in hint
    assert "listed_not_found: the request's image list names files its container does not hold" in hint
    assert "put the photos in the container under the names the list gives" in hint and '"only_new": true' in hint


def test_names_an_image_list_holds_but_the_container_does_not_are_never_promised_a_corrected_lists_reuse() -> None:
    """The advice was to correct the list and post it again with only_new, "the corrected names run, the other images
    keep their results": but the list's content is part of the task id, so the corrected list was a new task whose
    only_new reused nothing and ran every listed image again (a whole GPU run for a few mistyped names). What keeps
    the other results is the same list with the photos put under its names (tests/integration/test_image_list.py)."""
    hint = failures_hint({"listed_not_found": 2}, failed=2, images=1000)
    assert "the corrected names run" not in hint and "correct the list, then" not in hint, hint
    assert "a corrected list is another task" in hint and "runs every listed image again" in hint, hint


@pytest.mark.parametrize("failed", [0, -1])
def test_nothing_failed_gives_no_hint(failed: int) -> None:
    assert failures_hint({}, failed=failed, images=10) == ""


def test_a_status_without_reasons_still_says_where_each_failure_is() -> None:
    assert failures_hint({}, failed=2, images=10) == ("2 of 10 images failed; the failure beside each image in the "
                                                       "results says why.")


def test_reasons_read_in_one_order_whatever_order_the_status_counted_them() -> None:
    """Equal counts are listed by name, and each advice sentence leads with its reasons sorted: the status's
    reasons come in the order the merge met them, and the same failures must read the same in every status, the
    notification and the preview page."""
    hint = failures_hint({"timeout": 2, "undecodable": 1, "auth": 2, "not_found": 1}, failed=6, images=100)
    assert hint.startswith("6 of 100 images failed (auth 2, timeout 2, not_found 1, undecodable 1). "), hint
    assert "auth, timeout: the task's request" in hint and "not_found, undecodable: these stay failed" in hint, hint


def test_a_status_without_an_image_count_does_not_say_every_image_failed() -> None:
    """``images`` 0 (the count not known yet) says how many failed, not "every one of the 0 failed"."""
    hint = failures_hint({"timeout": 2}, failed=2, images=0)
    assert hint.startswith("2 of 0 images failed (timeout 2)"), hint


def test_a_failure_without_a_known_reason_stays_failed_and_only_retryable_ones_say_nothing_of_staying() -> None:
    """A reason the table does not know ("unclassified": a failure written without one, which
    ``manifest.failure_kind`` calls permanent) is not promised to a re-run; failures all retryable get no "stay
    failed" sentence (with no reasons before its colon); the hint ends in one full stop."""
    hint = failures_hint({"unclassified": 1}, failed=1, images=5)
    assert "unclassified: these stay failed" in hint and "only_new" not in hint, hint
    hint = failures_hint({"timeout": 3}, failed=3, images=5)
    assert "stay failed" not in hint and hint == f"3 of 5 images failed (timeout 3). {advice({'timeout': 3})[0]}."


def test_a_hint_without_its_counts_keeps_how_many_failed_and_what_to_do() -> None:
    """``without_counts``: what ``core.status_size.fit`` drops first from a status too large, whose
    ``failure_reasons`` shows the same counts; a hint that holds none (no reasons, or other ones) stays as it is."""
    reasons = {"timeout": 2, "auth": 3, "undecodable": 1}
    hint = failures_hint(reasons, failed=6, images=100)
    assert without_counts(hint, reasons) == hint.replace(" (auth 3, timeout 2, undecodable 1). ", ". ")
    assert without_counts(hint, reasons).startswith("6 of 100 images failed. auth, timeout: the task's request")
    every = failures_hint({"undecodable": 4}, failed=4, images=4)
    assert without_counts(every, {"undecodable": 4}).startswith("no image has a result: every one of the 4 failed. "
                                                                "undecodable: these stay failed")
    bare = failures_hint({}, failed=3, images=9)
    assert without_counts(bare, {}) == bare and without_counts(hint, {"auth": 3}) == hint


def test_archived_photos_are_told_how_to_be_read_not_that_they_stay_failed() -> None:
    """An archived photo is offline until rehydrated, not a bad file: it was advised as one that "stays failed however
    often it runs". Rehydrated in place (Set Blob Tier, which keeps its ETag), an ``only_new`` re-run would keep its
    failure as final (``activities.reuse``: same name and ETag), so the advice names ``rerun``."""
    hint = failures_hint({"archived": 2, "undecodable": 1}, failed=3, images=10)
    assert "undecodable: these stay failed" in hint and "archived, undecodable" not in hint, hint
    line = next(a for a in advice({"archived": 2}) if a.startswith("archived: "))
    assert "Hot or Cool" in line and '"rerun": true' in line and "ETag" in line, line
    assert "stay failed however often" not in line


def test_photos_in_a_form_megadetector_refuses_say_how_they_run() -> None:
    """A CMYK or palette photo (a GIF, a JPEG saved by an editor), 16-bit grayscale, one over Pillow's pixel limit:
    ``unsupported`` was told "these stay failed however often they run: the file is missing, unreadable, or one
    MegaDetector refuses", with nothing to do; saved again as RGB JPEGs (a new ETag) they run with only_new."""
    hint = failures_hint({"unsupported": 2, "undecodable": 1}, failed=3, images=10)
    assert "undecodable: these stay failed" in hint and "unsupported, undecodable" not in hint, hint
    assert "undecodable, unsupported" not in hint, hint
    assert "unsupported: these photos are readable but in a form MegaDetector refuses" in hint, hint
    assert "8-bit RGB JPEGs" in hint and '"only_new": true' in hint, hint


def test_an_image_too_thin_to_letterbox_is_not_told_it_runs_once_saved_again() -> None:
    """``unsupported`` covers an image too thin to letterbox (gpu_batch.worker.preprocess), which saved again as an RGB
    JPEG, or scaled down, is as thin: the advice listed it among those that then run."""
    line = next(a for a in advice({"unsupported": 1}) if a.startswith("unsupported: "))
    runs, _, rest = line.partition("they run when")
    assert "thin" not in runs, line
    assert "too thin" in rest and rest.rstrip().endswith("stays failed"), line
