"""scripts/upload_local.py's last line: what to do after the upload."""
from __future__ import annotations

from scripts import upload_local


def test_after_uploading_requests_to_incoming_it_does_not_advise_submitting_that_container() -> None:
    """Uploading drop requests into ``incoming`` ended with "next: trapbatch submit --container incoming --wait",
    which the app refuses (incoming holds requests, not images): those requests start their tasks by themselves."""
    line = upload_local.next_step("incoming", "")
    assert "trapbatch submit" not in line and ".task.json" in line and ".error.json" in line
    assert upload_local.next_step("cams", "2024/a/") == "next: trapbatch submit --container cams --prefix 2024/a/ --wait"


def test_a_request_or_marker_whose_time_moved_goes_up_again_even_with_the_same_bytes() -> None:
    """A photo whose time alone moved is not sent again (its MD5 is the blob's), but writing the start-on-arrival
    marker or a request in ``incoming`` again is how a refused one is tried again (README), so those are sent."""
    assert upload_local.rewrite_starts_something("cams", "trapbatch-ready.json")
    assert upload_local.rewrite_starts_something("incoming", "site-a.json")
    assert not upload_local.rewrite_starts_something("cams", "cam/trapbatch-ready.json")
    assert not upload_local.rewrite_starts_something("cams", "cam/IMG_0001.JPG")
