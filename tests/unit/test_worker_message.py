"""``activities.pool.worker_message``: the worker's last error line, as the app keeps it in Durable history and
statuses (a shard group's ``unreachable`` note, ``shards_given_up``), with no secret in it."""
from __future__ import annotations

from typing import Any

from activities.pool import worker_message
from gpu_batch.pool import TaskInfo, TaskResult, TaskState


class LogStore:
    """A BlobStore stand-in holding one pool task's log."""

    def __init__(self, text: str) -> None:
        self.data = text.encode()

    def size_or_none(self, container: str, name: str) -> int:
        return len(self.data)

    def read_bytes(self, container: str, name: str) -> bytes:
        return self.data


def said(line: str) -> str:
    info = TaskInfo("s00001-a1", TaskState.completed, TaskResult.failure, 69, log="logs/task-0/s00001-a1/")
    store: Any = LogStore(f"2026-12-05 15:00:00 ERROR gpu_batch.worker: {line}\n")
    return worker_message(store, info)


def test_the_worker_s_words_keep_no_sas_token_account_key_or_bearer_token() -> None:
    """An exit 69's words carry an SDK exception's text (``str(cause)[:500]``), which names the request's URL, its SAS
    query string with it (requests: "Max retries exceeded with url: /c/b?sv=...&sig=..."), or a connection string's
    parts: kept, the SAS would reach Durable history's plain tables and every status reader. The query goes, the
    rest (host, path, the cause) stays."""
    sas = "sv=2022-11-02&ss=b&srt=co&sp=rl&se=2027-01-01T00:00:00Z&sig=AbC%2Fsecret%3D"
    text = said("storage did not answer the manifest read of work/task-0/s00001-a1.json (another attempt runs the "
                "shard): ServiceRequestError: HTTPSConnectionPool(host='acct.blob.core.windows.net', port=443): Max "
                f"retries exceeded with url: /work/task-0/s00001-a1.json?{sas} (Caused by ConnectTimeoutError()); "
                f"https://kv.vault.azure.net/secrets/x?{sas}; DefaultEndpointsProtocol=https;AccountName=acct;"
                "AccountKey=c2VjcmV0a2V5PT0=;EndpointSuffix=core.windows.net; SharedAccessSignature=sv=2022&sig=zz; "
                "Authorization: Bearer eyJhbGciOi.secret.token")
    for secret in ("AbC%2Fsecret", "sig=zz", "sv=2022&", "c2VjcmV0a2V5", "eyJhbGciOi", "sp=rl"):
        assert secret not in text, text
    assert "url: /work/task-0/s00001-a1.json?" in text and "(Caused by ConnectTimeoutError())" in text, text
    assert "https://kv.vault.azure.net/secrets/x?[redacted]; DefaultEndpointsProtocol=https;AccountName=acct;" in text
    assert "AccountKey=[redacted];EndpointSuffix" in text, text


def test_words_without_secrets_are_kept_as_they_are() -> None:
    line = ("github.com, the download host of model 'MDV5A', did not answer (another attempt runs the shard): "
            "URLError: <urlopen error [Errno -3] Temporary failure in name resolution>; what? x = 1")
    assert said(line) == line


def test_a_long_line_of_question_marks_is_cleaned_in_linear_time() -> None:
    """A worker's line is kept whole until cleaned (cut to 1,000 characters only after): a 100 KB line of ``a?a?...``
    (a path or a dump full of ``?`` and no ``=``) made the query pattern's look-ahead scan to the line's end from each
    ``?``: 24 s for 100 KB, a poll activity held past its timeout."""
    import time

    from core.errors import without_secrets
    for line in ("a?" * 50_000, "/" + "?b" * 50_000):
        start = time.monotonic()
        assert without_secrets(line) == line
        assert time.monotonic() - start < 10.0  # generous: ~0.1 s here; quadratic took 24 s
    assert without_secrets("/c/b?x?sv=1&sig=s3cret rest") == "/c/b?x?[redacted] rest"


def test_secrets_percent_encoded_quoted_as_json_or_in_a_url_s_user_part_go_too() -> None:
    """A SAS URL inside another URL's query is percent-encoded (no "?", "sig%3D"), an SDK error's JSON body or a
    settings dump quotes its keys ("AccountKey": "..."), and a proxy URL carries user:password: each got through."""
    from core.errors import without_secrets
    text = without_secrets("redirect https%3A%2F%2Fa.blob.core.windows.net%2Fc%2Fb%3Fsv%3D1%26sig%3DPCTSECRET%253D "
                           "body {\"AccountKey\": \"JSONSECRET==\", 'password':'DICTSECRET'} "
                           "proxy http://bob:PWSECRET@proxy.example:3128/ failed")
    for secret in ("PCTSECRET", "JSONSECRET", "DICTSECRET", "PWSECRET"):
        assert secret not in text, text
    assert "https%3A%2F%2Fa.blob.core.windows.net%2Fc%2Fb%3Fsv%3D1%26sig%3D[redacted]" in text, text
    assert "{\"AccountKey\": \"[redacted]\", 'password':'[redacted]'}" in text, text
    assert "http://bob:[redacted]@proxy.example:3128/ failed" in text, text


