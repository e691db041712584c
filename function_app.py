"""The Azure Functions entry point: registers trapbatch's blueprints, sets the garbage collector's thresholds and
keeps the Azure SDK's per-request logs out of Application Insights.

Why the collector: the control plane's activities allocate a few short-lived objects per image, and CPython's
default thresholds spend a large share of their CPU collecting them (``core.collector`` says how much). The worker
process loads this module once, so this is where the whole process gets the raised thresholds, and where the
``azure`` loggers are set to WARNING (``gpu_batch.sdk_logging``: the host would otherwise ingest a trace for every
blob request the activities make).
"""
import azure.durable_functions as df
import azure.functions as func

import core.collector as collector
from activities import enumerate as enumerate_activity
from activities import (exportevents, exportparts, exports, fanin, generations, merge, notify, pool, previews,
                        task_events)
from activities import expiry as expiry_activities
from activities import repeat_search as repeat_search_activities
from activities import replaced_generations, rethreshold, results_zip, reuse, zooniverse_captures, zooniverseparts
from api import after_task, arrivals, openapi, starters, task_delete
from api import repeat_search as repeat_search_api
from orchestrations import expiry, replaced_sweep, repeat_search, repeats, rerender, shards, task, zip_sweep
from gpu_batch.sdk_logging import quiet_azure_sdk
from orchestrations import results_zip as results_zip_orchestration

collector.apply()
quiet_azure_sdk()

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (
    starters.bp,
    task_delete.bp,
    repeat_search_api.bp,
    arrivals.bp,
    openapi.bp,
    task.bp,
    shards.bp,
    repeats.bp,
    repeat_search.bp,
    enumerate_activity.bp,
    pool.bp,
    merge.bp,
    fanin.bp,
    repeat_search_activities.bp,
    previews.bp,
    exports.bp,
    exportparts.bp,
    exportevents.bp,
    zooniverseparts.bp,
    zooniverse_captures.bp,
    notify.bp,
    after_task.bp,
    rerender.bp,
    expiry.bp,
    results_zip_orchestration.bp,
    zip_sweep.bp,
    replaced_sweep.bp,
    rethreshold.bp,
    expiry_activities.bp,
    results_zip.bp,
    task_events.bp,
    generations.bp,
    reuse.bp,
    replaced_generations.bp,
):
    app.register_functions(blueprint)
