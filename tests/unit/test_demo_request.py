"""The demo's request: what its files say about the model that made them."""
from __future__ import annotations

import dataclasses

import pytest

from core import readme, requests
from scripts import demo
from tests.unit.test_readme import FACTS, FILES


@pytest.mark.parametrize("random_weights", [True, False])
def test_the_demo_names_its_random_weight_model_where_its_files_carry_the_tasks_name(random_weights: bool) -> None:
    """``make demo`` without TRAPBATCH_MODEL runs random weights: the console said the detections are meaningless,
    but the files handed on (README.txt, the Camtrap DP package's title, COCO's description: the request's name)
    did not, so an ecologist given them took 80 boxes of noise for animals."""
    parsed = requests.parse_task_request(demo.demo_request(random_weights), default_model="m.pt")
    assert ("meaningless" in parsed.request_name) is random_weights
    assert parsed.camera_depth == 1
    text = readme.readme_text(dataclasses.replace(FACTS, request_name=parsed.request_name), FILES)
    assert text.splitlines()[0] == f"trapbatch results: {parsed.request_name}"