def test_an_activity_s_failure_in_a_status_names_no_sas() -> None:
    """``failure_line`` (a status's ``error``, a busy step's ``waiting`` reason) shows an activity's failure, whose
    first line for a connection error names the request's URL with its SAS query (requests, through azure-core)."""
    from core.errors import failure_line
    exc = RuntimeError("Activity function 'read_manifest' failed:  ServiceRequestError: HTTPSConnectionPool(host="
                       "'acct.blob.core.windows.net', port=443): Max retries exceeded with url: /c/b.json?sv=2022-11-02"
                       "&sp=r&sig=ACTSECRET%3D (Caused by ConnectTimeoutError())\nTraceback ...")
    line = failure_line(exc, 300)
    assert "ACTSECRET" not in line and "sp=r" not in line, line
    assert "host='acct.blob.core.windows.net'" in line and "url: /c/b.json?[redacted] (Caused by" in line, line


def test_a_failed_task_s_error_names_no_sas() -> None:
    """api's statuses put a failed orchestration's output (its activity's exception) through ``failure_message``."""
    from core.errors import failure_message
    text = failure_message("Orchestrator function 'task' failed: Activity function 'merge' failed:  "
                           "ServiceRequestError: Max retries exceeded with url: /c/r.json?se=2027&sig=OUTSECRET "
                           "(Caused by X)\nmore")
    assert "OUTSECRET" not in text and "se=2027" not in text, text
    assert text.endswith("Max retries exceeded with url: /c/r.json?[redacted] (Caused by X)"), text


def test_basic_and_shared_key_headers_and_escaped_forms_lose_their_secrets() -> None:
    """Forms a request or an error's body carries that got through: an ``Authorization: Basic`` header (a proxy's or a
    webhook's user:password in base64), Azure Storage's ``SharedKey account:signature`` header, JSON inside JSON (a
    .NET exception serialized into Durable history's ``Details``, whose text quotes its own quotes: ``\\"sig\\"``),
    and a query's ``&`` and ``=`` escaped for JSON or HTML (``\\u0026sig=``, ``sig\\u003d``, ``&amp;sig=``), which
    no ``?`` or word boundary precedes. The account, the header's name and the key names stay: they say what to
    check."""
    from core.errors import without_secrets
    text = without_secrets(
        "Authorization: Basic dXNlcjpCQVNJQ1NFQ1JFVA==; {'Proxy-Authorization': 'basic QkFTSUMyU0VDUkVU'} "
        "Authorization: SharedKey acct:SKSECRET+c2ln/PT0=; x-ms-auth: SharedKeyLite acct2:SKLSECRET= "
        r'{\"sig\": \"JSONESCSECRET\", \"AccountKey\":\"JSONESC2SECRET==\", \\\"sig\\\": \\\"DOUBLESECRET\\\"} '
        r"https://a.blob.core.windows.net/c/b\u003fsv=1\u0026sig\u003dUESCSECRET%3D x\u0026sig=UESC2SECRET "
        "<a href=\"https://a.blob.core.windows.net/c/b?sv=1&amp;sig=AMPSECRET\">")
    for secret in ("dXNlcjpCQVNJQ1NFQ1JFVA", "QkFTSUMyU0VDUkVU", "SKSECRET", "c2ln", "SKLSECRET", "JSONESCSECRET",
                   "JSONESC2SECRET", "DOUBLESECRET", "UESCSECRET", "UESC2SECRET", "AMPSECRET"):
        assert secret not in text, (secret, text)
    assert "Authorization: Basic [redacted];" in text and "'Proxy-Authorization': 'basic [redacted]'" in text, text
    assert "SharedKey acct:[redacted];" in text and "SharedKeyLite acct2:[redacted] " in text, text
    assert r'{\"sig\": \"[redacted]\", \"AccountKey\":\"[redacted]\", \\\"sig\\\": \\\"[redacted]\\\"}' in text, text
    assert "x\\u0026sig=[redacted] " in text, text


def test_words_that_only_look_like_the_new_forms_are_kept() -> None:
    """"Basic" and "SharedKey" are also plain words (a pool's tier, a setting's name): only a header's value goes."""
    from core.errors import without_secrets
    for line in ("the Basic tier of the account: upgrade it", "SharedKey authorization is disabled on acct (use a SAS",
                 "{\"signature\": \"kept\"} design: \"sigma\": \"kept\""):
        assert without_secrets(line) == line


def test_long_adversarial_lines_for_the_new_forms_are_cleaned_in_linear_time() -> None:
    """Each new pattern on 200 KB built to make a backtracking pattern scan again from every position (a quadratic
    scan of it takes minutes); the deadline is generous, the point is minutes against well under a second. An
    unbounded run of backslashes before a JSON key's quote took 200 s for the third line."""
    import time

    from core.errors import without_secrets
    lines = ["Authorization " * 15_000, "SharedKey a" * 20_000, "\\\"sig\\\": \\\"" + "\\" * 200_000,
             "\\u0026sig" * 20_000, "\"sig\": \"" * 25_000, "Basic " * 35_000, "\\u0026" * 30_000,
             "\\\"sig\\\": \\\"" + "x" * 200_000, "Authorization: Basic " * 10_000]
    for line in lines:
        start = time.monotonic()
        without_secrets(line)
        assert time.monotonic() - start < 10.0, line[:40]
