"""activities.replaced_images: which earlier entries a resumed run's listing removes, and from which documents (the
end-to-end case, through devhost and Azurite, is tests/integration/test_reruns.py)."""
from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Mapping, cast

import dataclasses

from activities.replaced_images import drop_replaced_results, replaced
from adapters.blobs import BlobStore
from gpu_batch import layout
from gpu_batch.manifest import ShardManifest

KEY, SID, BOX = "task-x", "s00000", "state"
# the attempt 1 manifest a listing of an only_new key writes for the shard (activities.enumerate._write_manifest)
WRITTEN = ShardManifest(task_id=KEY, shard_id=SID, attempt=1, source_container="images", images=("a", "b"),
                        output_container=BOX, output_blob=layout.attempt_results_blob(KEY, SID, 1), model="MDV5A")


class _Store:
    """What the module asks of a BlobStore, in memory; ``updates``: the blobs ``update_json`` wrote."""

    def __init__(self, blobs: dict[str, Any]) -> None:
        self.blobs = {name: json.dumps(value).encode() for name, value in blobs.items()}
        self.updates: list[str] = []
        self.listed = 0
        self.deleted: list[str] = []

    def read_bytes_or_none(self, container: str, name: str) -> bytes | None:
        return self.blobs.get(name)

    def list_names(self, container: str, prefix: str = "") -> Iterator[str]:
        self.listed += 1
        return iter(sorted(n for n in self.blobs if n.startswith(prefix)))

    def update_json(self, container: str, name: str, change: Callable[[Any], Any]) -> Any:
        new = change(json.loads(self.blobs[name]))
        if new is not None:
            self.blobs[name] = json.dumps(new).encode()
            self.updates.append(name)
        return new

    def delete_if_exists(self, container: str, name: str) -> bool:
        self.deleted.append(name)
        return self.blobs.pop(name, None) is not None

    def doc(self, name: str) -> Any:
        return json.loads(self.blobs[name])


def _drop(store: _Store, shard: list[str], now: Mapping[str, str]) -> int:
    return drop_replaced_results(cast(BlobStore, store), BOX, KEY, SID, shard, now)


def _results(*names: str, damaged: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"images": [{"file": n, "detections": []} for n in names],
            "info": {"trapbatch": {"complete": True, **({"damaged": list(damaged)} if damaged else {})}}}


def test_an_entry_stands_only_for_an_image_whose_etag_is_known_and_unchanged() -> None:
    before = {"a": "1", "b": "2", "c": "3"}
    now = {"a": "1", "b": "9", "d": "4"}
    assert replaced(["a", "b", "c", "d"], before, now) == {"b", "c", "d"}


def test_the_entries_of_replaced_images_leave_every_attempts_results_and_nothing_else_changes() -> None:
    first, second = layout.attempt_results_blob(KEY, SID, 1), layout.attempt_results_blob(KEY, SID, 2)
    manifest = layout.manifest_blob(KEY, SID, 1)
    store = _Store({layout.shard_etags_blob(KEY, SID): {"etags": {"a": "1", "b": "2", "c": "3"}},
                    first: _results("a", "b", damaged=("a", "b")), second: _results("c"),
                    manifest: {"images": ["a", "b", "c"]}})
    removed = _drop(store, ["a", "b", "c"], {"a": "1", "b": "7", "c": ""})
    assert removed == 2
    assert [e["file"] for e in store.doc(first)["images"]] == ["a"]
    assert store.doc(first)["info"]["trapbatch"]["damaged"] == ["a"]
    assert store.doc(second)["images"] == []
    assert sorted(store.updates) == sorted([first, second])  # the manifest and the ETags are not results


def test_a_shard_whose_earlier_listing_recorded_no_etags_or_none_changed_is_left_unread() -> None:
    first = layout.attempt_results_blob(KEY, SID, 1)
    unrecorded = _Store({first: _results("a")})
    assert _drop(unrecorded, ["a"], {"a": "5"}) == 0
    same = _Store({layout.shard_etags_blob(KEY, SID): {"etags": {"a": "1"}}, first: _results("a")})
    assert _drop(same, ["a"], {"a": "1"}) == 0
    assert unrecorded.updates == same.updates == [] and same.listed == 0


