"""Reading pycep-parser's JSON form of a Bicep file: symbols, bodies, references, loops.

pycep gives one JSON tree per file (parameters, variables, resources, modules, outputs). An identifier and a string
literal are both plain strings there ('storage' may be the symbol or the text), so the helpers resolve a string as a
variable, parameter, resource or module only where the file declares that symbol. Expressions are dicts such as
{"operator": {"type": "property_accessor", "operands": {...}}} or {"function": {"type": "guid", "parameters": {...}}}.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
INFRA_VENV = Path(os.environ.get("TRAPBATCH_INFRA_VENV", REPO / ".venv" / "infra"))
SETUP_HINT = "run `make setup-test` (it installs requirements/infra-test.txt into .venv/infra)"


def infra_tool(name: str) -> Path:
    """A program of .venv/infra (python, checkov); the reason and the fix when it is missing."""
    path = INFRA_VENV / "bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {SETUP_HINT}")
    return path


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def parse_files(paths: list[Path]) -> dict[str, Any]:
    """{str(path): {"ok", "template" | "error"}} from tests/infra/parse_bicep.py run in .venv/infra."""
    proc = subprocess.run([str(infra_tool("python")), str(Path(__file__).with_name("parse_bicep.py")),
                           *map(str, paths)], capture_output=True, text=True, timeout=300, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"parse_bicep.py failed ({proc.returncode}): {proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def accessor_chain(expr: Any) -> list[str] | None:
    """['storage', 'outputs', 'name'] for `storage.outputs.name`; None for anything else."""
    if isinstance(expr, dict) and isinstance(expr.get("operator"), dict) \
            and expr["operator"].get("type") == "property_accessor":
        ops = expr["operator"]["operands"]
        head, tail = ops.get("operand_1"), ops.get("operand_2")
        left = [head] if isinstance(head, str) else accessor_chain(head)
        right = [tail] if isinstance(tail, str) else accessor_chain(tail)
        if left is None or right is None:
            return None
        return left + right
    return None


def walk(node: Any) -> Iterator[Any]:
    """Every dict, list and scalar below ``node`` (itself included)."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def loops(node: Any) -> Iterator[dict[str, Any]]:
    """Every for-loop below ``node``: pycep marks one with a ``loop_type`` key beside its body."""
    for item in walk(node):
        if isinstance(item, dict) and isinstance(item.get("loop_type"), dict):
            yield item


IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class Template:
    path: Path
    data: dict[str, Any]
    params: dict[str, Any] = field(init=False)
    variables: dict[str, Any] = field(init=False)
    resources: dict[str, Any] = field(init=False)
    modules: dict[str, Any] = field(init=False)
    outputs: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.params = self.data.get("parameters") or {}
        self.variables = self.data.get("variables") or {}
        self.resources = self.data.get("resources") or {}
        self.modules = self.data.get("modules") or {}
        self.outputs = self.data.get("outputs") or {}

    @property
    def name(self) -> str:
        path = self.path if self.path.is_absolute() else REPO / self.path
        return path.relative_to(INFRA).as_posix() if path.is_relative_to(INFRA) else path.name

    # ------------------------------------------------------------------ symbols
    def body(self, symbol: str) -> dict[str, Any]:
        """The `{...}` of a resource or module, under any `if (...)` or `for ... in ...:`."""
        entry = self.resources.get(symbol) or self.modules[symbol]
        config: dict[str, Any] = entry["config"]
        while "loop_type" in config or "condition" in config:
            config = config["config"]
        return config

    def condition(self, symbol: str) -> Any:
        return (self.resources.get(symbol) or self.modules[symbol])["config"].get("condition")

    def of_type(self, rtype: str) -> dict[str, dict[str, Any]]:
        """Declared (not `existing`) resources of one type: symbol -> body."""
        return {s: self.body(s) for s, r in self.resources.items()
                if r["type"].lower() == rtype.lower() and not r.get("existing")}

    def param_default(self, name: str) -> Any:
        return self.params[name].get("default")

    def resolve(self, value: Any) -> Any:
        """A variable's value in place of its name (recursively); anything else unchanged."""
        seen = 0
        while isinstance(value, str) and value in self.variables and seen < 20:
            value = self.variables[value]["value"]
            seen += 1
        return value

    def output_names(self) -> set[str]:
        return set(self.outputs)

    # ------------------------------------------------------------------ references
    def identifiers(self, expr: Any, _depth: int = 0) -> set[str]:
        """Every symbol an expression may name (variables expanded into what they name)."""
        names: set[str] = set()
        for item in walk(expr):
            if isinstance(item, str):
                names.update(IDENT.findall(item))
        expanded = set(names)
        if _depth < 10:
            for name in names & set(self.variables):
                expanded |= self.identifiers(self.variables[name]["value"], _depth + 1)
        return expanded

    def runtime_symbols(self) -> set[str]:
        """Symbols whose properties or outputs are known only during the deployment: resources and modules."""
        return set(self.resources) | set(self.modules)


def load_templates() -> dict[str, Template]:
    """{path relative to infra/: Template} for every .bicep file; raises with every file that did not parse."""
    parsed = parse_files(bicep_files())
    bad = {p: r["error"] for p, r in parsed.items() if not p.startswith("_") and not r["ok"]}
    if bad:
        raise AssertionError(f"pycep-parser could not parse: {bad}")
    out = {}
    for p, r in parsed.items():
        if p.startswith("_"):
            continue
        t = Template(Path(p), r["template"])
        out[t.name] = t
    return out


if __name__ == "__main__":  # a quick look: python -m tests.infra.bicep_model
    for tname, tpl in load_templates().items():
        print(tname, sorted(tpl.resources), sorted(tpl.modules), file=sys.stdout)
