"""Which models a request may name: checked at the edge, before any GPU starts (api.starters.check_model_reference)."""
from __future__ import annotations

from pathlib import Path

import pytest

from api.starters import check_model_reference
from core.errors import ConfigError, RequestInvalid
from core.settings import Settings


def _settings(**env: str) -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", **env})


@pytest.mark.parametrize("ref", ["MDV5A", "mdv5b", "v5a.0.0", "MDV1000-REDWOOD", "spruce"])
def test_published_models_are_accepted_by_any_of_their_names(ref: str) -> None:
    check_model_reference(ref, _settings())


def test_the_operators_default_and_its_models_container_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "custom.pt").write_bytes(b"checkpoint")
    s = _settings(TRAPBATCH_MODEL=str(tmp_path / "custom.pt"), TRAPBATCH_MODELS_CONTAINER="models")
    check_model_reference(str(tmp_path / "custom.pt"), s)
    check_model_reference("blob://models/site-a-finetune.pt", s)


def test_a_default_model_path_the_local_pool_cannot_load_is_refused_before_the_task_starts(tmp_path: Path) -> None:
    """The local pool's workers load the default model from this machine: a missing file was found by them, two
    failed attempts and a minute into the task. A path on Batch nodes, a published name or a blob is not checked."""
    missing = str(tmp_path / "md_v5a.0.0.pt")
    with pytest.raises(ConfigError) as info:
        check_model_reference(missing, _settings(TRAPBATCH_MODEL=missing))
    assert "TRAPBATCH_MODEL" in info.value.message and "MDV5A" in info.value.hint
    check_model_reference("MDV5A", _settings(TRAPBATCH_MODEL="MDV5A"))
    check_model_reference("blob://models/x.pt", _settings(TRAPBATCH_MODEL="blob://models/x.pt"))


@pytest.mark.parametrize("ref", ["/etc/passwd", "../../models/x.pt", "https://attacker.example.com/evil.pt",
                                 "blob://trapbatch/tasks/x.pt", "blob://models/", "MDV4"])
def test_anything_else_is_a_4xx_that_lists_the_choices(ref: str) -> None:
    with pytest.raises(RequestInvalid) as info:
        check_model_reference(ref, _settings(TRAPBATCH_MODEL="/models/custom.pt", TRAPBATCH_MODELS_CONTAINER="models"))
    assert info.value.status_code == 400 and ref in info.value.message
    assert "MDV5A" in info.value.hint and "blob://models/<name>" in info.value.hint and "custom.pt" in info.value.hint


@pytest.mark.parametrize(("default", "shown", "hidden"), [
    ("/home/op/secret-models/site.pt", "the app's default checkpoint 'site.pt'", "/home/op"),
    ("C:\\Users\\op\\models\\site.pt", "the app's default checkpoint 'site.pt'", "Users"),
    ("mdv5a", "'MDV5A'", "mdv5a"), ("blob://models/site.pt", "'blob://models/site.pt'", "\x00"),
    # a SAS or credentials pasted into TRAPBATCH_MODEL: its query and host are not the file's name
    ("blob://models/site.pt?sv=2024-11-04&sig=SECRET", "'blob://models/site.pt'", "SECRET"),
    ("https://acct.blob.core.windows.net/models/site.pt?sv=2024-11-04&sig=SECRET",
     "the app's default checkpoint 'site.pt'", "SECRET"),
    ("https://op:SECRET@models.example", "the app's default checkpoint", "SECRET")])
def test_a_refusal_names_the_default_model_without_the_servers_path(default: str, shown: str, hidden: str) -> None:
    """Any function-key holder reads the hint: a default named by a path (devhost's is one) shows its file name only."""
    with pytest.raises(RequestInvalid) as info:
        check_model_reference("MDV4", _settings(TRAPBATCH_MODEL=default))
    assert info.value.hint.endswith(f"or leave 'model' out for {shown} (the operator sets TRAPBATCH_MODELS_CONTAINER "
                                    "for own checkpoints)")
    assert hidden not in info.value.hint


