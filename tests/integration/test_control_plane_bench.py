"""The control-plane benchmark (bench/control_plane.py) end to end at a small size: simulated pool, devhost, Azurite.

CI runs it so the script keeps working as the control plane changes; the figures themselves are for the record
files (bench/results/control_plane-<N>.json), not for this test, which checks that each is present and sane.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--poll-min-s", "0.5", "--poll-max-s", "1", "--status-interval", "0.25", "--timeout-s", "500"]


def run_bench(out: Path, *args: str) -> tuple[dict[str, Any], str]:
    """bench/control_plane.py with ``args`` and fast polls, writing ``out``: its record and its printed output."""
    proc = subprocess.run([sys.executable, "bench/control_plane.py", *args, *FAST, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_the_benchmark_runs_a_task_end_to_end_and_records_every_figure(storage_connection: str,
                                                                        tmp_path: Path) -> None:
    r, _ = run_bench(tmp_path / "control_plane-1000.json", "--images", "1000", "--images-per-shard", "50",
                     "--images-per-folder", "500", "--failure-rate", "0.02", "--connection", storage_connection)

    assert r["runtime_status"] == "Completed" and r["final_stage"] in ("completed", "completed_with_errors")
    assert r["final_images"] == 1000 and r["shards"] == 20
    assert r["resubmissions"] > 0  # 2% of images fail per attempt: their shards get a second attempt
    wall = r["wall_s"]
    assert 0 < r["orchestrator_cpu_s"] < wall and 0 < r["activity_cpu_s"]
    assert abs(r["control_plane_cpu_share_of_gpu"] - r["control_plane_cpu_s"] / (1000 / 250)) < 1e-3
    assert 0 < r["max_history_events_per_instance"] < 5000 and r["instances"] >= 2  # the task and its shard group
    assert 0 < r["max_activity_s"] <= wall and r["max_activity"] in r["functions"]["activities"]
    assert 0 < r["status_p50_s"] <= r["status_p99_s"] <= r["status_max_s"] < wall and r["status_polls"] > 3
    slowest = r["status_slowest"]  # [seconds since start, latency, stage], slowest first
    assert slowest[0][1] == r["status_max_s"] and [s[1] for s in slowest] == sorted((s[1] for s in slowest),
                                                                                    reverse=True)
    assert all(0 <= s[0] < wall and isinstance(s[2], str) for s in slowest)
    assert 0 < r["enumerate_s"] < wall and 0 <= r["merge_s"] < wall
    assert r["repeat_search_s"] is not None and 0 < r["repeat_search_s"] < wall
    activities = r["functions"]["activities"]
    assert {"plan_listing", "list_images_part", "write_shard_manifests", "submit_shards", "poll_shards",
            "merge_part", "merge_combine", "search_repeats", "rank_repeats"} <= set(activities)  # the parallel fan-in
    assert all(f["calls"] > 0 and f["cpu_s"] >= 0 for f in activities.values())
    assert r["machine"]["cpus"] and len(r["machine"]["loadavg_before"]) == 3
    assert r["activity_rss_growth_mb"] is None  # activities ran beside each other: no call's memory is its own


def test_the_benchmark_runs_a_task_over_preloaded_blobs(tmp_path: Path) -> None:
    """``--preload`` (how the million-image record is made): its own Azurite, the blobs created inside it, the task
    over every one of them."""
    r, printed = run_bench(tmp_path / "control_plane-preloaded.json", "--images", "600", "--images-per-shard", "200",
                           "--preload", "--images-per-folder", "150", "--activity-workers", "1")
    assert "preloaded 600 blobs" in printed
    assert r["preloaded"] is True and "blobs preloaded" in r["machine"]["simulated"]
    assert r["runtime_status"] == "Completed" and r["final_images"] == 600 and r["shards"] == 3
    assert r["functions"]["activities"]["list_images_part"]["calls"] > 0 and r["scale_model"] is None
    growth = r["activity_rss_growth_mb"]  # one activity at a time: what each raised the process's memory by
    assert set(growth) <= set(r["functions"]["activities"]) and len(growth) > 5
    assert all(mb >= 0 for mb in growth.values()) and 0 < r["peak_rss_mb"]


def test_the_benchmark_starts_a_task_from_an_image_list(storage_connection: str, tmp_path: Path) -> None:
    """``--image-list site``: the task names every blob in a CSV list with a site column, so the enumeration reads
    the list (its plan and parts) instead of listing the container, and the exports carry the metadata.
    ``--trace-memory`` (one activity at a time) records every activity's heap peak."""
    r, _ = run_bench(tmp_path / "control_plane-image-list.json", "--images", "400", "--images-per-shard", "100",
                     "--images-per-folder", "100", "--image-list", "site", "--connection", storage_connection,
                     "--trace-memory", "--activity-workers", "1")
    assert r["image_list"] == "site" and r["runtime_status"] == "Completed" and r["final_images"] == 400
    assert r["final_failed"] == 0 and r["shards"] == 4
    activities = r["functions"]["activities"]
    heap = r["activity_heap_mb"]  # --trace-memory: every activity's heap peak (the figures are for bench/RESULTS.md)
    assert heap is not None and set(heap) == set(activities) and all(v >= 0 for v in heap.values())
    assert heap["merge_part"] > 0 and heap["exports_part"] > 0
    assert activities["plan_listing"]["calls"] == 1 and activities["list_images_part"]["calls"] >= 1
    from adapters.blobs import blob_store
    from gpu_batch import layout

    summary = blob_store(storage_connection).read_json("state400", layout.enumeration_blob(r["task_id"]))
    assert summary["image_list"]["rows"] == 400 and summary["image_list"]["metadata_columns"] == ["site"]


