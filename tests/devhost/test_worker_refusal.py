"""devhost refuses to start an app that the Azure Functions Python worker refuses to index, with the worker's message."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devhost.host import DevHost
from devhost.worker_indexing import WorkerIndexingError
from tests.devhost import refused_app

ROOT = Path(__file__).resolve().parents[2]
REFUSED_MESSAGE = "cannot load the double function: binding payload has invalid non-type annotation dict[str, typing.Any]"


def test_devhost_refuses_the_app_with_the_workers_message(storage_connection: str, unique_name: str) -> None:
    for _ in range(2):  # a second DevHost on the same app object is refused the same way (get_functions() ran once)
        with pytest.raises(WorkerIndexingError) as refused:
            DevHost(refused_app.app, storage_connection, task_hub=unique_name, port=0)
        assert refused.value.messages == [REFUSED_MESSAGE]
        assert "Fix:" in str(refused.value)


def test_python_m_devhost_exits_with_the_workers_message(storage_connection: str, tmp_path: Path) -> None:
    env = {**os.environ, "AzureWebJobsStorage": storage_connection}
    proc = subprocess.run([sys.executable, "-m", "devhost", "--app", "tests.devhost.refused_app:app",
                           "--port", "0", "--hub", "refused", "--key-file", str(tmp_path / "key")],
                          cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "devhost: not serving tests.devhost.refused_app:app" in proc.stderr
    assert REFUSED_MESSAGE in proc.stderr and "Fix:" in proc.stderr


def test_the_same_app_with_an_accepted_annotation_starts_and_runs(storage_connection: str, unique_name: str,
                                                                  tmp_path: Path) -> None:
    path = refused_app.write_variant(tmp_path, "Payload")  # a TypedDict class
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with DevHost(module.app, storage_connection, task_hub=unique_name, port=0, blob_poll_s=0.3) as host:
        st = host.wait_for(host.start_orchestration("doubler", {"n": 21}), 30)
    assert st["runtimeStatus"] == "Completed" and st["output"] == {"n": 42}, st
