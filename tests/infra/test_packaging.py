"""What azd packages and deploys: azure.yaml, the parameters file, requirements.txt and .funcignore."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pathspec
import pytest
import yaml

from tests.infra.bicep_model import REPO, Template


def requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(re.sub(r"\s+", "", line).lower())
    return sorted(lines)


def test_root_requirements_are_the_app_requirements() -> None:
    """Remote build installs what the package root's requirements.txt lists (python-build-options.md, 'Remote
    build'); it is a copy of requirements/app.txt rather than `-r requirements/app.txt`, so that it does not depend on
    the builder following includes, nor on requirements/ being packaged (.funcignore leaves it out)."""
    root = REPO / "requirements.txt"
    assert not [line for line in root.read_text().splitlines() if line.strip().startswith("-")], \
        "no pip options or includes in requirements.txt"
    assert requirement_lines(root) == requirement_lines(REPO / "requirements" / "app.txt")


# ---------------------------------------------------------------------------------------------- .funcignore
def repository_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return [p for p in out.splitlines() if (REPO / p).is_file()]


@pytest.fixture(scope="module")
def packaged() -> set[str]:
    spec = pathspec.GitIgnoreSpec.from_lines((REPO / ".funcignore").read_text().splitlines())
    return {p for p in repository_files() if not spec.match_file(p)}


def modules_the_app_imports() -> list[str]:
    """Repository files that `import function_app` loads (run apart, so this test process stays clean)."""
    code = ("import sys, json, function_app, pathlib; root = pathlib.Path.cwd().resolve(); "
            "print(json.dumps(sorted(str(pathlib.Path(m.__file__).resolve().relative_to(root)) "
            "for m in list(sys.modules.values()) if getattr(m, '__file__', None) "
            "and pathlib.Path(m.__file__).resolve().is_relative_to(root) and '.venv' not in m.__file__)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return list(json.loads(proc.stdout))


def test_the_package_holds_everything_the_app_loads(packaged: set[str]) -> None:
    needed = set(modules_the_app_imports()) | {"function_app.py", "host.json", "requirements.txt"}
    needed |= {str(p.relative_to(REPO)) for p in (REPO / "activities" / "templates").rglob("*") if p.is_file()}
    # the Batch pool client is imported lazily (adapters.clients), the local pool only for TRAPBATCH_POOL=local
    needed |= {"gpu_batch/pool/azure_batch.py", "gpu_batch/pool/local.py", "gpu_batch/storage_refs.py",
               "gpu_batch/layout.py", "gpu_batch/manifest.py", "gpu_batch/__init__.py"}
    for package in ("api", "activities", "orchestrations", "core", "adapters"):
        needed |= {str(p.relative_to(REPO)) for p in (REPO / package).glob("*.py")}
    missing = sorted(p for p in needed if p not in packaged and (REPO / p).exists())
    assert not missing, f".funcignore leaves out files the app needs: {missing}"


def test_the_package_leaves_out_tests_tools_and_the_worker(packaged: set[str]) -> None:
    left_out = ("tests/", "bench/", "devhost/", "samples/", "scripts/", "infra/", "docs/", "gpu_batch/worker/",
                "gpu_batch/tests/", "requirements/", ".ci/")
    shipped = sorted(p for p in packaged if p.startswith(left_out) or p in ("gpu_batch/Dockerfile", "conftest.py"))
    assert not shipped, shipped
    spec = pathspec.GitIgnoreSpec.from_lines((REPO / ".funcignore").read_text().splitlines())
    for path in (".venv/bin/python", "node_modules/azurite/package.json", "api/__pycache__/x.cpython-311.pyc",
                 "local.settings.json", ".azure/dev/.env"):
        assert spec.match_file(path), path


# Modules the package imports that come from a requirement's own dependencies rather than a line of requirements.txt,
# with the chain that brings each in (checked against the installed metadata below).
TRANSITIVE_IMPORTS = {
    # gpu_batch/storage_refs.py names the proxy error of azure-core's requests transport
    "urllib3": ("azure-core", "requests", "urllib3"),
}
# The GPU worker's libraries: never in the Functions app (requirements/worker.txt has them).
WORKER_ONLY = {"torch", "torchvision", "cv2", "nvidia", "yaml"}


def _dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports(paths: set[str]) -> dict[str, set[str]]:
    """Every module outside the standard library and the repository that a packaged file imports, anywhere in it
    (lazy imports inside functions too): {module: files}. ``azure`` is a namespace of many distributions, so its
    modules keep two parts (``azure.storage``), others only their top name."""
    local = {p.split("/")[0].removesuffix(".py") for p in paths}
    found: dict[str, set[str]] = {}
    for path in sorted(p for p in paths if p.endswith(".py")):
        for node in ast.walk(ast.parse((REPO / path).read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                parts = name.split(".")
                if parts[0] in sys.stdlib_module_names or parts[0] in local:
                    continue
                found.setdefault(".".join(parts[:3] if parts[0] == "azure" else parts[:1]), set()).add(path)
    return found


def distribution_of(module: str) -> str:
    """The installed distribution whose files hold ``module``: by its top name, or for the ``azure`` namespace (which
    many distributions share) the azure distribution that has the module's folder or file."""
    from importlib import metadata

    if not module.startswith("azure."):
        owners = metadata.packages_distributions().get(module, [])
        assert owners, f"{module} is imported by the app but no installed distribution holds it"
        return _dist_name(owners[0])
    path = module.replace(".", "/")
    for dist in metadata.distributions():
        if _dist_name(dist.metadata["Name"]).startswith("azure-") and \
                any(str(f).startswith(path + "/") or str(f) == path + ".py" for f in dist.files or ()):
            return _dist_name(dist.metadata["Name"])
    raise AssertionError(f"{module} is imported by the app but no installed distribution holds it")


