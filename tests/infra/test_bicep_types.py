"""Every property name and enum literal in infra/*.bicep is one the resource type's API version defines.

Stands in for the type check of `bicep build` (BCP037 "The property X is not allowed on objects of type Y",
BCP036/BCP088 a value not of the enum, BCP073 a read-only property), which no CI machine here can run: no `bicep`
binary, no Azure subscription. The types come from Azure/bicep-types-az (what the compiler ships with), trimmed by
scripts/vendor_bicep_types.py into tests/infra/data/bicep_types.json for exactly the type@api-version pairs infra/
declares. A new resource type or API version in infra/ fails here until that script is re-run and its output
committed.

What is checked: object keys at every depth (through arrays, `[for ...]` bodies, dictionaries and discriminated
objects), string literals where the type is an enum (also through `cond ? a : b`, variables, and a parameter's
@allowed list and default), read-only properties, and the kind of value a string, int or bool property gets (a
literal, an interpolated string, a parameter by its declared type, a variable by its value; BCP036 "The property X
expected a value of type int but the provided value is of type string"). Open enums (modelAsString; Bicep accepts
any string) are held to the listed values too, since a typo there fails only at deployment: OPEN_ENUM_EXTRAS takes
documented others. Values known only at deployment (function calls, property accesses, interpolated strings, resource
symbols) are not checked, nor the ranges and patterns of strings and ints (the vendored types keep only the kind).
"""
from __future__ import annotations

import copy
import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep_model import IDENT, Template, loops

DATA = Path(__file__).with_name("data") / "bicep_types.json"
VENDOR_HINT = ("re-run `.venv/bin/python scripts/vendor_bicep_types.py --mirror <git dir of Azure/bicep-types-az>` "
               "and commit tests/infra/data/bicep_types.json")
# Keys of a resource declaration that Bicep itself handles; they are not in the resource body's type.
BICEP_KEYS = {"parent", "scope", "dependsOn"}
# Values a service accepts beyond the enum its API spec lists, for an open enum (x-ms-enum modelAsString: Bicep
# takes any string there, so a typo surfaces only when ARM refuses the deployment). Key: "<type> <path>", with
# array indices written []; each entry needs a source (service docs) in a comment. Empty: infra/ uses listed values.
OPEN_ENUM_EXTRAS: dict[str, set[str]] = {}
INDEX = re.compile(r"^\[\d+\]$")
# Bicep's types a parameter declares, as the scalar check compares them (object and array: never a scalar's)
SCALAR_KINDS = {"string", "int", "bool", "object", "array"}


def load_types() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DATA.read_text())
    return data


