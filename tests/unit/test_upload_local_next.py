"""scripts/upload_local.py's last line: what to do after the upload."""
from __future__ import annotations

from scripts import upload_local


def test_after_uploading_requests_to_incoming_it_does_not_advise_submitting_that_container() -> None:
    """Uploading drop requests into ``incoming`` ended with "next: trapbatch submit --container incoming --wait",
    which the app refuses (incoming holds requests, not images): those requests start their tasks by themselves."""
    line = upload_local.next_step("incoming", "")
    assert "trapbatch submit" not in line and ".task.json" in line and ".error.json" in line
    assert upload_local.next_step("cams", "2024/a/") == "next: trapbatch submit --container cams --prefix 2024/a/ --wait"
