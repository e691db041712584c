"""The exports' fan-out, pure parts: where each part's entries are in the results file, and how the parts'
per-deployment facts combine into the single pass's deployments.

Why: one exports activity handles about 1.9M images within ``functionTimeout`` (activities.exports). The parts
(``activities.exportparts``) take the merge fan-in's own ranges (``MergeOutput.parts``): the results' images array
is the merge parts' JSON fragments in order, the very first one without its leading comma (``core.fanin``), each
entry on a line of its own (compact JSON holds no raw newline). So a part reads one byte range of the results, one
entry per line, and starts the image list's walk (``ListMetadata``) at its first shard.

Deployments: a part reports, per deployment in order of first appearance, ``[id, start, end, timestamp_issues,
location, latitude, longitude, camera]`` (the ``_Deployment`` its own walk built). Start, end and issues combine
whatever the order; coordinates and camera are the first image's that gives them, and a media row's comments depend
on them (``CamtrapBuilder._deployment_fields``): a part's rows equal the single pass's exactly when every part that
saw values for a deployment saw the same first ones. ``conflicts`` finds the deployments where they differ; then the
combine names the parts to run again (``parts_to_redo``) with the task's first facts given (``first_facts``), whose
rows are then the single pass's, and combines again: bounded whatever the task size (before, the orchestrator ran
the single activity instead, bounded to its ~1.9M images; it still does for a combine recorded before). The combined
starts also give each part the time its photos without a capture time get (``stand_ins``: a second before the
deployment's first).

Zooniverse batches (``activities.zooniverseparts``): the shuffle (``core.zooniverse.BatchAssigner``) is a
permutation of the eligible images' global indexes, so a part that knows how many eligible images the parts before
it hold (``eligible_before``, from the exports parts' counts) assigns each of its images its batch alone; a batch's
file is the header, then each part's rows of that batch in part order. ``zooniverse_groups`` cuts the batches into
combine activities of at most ``ZOONIVERSE_PIECES`` storage requests each, so a combine's time is bounded whatever the
task size.

Must not: do I/O.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from core.fanin import json_ranges
from gpu_batch.formats import camtrapdp

# Storage requests per Zooniverse combine activity (a Put Block From URL, or a streamed copy, per part range; a Put
# Block per header; a Put Block List per batch): at ~50 ms each, ~100 s one at a time, and the combine runs 4
# batches at a time, each with adapters.compose's 8 threads.
ZOONIVERSE_PIECES = 2_000


def part_ranges(parts: Sequence[Sequence[int]]) -> list[tuple[int, int, int, int]]:
    """``(part, first_shard, offset, length)`` of each merge part with entries, ``offset`` from just after the
    images array's ``[``; ``parts`` is ``MergeOutput.parts`` (``[first shard, shards, json bytes]``)."""
    out = []
    position = 0
    firsts = {i: p[0] for i, p in enumerate(parts)}
    for part, skip, length in json_ranges([p[2] for p in parts]):
        out.append((part, firsts[part], position, length))
        position += length
    return out


def first_facts(parts_facts: Sequence[Sequence[Sequence[Any]]]) -> dict[str, list[Any]]:
    """Each deployment's ``[latitude, longitude, camera]`` as the single pass ends with them: the first coordinates
    and the first camera in part order (a part's facts are its own first ones), None/"" where no part saw any."""
    first: dict[str, list[Any]] = {}
    for facts in parts_facts:
        for dep, _, _, _, _, lat, lon, camera in facts:
            known = first.setdefault(dep, [None, None, ""])
            if lat is not None and known[0] is None:
                known[0], known[1] = lat, lon
            if camera and not known[2]:
                known[2] = camera
    return first


def _differs(fact: Sequence[Any], first: dict[str, list[Any]]) -> bool:
    """Whether one part's first coordinates or camera for a deployment are not the task's first."""
    dep, _, _, _, _, lat, lon, camera = fact
    lat0, lon0, camera0 = first[dep]
    return (lat is not None and (lat, lon) != (lat0, lon0)) or bool(camera and camera != camera0)


