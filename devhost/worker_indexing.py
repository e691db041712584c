"""Index a v2-model Functions app through the published Azure Functions Python worker's own code.

When the host asks for function metadata, the worker imports ``function_app.py`` and runs every function through
``loader.process_indexed_function`` -> ``functions.Registry.add_indexed_function`` (``typing.get_type_hints``,
``validate_function_params``, ``get_function_return_type``). One refused function fails the whole metadata request, so
Azure then runs none of the app. devhost's own index (``functions.index_app``) never ran those checks: this module
runs them with the worker's code (``azure_functions_runtime``, from ``requirements/platform-test.txt``), not a copy of
its rules. Only the host's protobuf messages are stood in for (``worker_protos``): the enum values the worker compares
bindings against, and plain records for the messages it builds.

The worker stops at the first refused function; ``check_functions`` runs each one and reports every refusal, each
with the worker's exact message.

Test/dev only: azure-functions-runtime is installed by ``make setup`` (``--no-deps --ignore-requires-python``: it pins
Python >= 3.13, the host version Microsoft ships it for; its indexing code is pure Python and is the same code as
the Python <= 3.12 worker's, which is not on PyPI). ``requirements/app.txt``, what Azure installs, does not name it.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Iterable

WORKER_PACKAGE = "azure_functions_runtime"
INSTALL_HINT = ("install the published worker's indexing code with `make setup`, or by hand: "
                ".venv/bin/pip install --no-deps --ignore-requires-python -r requirements/platform-test.txt")
ANNOTATION_HINT = (
    "the worker only accepts a binding parameter annotation that is a class (dict, str, list, a TypedDict or other "
    "class) or a typing-module generic (typing.Dict[str, Any], typing.List[str], typing.Mapping[str, Any]); builtin "
    "generics such as dict[str, Any] or list[str], and unions (X | None, Optional[X]), are refused "
    "(upstream azure-functions-durable-python#468). Annotations are resolved with typing.get_type_hints, so string "
    "annotations (from __future__ import annotations) count as what they name. Return annotations are checked only "
    "for an explicit $return binding (HTTP's), not for activities or orchestrators.")


class WorkerUnavailableError(RuntimeError):
    """The worker's package is not installed, so the app cannot be checked."""


class WorkerIndexingError(RuntimeError):
    """The worker refuses to index the app. ``messages``: the worker's own messages, one per refused function."""

    def __init__(self, failures: list[tuple[str, BaseException]], total: int | None) -> None:
        self.failures = failures
        self.messages = [_worker_message(exc) for _, exc in failures]
        if total is None:  # the worker's loader could not even import the script or find its app
            lines = ["the Azure Functions Python worker cannot load this app, so on Azure none of it would run:"]
        else:
            lines = [f"the Azure Functions Python worker refuses to index this app: it refuses {len(failures)} of its "
                     f"{total} functions, and on Azure one refused function fails the whole app, so none of it "
                     "would run:"]
        lines += [f"  - {m}" for m in self.messages]
        if any("annotation" in m for m in self.messages):
            lines.append("Fix: " + ANNOTATION_HINT)
        if any(m.startswith("NameError") for m in self.messages):
            lines.append("Fix: the worker resolves every annotation with typing.get_type_hints in the function's "
                         "module, so each name an annotation uses must be importable there at run time (not only "
                         "under `if TYPE_CHECKING:`).")
        super().__init__("\n".join(lines))


def _worker_message(exc: BaseException) -> str:
    """What the worker reports: FunctionLoadError's own text ("cannot load the X function: ..."), else the exception."""
    if type(exc).__name__ == "FunctionLoadError":
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _worker_modules() -> tuple[ModuleType, ModuleType, ModuleType]:
    try:
        functions = importlib.import_module(f"{WORKER_PACKAGE}.functions")
        loader = importlib.import_module(f"{WORKER_PACKAGE}.loader")
        meta = importlib.import_module(f"{WORKER_PACKAGE}.bindings.meta")
    except ImportError as exc:
        raise WorkerUnavailableError(f"cannot check the app against the Azure Functions Python worker ({exc}): "
                                     + INSTALL_HINT) from exc
    return functions, loader, meta


