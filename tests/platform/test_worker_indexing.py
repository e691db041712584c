"""function_app.py passes the published Azure Functions Python worker's own indexing (devhost/worker_indexing.py).

The worker runs every function through ``Registry.add_indexed_function`` when the host asks for metadata; one refused
function fails the whole app on Azure. These tests run that code (azure-functions-runtime, requirements/
platform-test.txt), not a re-implementation of its rules.

On b68f23d (main before this test) the app test fails: the worker refuses all 8 activities with "binding payload has
invalid non-type annotation dict[str, typing.Any]" (azure-functions-durable-python#468); their TypedDict annotations
(core/contracts.py) pass.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from devhost import worker_indexing
from devhost.worker_indexing import WorkerIndexingError, check_script
from tests.devhost import refused_app

ROOT = Path(__file__).resolve().parents[2]
REFUSED_MESSAGE = "cannot load the double function: binding payload has invalid non-type annotation dict[str, typing.Any]"


@pytest.fixture
def variants(tmp_path: Path) -> Iterator[Path]:
    """A folder for rewritten copies of tests/devhost/refused_app.py; their modules are forgotten afterwards."""
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("variant_app_"):
            del sys.modules[name]


def test_function_app_passes_the_workers_indexing() -> None:
    """The real app, in a fresh interpreter as the worker loads it (its folder on sys.path, module ``function_app``)."""
    proc = subprocess.run([sys.executable, "-m", "devhost.worker_indexing", "function_app.py"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-6000:] + proc.stdout[-2000:]
    assert "indexes all" in proc.stdout


def test_the_check_is_the_published_workers_code_and_a_dev_only_dependency() -> None:
    functions, loader, meta = worker_indexing._worker_modules()
    assert functions.__name__ == "azure_functions_runtime.functions"
    assert loader.process_indexed_function.__module__ == "azure_functions_runtime.loader"
    assert callable(functions.Registry.validate_function_params) and callable(meta.load_binding_registry)
    assert "azure-functions-runtime" not in (ROOT / "requirements" / "app.txt").read_text()  # Azure never installs it
    assert "azure-functions-runtime" in (ROOT / "requirements" / "platform-test.txt").read_text()


def test_a_dict_str_any_activity_parameter_is_refused_with_the_workers_message(variants: Path) -> None:
    with pytest.raises(WorkerIndexingError) as refused:
        check_script(refused_app.write_variant(variants, "dict[str, Any]"))
    assert refused.value.messages == [REFUSED_MESSAGE]
    assert REFUSED_MESSAGE in str(refused.value) and "Fix:" in str(refused.value)


@pytest.mark.parametrize("annotation", [
    "dict",                 # a class
    "Payload",              # a TypedDict class
    "str",
    "Any",                  # a class on Python 3.11+
    "Dict[str, Any]",       # typing-module generic aliases pass is_generic_type
    "Mapping[str, Any]",
    None,                   # unannotated
])
def test_the_same_app_with_an_accepted_parameter_annotation_is_indexed(variants: Path, annotation: str | None) -> None:
    """The return annotation stays ``dict[str, Any]``: an activity's return annotation is never checked."""
    metadata = check_script(refused_app.write_variant(variants, annotation))
    assert sorted(m.name for m in metadata) == ["double", "doubler", "start"]


@pytest.mark.parametrize("annotation, message", [
    ("list[int]", "binding payload has invalid non-type annotation list[int]"),
    ("dict[str, Any] | None", "binding payload has invalid non-type annotation dict[str, typing.Any] | None"),
    ("Optional[Dict[str, Any]]",
     "binding payload has invalid non-type annotation typing.Optional[typing.Dict[str, typing.Any]]"),
    ("NotImported", "NameError: name 'NotImported' is not defined"),  # string annotations are resolved
])
def test_other_refused_parameter_annotations(variants: Path, annotation: str, message: str) -> None:
    with pytest.raises(WorkerIndexingError) as refused:
        check_script(refused_app.write_variant(variants, annotation))
    assert len(refused.value.messages) == 1 and refused.value.messages[0].endswith(message)
    assert "Fix:" in str(refused.value)