def follows_first(first: dict[str, list[Any]], facts: Sequence[Sequence[Any]]) -> bool:
    """Whether ``facts`` (of one more part or merge view, after those ``first`` was made from, as ``first_facts``
    makes it) start from the first coordinates and camera in ``first``, so that their media rows are the single
    pass's; if so, ``first`` takes their values for deployments that had none. ``parts_to_redo``'s check, one part
    or view at a time (``activities.exports.ViewLines``)."""
    merged = first_facts([[[dep, "", "", False, "", *known] for dep, known in first.items()], facts])
    if any(_differs(fact, merged) for fact in facts):
        return False
    first.update(merged)
    return True


def parts_to_redo(parts_facts: Sequence[Sequence[Sequence[Any]]], first: dict[str, list[Any]]) -> list[int]:
    """The indexes of the parts whose rows differ from the single pass's: a deployment's first coordinates or camera
    in the part are not the task's first (``first_facts``). Run again with those facts given
    (``CamtrapBuilder.given``), such a part writes the single pass's rows: an image whose values differ from the
    deployment's keeps them in its comments, as in the single pass. A part that saw no coordinates (or no camera)
    for a deployment writes the same rows either way. None: the parts agree, their rows are the single pass's."""
    return [index for index, facts in enumerate(parts_facts) if any(_differs(fact, first) for fact in facts)]


def conflicts(parts_facts: Sequence[Sequence[Sequence[Any]]]) -> list[str]:
    """Deployments whose first coordinates or camera differ between the parts that saw any (see the module doc), in
    order of first appearance: what the combine's log names when it sends parts to run again."""
    first = first_facts(parts_facts)
    out: list[str] = []
    for facts in parts_facts:
        for fact in facts:
            if _differs(fact, first) and fact[0] not in out:
                out.append(fact[0])
    return out


def combine_deployments(builder: camtrapdp.CamtrapBuilder, parts_facts: Sequence[Sequence[Sequence[Any]]]) -> None:
    """Fill ``builder.deployments`` as the single pass would have (parts in order)."""
    for facts in parts_facts:
        for dep, start, end, issues, location, lat, lon, camera in facts:
            known = builder.deployments.get(dep)
            if known is None:
                known = builder.deployments[dep] = camtrapdp._Deployment("", "", location=location)
            known.cover(start, end)
            known.timestamp_issues |= int(issues)  # camtrapdp's bits (true from an older view: NO_TIME)
            if known.latitude is None and lat is not None:
                known.latitude, known.longitude = lat, lon
            if not known.camera and camera:
                known.camera = camera


def stand_ins(parts_facts: Iterable[Sequence[Sequence[Any]]]) -> list[dict[str, str]]:
    """Per part (its facts, in part order), its deployments with images without a capture time that have capture
    times in some part, each with ``camtrapdp.stand_in_time`` of its first over every part (a second before it, the
    combined ``deploymentStart``, so in no event): the time those images' media rows get instead of the detection
    time (``camtrapdp.CamtrapBuilder.stand_ins`` of the combined deployments, which the single pass uses). Each
    part's facts are read once, so they may come one at a time; held: each deployment's first time."""
    starts: dict[str, str] = {}
    untimed: list[list[str]] = []
    for facts in parts_facts:
        mine = []
        for dep, start, _, issues, *_ in facts:
            if start and (dep not in starts or camtrapdp.earlier(start, starts[dep])):  # _Deployment.cover's rule
                starts[dep] = start
            if int(issues) & camtrapdp.NO_TIME:
                mine.append(dep)
        untimed.append(mine)
    return [{dep: camtrapdp.stand_in_time(starts[dep]) for dep in mine if dep in starts} for mine in untimed]


def eligible_before(eligible: Sequence[int]) -> list[int]:
    """Per part, how many eligible images the parts before it hold (its first one's global index)."""
    out, total = [], 0
    for n in eligible:
        out.append(total)
        total += n
    return out


def zooniverse_groups(batches: int, parts: int, pieces: int = ZOONIVERSE_PIECES) -> list[tuple[int, int]]:
    """``(first batch, count)`` of each Zooniverse combine: batches in order, each group making at most ``pieces``
    storage requests (per batch: its header, a range of each of the ``parts`` at most, the commit), at least one
    batch per group."""
    size = max(1, pieces // (max(parts, 0) + 2))
    return [(first, min(size, batches - first)) for first in range(0, batches, size)]
