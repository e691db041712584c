"""Per-image CPU of the control plane's pure work, in memory (no Azurite, no SDK): one merge part over all shards,
the repeat search of its folders, and the exports (without image-size reads) of the results they make.

usage: ``python bench/control_plane_inmemory.py N [merge|search|exports ...]`` (env ``R``: repeats, best CPU kept;
``PROF=<stage>``: print that stage's cProfile; ``FILES=1``: an md5 of each export file too; ``VIEWS=1``: every shard
has its worker's merge view, as a shard that finished in one attempt has, so the merge part composes bytes instead of
reading entries). Entries are ``gpu_batch.pool.simulated``'s, 1,000 per shard, 2,000 per folder, as
``bench/control_plane.py`` makes them. Prints us of thread CPU per image per stage and an md5 of each stage's output
blobs: a change that keeps the md5s keeps the bytes (for these inputs). Benchmark only: it patches the activities' blob
helpers to an in-memory store, whose ``service`` offers the blob clients the activities' streams write through
(``adapters.block_writer``; smoke-tested at a tiny size by tests/unit/test_control_plane_inmemory_bench.py)."""
import cProfile, hashlib, io, json, os, pstats, sys, time, tempfile
from typing import Any, IO, Iterator
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from adapters import blob_requests
from adapters.blobs import BlobStore
from core import collector
collector.apply()  # the function app's thresholds, as its worker process runs these activities
import adapters.blob_files as blob_files
import activities.fanin as fa
import activities.exports as ex
import activities.shard_results as sr
from core.settings import Settings
from gpu_batch import layout
from gpu_batch.pool.simulated import synthetic_entry

class MemBlob:
    """One blob of ``Mem`` with the few BlobClient operations the activities' streams use (``adapters.block_writer``:
    staged blocks and their commit, ranged reads, properties, delete), so the merge parts and exports write through
    the same ``BlockBlobWriter``/``BlobSpool`` code as in Azure. The Put Blob of a small stream goes through
    ``blob_requests.put_blob``, patched below to ``put``."""
    def __init__(self, mem, container, name): self.mem, self.key, self.blob_name = mem, (container, name), name
    def _data(self):
        from azure.core.exceptions import ResourceNotFoundError
        try: return self.mem.blobs[self.key]
        except KeyError: raise ResourceNotFoundError(self.blob_name)
    def put(self, data):
        self.mem.blobs[self.key] = bytes(data); return hashlib.md5(self.mem.blobs[self.key]).hexdigest()
    def stage_block(self, block_id, data): self.mem.staged.setdefault(self.key, {})[block_id] = bytes(data)
    def commit_block_list(self, blocks, content_settings=None, **_):
        staged = self.mem.staged.pop(self.key, {})  # the service drops the blocks left out of the list
        return {"etag": self.put(b"".join(staged[b.id] for b in blocks))}
    def download_blob(self, offset=0, length=None, **_):
        data = self._data(); end = len(data) if length is None else offset + length
        return type("D", (), {"readall": lambda _s: data[offset:end]})()
    def get_blob_properties(self):
        data = self._data(); return type("P", (), {"size": len(data), "etag": hashlib.md5(data).hexdigest()})()
    def exists(self): return self.key in self.mem.blobs
    def delete_blob(self): self._data(); del self.mem.blobs[self.key]

class MemService:
    """The BlobServiceClient ``BlobStore`` wraps, as far as the activities use it: blob clients and the endpoint."""
    account_name, scheme, primary_hostname = "mem", "http", "mem.invalid"
    def __init__(self, mem): self.mem = mem
    def get_blob_client(self, container, name): return MemBlob(self.mem, container, name)

class Mem(BlobStore):
    def __init__(self):
        self.blobs: dict[tuple[str, str], bytes] = {}; self.staged: dict[tuple[str, str], dict[str, bytes]] = {}
        super().__init__(MemService(self))  # type: ignore[arg-type]
    def list_names(self, container, prefix=""):
        return iter(sorted(n for c, n in self.blobs if c == container and n.startswith(prefix)))
    def read_bytes(self, container, name):
        from azure.core.exceptions import ResourceNotFoundError
        try: return self.blobs[(container, name)]
        except KeyError: raise ResourceNotFoundError(name)
    def list_etags(self, container, prefix):
        return {n: hashlib.md5(self.blobs[(container, n)]).hexdigest() for n in self.list_names(container, prefix)}
    def write_bytes(self, container, name, data, content_type=None, cache_control=None):
        return MemBlob(self, container, name).put(data)
    def upload_file(self, container, name, data, content_type=None): MemBlob(self, container, name).put(data.read())

def _dl(store, container, name, fp):
    b = store.read_bytes(container, name); fp.write(b); return len(b)
def _del(store, container, prefix, keep):
    return 0
