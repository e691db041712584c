"""checkov over infra/ (framework bicep): no failed check, every suppression explained and still needed.

Runs in `make test` (CI) like every other test: about 5 s on a CI machine. checkov and the pycep-parser it scans
with come from .venv/infra (requirements/infra-test.txt). A check that does not apply is suppressed inline, inside
the resource, as `// checkov:skip=CKV_...:<reason>`; docs/deploy.md lists them all.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep_model import INFRA, REPO, bicep_files, infra_tool

SKIP = re.compile(r"checkov:skip=([A-Z0-9_]+):(.*)")


def run_checkov(directory: Path) -> dict[str, Any]:
    try:
        checkov = infra_tool("checkov")
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    # --skip-download: no call to Prisma Cloud for guidelines (our machines reach only package registries)
    proc = subprocess.run([str(checkov), "--directory", str(directory), "--framework", "bicep", "--skip-download",
                           "--output", "json"], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "LOG_LEVEL": "WARNING"})
    assert proc.returncode in (0, 1), f"checkov crashed ({proc.returncode}): {proc.stderr[-3000:]}"
    data = json.loads(proc.stdout)
    result: dict[str, Any] = data[0] if isinstance(data, list) else data
    assert result.get("check_type") == "bicep", result.get("check_type")
    return result


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return run_checkov(INFRA)


@pytest.fixture(scope="module")
def unsuppressed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """checkov over a copy of infra/ with every `checkov:skip` comment removed: what each suppression hides."""
    copy = tmp_path_factory.mktemp("infra") / "infra"
    shutil.copytree(INFRA, copy)
    for path in copy.rglob("*.bicep"):
        path.write_text("".join(line for line in path.read_text().splitlines(keepends=True) if not SKIP.search(line)))
    return run_checkov(copy)


def inline_skips() -> dict[tuple[str, str], str]:
    """{(file relative to infra/, check id): reason} of every `checkov:skip` comment."""
    out = {}
    for path in bicep_files():
        for line in path.read_text().splitlines():
            match = SKIP.search(line)
            if match:
                out[(path.relative_to(INFRA).as_posix(), match.group(1))] = match.group(2).strip()
    return out


def test_checkov_parsed_every_file_and_no_check_fails(report: dict[str, Any]) -> None:
    summary = report["summary"]
    assert summary["parsing_errors"] == 0, report["results"].get("parsing_errors")
    failed = [(c["check_id"], c["resource"], c["file_path"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert not failed, "checkov failed checks (fix them, or suppress one that does not apply with a reason):\n" + \
        "\n".join(map(str, failed))
    scanned = {c["file_path"].lstrip("/") for kind in ("passed_checks", "skipped_checks")
               for c in report["results"][kind]}
    with_checks = {"core/storage/storage-account.bicep", "core/security/keyvault.bicep", "app/api.bicep",
                   "app/batch.bicep", "core/host/container-registry.bicep"}
    assert with_checks <= scanned, with_checks - scanned


def test_every_suppression_has_a_reason_and_is_still_needed(report: dict[str, Any],
                                                             unsuppressed: dict[str, Any]) -> None:
    skips = inline_skips()
    assert skips, "expected the documented suppressions"
    short = {k: v for k, v in skips.items() if len(v) < 30}
    assert not short, f"suppressions need a reason a reviewer can judge: {short}"
    reported = {(c["file_path"].lstrip("/"), c["check_id"]) for c in report["results"]["skipped_checks"]}
    unexplained = reported - set(skips)
    assert not unexplained, f"skipped without an inline reason: {sorted(unexplained)}"
    # checkov reports a suppressed check as skipped whether or not it would fail: the run without the comments says
    # which ones are needed. Both directions: nothing suppressed that passes, nothing failing that is not suppressed.
    failing = {(c["file_path"].lstrip("/"), c["check_id"]) for c in unsuppressed["results"]["failed_checks"]}
    assert set(skips) == failing, {"suppressed but passing": sorted(set(skips) - failing),
                                   "failing without suppression": sorted(failing - set(skips))}


def test_docs_list_every_suppression() -> None:
    doc = (REPO / "docs" / "deploy.md").read_text()
    missing = sorted({check for _, check in inline_skips()} - set(re.findall(r"CKV2?_AZURE_\d+", doc)))
    assert not missing, f"docs/deploy.md does not mention suppressed checks {missing}"


def test_the_docs_give_checkovs_own_summary(report: dict[str, Any]) -> None:
    """docs/deploy.md "Static checks" states checkov's result and version for a reviewer who does not run it: a
    check added, passing or suppressed since (a new resource, a checkov upgrade) left those figures behind."""
    summary = report["summary"]
    doc = " ".join((REPO / "docs" / "deploy.md").read_text().split())
    said = (f"checkov result: **{summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} "
            f"suppressed**, {summary['parsing_errors']} parsing errors")
    assert said in doc, said
    assert f"(`checkov -d infra --framework bicep`, {summary['checkov_version']})" in doc