@dataclass
class Checker:
    """Walks one resource body against the vendored type graph; collects what the compiler would refuse."""

    types: list[Any]
    rtype: str
    tpl: Template
    where: str
    problems: list[str]

    def symbols(self) -> set[str]:
        names = set(self.tpl.params) | set(self.tpl.variables) | self.tpl.runtime_symbols()
        for loop in loops(self.tpl.data):
            names.update(v for v in (loop["loop_type"].get("detail") or {}).values()
                         if isinstance(v, str) and IDENT.fullmatch(v))
        return names

    def report(self, path: list[str], what: str) -> None:
        self.problems.append(f"{self.where}: {'.'.join(path) or '<body>'}: {what}")

    def literals(self, value: Any, depth: int = 0) -> list[str] | None:
        """The string literal(s) a value may take, or None where it is known only at deployment."""
        if depth > 20:
            return None
        if isinstance(value, dict):
            op = value.get("operator")
            if isinstance(op, dict) and op.get("type") == "conditional":
                branches = [self.literals(op["operands"][k], depth + 1) for k in ("true_value", "false_value")]
                return None if any(b is None for b in branches) else [v for b in branches for v in b or []]
            return None
        if not isinstance(value, str) or "${" in value:
            return None
        if value in self.tpl.variables:
            return self.literals(self.tpl.variables[value]["value"], depth + 1)
        if value in self.tpl.params:
            spec = self.tpl.params[value]
            allowed = [d["argument"] for d in spec.get("decorators") or [] if d.get("type") == "allowed"]
            found = [v for a in allowed for v in a if isinstance(v, str)]
            if isinstance(spec.get("default"), str) and "${" not in spec["default"]:
                found.append(spec["default"])
            return found or None
        if value in self.symbols():
            return None
        return [value]

    def check(self, ref: int, value: Any, path: list[str]) -> None:
        t = self.types[ref]
        if isinstance(value, dict) and "loop_type" in value and "config" in value:  # [for x in y: body]
            if isinstance(t, dict) and "array" in t:
                self.check(t["array"], value["config"], path + ["[for]"])
            return
        if isinstance(value, dict) and "operator" in value and isinstance(value["operator"], dict) \
                and value["operator"].get("type") == "conditional":
            ops = value["operator"]["operands"]
            for branch in ("true_value", "false_value"):
                self.check(ref, ops[branch], path)
            return
        if isinstance(t, str):  # string, int, bool, any
            self.check_scalar(t, value, path)
            return
        if "enum" in t:
            self.check_enum(t, value, path)
        elif "array" in t:
            if isinstance(value, list):
                for i, item in enumerate(value):
                    self.check(t["array"], item, path + [f"[{i}]"])
        elif "object" in t:
            if isinstance(value, dict) and not self.is_expression(value):
                self.check_object(t["object"], t.get("extra"), value, path)
        elif "discriminator" in t:
            if isinstance(value, dict) and not self.is_expression(value):
                self.check_discriminated(t, value, path)

    def kind(self, value: Any, depth: int = 0) -> str | None:
        """The Bicep type of a value (string, int, bool, array, object), or None where only the deployment knows it
        (function calls, property accesses, resource and module symbols, loop variables, null)."""
        if depth > 20 or value is None:
            return None
        if isinstance(value, bool):  # before int: a bool is an int in Python
            return "bool"
        if isinstance(value, int):
            return "int"
        if isinstance(value, list):
            return "array"
        if not isinstance(value, str):
            return None  # an expression (dicts): its type is the compiler's to infer
        if "${" in value:
            return "string"
        if value in self.tpl.params:
            declared = str(self.tpl.params[value].get("type") or "")
            return declared if declared in SCALAR_KINDS else None
        if value in self.tpl.variables:
            return self.kind(self.tpl.variables[value]["value"], depth + 1)
        if value in self.symbols():
            return None
        return "string"

    def check_scalar(self, expected: str, value: Any, path: list[str]) -> None:
        """A string, int or bool property given a value of another kind: Bicep refuses to compile it (BCP036), as ARM
        would refuse the template (a parameter or literal of the wrong type). ``any`` takes anything."""
        if expected == "any":
            return
        given = self.kind(value)
        if given is not None and given != expected:
            self.report(path, f"expects a value of type {expected}, given {value!r} of type {given} (BCP036)")

    @staticmethod
    def is_expression(value: dict[str, Any]) -> bool:
        return set(value) <= {"operator", "function"} and bool(value)

    def check_enum(self, t: dict[str, Any], value: Any, path: list[str]) -> None:
        others = [self.types[r] for r in t.get("or", [])]
        if "any" in others:
            return
        open_enum = "string" in others
        if isinstance(value, dict) and not self.is_expression(value):
            for r in t.get("or", []):
                if isinstance(self.types[r], dict) and ("object" in self.types[r] or "discriminator" in self.types[r]):
                    self.check(r, value, path)
            return
        literals = self.literals(value)
        if literals is None or not isinstance(value, str):
            return
        where = ".".join(INDEX.sub("[]", p) for p in path)
        extras = OPEN_ENUM_EXTRAS.get(f"{self.rtype} {where}", set())
        for literal in literals:
            if literal not in t["enum"] and literal not in extras:
                source = "" if literal == value else f" (from {value!r})"
                fix = ("an open enum: if the service documents the value, add it to OPEN_ENUM_EXTRAS with the source"
                       if open_enum else "use one of those")
                self.report(path, f"{literal!r}{source} is not one of {t['enum']} in this API version ({fix}); "
                                  f"if you changed the apiVersion, {VENDOR_HINT}")

    def check_object(self, props: dict[str, Any], extra: int | None, value: dict[str, Any],
                     path: list[str]) -> None:
        for key, item in value.items():
            if key in props:
                if props[key].get("ro"):
                    self.report(path + [key], "is read-only in this API version (BCP073); remove it")
                self.check(props[key]["t"], item, path + [key])
            elif extra is not None:
                self.check(extra, item, path + [key])
            else:
                casing = [p for p in props if p.lower() == key.lower()]
                close = difflib.get_close_matches(key, list(props), n=3)
                hint = (f"write it {casing[0]!r}" if casing else f"did you mean {close}" if close
                        else f"known here: {sorted(props)}")
                self.report(path + [key], f"is not a property of this API version (BCP037); {hint}. If you "
                                          f"changed the apiVersion, {VENDOR_HINT}")

    def check_discriminated(self, t: dict[str, Any], value: dict[str, Any], path: list[str]) -> None:
        key = t["discriminator"]
        chosen = self.literals(value.get(key))
        if chosen and len(chosen) == 1 and chosen[0] in t["elements"]:
            element = self.types[t["elements"][chosen[0]]]
            self.check_object({**t["base"], **element["object"]}, element.get("extra"), value, path)
            return
        if chosen and len(chosen) == 1:
            self.report(path + [key], f"{chosen[0]!r} is not one of {sorted(t['elements'])} in this API version; "
                                      f"if you changed the apiVersion, {VENDOR_HINT}")
            return
        # discriminator known only at deployment: a key is accepted if any variant has it
        merged = dict(t["base"])
        for ref in t["elements"].values():
            merged.update(self.types[ref]["object"])
        self.check_object(merged, None, value, path)