blob_requests.put_blob = lambda client, data, content_type=None, cache_control=None: client.put(data)
blob_files.download_to = ex.download_to = _dl
blob_files.delete_under = ex.delete_under = _del
fa.read_range = lambda store, c, n, o, l: store.read_bytes(c, n)[o:o + l]
ex.read_range = fa.read_range

N = int(sys.argv[1]); STAGES = sys.argv[2:] or ["merge", "search", "exports"]
PER_SHARD, PER_FOLDER = 1000, 2000
settings = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_CONTAINER": "state",
                              "TRAPBATCH_EXPORT_IMAGE_SIZES": "false"})
store = Mem(); C = settings.container; TID = "t1"
names = [f"site{(i // PER_FOLDER) // 10:03d}/cam{(i // PER_FOLDER) % 10:02d}/IMG_{i:08d}.JPG" for i in range(N)]
shards = (N + PER_SHARD - 1) // PER_SHARD
for s in range(shards):
    sid = layout.shard_id(s)
    imgs = names[s * PER_SHARD:(s + 1) * PER_SHARD]
    store.write_bytes(C, layout.manifest_blob(TID, sid, 1), json.dumps({"images": imgs}).encode())
    doc = {"images": [synthetic_entry(n, 1, 0.0) for n in imgs]}
    store.write_bytes(C, layout.attempt_results_blob(TID, sid, 1), json.dumps(doc, indent=1).encode())
store.write_bytes(C, layout.request_blob(TID), json.dumps({"model": "MDV5A", "container": "src"}).encode())
if os.environ.get("VIEWS") == "1":  # the workers' merge views (gpu_batch.formats.mergeview), made on the GPU nodes
    from gpu_batch.formats import jsonio
    from gpu_batch.formats.mergeview import build_view
    for s in range(shards):
        sid = layout.shard_id(s)
        etags = store.list_etags(C, layout.shard_prefix(TID, sid))
        results, manifest = layout.attempt_results_blob(TID, sid, 1), layout.manifest_blob(TID, sid, 1)
        view = build_view(TID, settings.threshold_for("MDV5A"), names[s * PER_SHARD:(s + 1) * PER_SHARD],
                          jsonio.loads(store.blobs[(C, results)])["images"], etags[results], etags[manifest])
        store.write_bytes(C, layout.attempt_view_blob(TID, sid, 1), view)
store.write_bytes(C, layout.enumeration_blob(TID), json.dumps({"images": N, "shards": shards, "container": "src"}).encode())

def cpu(fn, *a, prof=None):
    t = time.thread_time()
    if prof: prof.enable()
    r = fn(*a)
    if prof: prof.disable()
    return r, time.thread_time() - t

PROF = os.environ.get("PROF")
R = int(os.environ.get("R", "3"))
def stage(name, fn, *a):
    best = None; out = None
    for i in range(R):
        p = cProfile.Profile() if PROF == name and i == 0 else None
        out, t = cpu(fn, *a, prof=p)
        best = t if best is None else min(best, t)
        if p:
            s = io.StringIO(); pstats.Stats(p, stream=s).sort_stats(os.environ.get("SORT", "tottime")).print_stats(int(os.environ.get("TOP", "30"))); print(s.getvalue())
    print(f"{name:10s} {best / N * 1e6:8.1f} us/image", flush=True)
    return out

def merge():
    return fa.run_merge_part({"task_id": TID, "part": 0, "first_shard": 0, "shards": shards}, settings, store)
out = stage("merge", merge)
from core import fanin
def digest(*names):
    h = hashlib.md5()
    for n in names: h.update(store.blobs[(C, n)])
    return h.hexdigest()
print("merge out", digest(*[n for (c, n) in sorted(store.blobs) if n.startswith(layout.merge_work_prefix(TID))]))
if "search" in STAGES:
    def search():
        g = fa.plan_groups(store, C, TID, 1, fanin.SEARCH_DETECTIONS_PER_GROUP)
        return [fa.run_search_repeats({"task_id": TID, "group": i}, settings, store) for i in range(g)]
    stage("search", search)
    print("search out", digest(*[n for (c, n) in sorted(store.blobs) if "found" in n]))
if "exports" in STAGES:
    from activities.merge import _results_info
    info = _results_info(TID, "MDV5A", "2026-01-01T00:00:00Z", {"images": N, "shards": shards, "container": "src"}, None, {})
    body = store.blobs[(C, layout.merge_part_blob(TID, 0, "json", ""))]
    store.write_bytes(C, layout.results_blob(TID), fanin.results_head(info) + body[1:] + fanin.RESULTS_TAIL)
    stage("exports", lambda: ex.run_exports(TID, settings, store))
    print("exports out", digest(*[n for (c, n) in sorted(store.blobs) if "/exports/" in n]))
    if os.environ.get("FILES") == "1":  # each export file's md5, to tell which file a change altered
        for (c, n) in sorted(store.blobs):
            if "/exports/" in n: print("  file", digest(n), len(store.blobs[(c, n)]), n)
