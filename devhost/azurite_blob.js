#!/usr/bin/env node
// azurite-blob (the npm package's own entry point, node_modules/azurite/dist/src/blob/main.js, unchanged) with two
// faults of its garbage collector fixed and two costs that grow with the blobs it holds made smaller (its answers
// unchanged). devhost/azurite.py starts the blob service through this file.
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
//
// 3. It slows with every blob it holds. Azurite finds a blob with findOne({accountName, containerName, name, snapshot})
// (and a block with {accountName, containerName, blobName, ...}); LokiJS answers an object query of several fields
// from the binary index of its FIRST field only, accountName, the same for every blob, and then checks each document:
// a GET, HEAD or PUT cost 36-75 ms at 100,000 blobs here, against 2-5 ms nearly empty, so a local run of a few hundred
// thousand images spent hours in Azurite's one thread. selectiveFirst below asks the same conjunction with its most
// selective indexed equality first (a blob's name; a block's blob name; for a listing, the container): an AND of
// conditions matches the same documents in any order, and they come back in the same order, because LokiJS keeps
// equal values of every index in the same relative order (each insert or update puts its document first among its
// equals in every index, a rebuild puts them in collection order). Only queries that start from an index are
// reordered (selectiveQuery says why).
//
// 4. Its listings re-sort the container on every page. listBlobs reads a listing in chunks of maxresults and, for
// each chunk, filters and sorts every blob under the prefix again; a delimiter listing of a container's root reads
// every blob to gather its folders, so one such call at a million blobs re-sorts a million documents 200 times
// (minutes; the SDK's 60 s read timeout ends it). listBlobsSortedOnce runs the same query, filters and order once per
// call and reads the chunks from that array.
//
// tests/devhost/test_azurite_answers.py runs the same requests (listings page by page, lookups of names repeated
// across containers, snapshots, blocks, deletes, conditions) against this service and the stock azurite-blob and
// compares the answers.
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

// 3. The fields of an object query that, first, let LokiJS start from an index of few equal values. A query is
// reordered only when it starts with an equality on an indexed field (stock, accountName): its documents then come
// from that index, in the same relative order as from any other index. One that starts otherwise (a listing's prefix,
// a regular expression LokiJS answers by scanning the collection in its stored order) is left as it is, so that its
// equal names (a blob and its snapshots) keep that order.
const SELECTIVE = {
  "$BLOBS_COLLECTION$": ["name", "containerName"], // LokiBlobMetadataStore.BLOBS_COLLECTION in azurite 3.35.0
  "$BLOCKS_COLLECTION$": ["blobName", "containerName"], // and BLOCKS_COLLECTION
};

function isPlain(value) {
  return typeof value === "string" || typeof value === "number";
}

function selectiveQuery(query, fields, indexed) {
  if (query === null || typeof query !== "object" || Array.isArray(query)) return query;
  const keys = Object.keys(query);
  if (keys.length < 2 || !indexed.has(keys[0]) || !isPlain(query[keys[0]])) return query;
  for (const field of fields) {
    if (!keys.includes(field) || !indexed.has(field) || !isPlain(query[field])) continue;
    if (keys[0] === field) return query;
    const reordered = { [field]: query[field] };
    for (const key of keys) if (key !== field) reordered[key] = query[key];
    return reordered;
  }
  return query;
}

// Every object query of a LokiJS collection starts from its chain() (find, findOne, findAndRemove and chain().find
// alike): the Resultset it returns reorders the queries it is given.
function selectiveFirst(coll, fields) {
  const chain = coll.chain;
  coll.chain = function (transform, parameters) {
    const rs = chain.call(this, transform, parameters);
    if (rs === null || typeof rs !== "object" || typeof rs.find !== "function") return rs; // a transform's data
    const find = rs.find;
    const indexed = new Set(Object.keys(this.binaryIndices));
    rs.find = function (query, firstOnly) { return find.call(this, selectiveQuery(query, fields, indexed), firstOnly); };
    return rs;
  };
}

