"""The documents against the repository: what README.md, docs/ and devhost/README.md name must exist with that name.

Why: the docs are the operator's manual, and each of these drifted once without a test noticing (settings and their
bounds are checked in test_settings.py, the CLI's commands and options in test_cli.py, the request fields and their
ranges in test_openapi.py)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "devhost" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _doc_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in DOCS)


def test_every_make_target_is_in_the_readme_and_every_one_named_exists() -> None:
    """``make bench`` and ``make clean`` were in the Makefile only; a ``make X`` the docs show that the Makefile
    lacks fails at once for whoever copies it."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split())  # type: ignore[union-attr]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert sorted(t for t in targets if not re.search(rf"`(?:[A-Z_]+=\S+ )*make {t}\b", readme)) == []
    named = set(re.findall(r"`(?:[A-Z_]+=\S+ )*make ([a-z][a-z-]*)", _doc_text()))
    assert sorted(named - targets) == []
    # the Makefile's own variables the docs tell users to set exist there
    for variable in set(re.findall(r"`make [a-z-]+ ([A-Z_]+)=", _doc_text())):
        assert re.search(rf"^{variable} \??=", makefile, re.M), variable
