"""What a worker's exit code and log tell the orchestrator (gpu_batch.exit_codes)."""
from __future__ import annotations

from gpu_batch import exit_codes

LOG = """2026-12-01 15:00:01,123 INFO gpu_batch.worker.__main__: task=t shard=s00000 attempt=1: loading model
2026-12-01 15:00:02,456 ERROR gpu_batch.worker.__main__: task=t shard=s00000 attempt=1 model '/m.pt' cannot be loaded: \
not a zip file (see https://example/x: y)
{"images": 10, "done": 0}
"""


def test_unfixable_codes_are_exactly_manifest_model_and_source() -> None:
    assert {code for code in range(256) if exit_codes.unfixable_reason(code)} == {2, 3, 5}
    assert exit_codes.unfixable_reason(None) is None and exit_codes.unfixable_reason(exit_codes.OUTPUT) is None
    # a run that stopped because another run of its attempt took the output: the next attempt runs what is missing
    assert exit_codes.unfixable_reason(exit_codes.OUTPUT_TAKEN) is None


def test_every_named_exit_code_is_distinct() -> None:
    named = {name: value for name, value in vars(exit_codes).items() if name.isupper() and isinstance(value, int)}
    assert len(set(named.values())) == len(named), named


def test_the_workers_last_error_line_is_its_message() -> None:
    assert exit_codes.worker_error_message(LOG) == ("task=t shard=s00000 attempt=1 model '/m.pt' cannot be loaded: "
                                                    "not a zip file (see https://example/x: y)")
    assert exit_codes.worker_error_message("no errors here\n") == ""
