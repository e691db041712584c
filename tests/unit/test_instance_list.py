"""api.starters._all_instances: the management API's pages, only the instances asked for kept, and an answer of the
app's own before Azure's 230 s cut on HTTP functions."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from api import starters
from core.errors import InstanceListTooSlow
from core.ids import is_task_id

TASK = "task-" + "a" * 20


def test_the_list_stays_under_the_230_s_azure_gives_an_http_function() -> None:
    """MicrosoftDocs includes/functions-timeout-duration.md: "Regardless of the function app timeout setting, 230
    seconds is the maximum amount of time that an HTTP triggered function can take to respond to a request"."""
    assert starters.INSTANCE_LIST_TIMEOUT_S < 230
    assert InstanceListTooSlow("x").status_code == 503


async def _serve(pages: list[list[dict[str, Any]]], delay_s: float) -> tuple[web.AppRunner, str]:
    async def instances(request: web.Request) -> web.Response:
        index = int(request.headers.get("x-ms-continuation-token") or 0)
        await asyncio.sleep(delay_s)
        headers = {"x-ms-continuation-token": str(index + 1)} if index + 1 < len(pages) else {}
        return web.json_response(pages[index], headers=headers)

    app = web.Application()
    app.router.add_get("/instances/", instances)
    runner = web.AppRunner(app)
    await runner.setup()
    # port 0 and the port read back: one picked free and released before the bind could be another worker's by then
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/"


def _row(iid: str) -> dict[str, Any]:
    return {"instanceId": iid, "runtimeStatus": "Completed", "input": {"state": "x" * 1000}}


def _client(url: str) -> Any:
    return SimpleNamespace(_orchestration_bindings=SimpleNamespace(rpc_base_url=url))


def test_every_page_is_read_and_only_what_keep_accepts_is_held() -> None:
    pages = [[_row(TASK), _row(TASK + "-shards-0000")], [_row(TASK + "-shards-0001"), _row("task-" + "b" * 20)]]

    async def go() -> tuple[list[str], list[str]]:
        runner, url = await _serve(pages, 0)
        try:
            kept = await starters._all_instances(_client(url), "task-", keep=is_task_id)
            every = await starters._all_instances(_client(url), "task-")
        finally:
            await runner.cleanup()
        return [s.instance_id for s in kept], [s.instance_id for s in every]

    kept, every = asyncio.run(go())
    assert kept == [TASK, "task-" + "b" * 20] and len(every) == 4


def test_a_list_past_its_time_is_the_apps_own_503_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(starters, "INSTANCE_LIST_TIMEOUT_S", 1)
    pages = [[_row(TASK)]] * 5

    async def go() -> None:
        runner, url = await _serve(pages, 0.4)
        try:
            await starters._all_instances(_client(url), "task-")
        finally:
            await runner.cleanup()

    with pytest.raises(InstanceListTooSlow) as info:
        asyncio.run(go())
    assert "did not end in the 1 s left for it" in info.value.message and "purge old ones" in info.value.hint


def test_the_purge_the_503_suggests_is_one_the_extension_accepts_and_that_spares_running_instances() -> None:
    """ext HttpApiHandler.cs HandleDeleteHistoryWithFiltersRequestAsync answers 400 "Please provide value for
    'createdTimeFrom' parameter." without createdTimeFrom, and purges every status in the range without runtimeStatus
    (dtfx DurableTask.AzureStorage/Tracking/AzureTableTrackingStore.cs PurgeInstanceHistoryAsync keeps only
    Completed, Terminated, Canceled and Failed of a given list): running tasks and the preview expiries that wait for
    days would go with it. The hint said ``DELETE .../instances?createdTimeTo=...``: refused on Azure (devhost
    row 3)."""
    hint = starters.PURGE_HINT
    assert "DELETE /runtime/webhooks/durabletask/instances?createdTimeFrom=" in hint
    assert "&createdTimeTo=" in hint and "&runtimeStatus=Completed,Failed,Terminated" in hint
    assert "code=" in hint  # the webhook needs the system key (devhost row 10)
