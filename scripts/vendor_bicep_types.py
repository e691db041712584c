"""Vendor the Bicep resource types that infra/ uses into tests/infra/data/bicep_types.json.

tests/infra/test_bicep_types.py checks every property name and enum literal of every resource in infra/*.bicep
against this allow-list. No Azure subscription and no `bicep` compiler are reachable from CI, so this stands in for
the compiler's type check (BCP037 unknown property, BCP036/BCP088 value not of the enum, BCP073 read-only property).

Source: Azure/bicep-types-az, the generated/<provider>/<namespace>/<api-version>/types.json files the Bicep compiler
ships with. The current file was made from commit 1f896de2db966ad91e8f7d7d981e11d32e4f5d8d
(2026-08-20, "Update types from https://github.com/Azure/azure-rest-api-specs/tree/b7170cade0 (#2780)");
the commit is recorded in the file too ("source").

Only what the check needs is kept, for exactly the type@api-version pairs infra/ declares (existing ones included):
the type graph reachable from each resource body, with property names, read-only flags, enum literals and
discriminators; descriptions, formats, lengths and functions are dropped. Output is sorted and deterministic.

Run it again after changing an API version or adding a resource type in infra/ (needs .venv/infra, the pycep
environment of `make setup-test`, and a clone of Azure/bicep-types-az):

    .venv/bin/python scripts/vendor_bicep_types.py [--mirror PATH_TO_bicep-types-az_GIT_DIR] [--commit REV]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.infra.bicep_model import load_templates  # noqa: E402

DEFAULT_MIRROR = Path("/work/.mirror/Azure+bicep-types-az/repo")
OUT = REPO / "tests" / "infra" / "data" / "bicep_types.json"
READ_ONLY = 1 << 1  # bicep-types ObjectTypePropertyFlags.ReadOnly
SCALARS = {"StringType": "string", "IntegerType": "int", "BooleanType": "bool", "AnyType": "any",
           "NullType": "null"}


def git(mirror: Path, *args: str) -> str:
    proc = subprocess.run(["git", "--git-dir", str(mirror), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed in {mirror}: {proc.stderr.strip()}")
    return proc.stdout


def used_types() -> list[tuple[str, str]]:
    """Every (resource type, api version) that infra/*.bicep declares, sorted."""
    pairs = {(r["type"], r["api_version"]) for tpl in load_templates().values() for r in tpl.resources.values()}
    return sorted(pairs, key=lambda p: (p[0].lower(), p[1]))


class Trimmer:
    """Copies the types reachable from resource bodies into one table, numbered in the order first reached."""

    def __init__(self) -> None:
        self.table: list[Any] = []
        self.ids: dict[tuple[str, int], int] = {}
        self.leaves: dict[str, int] = {}  # scalars and plain enums, shared across files to keep the file small

    def ref(self, path: str, doc: list[dict[str, Any]], ref: dict[str, str]) -> int:
        index = int(ref["$ref"].rsplit("/", 1)[-1])
        key = (path, index)
        if key in self.ids:
            return self.ids[key]
        if doc[index]["$type"] in SCALARS or doc[index]["$type"] == "StringLiteralType" or (
                doc[index]["$type"] == "UnionType" and all(
                    doc[int(e["$ref"].rsplit("/", 1)[-1])]["$type"] == "StringLiteralType"
                    for e in doc[index]["elements"])):
            leaf = self.node(path, doc, doc[index])
            canon = json.dumps(leaf, sort_keys=True)
            if canon not in self.leaves:
                self.leaves[canon] = len(self.table)
                self.table.append(leaf)
            self.ids[key] = self.leaves[canon]
            return self.ids[key]
        self.ids[key] = len(self.table)
        self.table.append(None)
        self.table[self.ids[key]] = self.node(path, doc, doc[index])
        return self.ids[key]

    def props(self, path: str, doc: list[dict[str, Any]], props: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name in sorted(props):
            entry: dict[str, Any] = {"t": self.ref(path, doc, props[name]["type"])}
            if props[name].get("flags", 0) & READ_ONLY:
                entry["ro"] = 1
            out[name] = entry
        return out

    def node(self, path: str, doc: list[dict[str, Any]], t: dict[str, Any]) -> Any:
        kind = t["$type"]
        if kind in SCALARS:
            return SCALARS[kind]
        if kind == "StringLiteralType":
            return {"enum": [t["value"]]}
        if kind == "ArrayType":
            return {"array": self.ref(path, doc, t["itemType"])}
        if kind == "ObjectType":
            obj: dict[str, Any] = {"object": self.props(path, doc, t.get("properties") or {})}
            if t.get("additionalProperties"):
                obj["extra"] = self.ref(path, doc, t["additionalProperties"])
            return obj
        if kind == "DiscriminatedObjectType":
            return {"discriminator": t["discriminator"],
                    "base": self.props(path, doc, t.get("baseProperties") or {}),
                    "elements": {k: self.ref(path, doc, v) for k, v in sorted(t["elements"].items())}}
        if kind == "UnionType":
            members = [doc[int(e["$ref"].rsplit("/", 1)[-1])] for e in t["elements"]]
            literals = sorted({m["value"] for m in members if m["$type"] == "StringLiteralType"})
            others = [self.ref(path, doc, e) for e, m in zip(t["elements"], members)
                      if m["$type"] != "StringLiteralType"]
            union: dict[str, Any] = {"enum": literals}
            if others:
                union["or"] = others
            return union
        if kind == "ResourceFunctionType":
            return "any"
        raise SystemExit(f"{path}: unknown bicep-types kind {kind}; teach scripts/vendor_bicep_types.py about it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, default=DEFAULT_MIRROR, help="git dir of Azure/bicep-types-az")
    parser.add_argument("--commit", default="HEAD", help="revision of Azure/bicep-types-az to read")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    commit = git(args.mirror, "rev-parse", f"{args.commit}^{{commit}}").strip()
    files = [f for f in git(args.mirror, "ls-tree", "-r", "--name-only", commit, "generated").split()
             if f.endswith("/types.json")]
    docs: dict[str, list[dict[str, Any]]] = {}
    trimmer = Trimmer()
    resources: dict[str, dict[str, Any]] = {}
    missing = []
    for rtype, version in used_types():
        wanted = f"{rtype}@{version}".lower()
        namespace = rtype.split("/")[0].lower()
        found = None
        for path in files:
            if not path.endswith(f"/{namespace}/{version}/types.json"):
                continue
            if path not in docs:
                docs[path] = json.loads(git(args.mirror, "show", f"{commit}:{path}"))
            for t in docs[path]:
                if t["$type"] == "ResourceType" and t["name"].lower() == wanted:
                    found = (path, t)
                    break
            if found:
                break
        if found is None:
            missing.append(f"{rtype}@{version}")
            continue
        path, t = found
        resources[t["name"]] = {"body": trimmer.ref(path, docs[path], t["body"]), "from": path}
    if missing:
        raise SystemExit(f"bicep-types-az {commit[:12]} has no types for {missing}: check the API version in infra/")
    data = {"source": {"repo": "Azure/bicep-types-az", "commit": commit,
                       "made_by": "scripts/vendor_bicep_types.py"},
            "resources": resources, "types": trimmer.table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, sort_keys=True, indent=1)  # one entry a line: a re-vendoring reviews as a diff
    args.out.write_text(text + "\n")
    print(f"wrote {args.out} ({len(text)} bytes, {len(resources)} resource types, {len(trimmer.table)} types)")
    if commit not in (__doc__ or ""):
        print(f"now name bicep-types-az commit {commit} in this script's docstring (it names the one in use)")


if __name__ == "__main__":
    main()
