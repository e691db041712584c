"""A one-route app that shows which App Service Authentication headers reach the function (devhost callers)."""
from __future__ import annotations

import json

import azure.functions as func

app = func.FunctionApp()


@app.route(route="whoami", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def whoami(req: func.HttpRequest) -> func.HttpResponse:
    seen = {k.lower(): v for k, v in req.headers.items() if k.lower().startswith("x-ms-client-principal")}
    return func.HttpResponse(json.dumps(seen), mimetype="application/json")
