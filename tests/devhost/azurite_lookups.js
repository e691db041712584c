// Harness of tests/devhost/test_azurite_answers.py: which binary index LokiJS starts each of Azurite's blob and block
// queries from (it uses the first field's only), stock ("stock") and with devhost/azurite_blob.js's lookups
// ("fixed"), over an in-memory store holding the same names in several containers; and what those queries answer.
// Prints one JSON line.
"use strict";
const os = require("os");
const path = require("path");

const root = path.join(__dirname, "..", "..");
const dist = path.join(root, "node_modules", "azurite", "dist", "src");
const Store = require(path.join(dist, "blob", "persistence", "LokiBlobMetadataStore")).default;
const fix = require(path.join(root, "devhost", "azurite_blob.js"));

const ACCOUNT = "devstoreaccount1";
const context = { contextId: "harness", startTime: new Date("2026-12-03T12:00:00Z") };

function spy(coll, seen) {
  const calculateRange = coll.calculateRange;
  coll.calculateRange = function (op, prop, val) {
    if (seen.first === undefined) seen.first = prop;
    return calculateRange.call(this, op, prop, val);
  };
}

async function run(fixed) {
  if (fixed) fix.applyLookups(fix.azuriteClasses().LokiBlobMetadataStore);
  const s = new Store(path.join(os.tmpdir(), `unused-${process.pid}-${Math.random()}.json`), true);
  await s.init();
  const blobs = s.db.getCollection(s.BLOBS_COLLECTION);
  const blocks = s.db.getCollection(s.BLOCKS_COLLECTION);
  const docs = [];
  for (let k = 0; k < 300; k++) {
    for (const c of ["alpha", "beta", "gamma"]) {
      docs.push({ accountName: ACCOUNT, containerName: c, name: `cam${k % 3}/img ${String(k).padStart(4, "0")}.jpg`,
                  snapshot: k % 50 === 7 ? "2026-12-03T00:00:00.0000000Z" : "", isCommitted: k % 41 !== 3,
                  properties: { contentMD5: undefined, etag: `"${c}-${k}"` }, metadata: {} });
    }
  }
  blobs.insert(docs.slice(0, 450));
  for (const doc of docs.slice(450)) blobs.insert(doc); // half in one batch, half one by one (adaptive indexes)
  // a blob, then its snapshot, then the blob updated (its index entries move): equal names in every order LokiJS keeps
  for (const c of ["beta", "alpha"]) {
    const base = blobs.insert({ accountName: ACCOUNT, containerName: c, name: "cam1/img 0500.jpg", snapshot: "",
                                isCommitted: true, properties: { contentMD5: undefined, etag: `"${c}-500"` }, metadata: {} });
    blobs.insert({ ...base, $loki: undefined, meta: undefined, snapshot: "2026-12-03T01:00:00.0000000Z",
                   properties: { contentMD5: undefined, etag: `"${c}-500-snapshot"` } });
    base.properties.etag = `"${c}-500-v2"`;
    blobs.update(base);
    const other = blobs.insert({ ...base, $loki: undefined, meta: undefined, name: "cam1/img 0501.jpg",
                                 properties: { contentMD5: undefined, etag: `"${c}-501"` } });
    blobs.insert({ ...other, $loki: undefined, meta: undefined, snapshot: "2026-12-03T02:00:00.0000000Z",
                   properties: { contentMD5: undefined, etag: `"${c}-501-snapshot"` } });
  }
  for (let k = 0; k < 40; k++) {
    blocks.insert({ accountName: ACCOUNT, containerName: k % 2 ? "alpha" : "beta", blobName: `part ${k % 5}.bin`,
                    name: Buffer.from(`blk${k}`.padStart(6, "0")).toString("base64"), isCommitted: false, size: k });
  }
  const used = {};
  const answers = {};
  async function probe(label, coll, call) {
    const seen = {};
    spy(coll, seen);
    const answer = await call();
    used[label] = seen.first;
    answers[label] = answer;
  }
  await probe("getBlob", blobs, async () => {
    const got = [];
    for (const c of ["gamma", "alpha", "beta"]) {
      for (const name of ["cam1/img 0001.jpg", "cam1/img 0007.jpg", "cam2/img 0299.jpg", "nothing.jpg",
                          "cam1/img 0500.jpg"]) {
        const doc = await s.getBlob(context, ACCOUNT, c, name);
        got.push([c, name, doc === undefined ? null : doc.properties.etag]);
      }
    }
    return got;
  });
  await probe("stageBlock", blocks, () => {
    // the queries LokiBlobMetadataStore.stageBlock and commitBlockList ask of the blocks collection
    const one = blocks.findOne({ accountName: ACCOUNT, containerName: "alpha", blobName: "part 3.bin" });
    const all = blocks.chain().find({ accountName: ACCOUNT, containerName: "beta", blobName: "part 4.bin" }).data();
    return [one.size, all.map((b) => b.size)];
  });
  await probe("listBlobs", blobs, async () => {
    const pages = [];
    for (const [prefix, delimiter, size, snapshots, uncommitted] of [["", undefined, 7, false, false], ["", "/", 2, true, true],
      ["cam1/", undefined, 40, true, false], ["cam2/img 01", undefined, 5000, false, true], ["cam0/", "/", 30, true, false],
      ["cam1/img 05", undefined, 5000, true, false], ["", undefined, 5000, true, false]]) {
      let marker = "";
      do {
        const [items, prefixes, next] = await s.listBlobs(context, ACCOUNT, "beta", delimiter, undefined, prefix, size,
                                                          marker, snapshots, uncommitted);
        pages.push([items.map((b) => [b.name, b.snapshot, b.properties.etag]), prefixes.map((p) => p.name), next]);
        marker = next;
      } while (marker);
    }
    return pages;
  });
  return { used, answers };
}

run(process.argv[2] === "fixed").then(
  (r) => process.stdout.write(JSON.stringify(r) + "\n"),
  (err) => { process.stderr.write(String(err && err.stack ? err.stack : err) + "\n"); process.exit(1); },
);
