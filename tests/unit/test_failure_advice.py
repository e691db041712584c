"""What a task's status, its notification and the preview page say to do about failed images
(``core.failure_advice``): a ``completed_with_errors`` status named how many failed and why, never what to do."""
from __future__ import annotations

import pytest

from core.failure_advice import advice, failures_hint


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


@pytest.mark.parametrize("failed", [0, -1])
def test_nothing_failed_gives_no_hint(failed: int) -> None:
    assert failures_hint({}, failed=failed, images=10) == ""


def test_a_status_without_reasons_still_says_where_each_failure_is() -> None:
    assert failures_hint({}, failed=2, images=10) == ("2 of 10 images failed; the failure beside each image in the "
                                                       "results says why.")
