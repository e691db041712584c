"""The Azure Functions entry point: registers trapbatch's blueprints and nothing else."""
import azure.durable_functions as df
import azure.functions as func

from activities import enumerate as enumerate_activity
from activities import exports, fanin, generations, merge, notify, pool, previews
from api import arrivals, openapi, starters
from orchestrations import repeats, shards, task

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (
    starters.bp,
    arrivals.bp,
    openapi.bp,
    task.bp,
    shards.bp,
    repeats.bp,
    enumerate_activity.bp,
    pool.bp,
    merge.bp,
    fanin.bp,
    previews.bp,
    exports.bp,
    notify.bp,
    generations.bp,
):
    app.register_functions(blueprint)
