#!/usr/bin/env node
// Azurite's blob service (the npm package's own server and store, unchanged) that can be filled with many zero-byte
// blobs at once. Benchmark only: bench/control_plane.py --preload uses it to hold a million real blobs.
//
// Why: through HTTP, each PUT into Azurite's in-memory store costs time in proportion to the blobs already stored
// (LokiJS answers createBlob's findOne from the binary index of `accountName` only, then checks every document;
// bench/azurite_puts.py), so a million PUTs would take about a week here. This process starts the same server that
// node_modules/.bin/azurite-blob starts (same arguments), then, on request, copies one blob that was PUT through
// HTTP (the template: its properties, etag and dates, as Azurite made them) under each name of a file, inserted as
// one LokiJS batch (binary indices rebuilt once). Every later request (listings, reads, writes) is served by
// Azurite's own code over its REST API, as for any blob.
//
// One change to Azurite's behaviour, its listing's cost (not its answers): Azurite's listBlobs reads a listing in
// chunks of maxresults and, for each chunk, filters and sorts every blob under the prefix again; a delimiter listing
// of a container's root reads every blob to gather its folders, so at a million blobs one such call re-sorts a
// million documents 200 times (minutes; the SDK's 60 s read timeout ends it). listBlobsSortedOnce below runs the same
// query, filters and order once per call and reads the chunks from that array; tests/integration/
// test_preloaded_azurite.py checks its answers against the stock azurite-blob's, page by page.
//
// And its lookups' cost: Azurite finds a blob with findOne({accountName, containerName, name, snapshot}); LokiJS
// answers a query of several fields from the binary index of the first one only, accountName (the same for every
// blob), then checks each document: about 0.4 s per request at a million blobs. findOneByNameFirst asks the same
// conjunction with `name` first, so LokiJS starts from the index of names (the same index Azurite declares); an AND of
// equalities has the same answer in any order.
//
// Protocol: after "READY <port>" on stdout, each stdin line is a JSON request
//   {"container": "...", "template": "<name of a blob already PUT>", "names_file": "<one blob name per line>"}
// answered on stdout with "PRELOADED <count> <seconds>" or "ERROR <message>".
"use strict";

const fs = require("fs");
const path = require("path");
const readline = require("readline");

const dist = path.join(__dirname, "..", "node_modules", "azurite", "dist", "src");
const { BlobServerFactory } = require(path.join(dist, "blob", "BlobServerFactory"));
const BLOBS = "$BLOBS_COLLECTION$"; // LokiBlobMetadataStore.BLOBS_COLLECTION in azurite 3.35.0

const PageWithDelimiter = require(path.join(dist, "blob", "persistence", "PageWithDelimiter")).default;
const LeaseFactory = require(path.join(dist, "blob", "lease", "LeaseFactory")).default;
const BlobLeaseAdapter = require(path.join(dist, "blob", "lease", "BlobLeaseAdapter")).default;
const BlobLeaseSyncer = require(path.join(dist, "blob", "lease", "BlobLeaseSyncer")).default;

// LokiBlobMetadataStore.listBlobs of azurite 3.35.0 with its query, filters, order, paging and answer, except that
// the filtered, sorted documents are computed once per call instead of once per chunk (header comment).
async function listBlobsSortedOnce(context, account, container, delimiter, blob, prefix = "", maxResults = 5000,
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
  const coll = this.db.getCollection(BLOBS);
  const page = new PageWithDelimiter(maxResults, delimiter, prefix);
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
      return LeaseFactory.createLeaseState(new BlobLeaseAdapter(doc), context).sync(new BlobLeaseSyncer(doc));
    }),
    blobPrefixes,
    nextMarker,
  ];
}

function findOneByNameFirst(coll) {
  const findOne = coll.findOne.bind(coll);
  coll.findOne = (query) => {
    if (query && typeof query === "object" && typeof query.name === "string" && Object.keys(query)[0] !== "name") {
      query = { name: query.name, ...query };
    }
    return findOne(query);
  };
}

function preload(server, request) {
  const started = process.hrtime.bigint();
  const store = server.metadataStore;
  if (!store || !store.db) {
    throw new Error("this Azurite has no LokiJS metadata store (azurite's internals changed: update this script)");
  }
  const coll = store.db.getCollection(BLOBS);
  const template = coll.findOne({ containerName: request.container, name: request.template });
  if (!template) {
    throw new Error(`template blob ${request.container}/${request.template} not found: PUT it first`);
  }
  const names = fs.readFileSync(request.names_file, "utf8").split("\n").filter((n) => n && n !== request.template);
  const docs = names.map((name) => {
    const doc = { ...template, name, properties: { ...template.properties }, metadata: { ...(template.metadata || {}) } };
    delete doc.$loki;
    delete doc.meta;
    return doc;
  });
  coll.insert(docs, true); // LokiJS batch insert: adaptive indices off during the batch, rebuilt once after it
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return [docs.length, seconds];
}

async function main() {
  // the garbage collector fixed as in devhost's Azurite (devhost/azurite_blob.js): it loses blobs whose names repeat
  // across containers, and its sweep holds the process for minutes once many blobs were deleted
  require(path.join(__dirname, "..", "devhost", "azurite_blob.js")).applyAll();
  const server = await new BlobServerFactory().createServer();
  if (!server.metadataStore || typeof server.metadataStore.listBlobs !== "function") {
    throw new Error("this Azurite's blob server has no metadataStore.listBlobs (its internals changed: update this script)");
  }
  if (process.env.TRAPBATCH_BENCH_STOCK_AZURITE !== "1") {
    server.metadataStore.listBlobs = listBlobsSortedOnce;
  }
  await server.start();
  if (process.env.TRAPBATCH_BENCH_STOCK_AZURITE !== "1") {
    findOneByNameFirst(server.metadataStore.db.getCollection(BLOBS));
  }
  process.stdout.write(`READY ${server.config.port}\n`);
  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    try {
      const [count, seconds] = preload(server, JSON.parse(line));
      process.stdout.write(`PRELOADED ${count} ${seconds.toFixed(3)}\n`);
    } catch (err) {
      process.stdout.write(`ERROR ${String(err && err.message ? err.message : err).replace(/\n/g, " ")}\n`);
    }
  });
  const stop = () => server.close().then(() => process.exit(0));
  process.once("SIGINT", stop).once("SIGTERM", stop);
}

main().catch((err) => {
  process.stderr.write(`Exit due to unhandled error: ${err.message}\n`);
  process.exit(1);
});