def test_a_shard_whose_earlier_listing_wrote_an_etags_document_without_any_etag_is_left_unread() -> None:
    """A listing whose parts came from a release before ETags but whose shards were cut after it (deployed while it
    listed) wrote ``{"etags": {}}`` (or names with ""): it recorded no ETag, so the shard keeps its entries by name, as
    a shard with no ETags document does; read as ETags recorded, every image of it counted unknown and ran again."""
    first = layout.attempt_results_blob(KEY, SID, 1)
    for recorded in ({}, {"a": "", "b": ""}):
        store = _Store({layout.shard_etags_blob(KEY, SID): {"etags": recorded}, first: _results("a", "b")})
        assert _drop(store, ["a", "b"], {"a": "5", "b": "6"}) == 0
        assert store.updates == [] and store.listed == 0
        assert [e["file"] for e in store.doc(first)["images"]] == ["a", "b"]


def test_an_only_new_keys_listing_drops_the_earlier_runs_attempt_0_manifest_first_and_only_attempt_0() -> None:
    """attempt 0 (an ``only_new`` re-run's reused entries) lists the shard as the earlier listing cut it; a resumed
    run's listing deletes it, its manifest first (the one every reader takes before attempt 1's), replaced images or
    not. Another key's listing lists nothing for it (it has no attempt 0); its shards are still left unread."""
    zero = [layout.attempt_results_blob(KEY, SID, 0), layout.attempt_coverage_blob(KEY, SID, 0),
            layout.attempt_damaged_blob(KEY, SID, 0), layout.manifest_blob(KEY, SID, 0)]
    first = layout.attempt_results_blob(KEY, SID, 1)
    blobs = {layout.shard_etags_blob(KEY, SID): {"etags": {"a": "1", "b": "2"}}, first: _results("b"),
             layout.manifest_blob(KEY, SID, 1): {"images": ["b"]}, **{name: {} for name in zero}}
    blobs[zero[0]] = _results("a")
    store = _Store(blobs)
    assert drop_replaced_results(cast(BlobStore, store), BOX, KEY, SID, ["a", "b"], {"a": "1", "b": "2"},
                                 reuses=WRITTEN) == 0
    assert store.deleted[0] == layout.manifest_blob(KEY, SID, 0) and sorted(store.deleted) == sorted(zero)
    assert sorted(store.blobs) == sorted(set(blobs) - set(zero)) and store.updates == []
    other = _Store(blobs)
    assert _drop(other, ["a", "b"], {"a": "1", "b": "2"}) == 0
    assert other.listed == 0 and other.deleted == [] and sorted(other.blobs) == sorted(blobs)


def test_an_attempt_0_made_from_the_manifest_this_listing_wrote_is_kept_without_its_replaced_images() -> None:
    """An activity runs at least once: this listing's own call, run again late after its run's reuse step wrote
    attempt 0 from the manifest the call writes again, deleted that attempt 0, which nothing writes again. Kept now
    (its manifest is this listing's, as attempt 0), the entries of images replaced since removed as from every
    attempt; one made from another manifest (another cut, or other fields) still goes."""
    zero = [layout.attempt_results_blob(KEY, SID, 0), layout.attempt_coverage_blob(KEY, SID, 0),
            layout.manifest_blob(KEY, SID, 0)]
    own = dataclasses.replace(WRITTEN, attempt=0, output_blob=zero[0])
    blobs = {layout.shard_etags_blob(KEY, SID): {"etags": {"a": "1", "b": "2"}}, zero[0]: _results("a", "b"),
             zero[1]: {}, zero[2]: own.to_dict(), layout.manifest_blob(KEY, SID, 1): WRITTEN.to_dict()}
    store = _Store(blobs)
    assert drop_replaced_results(cast(BlobStore, store), BOX, KEY, SID, ["a", "b"], {"a": "1", "b": "2"},
                                 reuses=WRITTEN) == 0
    assert store.deleted == [] and sorted(store.blobs) == sorted(blobs)
    assert drop_replaced_results(cast(BlobStore, store), BOX, KEY, SID, ["a", "b"], {"a": "1", "b": "9"},
                                 reuses=WRITTEN) == 1  # b replaced: its entry goes from attempt 0 too
    assert store.deleted == [] and [e["file"] for e in store.doc(zero[0])["images"]] == ["a"]
    for other in (dataclasses.replace(WRITTEN, images=("a", "b", "c")), dataclasses.replace(WRITTEN, model="MDV5B")):
        store = _Store(blobs)
        drop_replaced_results(cast(BlobStore, store), BOX, KEY, SID, list(other.images), {"a": "1", "b": "2"},
                              reuses=other)
        assert sorted(store.deleted) == sorted(zero)


# the same listing's manifest stamped with its call's ``listing_run`` (a run with an id: activities.enumerate)
STAMPED = dataclasses.replace(WRITTEN, listing_run="task-x_r260101130000cd34")


