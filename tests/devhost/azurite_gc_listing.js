// Harness of tests/devhost/test_azurite_gc.py: the blob list Azurite's garbage collector works from
// (BlobReferredExtentsAsyncIterator over LokiBlobMetadataStore.listAllBlobs), stock and as devhost/azurite_blob.js
// fixes it, over an in-memory store holding the same names in several containers plus snapshots and uncommitted
// blobs. Prints one JSON line. With "sweep": a whole collector pass (BlobGCManager.markSweep) over Azurite's
// in-memory extent store, stock or fixed: which extents' data and records are left.
"use strict";
const os = require("os");
const path = require("path");

const root = path.join(__dirname, "..", "..");
const dist = path.join(root, "node_modules", "azurite", "dist", "src");
const Store = require(path.join(dist, "blob", "persistence", "LokiBlobMetadataStore")).default;
const Referred = require(path.join(dist, "blob", "persistence", "BlobReferredExtentsAsyncIterator")).default;
const fix = require(path.join(root, "devhost", "azurite_blob.js"));

async function store(names, containers) {
  const s = new Store(path.join(os.tmpdir(), `unused-${process.pid}-${Math.random()}.json`), true);
  await s.init();
  const docs = [];
  for (let k = 0; k < names; k++) {
    for (let c = 0; c < containers; c++) {
      const i = docs.length;
      docs.push({accountName: "devstoreaccount1", containerName: `photos${c}`,
                 name: `cam${k % 2}/img ${String(k).padStart(5, "0")}.jpg`, snapshot: i % 97 === 5 ? "2026-12-03" : "",
                 isCommitted: i % 89 !== 7, properties: {contentMD5: undefined}, persistency: {id: `extent-${i}`}});
    }
  }
  s.db.getCollection(s.BLOBS_COLLECTION).insert(docs);
  return [s, docs];
}

async function referred(s) {
  const ids = new Set();
  let pages = 0;
  const it = new Referred(s);
  for (let res = await it.next(); res.done === false || res.value.length > 0; res = await it.next()) {
    res.value.forEach((id) => ids.add(id));
    pages += 1;
  }
  return [ids, pages];
}

async function listed(s, includeSnapshots, includeUncommitted, pageSize) {
  const got = [];
  let marker;
  do {
    const [docs, next] = await s.listAllBlobs(pageSize, marker, includeSnapshots, includeUncommitted);
    docs.forEach((d) => got.push(d.persistency.id));
    marker = next;
  } while (marker !== undefined);
  return got;
}

const quiet = { info() {}, debug() {}, error() {}, verbose() {}, warn() {} };

async function sweep(fixed, live, dead) {
  const classes = fix.azuriteClasses();
  if (fixed) fix.applyAll();
  const { MemoryExtentChunkStore } = require(path.join(dist, "common", "persistence", "MemoryExtentStore"));
  const GC = require(path.join(dist, "blob", "gc", "BlobGCManager")).default;
  const tmp = () => path.join(os.tmpdir(), `unused-${process.pid}-${Math.random()}.json`);
  const meta = new classes.LokiExtentMetadata(tmp(), true);
  const extents = new classes.MemoryExtentStore("blob", new MemoryExtentChunkStore(1 << 30), meta, quiet,
                                                (...a) => new Error(a.join(" ")));
  await extents.init();
  const blobs = new Store(tmp(), true);
  await blobs.init();
  const liveIds = [];
  const deadIds = [];
  const docs = [];
  for (let i = 0; i < live + dead; i++) {
    const chunk = await extents.appendExtent(Buffer.from(`data ${i}`));
    if (i % 4 !== 3) { // every fourth extent dead, the rest live (sweep(…, 3000, 1000))
      liveIds.push(chunk.id);
      docs.push({accountName: "devstoreaccount1", containerName: `photos${i % 3}`, name: `img ${Math.floor(i / 3)}.jpg`,
                 snapshot: "", isCommitted: true, properties: {contentMD5: undefined}, persistency: chunk});
    } else {
      deadIds.push(chunk.id);
    }
  }
  blobs.db.getCollection(blobs.BLOBS_COLLECTION).insert(docs);
  // past the collector's ten-minute protection of new extents
  meta.db.getCollection(meta.EXTENTS_COLLECTION).data.forEach((d) => { d.LastModifyInMS = Date.now() - 3600e3; });
  const gc = new GC(blobs, meta, extents, () => {}, quiet, 1e9);
  gc._status = 1; // Running: markSweep stops at once otherwise
  await gc.markSweep();
  const records = new Set(meta.db.getCollection(meta.EXTENTS_COLLECTION).data.map((d) => d.id));
  const has = (id) => Boolean(extents.chunks.get("blob", id));
  return {
    live_records: liveIds.filter((id) => records.has(id)).length, live_data: liveIds.filter(has).length,
    dead_records: deadIds.filter((id) => records.has(id)).length, dead_data: deadIds.filter(has).length,
    records: records.size,
  };
}

async function main() {
  if (process.argv[2] === "sweep") {
    console.log(JSON.stringify(await sweep(process.argv[3] === "fixed", 3000, 1000)));
    return;
  }
  const names = parseInt(process.argv[2], 10);
  const containers = parseInt(process.argv[3], 10);
  const out = {};
  const [stock, docs] = await store(names, containers);
  const [stockIds] = await referred(stock);
  out.blobs = docs.length;
  out.stock_unreferenced = docs.filter((d) => !stockIds.has(d.persistency.id)).length;

  const [fixed] = await store(names, containers);
  fix.apply(Object.getPrototypeOf(fixed).constructor);
  const [fixedIds, pages] = await referred(fixed);
  out.fixed_unreferenced = docs.filter((d) => !fixedIds.has(d.persistency.id)).length;
  out.fixed_pages = pages;
  // the filters and paging of the original, page by page, in the store's order
  out.filters = {};
  for (const [snap, unc] of [[true, true], [false, true], [true, false], [false, false]]) {
    const want = docs.filter((d) => (snap || d.snapshot === "") && (unc || d.isCommitted)).map((d) => d.persistency.id);
    const got = await listed(fixed, snap, unc, 7);
    out.filters[`${snap}-${unc}`] = {want: want.length, got: got.length, same: JSON.stringify(got) === JSON.stringify(want)};
  }
  console.log(JSON.stringify(out));
}

main().catch((err) => { console.error(err.stack || String(err)); process.exit(1); });
