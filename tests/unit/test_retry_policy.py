"""orchestrations/retries.py: the waits between an activity's attempts."""
from __future__ import annotations

from orchestrations.retries import POOL_RETRY, STORAGE_RETRY, RetryPolicy


def test_storage_and_pool_retries_wait_two_then_four_seconds() -> None:
    """Three calls, 6 s of durable timers between them: long enough to outlast a storage throttling burst, short
    enough that a failing task says so within seconds. The orchestration tests compare timers with ``delay_s`` itself,
    so only these values pin the policy's first delay and backoff."""
    for policy in (STORAGE_RETRY, POOL_RETRY):
        assert policy == RetryPolicy(attempts=3, first_delay_s=2.0, backoff=2.0)
        assert [policy.delay_s(n) for n in (1, 2)] == [2.0, 4.0]
