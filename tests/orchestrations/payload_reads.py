"""Which keys of its input an activity reads unconditionally, found in its source, to check them against the inputs
earlier releases scheduled (test_upgrade_payloads.py).

Why: a deployment does not drain the task hub. An activity that an earlier release scheduled and that had not run
yet when the new code was deployed runs with the new code and the old input, and so does every activity a replaying
orchestration schedules with an input it builds from old history (a recorded ``ExportsPartOutput`` carried in an
``ExportsCombineInput``). A ``payload["k"]`` on a key that input lacks is a ``KeyError`` after every retry: the task
fails. The replay test (upgrade_replay.py) runs only the orchestrators; nothing ran the activities on old inputs.

How: from the registered activity function, follow ``payload`` through the code it runs: subscripts with a constant
key (``payload["k"]``: required; ``payload.get("k")``: optional), names bound to a part of it (``x = payload["k"]``,
``for part in payload["parts"]``), and calls that pass it (or a part of it) to a function of the project's own
modules, whose parameter is then followed the same way. A subscript is not required where the code checked the key
first: inside ``if``/``while``/conditional expression/``and`` whose test looks at it (``"k" in payload``,
``payload.get("k")``), or after an ``if`` on it that returns, raises or continues. Where the whole payload goes where
it cannot follow (a function outside the project, a return, a ``**`` unpacking) it reports an escape, so a new way of
reading the payload is seen rather than silently passed over. Keys read with a computed name are not seen.
"""
from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("activities", "adapters", "core", "gpu_batch")
ELEMENT = "[]"  # a path step into a list's elements
KeyPath = tuple[str, ...]  # keys from the payload; "?k" for a step taken with .get (its absence is handled)


@dataclass(frozen=True)
class Read:
    path: KeyPath
    where: str  # module:line


@dataclass
class Reads:
    required: set[Read] = field(default_factory=set)
    escapes: set[str] = field(default_factory=set)  # module:line: what the payload was handed to


@dataclass(frozen=True)
class Module:
    name: str
    tree: ast.Module
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef]
    classes: dict[str, dict[str, ast.FunctionDef | ast.AsyncFunctionDef]]
    imported: dict[str, tuple[str, str | None]]  # local name -> (module, attribute or None for the module itself)


def _is_project(module: str) -> bool:
    return module.split(".")[0] in PROJECT_PACKAGES


