"""What a container holds near a prefix that holds nothing, so "no images found" says what to write instead.

Why: a prefix that names nothing (``Camera-01/`` for ``camera-01/``, the container's name repeated in front,
``site-a\\2024`` from a Windows path, a folder not uploaded yet) failed with "check the container and prefix", and
the operator had to list the container by other means to find the folder meant. The plan's listing, having found
nothing under the prefix, lists the folder above it (and above that, up to the top: a few names each, one request a
level) and the task's error names what is there.

Folder names enter the orchestration history through this, as the status's ``clock_corrections_unmatched`` folders
do: at most ``NEARBY_NAMES`` of them, each cut to ``NAME_CHARS``. Never a blob's name (an image's: the enumeration
keeps image names out of the history, ``orchestrations.enumeration``): the files beside those folders are only
counted.

Pure: no I/O. The activity (``activities.enumerate.run_plan_listing``) lists; this module decides where and says it.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from core.errors import quoted

NEARBY_NAMES = 10  # names shown: enough to spot a typo, few enough for one listing request and a readable error
NAME_CHARS = 80  # a name longer than this is cut (a blob name may have 1,024 characters)


def _cut(name: str) -> str:
    """``name`` in at most ``NAME_CHARS`` characters: its start dropped for "…", so a folder deep in the container
    keeps its own name, the part that tells it from its siblings (their start, the folder listed, is said apart)."""
    return name if len(name) <= NAME_CHARS else "…" + name[len(name) - NAME_CHARS + 1:]


def parent_folder(prefix: str) -> str:
    """The folder above ``prefix``, as a listing prefix ending in ``/`` (``""``: the container's top).
    ``a/b/c/`` and ``a/b/c`` -> ``a/b/``; ``a/`` and ``a`` -> ``""``."""
    head, slash, _ = prefix.rstrip("/").rpartition("/")
    return head + slash


def nearby(folder: str, folders: Sequence[str], files: int, more: bool) -> dict[str, Any]:
    """The plan's ``nearby`` (JSON-ready): the folder listed, the first folders found in it (their whole prefixes,
    ending in ``/``), each cut to its last ``NAME_CHARS`` characters (``_cut``), and how many files beside them (of
    those listed); ``more`` when it holds others."""
    shown = [_cut(n) for n in sorted(folders)[:NEARBY_NAMES]]
    return {"folder": folder, "names": shown, "files": files, "more": more or len(folders) > NEARBY_NAMES}


def describe(prefix: str, found: Mapping[str, Any]) -> str:
    """What to write instead of ``prefix``, from the plan's ``nearby``: ``"the container is empty: upload the images
    first"``, or which name differs from the prefix only in letter case and where the names are."""
    folder, names = str(found.get("folder") or ""), [str(n) for n in found.get("names") or []]
    files = int(found.get("files") or 0)
    where = f"folder {quoted(folder)}" if folder else "the container's top level"
    if not names and not files:
        return "the container is empty: upload the images first, or name the container they are in"
    run = (f"give the prefix {quoted(folder)}" if folder else "leave the prefix out") + " to run them"
    if not names and found.get("more"):  # the one request's names were all files: folders may come after them
        return (f"{where} holds files, more than the {files} listed (its folders, if any, come after them in name "
                f"order): {run}, or a folder of it")
    if not names:
        return f"{where} holds files but no folders: {run}"
    listed = ", ".join(names) + (", ..." if found.get("more") else "") + (" and files" if files else "")
    wanted = prefix[len(folder):].split("/", 1)[0]  # the prefix's part that names nothing here
    # The listing's folders are whole prefixes (``2024/site-a/``), their start cut where long (``_cut``): their last
    # part, the folder's own name below ``folder``, is what the prefix's ``wanted`` part is compared with (a bare
    # name, as a test may give, is taken as it is).
    below = {n: n.rstrip("/").rpartition("/")[2] for n in names}
    same_but_case = [n for n in names if below[n].lower() == wanted.lower() and below[n] != wanted]
    # What was wrong comes first: the status keeps the error's first 500 characters (core.errors.failure_line), and
    # ten folders a few levels deep fill them
    case = (f"names are case-sensitive: {quoted(same_but_case[0])} differs from the prefix only in case; "
            if same_but_case else "")
    slash = "'/' separates folders in blob names, not '\\'; " if "\\" in prefix else ""  # a Windows path
    return f"{case}{slash}{where} holds {listed}: give the prefix of the folder the images are in"
