"""The preview page's note on failures by reason (``activities.previews._failures_note``) says what to do about
each kind the reader cannot tell from the photo."""
from __future__ import annotations


def test_the_failures_note_says_account_not_found_is_the_account_not_the_photos() -> None:
    """``account_not_found`` (the worker read the images' account's host as missing from DNS) is no photo's fault:
    the note says so, and what to check, instead of only "the file is missing, unreadable, or one MegaDetector
    refuses"; a note without it says nothing of the account."""
    from activities.previews import _failures_note

    note = _failures_note({"account_not_found": 1, "undecodable": 2})
    assert "account_not_found: not the photos" in note and "source_account_url" in note, note
    assert "exists" in note, note
    assert "source_account_url" not in _failures_note({"undecodable": 2})