def test_every_library_the_package_imports_is_a_requirement(packaged: set[str]) -> None:
    """Remote build installs requirements.txt and what its packages depend on, nothing else
    (python-build-options.md, "Remote build"): a library the app imports that is only installed here (by
    requirements/dev.txt, say) raises ModuleNotFoundError on Azure, at indexing (every function gone) or, for a lazy
    import, the first time that path runs. No torch or other worker library may be imported by the package."""
    from importlib import metadata

    required = {_dist_name(line.split("==")[0]) for line in requirement_lines(REPO / "requirements.txt")}
    imports = third_party_imports(packaged)
    assert not WORKER_ONLY & set(imports), {m: imports[m] for m in WORKER_ONLY & set(imports)}
    missing = {}
    for module, files in sorted(imports.items()):
        dist = distribution_of(module)
        if dist in required:
            continue
        chain = TRANSITIVE_IMPORTS.get(module)
        if chain is None:
            missing[module] = (dist, sorted(files))
            continue
        assert _dist_name(chain[0]) in required and chain[-1] == dist, (module, chain)
        for parent, child in zip(chain, chain[1:]):
            deps = [_dist_name(re.split(r"[\s;<>=!~\[(]", r)[0]) for r in metadata.requires(parent) or ()
                    if "extra ==" not in r]
            assert child in deps, f"{parent} no longer depends on {child}: add {module} to requirements.txt"
    assert not missing, f"imported by the package but not in requirements.txt (remote build would not install): " \
                        f"{missing}"
    assert not [line for line in requirement_lines(REPO / "requirements.txt") if line.startswith(("torch", "nvidia"))]


def gitignored_examples() -> list[str]:
    """One path each line of .gitignore ignores (``*`` -> ``x``, a folder pattern gets a file below it), plus the tool
    folders that ignore themselves with a .gitignore of their own (Hypothesis' ``.hypothesis/``)."""
    examples = [".hypothesis/constants/x"]
    for raw in (REPO / ".gitignore").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "!")):
            path = line.lstrip("/").replace("*", "x")
            examples.append(path + "f" if path.endswith("/") else path)
    return examples


def test_the_package_leaves_out_what_git_ignores() -> None:
    """azd zips the service folder with .funcignore's patterns alone: when the file exists, .gitignore is not read
    (Azure/azure-dev cli/azd/pkg/project/project_utils.go, createDeployableZip: `ignoreFile := svc.Host.IgnoreFile()`,
    no other ignore file). The fixture above lists git's files (``--exclude-standard``) and so could not see what a
    checkout holds besides them: ``.whl/`` (~32 MB of GPU wheels, bench/gpu_session.sh), ``*.egg-info/``,
    ``.hypothesis/`` went into every `azd deploy` of a developer's checkout."""
    spec = pathspec.GitIgnoreSpec.from_lines((REPO / ".funcignore").read_text().splitlines())
    shipped = [path for path in gitignored_examples() if not spec.match_file(path)]
    assert not shipped, f".gitignore keeps these out of git but .funcignore ships them; add them to it: {shipped}"