@pytest.mark.parametrize("ref", ["blob://models/../trapbatch/tasks/x/manifest.json", "blob://models/./x.pt",
                                 "blob://models/a/../../trapbatch/x.pt", "blob://models//x.pt",
                                 "blob://models/a\\..\\x.pt"])
def test_a_models_container_blob_whose_name_leaves_the_container_is_refused(ref: str) -> None:
    """Azure's clients resolve '..' before sending: 'blob://models/../trapbatch/...' would read the app's own state
    container (the nodes use a bearer token, which does not sign the path)."""
    with pytest.raises(RequestInvalid) as info:
        check_model_reference(ref, _settings(TRAPBATCH_MODELS_CONTAINER="models"))
    assert info.value.status_code == 400 and "plain blob name" in info.value.message


def test_an_unsupported_megadetector_says_why() -> None:
    with pytest.raises(RequestInvalid) as info:
        check_model_reference("MDV1000-CEDAR", _settings())
    assert "YOLOv9" in info.value.message and "MDV5A" in info.value.hint
    with pytest.raises(RequestInvalid) as no_container:
        check_model_reference("blob://models/x.pt", _settings())  # no models container configured
    assert "blob://" not in no_container.value.hint.split("(")[0]


def test_every_alias_of_a_published_model_is_one_task() -> None:
    """``canonical_name`` before the task id: the aliases of one release name one task (a second request under
    another spelling finds the first task instead of running the model again)."""
    from gpu_batch.models import CANONICAL_NAMES, KNOWN_MODELS, MODEL_ALIASES, canonical_name
    from core.requests import parse_task_request

    assert set(CANONICAL_NAMES) == set(KNOWN_MODELS)
    for alias, version in MODEL_ALIASES.items():
        for spelling in (alias, alias.upper(), f" {alias} "):
            assert canonical_name(spelling) == CANONICAL_NAMES[version], spelling
    assert canonical_name("MDV5A") == "MDV5A" and canonical_name("blob://models/mine.pt") == "blob://models/mine.pt"
    ids = {parse_task_request({"container": "photos", "model": canonical_name(m)}).task_id_for()
           for m in ("mdv5a", "MDV5A", "v5a.0.1", "MdV5a")}
    assert len(ids) == 1
    assert parse_task_request({"container": "photos", "model": canonical_name("v5a.0.0")}).task_id_for() not in ids


def test_the_api_names_the_task_by_the_models_one_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two requests that differ only in the model's spelling are one task at the edge (start_task's id)."""
    import asyncio
    from types import SimpleNamespace
    from typing import Any

    from api import starters

    class Running:
        async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
            return SimpleNamespace(runtime_status=SimpleNamespace(value="Running"), custom_status={}, input_=None)

    monkeypatch.setattr(starters, "_check_source", lambda request, settings, deadline=None: request)  # no storage here
    ids = {asyncio.run(starters.start_task(Running(), {"container": "photos", "model": m}, _settings()))[1]
           for m in ("mdv5a", "MDV5A", "v5a.0.1")}
    assert len(ids) == 1


def test_a_task_an_earlier_release_named_by_an_alias_is_found_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks started before model names were made canonical carry the alias's id; posting the same request again
    (a retry, resuming a failed task) after an upgrade must find that task, not start the work a second time."""
    import asyncio
    from types import SimpleNamespace
    from typing import Any

    from api import starters
    from core.requests import parse_task_request

    old_id = parse_task_request({"container": "photos", "model": "mdv5a"}).task_id_for()
    canonical_id = parse_task_request({"container": "photos", "model": "MDV5A"}).task_id_for()
    assert old_id != canonical_id

    class Known:
        def __init__(self, ids: set[str]) -> None:
            self.ids = ids

        async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
            runtime = SimpleNamespace(value="Running") if instance_id in self.ids else None
            return SimpleNamespace(runtime_status=runtime, custom_status={}, input_=None)

    monkeypatch.setattr(starters, "_check_source", lambda request, settings, deadline=None: request)
    body = {"container": "photos", "model": "mdv5a"}
    assert asyncio.run(starters.start_task(Known({old_id}), body, _settings())) == (False, old_id)
    assert asyncio.run(starters.start_task(Known({old_id, canonical_id}), body, _settings())) == (False, canonical_id)
