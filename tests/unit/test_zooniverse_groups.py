"""core.exportparts' planning of the Zooniverse fan-out: eligible offsets per part and bounded combine groups."""
from __future__ import annotations

import pytest

from core.exportparts import ZOONIVERSE_PIECES, eligible_before, zooniverse_groups


def test_each_part_starts_after_the_eligible_images_of_the_parts_before_it() -> None:
    assert eligible_before([5, 0, 7, 1]) == [0, 5, 5, 12]
    assert eligible_before([]) == []


@pytest.mark.parametrize("batches,parts,pieces", [(0, 3, 100), (1, 1, 100), (1000, 50, ZOONIVERSE_PIECES),
                                                  (7, 1, 9), (10, 10_000, 100), (10_000_000, 1, ZOONIVERSE_PIECES)])
def test_groups_cover_every_batch_once_in_order_within_the_request_bound(batches: int, parts: int,
                                                                         pieces: int) -> None:
    groups = zooniverse_groups(batches, parts, pieces)
    covered = [b for first, count in groups for b in range(first, first + count)] if batches < 10**6 else None
    if covered is not None:
        assert covered == list(range(batches))
    assert sum(n for _, n in groups) == batches
    # a batch costs its header, one range per part at most and its commit; a group is one batch at the least
    assert all(n == 1 or n * (parts + 2) <= pieces for _, n in groups)
    assert all(n >= 1 for _, n in groups)
