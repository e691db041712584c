"""``python -m devhost`` with a setting it refuses: one line saying which and why, exit 2, nothing started (as for a
missing AzureWebJobsStorage or a bad callers file), not a traceback."""
from __future__ import annotations

import pytest

from devhost.__main__ import main
from devhost.http_server import REQUEST_BODY_LIMIT_SETTING


def test_a_negative_request_body_limit_is_one_line_and_exit_2(storage_connection: str, unique_name: str,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A storage that answers, so that without the check devhost got as far as building its HTTP front, where the
    setting raised ValueError through ``main``."""
    monkeypatch.setenv(REQUEST_BODY_LIMIT_SETTING, "-1")
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection)
    assert main(["--app", "tests.devhost.sample_app:app", "--port", "0", "--hub", unique_name]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"devhost: {REQUEST_BODY_LIMIT_SETTING}=-1: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
