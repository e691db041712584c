"""``core.deadline.Deadline`` and the own-storage client bound by one (``adapters.blobs.deadline_blob_store``): what an
Event Grid marker delivery (``api.arrivals``) hands its clients so that they end by its 30 s."""
from __future__ import annotations

import pytest

from devhost.azurite import ACCOUNT, ACCOUNT_KEY

# Azurite's well-known account at an endpoint that refuses connections (nothing listens on port 9).
REFUSED = (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
           f"BlobEndpoint=http://127.0.0.1:9/{ACCOUNT};")


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_a_deadline_counts_down_on_its_clock_and_goes_below_zero_once_passed() -> None:
    """``within(s)`` is ``s`` seconds from now on the given clock; ``left`` what remains, 0 or less once it passed."""
    from core.deadline import Deadline

    clock = Clock()
    deadline = Deadline.within(20.0, clock)
    assert deadline.left() == 20.0
    clock.now += 15.0
    assert deadline.left() == 5.0
    clock.now += 7.0
    assert deadline.left() == -2.0


def test_a_deadlines_own_storage_client_sends_nothing_once_its_deadline_passed() -> None:
    """``deadline_blob_store``'s calls are bound by the deadline (``deadline_storage_options``): once it passed, a
    call sends no request and fails as a service that did not answer ("not sent", busy for the callers), where the
    shared client's would try the account (and wait out the SDK's back-offs)."""
    from azure.core.exceptions import ServiceRequestTimeoutError

    from adapters.blobs import deadline_blob_store
    from core.deadline import Deadline
    from gpu_batch.storage_refs import service_did_not_answer

    clock = Clock()
    store = deadline_blob_store(REFUSED, Deadline(clock.now - 1.0, clock))
    with pytest.raises(ServiceRequestTimeoutError) as failed:
        store.service.get_container_client("images").exists(retry_total=0)
    assert "not sent" in str(failed.value) and service_did_not_answer(failed.value)
