"""What a worker's exit code and log tell the orchestrator (gpu_batch.exit_codes)."""
from __future__ import annotations

import socket
import urllib.error
from pathlib import Path
from typing import Any

import pytest

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
    # without the worker's label: the status names the shard and attempt itself (orchestrations.shards)
    assert exit_codes.worker_error_message(LOG) == ("model '/m.pt' cannot be loaded: not a zip file "
                                                    "(see https://example/x: y)")
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


def test_a_model_that_cannot_be_downloaded_keeps_its_whole_advice_in_the_tasks_error(tmp_path: Path) -> None:
    """``submit --model MDV5A`` on a devhost without internet (run as the README shows it) failed the task with
    "... place it at /root/.cache/trapbatch/models/md_v5a.0.1.pt on each node (it is checked against …": the status
    keeps an error's first 500 characters, and the worker's label and the download's words came before the advice,
    whose other way out (the models container, ``blob://``) was cut. Composed here as the app composes it: the
    worker's error line (gpu_batch.worker.__main__), its message read from the log (activities.pool.worker_message)
    and the failed shard's text (orchestrations.shards), with a Batch node's cache folder."""
    from core.errors import failure_line
    from gpu_batch.worker.loader import ModelLoadError, resolve_model_file
    from orchestrations.shards import _unfixable

    def offline(url: str, dest: Path) -> None:
        raise urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))

    cache = tmp_path / "models"
    with pytest.raises(ModelLoadError) as raised:
        resolve_model_file("MDV5A", cache_dir=cache, downloader=offline, sleep=lambda s: None)
    on_a_node = str(raised.value).replace(str(cache), "/mnt/batch/tasks/shared/trapbatch/models")
    log = (f"2026-12-07 20:56:40,000 ERROR gpu_batch.worker.__main__: task=task-bbd7947beb3b85f8dc96 shard=s00000 "
           f"attempt=2 model 'MDV5A' cannot be loaded: {on_a_node}\n")
    row: Any = {"shard_id": "s00000", "attempt": 2, "exit_code": exit_codes.MODEL, "missing": 41,
                "failure_message": "the worker exited with code 3",
                "worker_message": exit_codes.worker_error_message(log)}
    failure = _unfixable(row)
    assert failure is not None
    error = failure_line(failure)
    assert error.startswith("the model cannot be loaded (shard s00000 attempt 2, worker exit code 3): model 'MDV5A'")
    assert "task=" not in error  # the label said again what the text names
    assert "put that file at /mnt/batch/tasks/shared/trapbatch/models/md_v5a.0.1.pt on each node" in error, error
    assert "TRAPBATCH_MODELS_CONTAINER) and request blob://<that container>/<name>" in error, error