@cache
def module(name: str) -> Module | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    functions: dict[str, Any] = {}
    classes: dict[str, dict[str, Any]] = {}
    imported: dict[str, tuple[str, str | None]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions[node.name] = node
        elif isinstance(node, ast.ClassDef):
            classes[node.name] = {n.name: n for n in node.body
                                  if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        elif isinstance(node, ast.Import):
            for a in node.names:
                imported[a.asname or a.name.split(".")[0]] = (a.name if a.asname else a.name.split(".")[0], None)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                is_module = _is_project(sub) and _has_module(sub)
                imported[a.asname or a.name] = (sub, None) if is_module else (node.module, a.name)
    return Module(name, tree, functions, classes, imported)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def registered_activities(package: str = "activities") -> dict[str, tuple[str, str]]:
    """Activity name -> (module, function) of every ``@bp.activity_trigger(..., activity=c.NAME)``."""
    from core import contracts as c

    found: dict[str, tuple[str, str]] = {}
    for path in sorted((ROOT / package).glob("*.py")):
        mod = module(f"{package}.{path.stem}")
        assert mod is not None
        for fn in mod.functions.values():
            for deco in fn.decorator_list:
                if isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and \
                        deco.func.attr == "activity_trigger":
                    kw = {k.arg: k.value for k in deco.keywords}
                    name = kw["activity"]
                    value = getattr(c, name.attr) if isinstance(name, ast.Attribute) else ast.literal_eval(name)
                    found[str(value)] = (mod.name, fn.name)
    return found


def input_name(mod: str, fn: str) -> str:
    node = _function(mod, fn)
    assert node is not None
    for deco in node.decorator_list:
        if isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and deco.func.attr == "activity_trigger":
            return str(next(ast.literal_eval(k.value) for k in deco.keywords if k.arg == "input_name"))
    raise AssertionError(f"{mod}.{fn} is no activity")


def _function(mod: str, fn: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    m = module(mod)
    if m is None:
        return None
    if "." in fn:
        cls, meth = fn.split(".", 1)
        return m.classes.get(cls, {}).get(meth)
    return m.functions.get(fn)


def activity_reads(activity_module: str, function: str) -> Reads:
    reads = Reads()
    _Follow(reads).function(activity_module, function, {input_name(activity_module, function): ()})
    return reads


def _keys_tested(node: ast.AST, env: dict[str, KeyPath]) -> set[KeyPath]:
    """The payload paths whose presence ``node`` (a test) looks at."""
    tested: set[KeyPath] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Compare) and len(n.ops) == 1 and isinstance(n.ops[0], (ast.In, ast.NotIn)) and \
                isinstance(n.left, ast.Constant) and isinstance(n.left.value, str):
            base = _path(n.comparators[0], env)
            if base is not None:
                tested.add(_plain(base) + (n.left.value,))
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get" and n.args and \
                isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str):
            base = _path(n.func.value, env)
            if base is not None:
                tested.add(_plain(base) + (n.args[0].value,))
    return tested


def _plain(path: KeyPath) -> KeyPath:
    return tuple(p.lstrip("?") for p in path)


def _path(node: ast.AST, env: dict[str, KeyPath]) -> KeyPath | None:
    """The payload path ``node`` evaluates to, or None when it is not (a part of) the payload."""
    if isinstance(node, ast.Name):
        return env.get(node.id)
    if isinstance(node, ast.Subscript):
        base = _path(node.value, env)
        if base is None:
            return None
        key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return base + (key.value,)
        return base + (ELEMENT,)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args \
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        base = _path(node.func.value, env)
        return None if base is None else base + ("?" + node.args[0].value,)
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
        return _path(node.values[0], env)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("list", "tuple", "dict",
                                                                                           "sorted") and node.args:
        return _path(node.args[0], env)
    return None


def _exits(body: list[ast.stmt]) -> bool:
    return bool(body) and isinstance(body[-1], (ast.Return, ast.Raise, ast.Continue, ast.Break))


class _Follow:
    def __init__(self, reads: Reads) -> None:
        self.reads = reads
        self.seen: set[tuple[str, str, tuple[tuple[str, KeyPath], ...]]] = set()
        self.mod = ""

    def function(self, mod: str, fn: str, bound: dict[str, KeyPath]) -> bool:
        node = _function(mod, fn)
        if node is None:
            return False
        key = (mod, fn, tuple(sorted(bound.items())))
        if key in self.seen:
            return True
        self.seen.add(key)
        outer, self.mod = self.mod, mod
        try:
            self.body(node.body, dict(bound), frozenset())
        finally:
            self.mod = outer
        return True

    def where(self, node: ast.AST) -> str:
        return f"{self.mod}:{getattr(node, 'lineno', 0)}"

    # ------------------------------------------------------------ statements
    def body(self, stmts: list[ast.stmt], env: dict[str, KeyPath], guards: frozenset[KeyPath]) -> None:
        for stmt in stmts:
            self.stmt(stmt, env, guards)
            if isinstance(stmt, ast.If) and (_exits(stmt.body) or _exits(stmt.orelse)):
                guards = guards | _keys_tested(stmt.test, env)

    def stmt(self, stmt: ast.stmt, env: dict[str, KeyPath], guards: frozenset[KeyPath]) -> None:
        if isinstance(stmt, (ast.If, ast.While)):
            self.expr(stmt.test, env, guards)
            inner = guards | _keys_tested(stmt.test, env)
            self.body(stmt.body, env, inner)
            self.body(stmt.orelse, env, inner)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            self.expr(stmt.iter, env, guards)
            self.bind_loop(stmt.target, stmt.iter, env)
            self.body(stmt.body, env, guards)
            self.body(stmt.orelse, env, guards)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            value = stmt.value
            if value is not None:
                self.expr(value, env, guards)
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    self.bind(target, value, env)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.body(stmt.body, dict(env), guards)  # a closure reads the payload when called: count it as read
        elif isinstance(stmt, ast.Return) and stmt.value is not None:
            if _path(stmt.value, env) == ():
                self.reads.escapes.add(f"{self.where(stmt)} returned")
            self.expr(stmt.value, env, guards)
        else:
            for name, value in ast.iter_fields(stmt):
                self.generic(value, env, guards)

    def generic(self, value: Any, env: dict[str, KeyPath], guards: frozenset[KeyPath]) -> None:
        if isinstance(value, list):
            if value and isinstance(value[0], ast.stmt):
                self.body(value, env, guards)
            else:
                for v in value:
                    self.generic(v, env, guards)
        elif isinstance(value, ast.stmt):
            self.stmt(value, env, guards)
        elif isinstance(value, ast.expr):
            self.expr(value, env, guards)
        elif isinstance(value, ast.AST):
            for _, v in ast.iter_fields(value):
                self.generic(v, env, guards)

    def bind(self, target: ast.AST, value: ast.AST, env: dict[str, KeyPath]) -> None:
        if isinstance(target, ast.Name):
            path = _path(value, env)
            if path is None:
                env.pop(target.id, None)
            else:
                env[target.id] = path
        elif isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) and \
                len(target.elts) == len(value.elts):
            for t, v in zip(target.elts, value.elts):
                self.bind(t, v, env)
        else:
            for n in ast.walk(target):
                if isinstance(n, ast.Name):
                    env.pop(n.id, None)

    def bind_loop(self, target: ast.AST, iterable: ast.AST, env: dict[str, KeyPath]) -> None:
        path = _path(iterable, env)
        if path is not None and isinstance(target, ast.Name):
            env[target.id] = path + (ELEMENT,)
            return
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name) and \
                iterable.func.id == "enumerate" and iterable.args and isinstance(target, ast.Tuple) and \
                len(target.elts) == 2 and isinstance(target.elts[1], ast.Name):
            inner = _path(iterable.args[0], env)
            if inner is not None:
                env[target.elts[1].id] = inner + (ELEMENT,)
                return
        for n in ast.walk(target):
            if isinstance(n, ast.Name):
                env.pop(n.id, None)

    # ------------------------------------------------------------ expressions
    def expr(self, node: ast.AST, env: dict[str, KeyPath], guards: frozenset[KeyPath]) -> None:
        if isinstance(node, ast.Subscript):
            base = _path(node.value, env)
            key = node.slice
            if base is not None and isinstance(key, ast.Constant) and isinstance(key.value, str):
                if _plain(base) + (key.value,) not in guards:
                    self.reads.required.add(Read(base + (key.value,), self.where(node)))
            self.expr(node.value, env, guards)
            self.expr(node.slice, env, guards)
            return
        if isinstance(node, ast.IfExp):
            self.expr(node.test, env, guards)
            inner = guards | _keys_tested(node.test, env)
            self.expr(node.body, env, inner)
            self.expr(node.orelse, env, inner)
            return
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self.expr(value, env, guards)
                if isinstance(node.op, ast.And):
                    guards = guards | _keys_tested(value, env)
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            inner_env = dict(env)
            inner_guards = guards
            for gen in node.generators:
                self.expr(gen.iter, inner_env, inner_guards)
                self.bind_loop(gen.target, gen.iter, inner_env)
                for cond in gen.ifs:
                    self.expr(cond, inner_env, inner_guards)
                    inner_guards = inner_guards | _keys_tested(cond, inner_env)
            elts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            for e in elts:
                self.expr(e, inner_env, inner_guards)
            return
        if isinstance(node, ast.Lambda):
            self.expr(node.body, dict(env), guards)
            return
        if isinstance(node, ast.Call):
            self.call(node, env, guards)
            return
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if k is None and _path(v, env) == ():
                    self.reads.escapes.add(f"{self.where(node)} unpacked into a dict")
        for _, value in ast.iter_fields(node):
            self.generic(value, env, guards)

    def call(self, node: ast.Call, env: dict[str, KeyPath], guards: frozenset[KeyPath]) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("get", "items", "keys", "values", "__contains__") and \
                _path(func.value, env) is not None:
            for a in node.args[1:]:
                self.expr(a, env, guards)
            self.expr(func.value, env, guards)
            return
        passed = [(i, a) for i, a in enumerate(node.args) if _path(a, env) is not None] + \
                 [(k.arg, k.value) for k in node.keywords if k.arg and _path(k.value, env) is not None]
        if any(k.arg is None and _path(k.value, env) == () for k in node.keywords) or \
                any(isinstance(a, ast.Starred) and _path(a.value, env) == () for a in node.args):
            self.reads.escapes.add(f"{self.where(node)} unpacked into {ast.unparse(func)}")
        self.expr(func, env, guards)
        for a in node.args:
            if not (isinstance(a, ast.Starred)):
                self.expr(a, env, guards)
        for k in node.keywords:
            self.expr(k.value, env, guards)
        if not passed:
            return
        target = self.resolve(func)
        shift = 0
        if target is None and ast.unparse(func) == "asyncio.to_thread" and node.args:
            # ``asyncio.to_thread(f, *args, **kwargs)`` calls f(*args, **kwargs) (an async activity's storage reads)
            target, shift = self.resolve(node.args[0]), 1
        for pos, arg in passed:
            path = _path(arg, env)
            assert path is not None
            if isinstance(pos, int):
                pos -= shift
            if target is not None and self.follow(target, pos, path):
                continue
            if path == ():  # a part of it handed on (int(payload["n"]), a log call) is a value, not read further
                self.reads.escapes.add(f"{self.where(node)} passed to {ast.unparse(func)}"
                                       f"{'' if path == () else ' as ' + '.'.join(path)}")

    def resolve(self, func: ast.AST) -> tuple[str, str] | None:
        """(module, function or Class.method) of a call's target in the project's code, when it is one."""
        mod = module(self.mod)
        assert mod is not None
        if isinstance(func, ast.Name):
            if func.id in mod.functions:
                return self.mod, func.id
            if func.id in mod.imported:
                where, attr = mod.imported[func.id]
                if attr is not None and _is_project(where):
                    return where, attr
            return None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            owner = func.value.id
            if owner in mod.classes:
                return self.mod, f"{owner}.{func.attr}"
            if owner in mod.imported:
                where, attr = mod.imported[owner]
                if attr is None and _is_project(where):
                    return where, func.attr
                if attr is not None and _is_project(where):
                    return where, f"{attr}.{func.attr}"
        return None

    def follow(self, target: tuple[str, str], pos: int | str, path: KeyPath) -> bool:
        node = _function(*target)
        if node is None:
            return False
        params = [a.arg for a in node.args.posonlyargs + node.args.args]
        if "." in target[1] and params and params[0] in ("self", "cls"):
            params = params[1:]
        if isinstance(pos, int):
            if pos >= len(params):
                return False
            name = params[pos]
        else:
            name = pos
            if name not in params and name not in [a.arg for a in node.args.kwonlyargs]:
                return False
        return self.function(target[0], target[1], {name: path})


