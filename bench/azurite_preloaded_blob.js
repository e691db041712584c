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
// Its lookups and listings are devhost's Azurite's (devhost/azurite_blob.js: the same answers as the stock
// azurite-blob at a fraction of the cost at a million blobs); TRAPBATCH_BENCH_STOCK_AZURITE=1 keeps stock Azurite's
// (the garbage collector's fixes stay: stock, it loses blobs).
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
  // and, unless asked for stock Azurite's costs, its lookups and listings as devhost's
  require(path.join(__dirname, "..", "devhost", "azurite_blob.js"))
    .applyAll({ lookups: process.env.TRAPBATCH_BENCH_STOCK_AZURITE !== "1" });
  const server = await new BlobServerFactory().createServer();
  await server.start();
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
