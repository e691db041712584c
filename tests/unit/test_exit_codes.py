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
    # storage that did not answer the manifest read: a passing cause (gpu_batch.worker.__main__._read_manifest)
    assert exit_codes.unfixable_reason(exit_codes.STORAGE_UNAVAILABLE) is None


def test_every_named_exit_code_is_distinct() -> None:
    named = {name: value for name, value in vars(exit_codes).items() if name.isupper() and isinstance(value, int)}
    assert len(set(named.values())) == len(named), named


def test_the_workers_last_error_line_is_its_message() -> None:
    assert exit_codes.worker_error_message(LOG) == ("task=t shard=s00000 attempt=1 model '/m.pt' cannot be loaded: "
                                                    "not a zip file (see https://example/x: y)")
    assert exit_codes.worker_error_message("no errors here\n") == ""


def test_the_exit_code_numbers_are_a_contract_between_separately_deployed_worker_and_app() -> None:
    """The worker image (gpu_batch/Dockerfile) and the Function App are deployed apart, and a pool may run an older
    worker than the app: the numbers, not the names, cross between them."""
    assert (exit_codes.OK, exit_codes.BAD_INPUT, exit_codes.MODEL, exit_codes.OUTPUT, exit_codes.SOURCE,
            exit_codes.OUTPUT_TAKEN, exit_codes.SERVER_LOST, exit_codes.STORAGE_UNAVAILABLE,
            exit_codes.CANCELLED) == (0, 2, 3, 4, 5, 73, 75, 69, 143)
    assert exit_codes.unfixable_reason(exit_codes.CANCELLED) is None  # a stopped shard resumes on its next attempt


def test_the_pool_ended_a_task_only_with_its_failure_code_or_a_failure_without_an_exit() -> None:
    assert exit_codes.pool_ended(None, None, "the pool cannot pull the worker image")
    assert exit_codes.pool_ended(0xC000013A, exit_codes.TASK_ENDED, None)
    assert not exit_codes.pool_ended(None, None, None)  # no exit and no failure: nothing says the pool ended it
    assert not exit_codes.pool_ended(3, None, "model")


def test_an_error_line_without_a_logger_prefix_is_its_own_message() -> None:
    assert exit_codes.worker_error_message("2026-12-01 15:00:02,456 ERROR out of memory\n") == "out of memory"