def check(reads: Reads, payload: Any) -> list[Read]:
    """The required reads that ``payload`` lacks a key for (a missing key reached by ``.get`` is handled)."""
    return [r for r in sorted(reads.required, key=lambda r: (r.path, r.where)) if not _has(payload, r.path)]


def _has(value: Any, path: KeyPath) -> bool:
    for i, step in enumerate(path):
        if step == ELEMENT:
            if isinstance(value, (list, tuple)):
                return all(_has(v, path[i + 1:]) for v in value)
            return isinstance(value, dict) and all(_has(v, path[i + 1:]) for v in value.values())
        if not isinstance(value, dict):
            return True  # not a dict where the code expects one: a different fault, not a missing key
        optional = step.startswith("?")
        key = step.lstrip("?")
        if key not in value:
            return optional
        value = value[key]
        if value is None and optional:
            return True
    return True


def scheduled(doc: dict[str, Any]) -> Iterator[tuple[str, Any, str]]:
    """(activity name, input, instance id) of every activity a recorded history scheduled."""
    import json

    from devhost import history as h

    for inst in doc["instances"]:
        for e in inst["history"]:
            if e["EventType"] == h.TASK_SCHEDULED:
                yield str(e["Name"]), json.loads(e["Input"]) if e.get("Input") else None, str(inst["instance_id"])