class _Message:
    """A protobuf message the worker builds (BindingInfo, RpcRetryOptions, RpcFunctionMetadata): kept as attributes."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__!r})"


class _BindingInfo(_Message):
    """FunctionRpc.proto ``BindingInfo``; its enums are plain ints in protobuf's Python classes, as here.

    enum Direction { in = 0; out = 1; inout = 2; }   (``in`` is a Python keyword: protobuf exposes it by getattr)
    enum DataType { undefined = 0; string = 1; binary = 2; stream = 3; }
    """

    out = 1
    inout = 2
    undefined = 0
    string = 1
    binary = 2
    stream = 3


setattr(_BindingInfo, "in", 0)


def worker_protos() -> SimpleNamespace:
    """The minimal stand-in for the host's ``protos`` module that the worker's indexing path touches."""
    return SimpleNamespace(BindingInfo=_BindingInfo, RpcRetryOptions=type("RpcRetryOptions", (_Message,), {}),
                           RpcFunctionMetadata=type("RpcFunctionMetadata", (_Message,), {}))


def _source_dir(functions: list[Any]) -> str | None:
    try:
        return str(Path(inspect.getfile(functions[0].get_user_function())).parent) if functions else None
    except TypeError:  # a file-less callable: the worker itself refuses it (inspect.getfile in add_indexed_function)
        return None


def check_functions(functions: Iterable[Any], function_dir: str | os.PathLike[str] | None = None) -> list[Any]:
    """Run each indexed function (``app.get_functions()``'s items) through the worker's indexing.

    Returns the worker's function metadata records (one per function); raises ``WorkerIndexingError`` naming every
    function the worker refuses, with the worker's messages. ``function_dir`` (only recorded in the metadata, as the
    host's function app directory): default, the folder of the first function's file.
    """
    functions = list(functions)
    worker_functions, loader, meta = _worker_modules()
    meta.load_binding_registry()
    protos = worker_protos()
    registry = worker_functions.Registry()
    directory = str(function_dir or _source_dir(functions) or os.getcwd())
    results: list[Any] = []
    failures: list[tuple[str, BaseException]] = []
    for function in functions:
        try:
            metadata, _logs = loader.process_indexed_function(protos, registry, [function], directory)
        except Exception as exc:  # FunctionLoadError, or e.g. NameError from typing.get_type_hints
            failures.append((function.get_function_name(), exc))
        else:
            results.extend(metadata)
    if failures:
        raise WorkerIndexingError(failures, len(functions))
    return results


def check_app(app: Any) -> list[Any]:
    """``check_functions(app.get_functions())``. NB ``get_functions()`` may be called only once on an app with
    blueprints (a second call raises "does not have a unique function name"); ``devhost.functions.index_app`` checks
    its own cached list instead."""
    return check_functions(app.get_functions())


def check_script(script: str | os.PathLike[str]) -> list[Any]:
    """Index a script file (``function_app.py``) the way the worker loads it: its folder on ``sys.path``, then the
    worker's own ``loader.index_function_app`` (imports the module by its file name, finds the one top-level
    FunctionApp, calls ``get_functions()``).

    The worker does this in a fresh process. Here a module already imported under that name is reused, and if its
    app's ``get_functions()`` already ran, the SDK refuses a second call ("does not have a unique function name"):
    check an app that this process already serves in a fresh one (``python -m devhost.worker_indexing``)."""
    _, loader, _ = _worker_modules()
    path = Path(script).resolve()
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        functions = loader.index_function_app(str(path))
    except Exception as exc:  # what the worker reports when the import (or finding the app) fails
        raise WorkerIndexingError([(str(path), exc)], None) from exc
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    return check_functions(functions, path.parent)


def main(argv: list[str] | None = None) -> int:
    """``python -m devhost.worker_indexing [function_app.py]``: index a script as the worker would, in this process."""
    import argparse
    from importlib.metadata import PackageNotFoundError, version

    parser = argparse.ArgumentParser(prog="python -m devhost.worker_indexing", description=main.__doc__)
    parser.add_argument("script", nargs="?", default="function_app.py")
    args = parser.parse_args(argv)
    try:
        results = check_script(args.script)
    except WorkerUnavailableError as exc:
        print(exc, file=sys.stderr)
        return 2
    except WorkerIndexingError as exc:
        print(f"{args.script}: {exc}", file=sys.stderr)
        return 1
    try:
        worker = f"azure-functions-runtime {version('azure-functions-runtime')}"
    except PackageNotFoundError:
        worker = WORKER_PACKAGE
    print(f"{args.script}: the Azure Functions Python worker ({worker}) indexes all {len(results)} functions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