function applyLookups(LokiBlobMetadataStore) {
  const init = LokiBlobMetadataStore.prototype.init;
  LokiBlobMetadataStore.prototype.init = async function (...args) {
    await init.apply(this, args);
    for (const [name, fields] of Object.entries(SELECTIVE)) {
      const coll = this.db.getCollection(name);
      if (coll === null) {
        throw new Error(`devhost/azurite_blob.js: Azurite's store has no collection ${name} (its internals changed)`);
      }
      selectiveFirst(coll, fields);
    }
  };
  LokiBlobMetadataStore.prototype.listBlobs = listBlobsSortedOnce;
}

// 4. LokiBlobMetadataStore.listBlobs of azurite 3.35.0 with its query, filters, order, paging and answer, except that
// the filtered, sorted documents are computed once per call instead of once per chunk.
async function listBlobsSortedOnce(context, account, container, delimiter, blob, prefix = "", maxResults = PAGE,
                                   marker = "", includeSnapshots, includeUncommittedBlobs) {
  const query = {};
  if (prefix !== "") {
    query.name = { $regex: `^${this.escapeRegex(prefix)}` };
  }
  if (blob !== undefined) {
    query.name = blob;
  }
  if (account !== undefined) {
    query.accountName = account;
  }
  if (container !== undefined) {
    query.containerName = container;
  }
  const c = listingClasses();
  const coll = this.db.getCollection(this.BLOBS_COLLECTION);
  const page = new c.PageWithDelimiter(maxResults, delimiter, prefix);
  let matched = null;
  const readPage = async (offset) => {
    if (matched === null) {
      matched = coll.chain().find(query)
        .where((obj) => obj.name > marker)
        .where((obj) => (includeSnapshots ? true : obj.snapshot.length === 0))
        .where((obj) => (includeUncommittedBlobs ? true : obj.isCommitted))
        .sort((a, b) => (a.name === b.name ? 0 : a.name > b.name ? 1 : -1))
        .data();
    }
    return matched.slice(offset, offset + maxResults);
  };
  const [blobItems, blobPrefixes, nextMarker] = await page.fill(readPage, (item) => item.name);
  return [
    blobItems.map((doc) => {
      doc.properties.contentMD5 = this.restoreUint8Array(doc.properties.contentMD5);
      return c.LeaseFactory.createLeaseState(new c.BlobLeaseAdapter(doc), context).sync(new c.BlobLeaseSyncer(doc));
    }),
    blobPrefixes,
    nextMarker,
  ];
}

function listingClasses() {
  return {
    PageWithDelimiter: require(path.join(dist, "blob", "persistence", "PageWithDelimiter")).default,
    LeaseFactory: require(path.join(dist, "blob", "lease", "LeaseFactory")).default,
    BlobLeaseAdapter: require(path.join(dist, "blob", "lease", "BlobLeaseAdapter")).default,
    BlobLeaseSyncer: require(path.join(dist, "blob", "lease", "BlobLeaseSyncer")).default,
  };
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

// The collector's fixes (1, 2) always; the lookups' and listings' (3, 4) unless lookups is false (the benchmark's
// TRAPBATCH_BENCH_STOCK_AZURITE=1, to measure stock Azurite's costs).
function applyAll({ lookups = true } = {}) {
  const version = require(path.join(dist, "..", "..", "package.json")).version;
  if (version !== FOR_VERSION) {
    throw new Error(`devhost/azurite_blob.js replaces methods of azurite ${FOR_VERSION}, but node_modules holds ${version}: `
                    + "compare them with the new version's, update the file and run tests/devhost/test_azurite_gc.py");
  }
  const c = azuriteClasses();
  apply(c.LokiBlobMetadataStore);
  applySweep(c.MemoryExtentStore, c.LokiExtentMetadata);
  if (lookups) applyLookups(c.LokiBlobMetadataStore);
}

module.exports = { apply, applySweep, applyLookups, applyAll, azuriteClasses, listAllBlobsById, selectiveQuery };

if (require.main === module) {
  applyAll();
  require(path.join(dist, "blob", "main.js"));
}
