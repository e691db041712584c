"""The layering rules, written once, checked on the import graph of every module (lazy imports inside functions too).

    gpu_batch        the GPU worker and pools: stands alone on the nodes, imports nothing of the app
    core             pure logic: core, and only gpu_batch's contract modules (pure, torch- and azure-free)
    adapters         clients of the outside world: core, adapters, gpu_batch's contracts
    orchestrations   deterministic orchestrators: core, orchestrations, the blob layout, shard contract and exit
                     codes; never an activity, never an adapter (no I/O)
    activities       I/O steps: core, adapters, activities, gpu_batch's contracts; never an orchestrator
    api              HTTP and blob-drop edges: core, adapters, api, the blob layout and model names; never an activity
    devhost          the stand-in for the Functions host: nothing of the app (it loads function_app by name)
    cli              the operator's ``trapbatch`` command (runs on a laptop, talks HTTP): core's pure modules and
                     gpu_batch's pure ``formats`` (which core imports already: nothing more to install)
    function_app     registers the blueprints of activities, api and orchestrations, and sets the process's
                     collector thresholds (``core.collector``) and SDK log level (``gpu_batch.sdk_logging``)

gpu_batch's contracts are ``layout`` (blob names, ids), ``manifest`` (the shard document), ``exit_codes`` (what a
worker's exit means), ``models`` (the published detectors by name), ``pool`` (the pool
interface and its clients), ``storage_refs`` (source-account references) and ``formats`` (the per-image formats the
worker's merge view and the app's merge both write: pure, importing only ``formats`` and ``manifest``);
``gpu_batch.worker`` (torch) is for the nodes only.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ("core", "adapters", "activities", "orchestrations", "api", "gpu_batch", "devhost", "cli", "function_app")
CONTRACTS = ("gpu_batch.layout", "gpu_batch.manifest", "gpu_batch.exit_codes", "gpu_batch.models", "gpu_batch.pool",
             "gpu_batch.storage_refs", "gpu_batch.formats")
ALLOWED: dict[str, tuple[str, ...]] = {
    "gpu_batch": ("gpu_batch",),
    "core": ("core", "gpu_batch.layout", "gpu_batch.manifest", "gpu_batch.formats"),
    "adapters": ("core", "adapters", *CONTRACTS),
    "orchestrations": ("core", "orchestrations", "gpu_batch.layout", "gpu_batch.manifest", "gpu_batch.exit_codes"),
    "activities": ("core", "adapters", "activities", *CONTRACTS),
    "api": ("core", "adapters", "api", "gpu_batch.layout", "gpu_batch.models"),
    "devhost": ("devhost",),
    "cli": ("core", "cli", "gpu_batch.formats"),
    "function_app": ("activities", "api", "orchestrations", "core.collector", "gpu_batch.sdk_logging"),
}


def _modules() -> list[Path]:
    files = [ROOT / "function_app.py"]
    for package in APP[:-1]:
        files += [p for p in (ROOT / package).rglob("*.py") if "tests" not in p.relative_to(ROOT).parts]
    return sorted(files)


def _imports(path: Path) -> set[str]:
    """Every app module a file imports, as dotted names (``from x import y`` counts ``x.y`` when y is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if (ROOT / node.module.replace(".", "/") / f"{alias.name}.py").exists()
                         or (ROOT / node.module.replace(".", "/") / alias.name).is_dir())
    return {name for name in found if name.split(".")[0] in APP}


def _allowed(name: str, rules: tuple[str, ...]) -> bool:
    return any(name == rule or name.startswith(rule + ".") or rule.startswith(name + ".") for rule in rules)


def test_every_app_package_has_a_rule() -> None:
    assert set(ALLOWED) == set(APP)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layering(path: Path) -> None:
    layer = path.relative_to(ROOT).parts[0].removesuffix(".py")
    bad = sorted(name for name in _imports(path) if not _allowed(name, ALLOWED[layer]))
    assert not bad, f"{path.relative_to(ROOT)} ({layer}) imports {bad}; {layer} may import only {ALLOWED[layer]}"


def test_the_checker_sees_lazy_and_from_imports(tmp_path: Path) -> None:
    """The rule test itself must catch what it is for: an import hidden in a function, and a ``from`` import."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from activities.merge import run_merge\n    import gpu_batch.worker.loader\n")
    assert {"activities.merge", "gpu_batch.worker.loader"} <= _imports(sample)
    assert not _allowed("activities.merge", ALLOWED["orchestrations"])
    assert not _allowed("gpu_batch.worker.loader", ALLOWED["activities"])
    assert _allowed("gpu_batch.layout", ALLOWED["orchestrations"])


@pytest.mark.parametrize("path", sorted((ROOT / "gpu_batch" / "formats").glob("*.py")), ids=lambda p: p.name)
def test_the_shared_formats_import_only_formats_and_the_manifest(path: Path) -> None:
    """``gpu_batch.formats`` runs in the worker image and in the app alike: no torch, no storage, nothing of either."""
    bad = sorted(name for name in _imports(path) if not _allowed(name, ("gpu_batch.formats", "gpu_batch.manifest")))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    third_party = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                   for alias in node.names} | {node.module.split(".")[0] for node in ast.walk(tree)
                                               if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    assert third_party <= {"__future__", "collections", "csv", "dataclasses", "datetime", "functools", "hashlib",
                           "heapq", "io", "json", "math", "orjson", "posixpath", "re", "struct", "typing",
                           "unicodedata", "uuid", "gpu_batch"}, \
        third_party


def test_the_readmes_layering_paragraph_states_these_rules() -> None:
    """README "Architecture" restates the rules above for whoever adds a module; it had drifted from them (``core``
    without ``gpu_batch.formats``, ``orchestrations`` without the exit codes, ``api`` without the model names, and
    ``cli`` and ``function_app`` not at all), so a newcomer following it would wrongly avoid, or be surprised by,
    imports the rules allow. Each layer's clause names exactly what ALLOWED gives it besides itself ("gpu_batch's
    contracts" standing for CONTRACTS)."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = " ".join(readme.split("\nLayering (", 1)[1].split("\n\n", 1)[0].split())
    stated: dict[str, set[str]] = {}
    unnamed = []
    for clause in paragraph.split("):", 1)[1].split("; "):
        layer = re.match(r"\s*`(\w+)`", clause)  # each clause opens with its layer: "`api` `core`, `adapters` ..."
        if not layer:
            unnamed.append(clause)
            continue
        named = set(re.findall(r"`([\w.]+)`", clause[layer.end():]))
        stated[layer.group(1)] = named | (set(CONTRACTS) if "gpu_batch's contracts" in clause else set())
    assert unnamed == [], "each clause of README's layering paragraph opens with its layer in backticks"
    assert sorted(stated) == sorted(ALLOWED)
    differ = {layer: sorted(stated[layer] ^ (set(rules) - {layer})) for layer, rules in ALLOWED.items()
              if stated[layer] != set(rules) - {layer}}
    assert differ == {}