def test_the_benchmark_measures_an_only_new_rerun(storage_connection: str, tmp_path: Path) -> None:
    """``--only-new N``: after the task, N new images and the request again with ``only_new``; the record holds the
    re-run's own control plane (the reuse activity ran) apart from the first run's."""
    r, _ = run_bench(tmp_path / "control_plane-only-new.json", "--images", "300", "--images-per-shard", "100",
                     "--images-per-folder", "100", "--only-new", "20", "--connection", storage_connection)
    rerun = r["only_new_rerun"]
    assert (rerun["stage"], rerun["images"], rerun["new_images"], rerun["reused_images"]) == ("completed", 320, 20,
                                                                                            300)
    assert rerun["activities_cpu_s"]["reuse_previous_results"] > 0 and rerun["us_per_image"] > 0
    assert rerun["share_of_new_images_gpu_time"] > 0 and r["final_images"] == 300  # the first run's figures apart


def test_the_results_zip_benchmark_zips_a_task_both_ways(storage_connection: str, tmp_path: Path) -> None:
    """bench/results_zip.py at a small size: a real task's files, repeated, zipped in one pass and in parts."""
    out = tmp_path / "results_zip.json"
    proc = subprocess.run([sys.executable, "bench/results_zip.py", "--images", "300", "--copies", "3",
                           "--part-bytes", "100000", "--connection", storage_connection, "--out", str(out),
                           "--images-per-shard", "100", *FAST], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["images"] == 900 and r["files"] >= 5 and r["files_bytes"] > 3 * 100000
    assert r["parts"]["parts"] == -(-r["files_bytes"] // 100000) and r["single"]["files"] == r["files"]
    assert 0 < r["single"]["zip_bytes"] < r["files_bytes"] and 0 < r["parts"]["zip_bytes"] < r["files_bytes"]
    assert 0 < r["parts"]["longest_activity_s"] <= r["parts"]["wall_s"]


# The one activity that keeps scratch files: its input is bounded by a merge part (``merge_images_per_part`` images
# plus a shard); every other activity (the combines, the enumeration with its image list, the merge and exports
# parts) must take none.
PART_ACTIVITIES = {"exports_zooniverse_part"}


@pytest.mark.parametrize("image_list", ["site", "captures"])
def test_no_activity_outgrows_its_share_of_the_instances_local_disk(tmp_path: Path, image_list: str) -> None:
    """A Flex Consumption instance has 0.8 GB of temporary storage for the eight activities it may run at once
    (core.scratch). Every activity's scratch files, measured exactly per call (devhost.scratch_disk), scaled from
    this task's parts (200 images: the shape of 800,000 images) to the default part's 210,000 images, stay within
    an eighth of it; whatever grows with the task uses none."""
    from core.scratch import ACTIVITY_SCRATCH_BYTES
    from core.settings import OrchestrationKnobs

    r, _ = run_bench(tmp_path / f"control_plane-scratch-{image_list}.json", "--images", "800", "--images-per-shard",
                     "10000", "--shape-of", "800000", "--image-list", image_list, "--activity-workers", "1",
                     "--images-per-folder", "200")  # its own Azurite, its ~2,000 blobs apart
    assert r["runtime_status"] == "Completed" and r["final_images"] == 800
    activities = r["functions"]["activities"]
    assert activities["merge_part"]["calls"] >= 4 and activities["exports_part"]["calls"] >= 4
    assert ("exports_captures_combine" in activities) is (image_list == "captures")
    scratch = r["activity_scratch_mb"]
    assert scratch is not None
    assert set(scratch) <= PART_ACTIVITIES, scratch  # the others took no local disk at all
    knobs = OrchestrationKnobs()  # the defaults
    part_images = 800 * knobs.merge_images_per_part // 800_000
    bound = knobs.merge_images_per_part + knobs.images_per_shard
    for name in set(scratch) & PART_ACTIVITIES:
        assert scratch[name] * 1e6 / part_images * bound <= ACTIVITY_SCRATCH_BYTES, (name, scratch[name])
    assert r["activity_heap_mb"] is None  # no --trace-memory: no heap figures


def test_trace_memory_needs_one_activity_at_a_time(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "bench/control_plane.py", "--images", "10", "--images-per-shard", "5",
                           "--trace-memory", "--out", str(tmp_path / "x.json")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--trace-memory needs --activity-workers 1" in proc.stderr
    assert not (tmp_path / "x.json").exists()
