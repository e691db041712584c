#!/usr/bin/env node
// azurite-blob (the npm package's own entry point, node_modules/azurite/dist/src/blob/main.js, unchanged) with one bug
// of its garbage collector fixed. devhost/azurite.py starts the blob service through this file.
//
// The bug (azurite 3.35.0, in memory and on disk alike): every ten minutes BlobGCManager.markSweep lists the extents
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

function apply(LokiBlobMetadataStore) {
  LokiBlobMetadataStore.prototype.listAllBlobs = listAllBlobsById;
}

module.exports = { apply, listAllBlobsById };

if (require.main === module) {
  apply(require(path.join(dist, "blob", "persistence", "LokiBlobMetadataStore")).default);
  require(path.join(dist, "blob", "main.js"));
}