# ---------------------------------------------------------------------------------------------- azure.yaml
def test_azure_yaml_deploys_the_repository_root_as_a_python_function_app() -> None:
    doc = yaml.safe_load((REPO / "azure.yaml").read_text())
    assert doc["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    assert doc["services"] == {"api": {"project": ".", "language": "python", "host": "function"}}
    for hook in ("postprovision", "postdeploy"):
        for platform, shell in (("posix", "sh"), ("windows", "pwsh")):
            spec = doc["hooks"][hook][platform]
            assert spec["shell"] == shell and spec["continueOnError"] is False
            assert (REPO / spec["run"]).is_file(), spec["run"]


def test_parameters_file_matches_main_bicep(templates: dict[str, Template]) -> None:
    params = templates["main.bicep"].params
    values = json.loads((REPO / "infra" / "main.parameters.json").read_text())["parameters"]
    assert set(values) <= set(params), set(values) - set(params)
    # every parameter, defaulted or not, can be set with `azd env set` (maximumFunctionInstances could not be)
    assert set(params) <= set(values), set(params) - set(values)
    assert values["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert values["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"


def test_the_deploy_steps_azd_env_set_lines_name_parameters_and_give_their_defaults(
        templates: dict[str, Template]) -> None:
    """docs/deploy.md "1. Deploy" lists the optional ``azd env set NAME VALUE`` lines with the value the deployment
    takes when the line is left out: azd fills ``${NAME=default}`` of infra/main.parameters.json from its environment,
    so a NAME no parameter reads is set in vain, and a VALUE other than that default tells the operator the wrong
    starting point. A range a line's comment gives (``40 to 1000``) is the parameter's ``@minValue``/``@maxValue``."""
    doc = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```bash\n(.*?)```", doc.split("## 1. Deploy", 1)[1], re.S) if "azd up" in b)
    read = {}
    for param, spec in json.loads((REPO / "infra" / "main.parameters.json").read_text())["parameters"].items():
        found = re.fullmatch(r"\$\{(\w+)(?:=(.*))?\}", spec["value"])
        assert found, spec
        read[found.group(1)] = (param, found.group(2))
    examples = {"AZURE_LOCATION", "TRAPBATCH_SOURCE_ACCOUNTS"}  # a value to choose, shown as an example
    lines = re.findall(r"^azd env set (\w+) (\S+)(.*)$", block, re.M)
    assert len(lines) >= 10, lines
    # every setting azd hands the deployment is among them (TRAPBATCH_WORKER_TAG's v1 was stated nowhere), but the
    # Entra ID app's client id, which "Callers" sets after creating the app, and azd's own
    shown = {name for name, _, _ in lines} | {"TRAPBATCH_AUTH_CLIENT_ID"}
    assert sorted(n for n in read if n.startswith("TRAPBATCH_") and n not in shown) == []
    for name, value, comment in lines:
        assert name in read, f"{name}: no parameter of infra/main.parameters.json reads it"
        param, default = read[name]
        if name not in examples:
            assert value.strip('"') == default, f"{name} {value}: the deployment's default is {default!r}"
        if bounds := re.search(r"\((\d+) to (\d+)", comment):
            decorators = {d["type"]: d["argument"] for d in templates["main.bicep"].params[param]["decorators"]}
            assert (int(bounds.group(1)), int(bounds.group(2))) == (decorators["min_value"], decorators["max_value"])


def test_hooks_name_the_blob_trigger_function_of_the_app() -> None:
    """The Event Grid endpoint names the function (Host.Functions.<name>): it must be the app's blob trigger."""
    tree = ast.parse((REPO / "api" / "starters.py").read_text())
    triggers = [f.name for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                for d in f.decorator_list
                if isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "blob_trigger"]
    assert len(triggers) == 1, triggers
    assert f"function_name={triggers[0]} " in (REPO / "infra" / "hooks" / "postdeploy.sh").read_text()
    assert f"$functionName = '{triggers[0]}'" in (REPO / "infra" / "hooks" / "postdeploy.ps1").read_text()