def _with_attempt_0(made: ShardManifest) -> tuple[dict[str, Any], list[str]]:
    """The shard's blobs with an attempt 0 the reuse step made from ``made`` (activities.reuse.reuse_shard), and the
    names of attempt 0's blobs."""
    zero = [layout.attempt_results_blob(KEY, SID, 0), layout.attempt_coverage_blob(KEY, SID, 0),
            layout.manifest_blob(KEY, SID, 0)]
    own = dataclasses.replace(made, attempt=0, output_blob=zero[0])
    return {layout.shard_etags_blob(KEY, SID): {"etags": {"a": "1", "b": "2"}}, zero[0]: _results("a", "b"),
            zero[1]: {}, zero[2]: own.to_dict(), layout.manifest_blob(KEY, SID, 1): made.to_dict()}, zero


def _dropped(blobs: dict[str, Any], written: ShardManifest) -> list[str]:
    store = _Store(blobs)
    drop_replaced_results(cast(BlobStore, store), BOX, KEY, SID, ["a", "b"], {"a": "1", "b": "2"}, reuses=written)
    return sorted(store.deleted)


def test_an_attempt_0_of_this_listing_is_kept_though_a_field_the_settings_shape_differs_in_the_late_duplicate() -> None:
    """A late duplicate of the listing's call run after an app setting changed or a release was deployed (an app
    restart runs the activities in flight again) writes a manifest whose settings-shaped fields differ from the one
    the run's reuse step copied into attempt 0; compared field by field it deleted that attempt 0, which nothing
    writes again (the loss of a shard reused whole). The listing's stamp, from the call's input, is the same."""
    blobs, _ = _with_attempt_0(STAMPED)
    for later in (dataclasses.replace(STAMPED, detection_threshold=0.2),
                  dataclasses.replace(STAMPED, merge_view_threshold=0.3),
                  dataclasses.replace(STAMPED, output_container="other")):
        assert _dropped(blobs, later) == []


def test_an_attempt_0_of_another_listing_goes_where_it_cut_the_shard_otherwise_and_stays_where_alike() -> None:
    """Another run's listing (another stamp): its attempt 0 goes where another field differs (the resumed run's reuse
    step, always run, writes attempt 0 again for its own listing, stamped with it), and stays where it lists the shard
    as this listing cuts it, as before the stamp: a late call of a replaced run that finds the replacing run's fresh
    attempt 0 of the same cut must not delete it (by stamps alone it did; nothing writes it again)."""
    other = dataclasses.replace(STAMPED, listing_run="task-x_r260101120000ab12")
    blobs, zero = _with_attempt_0(other)
    assert _dropped(blobs, dataclasses.replace(STAMPED, images=("a", "b", "c"))) == sorted(zero)
    assert _dropped(blobs, dataclasses.replace(STAMPED, detection_threshold=0.2)) == sorted(zero)
    assert _dropped(blobs, STAMPED) == []


def test_an_attempt_0_without_a_stamp_is_kept_only_where_every_other_field_is_this_listings() -> None:
    """An attempt 0 of a release before the stamp (or of a run without an id, which stamps none) is compared as
    before, field by field, the stamp left out: kept where this listing's manifest is the same but for its stamp (the
    call's first execution ran before the release that stamps), gone where another field differs."""
    blobs, zero = _with_attempt_0(WRITTEN)
    assert _dropped(blobs, STAMPED) == [] and _dropped(blobs, WRITTEN) == []
    assert _dropped(blobs, dataclasses.replace(STAMPED, detection_threshold=0.2)) == sorted(zero)
    assert _dropped(blobs, dataclasses.replace(STAMPED, images=("a", "b", "c"))) == sorted(zero)
    stamped, _ = _with_attempt_0(STAMPED)  # this listing has none (a run without an id): fields, stamp left out
    assert _dropped(stamped, WRITTEN) == []


def test_the_listing_stamp_round_trips_is_left_out_when_there_is_none_and_unknown_keys_are_read_past() -> None:
    """A worker of an earlier release (still on the pool's nodes) reads the manifest with the stamp as before: its
    ``from_dict`` takes the fields it knows by name, as this one reads past a key added later."""
    data = json.loads(json.dumps(STAMPED.to_dict()))
    assert data["listing_run"] == STAMPED.listing_run and ShardManifest.from_dict(data) == STAMPED
    assert "listing_run" not in WRITTEN.to_dict() and ShardManifest.from_dict(WRITTEN.to_dict()) == WRITTEN
    assert ShardManifest.from_dict({**data, "added_later": {"x": 1}}) == STAMPED
