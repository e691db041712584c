#!/usr/bin/env node
// azurite-blob (the npm package's own entry point, node_modules/azurite/dist/src/blob/main.js, unchanged) with two
// faults of its garbage collector fixed. devhost/azurite.py starts the blob service through this file.
//
// 1. It loses data. The bug (azurite 3.35.0, in memory and on disk alike): every ten minutes BlobGCManager.markSweep lists the extents
// that blobs still refer to through LokiBlobMetadataStore.listAllBlobs, which pages over ALL containers' blobs sorted
// by name with the marker "name > last name of the page". Blobs of the same name in other containers that fall just
// past a page boundary (5,000 blobs) are never listed, so their data counts as unreferenced and is deleted once older
// than the collector's ten-minute protection: reading such a blob then answers 500 Internal Server Error, for good.
// Measured here: 3 of 18,000 blobs (three containers holding the same 6,000 names) unreadable after 26 minutes
// (bench/RESULTS.md, twentieth session; Azure/Azurite issue 709 reports the same symptom after about an hour). Camera
// folders repeat names across containers ("cam0/img 001.jpg"), so a long local run could lose images.
//
// The fix pages by LokiJS's document id ($loki) instead: unique, so no blob is skipped, and each page is found by a
// binary search over the collection (LokiJS keeps a collection's documents in $loki order: insert appends with the
// next id, remove splices, update keeps the position), not a scan and sort of every blob per page. listAllBlobs has
// no other caller (the collector's BlobReferredExtentsAsyncIterator passes the marker back unread); the blobs it
// returns and their filters are the original's. tests/devhost/test_azurite_gc.py runs the collector's own listing over
// a store with repeated names, stock and fixed.
//
// 2. It stops answering. The collector's pass is awaited calls that never wait on I/O for the in-memory store, so the
// whole pass holds Azurite's one thread, and its sweep deletes each unreferenced extent's record with LokiJS
// findAndRemove, milliseconds apiece as the store grows (the collection's indexes are maintained per removal). Every
// deleted or overwritten blob leaves such an extent. Measured, the pass over 20,000 blobs and 5,000 dead extents:
// 39.8 s with nothing answered, 0.25 s with the records removed in one removeWhere (MemoryExtentStore.deleteExtents
// below; the disk store, FSExtentStore, waits on a file deletion per extent anyway, and gets a single-record removal
// that finds the record by its index: 0.39 s). Removed are exactly the records of the extents the collector passed.
"use strict";

const path = require("path");

const dist = path.join(__dirname, "..", "node_modules", "azurite", "dist", "src");
const PAGE = 5000; // constants.DEFAULT_LIST_BLOBS_MAX_RESULTS, the original's default

async function listAllBlobsById(maxResults = PAGE, marker = "", includeSnapshots, includeUncommittedBlobs) {
  const rows = this.db.getCollection(this.BLOBS_COLLECTION).data;
  const after = marker ? parseInt(marker, 10) : 0;
  let lo = 0;
  let hi = rows.length;
  while (lo < hi) { // the first document whose id is past the marker
    const mid = (lo + hi) >> 1;
    if (rows[mid].$loki <= after) lo = mid + 1; else hi = mid;
  }
  const docs = [];
  let i = lo;
  for (; i < rows.length && docs.length < maxResults; i++) {
    const doc = rows[i];
    if (!includeSnapshots && doc.snapshot.length !== 0) continue;
    if (!includeUncommittedBlobs && !doc.isCommitted) continue;
    docs.push(doc);
  }
  for (const doc of docs) { // as the original does to what it returns
    doc.properties.contentMD5 = this.restoreUint8Array(doc.properties.contentMD5);
  }
  const next = i < rows.length && docs.length > 0 ? String(docs[docs.length - 1].$loki) : undefined;
  return [docs, next];
}

// MemoryExtentStore.deleteExtents of azurite 3.35.0 (drop each extent's chunks, then its record), the records removed
// in one pass instead of one findAndRemove each.
async function deleteExtentsInOneBatch(extents) {
  const ids = new Set(extents);
  for (const id of ids) {
    if (this.chunks.get(this.categoryName, id)) this.chunks.delete(this.categoryName, id);
  }
  const meta = this.metadataStore;
  meta.db.getCollection(meta.EXTENTS_COLLECTION).removeWhere((doc) => ids.has(doc.id));
  return ids.size;
}

// LokiExtentMetadata.deleteExtent of azurite 3.35.0, the record found through the collection's index of ids.
async function deleteExtentRecord(extentId) {
  const coll = this.db.getCollection(this.EXTENTS_COLLECTION);
  for (const doc of coll.find({ id: extentId })) coll.remove(doc);
}

function apply(LokiBlobMetadataStore) {
  LokiBlobMetadataStore.prototype.listAllBlobs = listAllBlobsById;
}

function applySweep(MemoryExtentStore, LokiExtentMetadata) {
  MemoryExtentStore.prototype.deleteExtents = deleteExtentsInOneBatch;
  LokiExtentMetadata.prototype.deleteExtent = deleteExtentRecord;
}

function azuriteClasses() {
  return {
    LokiBlobMetadataStore: require(path.join(dist, "blob", "persistence", "LokiBlobMetadataStore")).default,
    MemoryExtentStore: require(path.join(dist, "common", "persistence", "MemoryExtentStore")).default,
    LokiExtentMetadata: require(path.join(dist, "common", "persistence", "LokiExtentMetadataStore")).default,
  };
}

const FOR_VERSION = "3.35.0"; // package.json pins it; the replaced methods are this version's

function applyAll() {
  const version = require(path.join(dist, "..", "..", "package.json")).version;
  if (version !== FOR_VERSION) {
    throw new Error(`devhost/azurite_blob.js replaces methods of azurite ${FOR_VERSION}, but node_modules holds ${version}: `
                    + "compare them with the new version's, update the file and run tests/devhost/test_azurite_gc.py");
  }
  const c = azuriteClasses();
  apply(c.LokiBlobMetadataStore);
  applySweep(c.MemoryExtentStore, c.LokiExtentMetadata);
}

module.exports = { apply, applySweep, applyAll, azuriteClasses, listAllBlobsById };

if (require.main === module) {
  applyAll();
  require(path.join(dist, "blob", "main.js"));
}