def resource_key(data: dict[str, Any], rtype: str, version: str) -> str | None:
    """The vendored entry for type@version (ARM compares resource types case-insensitively)."""
    wanted = f"{rtype}@{version}".lower()
    return next((k for k in data["resources"] if k.lower() == wanted), None)


def type_problems(templates: dict[str, Template], data: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for name, tpl in sorted(templates.items()):
        for symbol, resource in sorted(tpl.resources.items()):
            rtype, version = resource["type"], resource["api_version"]
            where = f"infra/{name}: resource {symbol} ({rtype}@{version})"
            key = resource_key(data, rtype, version)
            if key is None:
                problems.append(f"{where}: {rtype}@{version} is not in {DATA.name}; {VENDOR_HINT}")
                continue
            if resource.get("existing"):
                continue
            body = {k: v for k, v in tpl.body(symbol).items() if k not in BICEP_KEYS}
            Checker(data["types"], rtype, tpl, where, problems).check(data["resources"][key]["body"], body, [])
    return problems


def test_every_property_and_enum_value_is_defined_by_the_api_version(templates: dict[str, Template]) -> None:
    problems = type_problems(templates, load_types())
    assert not problems, "\n".join(problems)


def test_vendored_types_are_exactly_what_infra_uses(templates: dict[str, Template]) -> None:
    """A stale entry (an API version infra/ no longer uses) means the file was not re-made after a change."""
    data = load_types()
    used = {f"{r['type']}@{r['api_version']}".lower() for t in templates.values() for r in t.resources.values()}
    stale = sorted(k for k in data["resources"] if k.lower() not in used)
    assert not stale, f"{DATA.name} has types infra/ no longer uses: {stale}; {VENDOR_HINT}"
    assert len(data["source"]["commit"]) == 40, "the file must name the bicep-types-az commit it was made from"


# ------------------------------------------------------------------------------- the check catches what it should
def planted(templates: dict[str, Template], name: str, symbol: str, edit: Any) -> dict[str, Template]:
    """A copy of the parsed templates with one resource body changed by ``edit(body)``."""
    tpl = templates[name]
    data = copy.deepcopy(tpl.data)
    changed = Template(tpl.path, data)
    edit(changed.body(symbol))
    return {**templates, name: changed}


def test_an_unknown_property_name_fails(templates: dict[str, Template]) -> None:
    def edit(body: dict[str, Any]) -> None:
        body["properties"]["siteConfig"]["minTlsVersionn"] = "1.2"

    problems = type_problems(planted(templates, "app/api.bicep", "app", edit), load_types())
    assert len(problems) == 1 and "resource app (Microsoft.Web/sites@2024-04-01)" in problems[0]
    assert "properties.siteConfig.minTlsVersionn: is not a property" in problems[0]
    assert "did you mean ['minTlsVersion'" in problems[0] and "vendor_bicep_types.py" in problems[0]


def test_a_property_name_in_a_loop_body_and_in_wrong_case_fails(templates: dict[str, Template]) -> None:
    def edit(body: dict[str, Any]) -> None:
        body["properties"]["siteConfig"]["appSettings"]["config"]["Value"] = "x"
        body["properties"]["HttpsOnly"] = True

    problems = type_problems(planted(templates, "app/api.bicep", "app", edit), load_types())
    assert any("properties.siteConfig.appSettings.[for].Value" in p for p in problems), problems
    assert any("properties.HttpsOnly" in p and "write it 'httpsOnly'" in p for p in problems), problems


def test_a_value_outside_the_enum_fails(templates: dict[str, Template]) -> None:
    def edit(body: dict[str, Any]) -> None:
        body["properties"]["taskSchedulingPolicy"]["nodeFillType"] = "Packed"

    problems = type_problems(planted(templates, "app/batch.bicep", "pool", edit), load_types())
    assert len(problems) == 1 and "properties.taskSchedulingPolicy.nodeFillType: 'Packed' is not one of" in problems[0]


def test_a_parameter_allowing_a_value_outside_the_enum_fails(templates: dict[str, Template]) -> None:
    tpl = templates["app/rbac.bicep"]
    data = copy.deepcopy(tpl.data)
    data["parameters"]["userPrincipalType"]["decorators"][0]["argument"].append("Robot")
    problems = type_problems({**templates, "app/rbac.bicep": Template(tpl.path, data)}, load_types())
    assert problems and all("'Robot' (from 'userPrincipalType') is not one of" in p for p in problems), problems
    assert "an open enum" in problems[0]


def test_a_discriminated_body_is_checked_by_its_variant(templates: dict[str, Template]) -> None:
    """sites/config's body depends on its name: authsettingsV2 has globalValidation, appsettings does not."""
    def edit(body: dict[str, Any]) -> None:
        body["properties"]["globalValidation"]["unauthenticatedClientAction"] = "Return402"
        body["properties"]["identityProviders"]["azureActiveDirectory"]["registrationn"] = {}

    problems = type_problems(planted(templates, "app/api.bicep", "auth", edit), load_types())
    assert any("unauthenticatedClientAction: 'Return402'" in p for p in problems), problems
    assert any("azureActiveDirectory.registrationn: is not a property" in p for p in problems), problems


def test_a_type_version_missing_from_the_vendored_file_fails(templates: dict[str, Template]) -> None:
    def edit(body: dict[str, Any]) -> None:
        pass

    changed = planted(templates, "core/monitor/monitoring.bicep", "logAnalytics", edit)
    changed["core/monitor/monitoring.bicep"].resources["logAnalytics"]["api_version"] = "2099-01-01"
    problems = type_problems(changed, load_types())
    assert problems == [
        "infra/core/monitor/monitoring.bicep: resource logAnalytics "
        "(Microsoft.OperationalInsights/workspaces@2099-01-01): "
        f"Microsoft.OperationalInsights/workspaces@2099-01-01 is not in bicep_types.json; {VENDOR_HINT}"]


@pytest.mark.parametrize("name", ["app/api.bicep"])
def test_the_walk_reaches_nested_bodies(templates: dict[str, Template], name: str) -> None:
    """Guards the checker itself: a walk that stopped early would pass anything."""
    data = load_types()
    seen: list[str] = []

    class Recording(Checker):
        def check(self, ref: int, value: Any, path: list[str]) -> None:
            seen.append(".".join(path))
            super().check(ref, value, path)

    tpl = templates[name]
    key = resource_key(data, "Microsoft.Web/sites", tpl.resources["app"]["api_version"])
    assert key is not None
    body = {k: v for k, v in tpl.body("app").items() if k not in BICEP_KEYS}
    Recording(data["types"], "Microsoft.Web/sites", tpl, name, []).check(data["resources"][key]["body"], body, [])
    assert "properties.siteConfig.appSettings.[for].name" in seen
    assert "properties.functionAppConfig.runtime.name" in seen


def test_a_read_only_property_fails(templates: dict[str, Template]) -> None:
    def edit(body: dict[str, Any]) -> None:
        body["properties"]["provisioningState"] = "Succeeded"

    problems = type_problems(planted(templates, "core/storage/storage-account.bicep", "storage", edit), load_types())
    assert any("properties.provisioningState: is read-only" in p for p in problems), problems


def test_a_value_of_another_type_than_the_propertys_fails(templates: dict[str, Template]) -> None:
    """BCP036: a string where an int or bool belongs (a quoted number, 'true'), a bool where an int belongs, and a
    parameter whose declared type is not the property's (an int parameter into a string property)."""
    def edit(body: dict[str, Any]) -> None:
        body["properties"]["taskSlotsPerNode"] = True
        body["properties"]["startTask"]["waitForSuccess"] = "false"
        body["properties"]["startTask"]["maxTaskRetryCount"] = "3"
        body["properties"]["vmSize"] = "osDiskSizeGB"
        body["properties"]["displayName"] = "trapbatch ${vmSize}"  # an interpolated string is a string: fine

    problems = type_problems(planted(templates, "app/batch.bicep", "pool", edit), load_types())
    assert len(problems) == 4, problems
    assert any("properties.taskSlotsPerNode: expects a value of type int, given True of type bool" in p
               for p in problems), problems
    assert any("startTask.waitForSuccess: expects a value of type bool, given 'false' of type string" in p
               for p in problems), problems
    assert any("startTask.maxTaskRetryCount: expects a value of type int, given '3' of type string" in p
               for p in problems), problems
    assert any("properties.vmSize: expects a value of type string, given 'osDiskSizeGB' of type int (BCP036)" in p
               for p in problems), problems


def test_a_parameter_of_the_propertys_type_and_a_deployment_value_pass(templates: dict[str, Template]) -> None:
    """instanceMemoryMB (param int) into the int property; a module output, a function call: known at deployment."""
    problems = type_problems(templates, load_types())
    assert not problems, problems
    api = templates["app/api.bicep"]
    assert api.params["instanceMemoryMB"]["type"] == "int"
    scale = api.body("app")["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert scale["instanceMemoryMB"] == "instanceMemoryMB"
