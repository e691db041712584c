"""Fixtures of the infra checks: every .bicep file parsed once per session with the parser checkov uses.

The parser and checkov live in .venv/infra (requirements/infra-test.txt, installed by `make setup-test`); when it is
missing the tests FAIL with that hint, they never skip (CI must not pass an unchecked infra/).
"""
from __future__ import annotations

import pytest

from tests.infra.bicep_model import Template, load_templates


@pytest.fixture(scope="session")
def templates() -> dict[str, Template]:
    try:
        return load_templates()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
