"""``trapbatch``: the operator's command for a trapbatch app (Azure or devhost), over its HTTP API only.

    config.py    where the endpoint, function key and storage access come from (flags, env, config file)
    client.py    the HTTP API, with every failure turned into a ``CliError`` that says what to do next
    progress.py  waiting for a task: the live progress bar (rich) or one line per change when not on a terminal
    download.py  results, CSV, exports and previews out of blob storage into a folder
    main.py      the click commands: submit, status, list, watch, cancel, results, repeats, estimate

Layering (tests/unit/test_layering.py): the CLI runs on an operator's laptop, so it imports only core's pure modules
(the request validation, the stage names), never activities, orchestrations, adapters or api.
"""
