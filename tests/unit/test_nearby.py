"""core.nearby: what "no images found" says is near a prefix that names nothing."""
from __future__ import annotations

import pytest

from core.nearby import NEARBY_NAMES, describe, nearby, parent_folder


@pytest.mark.parametrize("prefix, parent", [("a/b/c/", "a/b/"), ("a/b/c", "a/b/"), ("a/", ""), ("a", ""),
                                            ("site-a\\2024", "")])
def test_the_folder_above_a_prefix(prefix: str, parent: str) -> None:
    assert parent_folder(prefix) == parent


def test_a_prefix_that_differs_only_in_case_is_pointed_out() -> None:
    said = describe("Camera-01/", nearby("", ["camera-02/", "camera-01/"], 1, False))
    assert said == ("names are case-sensitive: 'camera-01/' differs from the prefix only in case; the container's "
                    "top level holds camera-01/, camera-02/ and files: give the prefix of the folder the images "
                    "are in")


def test_a_deeper_folder_is_named_and_a_long_listing_is_cut() -> None:
    names = [f"2024/site-a/cam{i:02d}/" for i in range(NEARBY_NAMES + 3)]  # whole prefixes, as the listing gives
    found = nearby("2024/site-a/", names, 0, False)
    assert len(found["names"]) == NEARBY_NAMES and found["more"]
    said = describe("2024/site-a/cam99/", found)
    assert said.startswith("folder '2024/site-a/' holds 2024/site-a/cam00/, 2024/site-a/cam01/") and ", ...:" in said
    assert "case-sensitive" not in said


def test_an_empty_container_says_to_upload_first() -> None:
    assert describe("", nearby("", [], 0, False)).startswith("the container is empty: upload the images first")
    assert nearby("", ["x" * 300], 0, False)["names"] == ["…" + "x" * 79]


def test_deep_folders_keep_the_end_of_their_names_which_tells_them_apart() -> None:
    """The listing gives whole prefixes (``activities.enumerate._nearby``, as ``BlobStore.list_level`` returns them):
    deep folders, cut from their end, all read ``2024/projects/...`` alike, their own names lost; the case hint,
    which compares a folder's own name, is given for them too."""
    folder = "2024/projects/wildlife-monitoring-network/region-north/site-a-upper-valley/"
    found = nearby(folder, [folder + "Camera-Trap-0001-North/", folder + "camera-trap-0002-south/"], 0, False)
    assert [len(n) for n in found["names"]] == [80, 80]
    assert [n[-23:] for n in found["names"]] == ["Camera-Trap-0001-North/", "camera-trap-0002-south/"]
    assert all(n.startswith("…") for n in found["names"])
    said = describe(folder + "camera-trap-0001-north/day1/", found)
    assert said.startswith("names are case-sensitive: '…"), said
    assert "Camera-Trap-0001-North/' differs from the prefix only in case" in said


def test_a_folder_of_files_alone_says_to_give_it_as_the_prefix() -> None:
    """Images directly in cam1/ while the prefix named cam1/day1/: run cam1/ itself."""
    assert describe("cam1/day1/", nearby("cam1/", [], 3, False)) == ("folder 'cam1/' holds files but no folders: "
                                                                      "give the prefix 'cam1/' to run them")
    assert describe("x/", nearby("", [], 3, False)).endswith("leave the prefix out to run them")


def test_a_windows_path_is_told_the_separator() -> None:
    said = describe("camera-01\\2024-06-01", nearby("", ["camera-01/"], 0, False))
    assert said == ("'/' separates folders in blob names, not '\\'; the container's top level holds camera-01/: "
                    "give the prefix of the folder the images are in"), said


def test_a_case_mismatch_below_the_top_level_is_pointed_out_too() -> None:
    """The listing gives a folder's folders as whole prefixes (``2024/site-a/``, as the plan's activity records them),
    which were compared with the prefix's part below that folder (``Site-A``) and never matched: the case hint was
    given at the top level only."""
    said = describe("2024/Site-A/cam1/", nearby("2024/", ["2024/site-b/", "2024/site-a/"], 0, False))
    assert said.startswith("names are case-sensitive: '2024/site-a/' differs from the prefix only in case; "), said
    assert "case-sensitive" not in describe("2024/site-c/", nearby("2024/", ["2024/site-a/"], 0, False))


def test_a_listing_cut_after_files_alone_does_not_say_the_folder_has_no_folders() -> None:
    """One request of ten names lists a folder's files and folders in name order, so ``IMG_0001.JPG`` ... fill it
    before ``day2/``: a folder of many photos and a day folder was said to hold "files but no folders"."""
    said = describe("cam1/Day2/", nearby("cam1/", [], NEARBY_NAMES, True))
    assert "no folders" not in said and "'cam1/'" in said, said


def test_names_are_quoted_as_written_not_python_escaped() -> None:
    """``repr`` doubled a backslash and put a name with an apostrophe in double quotes (``core.errors.quoted``); a
    character that would not show is still escaped, so a name that looks right but is not says why."""
    from core.errors import quoted

    assert quoted("2024\\site-a") == "'2024\\site-a'" and quoted("Bob's cams/") == "'Bob's cams/'"
    assert quoted("site\u200b-a") == "'site\\u200b-a'" and quoted("Étang/") == "'Étang/'"
    said = describe("Cams\\2024/", {"folder": "", "names": ["cams\\2024/"], "files": 0, "more": False})
    assert "'cams\\2024/' differs from the prefix only in case" in said and "\\\\" not in said, said
