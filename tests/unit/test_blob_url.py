"""``BlobStore.url``: a blob's address as a task's status answer gives it (``api.starters``, the results' ``url``)."""
from __future__ import annotations

from adapters.blobs import BlobStore, service_client


def test_a_blob_url_never_carries_the_connection_strings_sas() -> None:
    """azure-storage-blob writes a connection string's SharedAccessSignature into a client's ``url`` ("The full
    endpoint URL to this entity, including SAS token if used"), so a status answer handed every function-key holder
    the app's SAS where the app ran on a SAS connection string. The name stays encoded as the SDK encodes it."""
    store = BlobStore(service_client("BlobEndpoint=https://acct.blob.core.windows.net;"
                                     "SharedAccessSignature=sv=2024-11-04&ss=b&srt=sco&sp=rl&sig=s3cret%3D"))
    url = store.url("results", "task-1/a b#c.json")
    assert "sig" not in url and "?" not in url and "s3cret" not in url
    assert url == "https://acct.blob.core.windows.net/results/task-1/a%20b%23c.json"
    assert store.url("results", "x.json") == f"{store.endpoint}/results/x.json"