def input_type(activity_module: str, function: str) -> str:
    """The name of the ``core.contracts`` TypedDict an activity's input is annotated with."""
    node = _function(activity_module, function)
    assert node is not None
    name = input_name(activity_module, function)
    arg = next(a for a in node.args.args if a.arg == name)
    assert isinstance(arg.annotation, ast.Attribute), f"{activity_module}.{function}: annotate {name} as c.SomeInput"
    return arg.annotation.attr


def required_keys(td: Any) -> set[str]:
    """The keys a TypedDict requires. Not ``__required_keys__``: with ``from __future__ import annotations`` (as in
    core/contracts.py) Python 3.11 sees ``NotRequired[...]`` only as a string and counts every key as required."""
    import typing

    keys: set[str] = set()
    inherited: set[str] = set()
    for base in getattr(td, "__orig_bases__", ()):
        if typing.is_typeddict(base):
            keys |= required_keys(base)
            inherited |= set(base.__annotations__)
    for key, hint in td.__annotations__.items():
        if key in inherited:
            continue
        text = hint.__forward_arg__ if isinstance(hint, typing.ForwardRef) else \
            hint if isinstance(hint, str) else repr(hint).replace("typing.", "")
        if text.startswith("NotRequired["):
            continue
        if text.startswith("Required[") or td.__total__:
            keys.add(key)
    return keys


def missing_required(td: type, value: Any, where: str = "") -> list[str]:
    """The keys ``value`` lacks that the TypedDict ``td`` requires, nested TypedDicts (also in lists and as dict
    values) included: ``parts.[].bytes`` for an element of ``parts`` without ``bytes``."""
    import typing

    if not isinstance(value, dict):
        return []
    hints = typing.get_type_hints(td, include_extras=True)
    missing = [f"{where}{k}" for k in sorted(required_keys(td) - set(value))]
    for key, hint in hints.items():
        if key not in value:
            continue
        while typing.get_origin(hint) in (typing.NotRequired, typing.Required):
            hint = typing.get_args(hint)[0]
        inner, element = hint, ""
        if typing.get_origin(hint) is list and isinstance(value[key], list):
            inner, element = typing.get_args(hint)[0], ELEMENT + "."
            items = value[key]
        elif typing.get_origin(hint) is dict and isinstance(value[key], dict):
            inner, element = typing.get_args(hint)[1], ELEMENT + "."
            items = list(value[key].values())
        else:
            items = [value[key]]
        if typing.is_typeddict(inner):
            for item in items:
                missing += [m for m in missing_required(inner, item, f"{where}{key}.{element}") if m not in missing]
    return missing
