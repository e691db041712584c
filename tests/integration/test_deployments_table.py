"""The exports combine writes ``deployments.csv`` a row at a time (``activities.exportparts.write_deployments``).

Why: the deployment is MegaDetector's camera folder, so a collection in camera-day folders has one a folder (a
million at ten million images in folders of ten); the table made whole, its rows, their lines and their join, held
~560 bytes a deployment beside the deployments in the combine (1.2 GB in all at a million). Same bytes as before.
"""
from __future__ import annotations

import gc
import tracemalloc
from typing import Any

from activities import exportparts
from activities.exportparts import _csv_line, write_deployments
from adapters.blobs import BlobStore
from gpu_batch.formats import camtrapdp


def _builder(deployments: int) -> camtrapdp.CamtrapBuilder:
    b = camtrapdp.CamtrapBuilder(0.2, {"1": "animal"}, "2026-12-01T00:00:00Z", "MDv5a")
    for i in range(deployments):
        d = b.deployments[f"Région-{i // 100:04d}/cam,{i % 7}/2024-06-{i % 28 + 1:02d}"] = camtrapdp._Deployment(
            "2024-06-01T06:00:00+02:00" if i % 5 else "", "2024-06-01T18:00:00+02:00" if i % 5 else "",
            timestamp_issues=camtrapdp.NO_TIME if i % 3 == 0 else 0)
        if i % 4 == 0:
            d.latitude, d.longitude, d.camera = 46.5 + i / 1e6, 7.25, f"cam \"{i}\""
    return b


def test_deployments_csv_is_the_tables_bytes_written_a_row_at_a_time(store: BlobStore, unique_name: str,
                                                                     monkeypatch: Any) -> None:
    monkeypatch.setattr(exportparts, "DEPLOYMENTS_BLOCK_BYTES", 64 * 1024)  # several blocks at these sizes
    store.ensure_container(unique_name)
    sizes = (2_000, 20_000)
    builders = {n: _builder(n) for n in sizes}
    write_deployments(store, unique_name, "warm.csv", builders[sizes[0]])  # first allocations are no table's
    peaks = {}
    for n, b in builders.items():
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            size = write_deployments(store, unique_name, f"deployments-{n}.csv", b)
            peaks[n] = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        whole = b"".join(_csv_line(r) for r in [camtrapdp.DEPLOYMENT_COLUMNS, *b.deployment_rows()])
        assert store.read_bytes(unique_name, f"deployments-{n}.csv") == whole and size == len(whole)
        props = store.service.get_blob_client(unique_name, f"deployments-{n}.csv").get_blob_properties()
        assert props.content_settings.content_type == "text/csv; charset=utf-8"
    per_deployment = (peaks[sizes[1]] - peaks[sizes[0]]) / (sizes[1] - sizes[0])
    assert per_deployment < 100, (peaks, per_deployment)  # bytes a deployment; the table made whole: ~180


def test_a_table_without_deployments_is_its_header(store: BlobStore, unique_name: str) -> None:
    store.ensure_container(unique_name)
    assert write_deployments(store, unique_name, "d.csv", _builder(0)) == len(_csv_line(
        list(camtrapdp.DEPLOYMENT_COLUMNS)))
    assert store.read_bytes(unique_name, "d.csv") == _csv_line(list(camtrapdp.DEPLOYMENT_COLUMNS))
