#!/usr/bin/env node
// Real Kinto JS clients against a running Kinto-compatible server.
//
//   node scenario.mjs http://127.0.0.1:8888/v1
//
// Uses the published npm packages exactly as an application would:
//   - kinto-http (kinto-http.js 5.3.0, the HTTP client) for buckets, collections, records, filters,
//     sort, pagination, `_since`, batch, permissions, history;
//   - kinto (kinto.js 17.1.1, the offline-first client) with its IndexedDB adapter on top of
//     fake-indexeddb, as two "devices" of the same user that sync both ways, conflict, resolve,
//     converge and propagate deletions, while another user reads the result through kinto-http.
// The server must run with the settings of shared/clients/kinto.ini (accounts plugin with
// account_create_principals = system.Everyone, bucket_create_principals = system.Authenticated,
// history, default_bucket, permissions endpoint, paginate_by = 5). Every run signs up fresh
// accounts and uses fresh bucket names, so reruns against the same server are fine; nothing is
// flushed.
//
// Output: one line per check ("ok N - ..." / "not ok N - ..." followed by "#" diagnostic lines with
// the last HTTP exchanges), then "N passed, M failed". Exit status 1 when anything failed, 2 on
// bad usage.
//
// Modules are loaded with require() relative to this file, then from NODE_PATH (run-js.sh installs
// them into a cache directory and points NODE_PATH there). Needs Node >= 20.19: kinto 17.1.1
// require()s the ESM-only uuid 13. kinto-http 5.3.0's Node build require()s its optional peer
// dependencies node-fetch, form-data and atob (its README says to install them), although it sends
// requests with globalThis.fetch; package.json pins them.

import { createRequire } from "node:module";
import assert from "node:assert/strict";

const require = createRequire(import.meta.url);
let KintoClient, Kinto;
try {
  require("fake-indexeddb/auto"); // IndexedDB for kinto.js's default (IDB) adapter, in memory
  KintoClient = require("kinto-http").default; // kinto-http.js
  Kinto = require("kinto").default; // kinto.js
} catch (e) {
  console.error(`scenario.mjs: cannot load the JS clients (${e.message.split("\n")[0]}).`);
  console.error("Run it through run-js.sh, or `npm ci` in this directory first.");
  console.log("0 passed, 1 failed");
  process.exit(2);
}

const BASE = (process.argv[2] || "").replace(/\/+$/, "");
if (!/^https?:\/\/.+\/v1$/.test(BASE)) {
  console.error("usage: node scenario.mjs BASE_URL   (e.g. http://127.0.0.1:8888/v1)");
  process.exit(2);
}
const VERBOSE = !!process.env.SCENARIO_VERBOSE; // also print every HTTP exchange
const REQUEST_TIMEOUT_MS = 30000; // per request (both clients' `timeout` option)
const OVERALL_TIMEOUT_S = Number(process.env.SCENARIO_TIMEOUT || 600); // whole run

// A server that hangs must not hang CI: give up loudly after OVERALL_TIMEOUT_S.
const watchdog = setTimeout(() => {
  console.log(`not ok - scenario timed out after ${OVERALL_TIMEOUT_S}s (last requests below)`);
  for (const t of trace.slice(-5)) console.log(`#     ${t.method} ${t.url} -> ${t.status}`);
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}, OVERALL_TIMEOUT_S * 1000);
watchdog.unref();

// ---------------------------------------------------------------------------------------------
// HTTP trace: both clients call globalThis.fetch; we only observe (method, url, status, and the
// body of error responses) so that a failing check can show what was exchanged.
// ---------------------------------------------------------------------------------------------
const trace = [];
const realFetch = globalThis.fetch.bind(globalThis);
globalThis.fetch = async (url, init = {}) => {
  const entry = { method: init.method || "GET", url: String(url), status: "…" };
  if (init.body && typeof init.body === "string") entry.body = init.body.slice(0, 300);
  trace.push(entry);
  if (trace.length > 40) trace.shift();
  try {
    const res = await realFetch(url, init);
    entry.status = res.status;
    if (res.status >= 400) {
      try {
        entry.response = (await res.clone().text()).slice(0, 400);
      } catch {
        /* ignore */
      }
    }
    if (VERBOSE) console.log(`#   ~ ${entry.method} ${entry.url} -> ${entry.status}`);
    return res;
  } catch (e) {
    entry.status = `fetch error: ${e.message}${e.cause ? ` (${e.cause.code || e.cause.message})` : ""}`;
    throw e;
  }
};

// ---------------------------------------------------------------------------------------------
// Tiny TAP-like runner.
// ---------------------------------------------------------------------------------------------
let passed = 0;
let failed = 0;
let number = 0;
const failures = [];

function describeError(e) {
  const lines = [];
  lines.push(String((e && e.stack) || e).split("\n").slice(0, 6).join("\n"));
  if (e && e.data) lines.push("server error body: " + JSON.stringify(e.data));
  return lines.join("\n");
}

async function check(name, fn) {
  number += 1;
  const before = new Set(trace);
  try {
    await fn();
    passed += 1;
    console.log(`ok ${number} - ${name}`);
    return true;
  } catch (e) {
    failed += 1;
    failures.push(name);
    console.log(`not ok ${number} - ${name}`);
    for (const line of describeError(e).split("\n")) console.log(`#   ${line}`);
    // HTTP exchanges made by this check (at most the last 8).
    const made = trace.filter((t) => !before.has(t)).slice(-8);
    if (made.length) {
      console.log("#   HTTP exchanges of this check (last 8):");
      for (const t of made) {
        console.log(`#     ${t.method} ${t.url} -> ${t.status}`);
        if (t.body) console.log(`#       request body: ${t.body}`);
        if (t.response) console.log(`#       response body: ${t.response}`);
      }
    }
    return false;
  }
}

// Expect `promise` to be rejected with an HTTP error of the given status.
async function rejectsWithStatus(promise, status, what) {
  let err = null;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, `${what}: expected HTTP ${status}, but the call succeeded`);
  const got = err.response ? err.response.status : err.status;
  assert.equal(got, status, `${what}: expected HTTP ${status}, got ${got} (${err.message})`);
  return err;
}

const basic = (user, password) =>
  "Basic " + Buffer.from(`${user}:${password}`).toString("base64");
const ids = (list) => list.map((r) => r.id).sort();
const byId = (list) => Object.fromEntries(list.map((r) => [r.id, r]));
const strip = (r) => {
  // record without server/local metadata, for comparing contents
  const { last_modified, _status, ...rest } = r;
  void last_modified;
  void _status;
  return rest;
};

// ---------------------------------------------------------------------------------------------
// Scenario
// ---------------------------------------------------------------------------------------------
const RUN = Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
const ALICE = { user: `alice-${RUN}`, password: `s3cret-a-${RUN}` };
const BOB = { user: `bob-${RUN}`, password: `s3cret-b-${RUN}` };
const ALICE_ID = `account:${ALICE.user}`;
const BOB_ID = `account:${BOB.user}`;
const BID = `js-${RUN}`; // alice's bucket
const BID2 = `js-${RUN}-batch`; // created inside a batch
const CID = "tasks";
const NOTES = "notes"; // kinto.js collection
const options = (who) => ({
  headers: who ? { Authorization: basic(who.user, who.password) } : {},
  timeout: REQUEST_TIMEOUT_MS,
});

const anon = new KintoClient(BASE, options(null));
const alice = new KintoClient(BASE, options(ALICE));
const bob = new KintoClient(BASE, options(BOB));
const aliceBucket = alice.bucket(BID);
const aliceTasks = aliceBucket.collection(CID);
const bobTasks = bob.bucket(BID).collection(CID);

console.log(`# server ${BASE}, run ${RUN}`);

async function main() {
  // --- server info and accounts -------------------------------------------------------------
  const info = await check("server info: hello lists the capabilities the scenario needs", async () => {
    const hello = await anon.fetchServerInfo();
    assert.equal(hello.http_api_version.split(".")[0], "1");
    for (const cap of ["accounts", "history", "permissions_endpoint", "default_bucket"]) {
      assert.ok(hello.capabilities && hello.capabilities[cap], `missing capability ${cap}`);
    }
    const settings = await anon.fetchServerSettings();
    assert.equal(typeof settings.batch_max_requests, "number");
  });
  if (!info) return;

  const accounts = await check("sign up two accounts with client.createAccount()", async () => {
    const a = await anon.createAccount(ALICE.user, ALICE.password);
    assert.equal(a.data.id, ALICE.user);
    assert.ok(!("password" in a.data) || a.data.password !== ALICE.password, "plain password echoed back");
    const b = await anon.createAccount(BOB.user, BOB.password);
    assert.equal(b.data.id, BOB.user);
  });
  if (!accounts) return;

  await check("fetchUser() identifies the authenticated account", async () => {
    // fetchUser reads the (cached) hello; use fresh clients so the hello is fetched with auth
    const user = await new KintoClient(BASE, options(ALICE)).fetchUser();
    assert.ok(user, "no user in hello");
    assert.equal(user.id, ALICE_ID);
    const nobody = await new KintoClient(BASE, options(null)).fetchUser();
    assert.equal(nobody, undefined);
  });

  await check("a wrong password is rejected with 401", async () => {
    const intruder = new KintoClient(BASE, options({ user: ALICE.user, password: "wrong" }));
    await rejectsWithStatus(intruder.listBuckets(), 401, "listBuckets with a wrong password");
  });

  // --- bucket and collection ----------------------------------------------------------------
  const created = await check("create bucket and collection", async () => {
    const b = await alice.createBucket(BID, { data: { title: "JS scenario" } });
    assert.equal(b.data.id, BID);
    assert.equal(b.data.title, "JS scenario");
    assert.deepEqual(b.permissions.write, [ALICE_ID]);
    const c = await aliceBucket.createCollection(CID, { data: { kind: "todo" } });
    assert.equal(c.data.id, CID);
    assert.equal(c.data.kind, "todo");
    const cols = await aliceBucket.listCollections();
    assert.deepEqual(ids(cols.data), [CID]);
    const data = await aliceTasks.getData();
    assert.equal(data.kind, "todo");
    const buckets = await alice.listBuckets({ pages: Infinity });
    assert.ok(ids(buckets.data).includes(BID), "bucket not in listBuckets()");
  });
  if (!created) return;

  await check("creating an existing bucket with safe:true fails with 412", async () => {
    await rejectsWithStatus(alice.createBucket(BID, { safe: true }), 412, "createBucket(existing, safe)");
  });

  await check("bucket.setData(patch) merges bucket metadata", async () => {
    const r = await aliceBucket.setData({ color: "blue" }, { patch: true });
    assert.equal(r.data.color, "blue");
    assert.equal(r.data.title, "JS scenario");
    const data = await aliceBucket.getData();
    assert.equal(data.color, "blue");
  });

  // --- record CRUD --------------------------------------------------------------------------
  // A check that fails half-way must not leave records behind that later checks would count.
  const forget = (id) => id && aliceTasks.deleteRecord(id).catch(() => {});
  let crudId = null;
  await check("record CRUD: create, get, update, patch, delete", async () => {
    try {
      await crud();
    } catch (e) {
      await forget(crudId);
      throw e;
    }
  });
  async function crud() {
    const c = await aliceTasks.createRecord({ title: "buy milk", done: false, tags: ["shop"] });
    crudId = c.data.id;
    assert.match(crudId, /^[0-9a-f-]{36}$/, "server-generated id should be a UUID");
    assert.equal(typeof c.data.last_modified, "number");
    assert.deepEqual(c.permissions.write, [ALICE_ID]);

    const g = await aliceTasks.getRecord(crudId);
    assert.deepEqual(g.data, c.data);

    const u = await aliceTasks.updateRecord({ id: crudId, title: "buy oat milk", done: false });
    assert.equal(u.data.title, "buy oat milk");
    assert.ok(!("tags" in u.data), "PUT must replace the record (tags should be gone)");
    assert.ok(u.data.last_modified > c.data.last_modified, "last_modified must increase");

    const p = await aliceTasks.updateRecord({ id: crudId, done: true }, { patch: true });
    assert.equal(p.data.title, "buy oat milk", "PATCH must keep other fields");
    assert.equal(p.data.done, true);
    assert.ok(p.data.last_modified > u.data.last_modified);

    const g2 = await aliceTasks.getRecord(crudId);
    assert.deepEqual(g2.data, p.data);

    const d = await aliceTasks.deleteRecord(crudId);
    assert.equal(d.data.id, crudId);
    assert.equal(d.data.deleted, true);
    assert.ok(d.data.last_modified > p.data.last_modified);
    await rejectsWithStatus(aliceTasks.getRecord(crudId), 404, "getRecord(deleted)");
  }

  await check("record with a client-chosen id (PUT), safe create and stale update give 412", async () => {
    try {
      await fixedId();
    } catch (e) {
      await forget("fixed-id");
      throw e;
    }
  });
  async function fixedId() {
    const c = await aliceTasks.createRecord({ id: "fixed-id", title: "mine" });
    assert.equal(c.data.id, "fixed-id");
    await rejectsWithStatus(
      aliceTasks.createRecord({ id: "fixed-id", title: "again" }, { safe: true }),
      412,
      "createRecord(existing id, safe)"
    );
    const u = await aliceTasks.updateRecord({ id: "fixed-id", title: "v2" }, { safe: true, last_modified: c.data.last_modified });
    assert.equal(u.data.title, "v2");
    const err = await rejectsWithStatus(
      aliceTasks.updateRecord({ id: "fixed-id", title: "v3" }, { safe: true, last_modified: c.data.last_modified }),
      412,
      "updateRecord(stale last_modified, safe)"
    );
    assert.equal(err.data && err.data.details && err.data.details.existing && err.data.details.existing.title, "v2",
      "412 should carry details.existing");
    await rejectsWithStatus(
      aliceTasks.deleteRecord("fixed-id", { safe: true, last_modified: c.data.last_modified }),
      412,
      "deleteRecord(stale last_modified, safe)"
    );
    const d = await aliceTasks.deleteRecord("fixed-id", { safe: true, last_modified: u.data.last_modified });
    assert.equal(d.data.deleted, true);
  }

  // --- 25 records via a collection batch ----------------------------------------------------
  const N = 25;
  let all = [];
  const seeded = await check(`collection.batch() creates ${N} records`, async () => {
    const responses = await aliceTasks.batch((batch) => {
      for (let n = 0; n < N; n++) {
        const rec = {
          id: `task-${String(n).padStart(2, "0")}`,
          n,
          title: `Task ${n}`,
          parity: n % 2 === 0 ? "even" : "odd",
          done: n % 3 === 0,
          meta: { group: n < 10 ? "low" : "high" },
        };
        if (n % 5 === 0) rec.optional = "yes";
        rec.tags = [...(n % 4 === 0 ? ["x4"] : []), ...(n % 6 === 0 ? ["x6"] : [])];
        batch.createRecord(rec);
      }
    });
    assert.equal(responses.length, N);
    for (const r of responses) assert.equal(r.status, 201, `batch sub-response ${JSON.stringify(r).slice(0, 200)}`);
    all = responses.map((r) => r.body.data);
    assert.deepEqual(all.map((r) => r.n), [...Array(N).keys()]);
  });
  if (!seeded) return;
  const recId = (n) => `task-${String(n).padStart(2, "0")}`;

  // --- pagination ---------------------------------------------------------------------------
  await check("pagination: default page size is paginate_by = 5, pages:Infinity follows every page", async () => {
    const first = await aliceTasks.listRecords();
    assert.equal(first.data.length, 5);
    assert.equal(first.hasNextPage, true);
    const everything = await aliceTasks.listRecords({ pages: Infinity });
    assert.equal(everything.data.length, N);
    assert.equal(everything.hasNextPage, false);
    assert.equal(new Set(everything.data.map((r) => r.id)).size, N, "duplicates across pages");
  });

  await check("pagination: limit=4 then next() until exhausted gives 6 pages of 4 and 1 of 1", async () => {
    let page = await aliceTasks.listRecords({ limit: 4 });
    const sizes = [page.data.length];
    const seen = [...page.data];
    while (page.hasNextPage) {
      const prev = page;
      page = await page.next();
      sizes.push(page.data.length);
      seen.push(...page.data);
      if (!page.hasNextPage) await assert.rejects(prev.next().then(() => page.next()), /Pagination exhausted/);
      assert.ok(sizes.length < 20, "pagination does not end");
    }
    assert.deepEqual(sizes, [4, 4, 4, 4, 4, 4, 1]);
    assert.equal(new Set(seen.map((r) => r.id)).size, N, "pages overlap or miss records");
    // default sort is -last_modified, kept across pages
    const lms = seen.map((r) => r.last_modified);
    assert.deepEqual(lms, [...lms].sort((x, y) => y - x), "pages not in -last_modified order");
  });

  await check("pagination: limit=3, pages=2 aggregates 6 records and next() continues", async () => {
    const r = await aliceTasks.listRecords({ limit: 3, pages: 2 });
    assert.equal(r.data.length, 6);
    assert.equal(r.hasNextPage, true);
    // kinto-http 5.3.0: next() on an aggregated result returns the aggregate plus the next page
    const rest = await r.next();
    assert.equal(rest.data.length, 9);
    assert.deepEqual(rest.data.slice(0, 6), r.data);
    assert.equal(new Set(rest.data.map((x) => x.id)).size, 9, "the next page repeats records");
  });

  await check("pagination: a limit above paginate_by (10 > 5) is capped to pages of 5", async () => {
    const r = await aliceTasks.listRecords({ limit: 10 });
    assert.equal(r.data.length, 5);
    assert.equal(r.hasNextPage, true);
    const all10 = await aliceTasks.listRecords({ limit: 10, pages: Infinity });
    assert.equal(all10.data.length, N);
  });

  await check("getTotalRecords() (HEAD Total-Records) and getRecordsTimestamp() (HEAD ETag)", async () => {
    assert.equal(await aliceTasks.getTotalRecords(), N);
    const etag = await aliceTasks.getRecordsTimestamp();
    const list = await aliceTasks.listRecords({ limit: 1 });
    assert.equal(etag, `"${list.last_modified}"`);
    assert.equal(Number(list.last_modified), Math.max(...all.map((r) => r.last_modified)));
  });

  // --- sort ---------------------------------------------------------------------------------
  await check("sort: n ascending and -n descending, kept across pages of 4", async () => {
    const asc = await aliceTasks.listRecords({ sort: "n", limit: 4, pages: Infinity });
    assert.deepEqual(asc.data.map((r) => r.n), [...Array(N).keys()]);
    const desc = await aliceTasks.listRecords({ sort: "-n", limit: 4, pages: Infinity });
    assert.deepEqual(desc.data.map((r) => r.n), [...Array(N).keys()].reverse());
  });

  await check("sort: two fields (parity,-n) across pages of 3", async () => {
    const r = await aliceTasks.listRecords({ sort: "parity,-n", limit: 3, pages: Infinity });
    const evens = [...Array(N).keys()].filter((n) => n % 2 === 0).reverse();
    const odds = [...Array(N).keys()].filter((n) => n % 2 === 1).reverse();
    assert.deepEqual(r.data.map((x) => x.n), [...evens, ...odds]);
  });

  await check("sort: on a field only some records have (optional,-n): missing values last", async () => {
    const r = await aliceTasks.listRecords({ sort: "optional,-n", limit: 4, pages: Infinity });
    const withIt = [...Array(N).keys()].filter((n) => n % 5 === 0).reverse();
    const without = [...Array(N).keys()].filter((n) => n % 5 !== 0).reverse();
    assert.deepEqual(r.data.map((x) => x.n), [...withIt, ...without]);
  });

  await check("data fidelity: unicode, floats, nulls, nesting and empty containers round-trip", async () => {
    const odd = {
      id: "fidelity",
      text: "h\u00e9llo \u{1F30D} \u4e2d\u6587 \"quoted\" back\\slash \u0001 tab\t newline\n",
      float: 0.1,
      exp: 1.5e-7,
      big: 9007199254740991,
      negative: -42,
      zero: 0,
      yes: true,
      no: false,
      nothing: null,
      nested: { a: [1, { b: null, c: [[], {}] }], "key with spaces": "v", "\u00e9t\u00e9": 1 },
      emptyObj: {},
      emptyArr: [],
    };
    try {
      const c = await aliceTasks.createRecord(odd);
      assert.deepEqual(strip(c.data), odd, "create response");
      const g = await aliceTasks.getRecord("fidelity");
      assert.deepEqual(strip(g.data), odd, "getRecord");
      const l = await aliceTasks.listRecords({ filters: { in_id: "fidelity" } });
      assert.deepEqual(strip(l.data[0]), odd, "listRecords");
      const f = await aliceTasks.listRecords({ filters: { "nested.key with spaces": "v" } });
      assert.deepEqual(ids(f.data), ["fidelity"], "filter on a nested key with spaces");
    } finally {
      await forget("fidelity");
    }
  });

  await check("sort: by title (string order) ascending", async () => {
    const r = await aliceTasks.listRecords({ sort: "title", pages: Infinity });
    const expected = all.map((x) => x.title).sort();
    assert.deepEqual(r.data.map((x) => x.title), expected);
  });

  // --- filters ------------------------------------------------------------------------------
  const range = (pred) => [...Array(N).keys()].filter(pred);
  const filterCases = [
    ["parity=even", { parity: "even" }, range((n) => n % 2 === 0)],
    ["done=true (boolean)", { done: true }, range((n) => n % 3 === 0)],
    ["min_n=20", { min_n: 20 }, range((n) => n >= 20)],
    ["max_n=2", { max_n: 2 }, range((n) => n <= 2)],
    ["lt_n=3", { lt_n: 3 }, range((n) => n < 3)],
    ["gt_n=22", { gt_n: 22 }, range((n) => n > 22)],
    ["not_parity=even", { not_parity: "even" }, range((n) => n % 2 === 1)],
    ["in_n=1,2,3", { in_n: "1,2,3" }, [1, 2, 3]],
    ["exclude_n=0,1,2,3,4,5,6,7,8,9,10", { exclude_n: "0,1,2,3,4,5,6,7,8,9,10" }, range((n) => n > 10)],
    ["meta.group=low (nested field)", { "meta.group": "low" }, range((n) => n < 10)],
    ["has_optional=true", { has_optional: true }, range((n) => n % 5 === 0)],
    ["has_optional=false", { has_optional: false }, range((n) => n % 5 !== 0)],
    ["like_title=Task 1*", { like_title: "Task 1*" }, range((n) => String(n).startsWith("1"))],
    ["parity=odd & min_n=10 (combined)", { parity: "odd", min_n: 10 }, range((n) => n % 2 === 1 && n >= 10)],
    ["like_title=task 2 (no wildcard: case-insensitive contains)", { like_title: "task 2" }, range((n) => n === 2 || n >= 20)],
    ["contains_tags=x4", { contains_tags: "x4" }, range((n) => n % 4 === 0)],
    ['contains_tags=["x4","x6"] (all of)', { contains_tags: '["x4","x6"]' }, range((n) => n % 12 === 0)],
    ['contains_any_tags=["x4","x6"]', { contains_any_tags: '["x4","x6"]' }, range((n) => n % 4 === 0 || n % 6 === 0)],
    ["in_id=task-01,task-02,nope", { in_id: "task-01,task-02,nope" }, [1, 2]],
    ["title=Task 7 (string equality)", { title: "Task 7" }, [7]],
  ];
  for (const [label, filters, expectedNs] of filterCases) {
    await check(`filter ${label} (sorted by n, pages of 4)`, async () => {
      const r = await aliceTasks.listRecords({ filters, sort: "n", limit: 4, pages: Infinity });
      assert.deepEqual(r.data.map((x) => x.n), expectedNs);
    });
  }

  await check("fields: listRecords({fields:['n']}) returns only id, last_modified and n", async () => {
    const r = await aliceTasks.listRecords({ fields: ["n"], sort: "n", limit: 3 });
    assert.equal(r.data.length, 3);
    for (const rec of r.data) assert.deepEqual(Object.keys(rec).sort(), ["id", "last_modified", "n"]);
  });

  await check("filter + sort + limit with next(): odd records, -n, 3 per page", async () => {
    let page = await aliceTasks.listRecords({ filters: { parity: "odd" }, sort: "-n", limit: 3 });
    const got = [...page.data];
    while (page.hasNextPage) {
      page = await page.next();
      got.push(...page.data);
    }
    assert.deepEqual(got.map((x) => x.n), range((n) => n % 2 === 1).reverse());
  });

  // --- _since -------------------------------------------------------------------------------
  let snapshotAt = null;
  let snapshotState = null;
  await check("_since: listRecords({since}) returns exactly the changes, tombstones included", async () => {
    const before = await aliceTasks.listRecords({ limit: 1 });
    const etag = before.last_modified;
    assert.match(etag, /^\d+$/);
    snapshotAt = Number(etag);
    snapshotState = (await aliceTasks.listRecords({ pages: Infinity })).data;

    const empty = await aliceTasks.listRecords({ since: etag, pages: Infinity });
    assert.deepEqual(empty.data, [], "nothing changed since the collection ETag");

    await aliceTasks.updateRecord({ id: recId(3), title: "Task three" }, { patch: true });
    await aliceTasks.deleteRecord(recId(4));
    await aliceTasks.createRecord({ id: "task-new", n: 100, title: "Task 100", parity: "even", done: false, meta: { group: "high" } });

    const changes = await aliceTasks.listRecords({ since: etag, pages: Infinity });
    assert.deepEqual(changes.data.map((r) => r.id), ["task-new", recId(4), recId(3)], "changes in -last_modified order");
    const tomb = changes.data[1];
    assert.equal(tomb.deleted, true, "tombstone must have deleted: true");
    assert.ok(tomb.last_modified > snapshotAt);
    assert.equal(changes.data[2].title, "Task three");
    assert.ok(Number(changes.last_modified) > snapshotAt, "ETag must move forward");

    const paged = await aliceTasks.listRecords({ since: etag, limit: 2, pages: Infinity });
    assert.deepEqual(paged.data.map((r) => r.id), ["task-new", recId(4), recId(3)], "since + limit=2 pages");

    const none = await aliceTasks.listRecords({ since: changes.last_modified, pages: Infinity });
    assert.deepEqual(none.data, []);

    const live = await aliceTasks.listRecords({ pages: Infinity });
    assert.equal(live.data.length, N, "25 - 1 deleted + 1 created");
    assert.ok(!ids(live.data).includes(recId(4)), "deleted record listed without _since");
  });

  // --- batch --------------------------------------------------------------------------------
  await check("client.batch(): create bucket, collection and record in one request", async () => {
    const responses = await alice.batch((batch) => {
      batch.createBucket(BID2);
      batch.bucket(BID2).createCollection("c1");
      batch.bucket(BID2).collection("c1").createRecord({ id: "first", hello: "world" });
    });
    assert.deepEqual(responses.map((r) => r.status), [201, 201, 201]);
    assert.equal(responses[2].body.data.hello, "world");
    const rec = await alice.bucket(BID2).collection("c1").getRecord("first");
    assert.equal(rec.data.hello, "world");
  });

  await check("bucket.batch() with 30 requests (chunked by batch_max_requests)", async () => {
    const responses = await alice.bucket(BID2).batch((batch) => {
      batch.createCollection("c2");
      for (let i = 0; i < 29; i++) batch.collection("c2").createRecord({ i });
    });
    assert.equal(responses.length, 30);
    assert.deepEqual([...new Set(responses.map((r) => r.status))], [201]);
    const list = await alice.bucket(BID2).collection("c2").listRecords({ pages: Infinity, sort: "i" });
    assert.deepEqual(list.data.map((r) => r.i), [...Array(29).keys()]);
  });

  await check("collection.deleteRecords({filters}) deletes a subset; _since shows the tombstones", async () => {
    const coll = alice.bucket(BID2).collection("c2");
    const etag = (await coll.listRecords({ limit: 1 })).last_modified;
    // A plural DELETE removes at most one page (paginate_by = 5) and announces the rest with
    // Next-Page; an app repeats the call until nothing is left.
    const batches = [];
    for (let i = 0; i < 5; i++) {
      const del = await coll.deleteRecords({ filters: { min_i: 20 } });
      batches.push(del.data);
      if (!del.data.length) break;
    }
    assert.deepEqual(batches.map((b) => b.length), [5, 4, 0]);
    const del = { data: batches.flat() };
    assert.ok(del.data.every((r) => r.deleted === true && typeof r.last_modified === "number"));
    const left = await coll.listRecords({ sort: "i", pages: Infinity });
    assert.deepEqual(left.data.map((r) => r.i), [...Array(20).keys()]);
    const changes = await coll.listRecords({ since: etag, pages: Infinity });
    assert.equal(changes.data.length, 9);
    assert.ok(changes.data.every((r) => r.deleted === true), "tombstones expected");
    assert.deepEqual(ids(changes.data), ids(del.data));
  });

  await check("batch with aggregate: published, 412 conflict and 404 skipped are told apart", async () => {
    const coll = alice.bucket(BID2).collection("c1");
    const result = await coll.batch(
      (batch) => {
        batch.createRecord({ id: "second", v: 2 });
        batch.updateRecord({ id: "first", extra: true }, { patch: true });
        batch.createRecord({ id: "first", hello: "clobber" }, { safe: true });
        batch.deleteRecord("does-not-exist");
      },
      { aggregate: true }
    );
    assert.equal(result.published.length, 2, `published ${JSON.stringify(result.published)}`);
    assert.equal(result.conflicts.length, 1, `conflicts ${JSON.stringify(result.conflicts)}`);
    assert.equal(result.conflicts[0].remote && result.conflicts[0].remote.id, "first", "conflict carries existing record");
    assert.equal(result.skipped.length, 1, `skipped ${JSON.stringify(result.skipped)}`);
    assert.equal(result.skipped[0].id, "does-not-exist");
    assert.equal(result.errors.length, 0, `errors ${JSON.stringify(result.errors)}`);
    const first = await coll.getRecord("first");
    assert.deepEqual(strip(first.data), { id: "first", hello: "world", extra: true });
  });

  await check("per-record permissions: bob lists only the record shared with him", async () => {
    const coll = alice.bucket(BID2).collection("c1");
    await coll.createRecord({ id: "for-bob", msg: "hi bob" }, { permissions: { read: [BOB_ID] } });
    const bobColl = bob.bucket(BID2).collection("c1");
    const list = await bobColl.listRecords({ pages: Infinity });
    assert.deepEqual(ids(list.data), ["for-bob"]);
    const one = await bobColl.getRecord("for-bob");
    assert.equal(one.data.msg, "hi bob");
    await rejectsWithStatus(bobColl.getRecord("first"), 403, "bob gets a record not shared with him");
    await rejectsWithStatus(bobColl.updateRecord({ id: "for-bob", msg: "mine" }), 403, "bob writes a read-only record");
    const perms = await bob.listPermissions({ pages: Infinity, filters: { resource_name: "record" } });
    const entry = perms.data.find((p) => p.record_id === "for-bob");
    assert.ok(entry && entry.permissions.includes("read"), `record entry in ${JSON.stringify(perms.data)}`);
  });

  await check("collection.setPermissions() replaces the permissions and keeps the data", async () => {
    const b2 = alice.bucket(BID2);
    await b2.createCollection("pt", { data: { kind: "x" }, permissions: { read: [BOB_ID] } });
    await bob.bucket(BID2).collection("pt").listRecords();
    await b2.collection("pt").setPermissions({ write: [ALICE_ID] });
    const perms = await b2.collection("pt").getPermissions();
    assert.deepEqual(perms, { write: [ALICE_ID] });
    assert.equal((await b2.collection("pt").getData()).kind, "x");
    await rejectsWithStatus(bob.bucket(BID2).collection("pt").listRecords(), 403, "bob after setPermissions");
  });

  await check("system.Everyone: an anonymous client reads a public collection but cannot write (401)", async () => {
    const b2 = alice.bucket(BID2);
    await b2.createCollection("public", { permissions: { read: ["system.Everyone"] } });
    await b2.collection("public").createRecord({ id: "notice", text: "hello world" });
    const pub = anon.bucket(BID2).collection("public");
    const list = await pub.listRecords();
    assert.deepEqual(ids(list.data), ["notice"]);
    assert.equal((await pub.getRecord("notice")).data.text, "hello world");
    await rejectsWithStatus(pub.createRecord({ text: "graffiti" }), 401, "anonymous write");
    await rejectsWithStatus(anon.bucket(BID).collection(CID).listRecords(), 401, "anonymous read of a private collection");
  });

  // --- permissions --------------------------------------------------------------------------
  await check("permissions: bucket owner has write; another user is refused (403)", async () => {
    const perms = await aliceBucket.getPermissions();
    assert.deepEqual(perms.write, [ALICE_ID]);
    await rejectsWithStatus(bob.bucket(BID).getData(), 403, "bob reads alice's bucket");
    await rejectsWithStatus(bobTasks.listRecords(), 403, "bob lists alice's records");
    await rejectsWithStatus(bobTasks.getRecord(recId(1)), 403, "bob gets alice's record");
    const agg = await bobTasks.batch((b) => b.createRecord({ title: "sneaky" }), { aggregate: true });
    assert.equal(agg.errors.length, 1, `batch errors ${JSON.stringify(agg)}`);
    assert.equal(agg.errors[0].error.code, 403);
    assert.equal(agg.published.length, 0);
  });

  await check("permissions: collection.addPermissions({read:[bob]}) lets bob read, not write", async () => {
    await aliceTasks.addPermissions({ read: [BOB_ID] });
    const perms = await aliceTasks.getPermissions();
    assert.deepEqual(perms.read, [BOB_ID]);
    assert.deepEqual(perms.write, [ALICE_ID]);
    const list = await bobTasks.listRecords({ pages: Infinity, sort: "id" });
    const mine = await aliceTasks.listRecords({ pages: Infinity, sort: "id" });
    assert.deepEqual(list.data, mine.data);
    const one = await bobTasks.getRecord(recId(1));
    assert.equal(one.data.n, 1);
    await rejectsWithStatus(bobTasks.createRecord({ title: "intrusion" }), 403, "bob creates a record");
    await rejectsWithStatus(bobTasks.deleteRecord(recId(1)), 403, "bob deletes a record");
    await rejectsWithStatus(bob.bucket(BID).getData(), 403, "bob still cannot read the bucket");
  });

  await check("permissions endpoint: client.listPermissions() shows bob's read on the collection", async () => {
    const r = await bob.listPermissions({ pages: Infinity });
    const entry = r.data.find((p) => p.resource_name === "collection" && p.bucket_id === BID && p.collection_id === CID);
    assert.ok(entry, `no collection entry in ${JSON.stringify(r.data)}`);
    assert.ok(entry.permissions.includes("read"), `permissions ${entry.permissions}`);
    assert.ok(!entry.permissions.includes("write"), `permissions ${entry.permissions}`);
    assert.equal(entry.uri, `/buckets/${BID}/collections/${CID}`);
    const mine = await alice.listPermissions({ pages: Infinity, filters: { resource_name: "bucket" } });
    const b = mine.data.find((p) => p.id === BID);
    assert.ok(b, "alice's bucket missing from her permissions");
    assert.ok(b.permissions.includes("write"));
  });

  await check("permissions: removePermissions({read:[bob]}) takes the access back", async () => {
    await aliceTasks.removePermissions({ read: [BOB_ID] });
    const perms = await aliceTasks.getPermissions();
    assert.ok(!perms.read || !perms.read.includes(BOB_ID));
    await rejectsWithStatus(bobTasks.listRecords(), 403, "bob lists after revocation");
  });

  await check("groups: a group of the bucket used as a principal grants and revokes access", async () => {
    const groupUri = `/buckets/${BID}/groups/friends`;
    const g = await aliceBucket.createGroup("friends", [BOB_ID], { data: { title: "Friends" } });
    assert.deepEqual(g.data.members, [BOB_ID]);
    const got = await aliceBucket.getGroup("friends");
    assert.equal(got.data.title, "Friends");
    const groups = await aliceBucket.listGroups();
    assert.deepEqual(ids(groups.data), ["friends"]);
    const colsEtag = (await aliceBucket.listCollections({ limit: 1 })).last_modified;
    await aliceBucket.createCollection("shared", { permissions: { read: [groupUri] } });
    await aliceBucket.collection("shared").createRecord({ id: "hello", msg: "for friends" });
    const seen = await bob.bucket(BID).collection("shared").getRecord("hello");
    assert.equal(seen.data.msg, "for friends");
    const user = await new KintoClient(BASE, options(BOB)).fetchUser();
    assert.ok(user.principals.includes(groupUri), `bob's principals ${JSON.stringify(user.principals)}`);
    await aliceBucket.updateGroup({ id: "friends", members: [] }, { patch: true });
    await rejectsWithStatus(bob.bucket(BID).collection("shared").getRecord("hello"), 403, "bob after leaving the group");
    await aliceBucket.deleteGroup("friends");
    await aliceBucket.deleteCollection("shared");
    const cols = await aliceBucket.listCollections();
    assert.deepEqual(ids(cols.data), [CID]);
    const colChanges = await aliceBucket.listCollections({ since: colsEtag });
    assert.deepEqual(colChanges.data.map((c) => [c.id, !!c.deleted]), [["shared", true]], "collections _since");
  });

  await check("permissions: bucket.setPermissions({read:[bob]}) is inherited by collections and records", async () => {
    await aliceBucket.setPermissions({ read: [BOB_ID], write: [ALICE_ID] });
    const perms = await aliceBucket.getPermissions();
    assert.deepEqual(perms.read, [BOB_ID]);
    assert.deepEqual(perms.write, [ALICE_ID]);
    await bob.bucket(BID).getData();
    const cols = await bob.bucket(BID).listCollections();
    assert.deepEqual(ids(cols.data), [CID]);
    const list = await bobTasks.listRecords({ pages: Infinity });
    assert.equal(list.data.length, N);
    await rejectsWithStatus(bob.bucket(BID).createCollection("bobs"), 403, "bob creates a collection");
  });

  // --- history ------------------------------------------------------------------------------
  await check("history: bucket.listHistory() records create/update/delete of a record", async () => {
    const h = await aliceBucket.listHistory({
      pages: Infinity,
      sort: "last_modified",
      filters: { resource_name: "record", collection_id: CID, record_id: crudId },
    });
    assert.deepEqual(h.data.map((e) => e.action), ["create", "update", "update", "delete"]);
    for (const e of h.data) {
      assert.equal(e.user_id, ALICE_ID);
      assert.equal(e.uri, `/buckets/${BID}/collections/${CID}/records/${crudId}`);
    }
    assert.equal(h.data[2].target.data.done, true);
    const colls = await aliceBucket.listHistory({ filters: { resource_name: "collection" }, pages: Infinity });
    assert.ok(colls.data.some((e) => e.action === "create" && e.collection_id === CID));
  });

  await check("history: entries carry Kinto's fields, with Kinto's types", async () => {
    const h = await aliceBucket.listHistory({ limit: 1, filters: { resource_name: "record", collection_id: CID } });
    assert.equal(h.data.length, 1);
    const e = h.data[0];
    const kintoFields = ["action", "collection_id", "date", "id", "last_modified", "record_id", "resource_name", "target", "uri", "user_id"];
    for (const f of kintoFields) assert.ok(f in e, `history entry lacks ${f}: ${JSON.stringify(e)}`);
    for (const f of ["action", "collection_id", "date", "id", "record_id", "resource_name", "uri", "user_id"]) {
      assert.equal(typeof e[f], "string", `${f} should be a string`);
    }
    assert.equal(typeof e.last_modified, "number");
    assert.ok(!Number.isNaN(Date.parse(e.date)), `date ${e.date}`);
    assert.deepEqual(Object.keys(e.target).sort(), ["data", "permissions"]);
    assert.equal(e.target.data.id, e.record_id);
    // Documented server extensions (Tidemark adds seq/before/patch/context) are allowed; say so.
    const extra = Object.keys(e).filter((k) => !kintoFields.includes(k));
    if (extra.length) console.log(`# note: history entries carry fields beyond Kinto's: ${extra.join(", ")}`);
  });

  await check("history: listRecords({at}) rebuilds the collection as it was (snapshot)", async () => {
    assert.ok(snapshotAt, "no timestamp recorded by the _since check");
    const snap = await aliceTasks.listRecords({ at: snapshotAt });
    const expected = snapshotState.map((r) => [r.id, r.last_modified]).sort();
    const got = snap.data.map((r) => [r.id, r.last_modified]).sort();
    assert.deepEqual(got, expected);
    assert.equal(byId(snap.data)[recId(3)].title, "Task 3");
  });

  // --- default bucket -----------------------------------------------------------------------
  await check("default bucket: records in buckets/default go to the user's own bucket", async () => {
    const coll = alice.bucket("default").collection("scratch");
    const r = await coll.createRecord({ note: "personal" });
    const list = await coll.listRecords();
    assert.deepEqual(ids(list.data), [r.data.id]);
    const user = await new KintoClient(BASE, options(ALICE)).fetchUser();
    assert.ok(user.bucket, "hello.user.bucket missing");
    const direct = await alice.bucket(user.bucket).collection("scratch").getRecord(r.data.id);
    assert.equal(direct.data.note, "personal");
    const other = await bob.bucket("default").collection("scratch").listRecords();
    assert.deepEqual(other.data, [], "bob's default bucket must be his own");
  });

  // --- kinto.js: two devices of alice, bob watching with kinto-http -------------------------
  await offlineScenario();
}

async function offlineScenario() {
  const notesReady = await check("kinto.js setup: notes collection exists (bob has read through the bucket)", async () => {
    await aliceBucket.createCollection(NOTES, { data: { displayName: "Notes", schemaVersion: 2 } });
    const perms = await aliceBucket.getPermissions();
    assert.deepEqual(perms.read, [BOB_ID]);
  });
  if (!notesReady) return;

  const device = (name) =>
    new Kinto({
      remote: BASE,
      bucket: BID,
      headers: { Authorization: basic(ALICE.user, ALICE.password) },
      adapterOptions: { dbName: `${name}-${RUN}` }, // separate IndexedDB database per device
      timeout: REQUEST_TIMEOUT_MS,
    });
  const A = device("deviceA").collection(NOTES);
  // Device B has an "incoming-changes" hook (runs after the pull, before the push) through which
  // a check can make a concurrent server-side change, to provoke outgoing conflicts (412).
  let interfere = null;
  const B = device("deviceB").collection(NOTES, {
    hooks: {
      "incoming-changes": [
        async (payload) => {
          if (interfere) {
            const f = interfere;
            interfere = null;
            await f();
          }
          return payload;
        },
      ],
    },
  });
  const bobNotes = bob.bucket(BID).collection(NOTES);
  const aliceNotes = aliceBucket.collection(NOTES);
  const S = Kinto.syncStrategy;

  // kinto.js keeps a record whose conflict was resolved with a server-side deletion (SERVER_WINS
  // against a tombstone) as a local `{deleted: true, _status: "synced"}` entry: not a live note.
  const local = async (coll) => (await coll.list({ order: "id" })).data.filter((r) => !r.deleted);
  const plain = (list) => list.map(strip).sort((a, b) => (a.id < b.id ? -1 : 1));
  const syncOk = async (coll, opts = {}) => {
    const r = await coll.sync(opts);
    assert.ok(r.ok, `sync not ok: conflicts=${JSON.stringify(r.conflicts)} errors=${JSON.stringify(r.errors)}`);
    return r;
  };
  async function assertConverged(expectedPlain) {
    const [a, b, server, seenByBob] = [
      await local(A),
      await local(B),
      (await aliceNotes.listRecords({ pages: Infinity })).data,
      (await bobNotes.listRecords({ pages: Infinity })).data,
    ];
    assert.deepEqual(plain(a), plain(b), "device A and device B differ");
    assert.deepEqual(plain(a), plain(server), "devices differ from the server");
    assert.deepEqual(plain(seenByBob), plain(server), "bob does not see what alice has");
    for (const r of [...a, ...b]) assert.equal(r._status, "synced", `${r.id} not synced on a device`);
    const byIdServer = byId(server);
    for (const r of a) assert.equal(r.last_modified, byIdServer[r.id].last_modified, `${r.id}: last_modified differs`);
    if (expectedPlain) assert.deepEqual(plain(server), plain(expectedPlain));
    assert.equal(A.lastModified, B.lastModified, "devices' collection timestamps differ");
    const etag = await aliceNotes.getRecordsTimestamp();
    assert.equal(`"${A.lastModified}"`, etag, "device timestamp differs from the server ETag");
  }

  // kinto.js generates UUIDs for new records; the notes are known by their `name` field.
  const id = {};
  const named = async (coll, name) => {
    const found = (await local(coll)).filter((r) => r.name === name);
    assert.equal(found.length, 1, `note ${name} on a device: ${JSON.stringify(found)}`);
    return found[0];
  };
  const names = (list) => list.map((r) => r.name).sort();

  let bobSince = null;
  const first = await check("kinto.js: device A creates 3 notes offline and syncs (published)", async () => {
    bobSince = (await bobNotes.listRecords({ limit: 1 })).last_modified;
    for (const [name, text] of [["n1", "one"], ["n2", "two"], ["n3", "three"]]) {
      const r = await A.create({ name, text, rev: 0 });
      assert.equal(r.data._status, "created");
      id[name] = r.data.id;
    }
    const r = await syncOk(A);
    assert.deepEqual(r.published.map((x) => x.id).sort(), Object.values(id).sort());
    const server = await aliceNotes.listRecords({ pages: Infinity });
    assert.deepEqual(names(server.data), ["n1", "n2", "n3"]);
    for (const rec of await local(A)) assert.equal(rec._status, "synced");
  });
  if (!first) return;

  await check("kinto.js: device B syncs and gets the 3 notes", async () => {
    const r = await syncOk(B);
    assert.equal(r.created.length, 3);
    assert.equal((await named(B, "n2")).text, "two");
    await assertConverged();
  });

  await check("kinto-http: bob (read-only) sees alice's notes via _since", async () => {
    const ch = await bobNotes.listRecords({ since: bobSince, pages: Infinity });
    assert.deepEqual(names(ch.data), ["n1", "n2", "n3"]);
    bobSince = ch.last_modified;
    await rejectsWithStatus(bobNotes.createRecord({ text: "bob was here" }), 403, "bob writes a note");
  });

  await check("kinto.js: conflict (MANUAL) on n1 is reported, resolved by hand, and both converge", async () => {
    await A.update({ ...(await named(A, "n1")), text: "one (from A)", rev: 1 });
    await B.update({ ...(await named(B, "n1")), text: "one (from B)", rev: 1 });
    await syncOk(A);
    const r = await B.sync({ strategy: S.MANUAL });
    assert.equal(r.ok, false, "a conflict was expected");
    assert.equal(r.conflicts.length, 1, `conflicts ${JSON.stringify(r.conflicts)}`);
    const c = r.conflicts[0];
    assert.equal(c.type, "incoming");
    assert.equal(c.local.text, "one (from B)");
    assert.equal(c.remote.text, "one (from A)");
    await B.resolve(c, { ...c.local, text: "one (merged)", rev: 2 });
    const r2 = await syncOk(B);
    assert.equal(r2.published.length, 1);
    const r3 = await syncOk(A);
    assert.equal(r3.updated.length, 1);
    await assertConverged();
    assert.equal((await A.get(id.n1)).data.text, "one (merged)");
  });

  await check("kinto.js: conflict on n2 with SERVER_WINS keeps the server version", async () => {
    await A.update({ ...(await named(A, "n2")), text: "two (from A)", rev: 1 });
    await B.update({ ...(await named(B, "n2")), text: "two (from B)", rev: 1 });
    await syncOk(B);
    const r = await syncOk(A, { strategy: S.SERVER_WINS });
    assert.equal(r.resolved.length, 1, `resolved ${JSON.stringify(r.resolved)}`);
    assert.equal((await A.get(id.n2)).data.text, "two (from B)");
    await syncOk(B);
    await assertConverged();
  });

  await check("kinto.js: conflict on n3 with CLIENT_WINS pushes the local version", async () => {
    await A.update({ ...(await named(A, "n3")), text: "three (from A)", rev: 1 });
    await B.update({ ...(await named(B, "n3")), text: "three (from B)", rev: 1 });
    await syncOk(A);
    const r = await syncOk(B, { strategy: S.CLIENT_WINS });
    assert.equal(r.resolved.length, 1, `resolved ${JSON.stringify(r.resolved)}`);
    const server = await aliceNotes.getRecord(id.n3);
    assert.equal(server.data.text, "three (from B)");
    const rA = await syncOk(A);
    assert.equal(rA.updated.length, 1);
    assert.equal((await A.get(id.n3)).data.text, "three (from B)");
    await assertConverged();
  });

  await check("kinto.js: deletion on device A reaches device B after sync", async () => {
    await A.delete(id.n1);
    const rA = await syncOk(A);
    assert.equal(rA.published.length, 1);
    assert.equal(rA.published[0].deleted, true);
    await rejectsWithStatus(aliceNotes.getRecord(id.n1), 404, "server record n1 after the deletion sync");
    const rB = await syncOk(B);
    assert.deepEqual(rB.deleted.map((r) => r.id), [id.n1]);
    assert.equal((await B.getAny(id.n1)).data, undefined, "n1 still on device B");
    await assertConverged();
  });

  await check("kinto.js: device B creates and deletes, device A follows", async () => {
    const n4 = await B.create({ name: "n4", text: "four" });
    id.n4 = n4.data.id;
    await B.delete(id.n2);
    await syncOk(B);
    const rA = await syncOk(A);
    assert.deepEqual(rA.created.map((r) => r.id), [id.n4]);
    assert.deepEqual(rA.deleted.map((r) => r.id), [id.n2]);
    await assertConverged();
    assert.deepEqual(names(await local(A)), ["n3", "n4"]);
  });

  await check("kinto.js: delete on A vs update on B (SERVER_WINS on B) ends with the record gone", async () => {
    await A.delete(id.n3);
    await B.update({ ...(await named(B, "n3")), text: "three (edited on B)", rev: 2 });
    await syncOk(A);
    await syncOk(B, { strategy: S.SERVER_WINS });
    const n3 = (await B.getAny(id.n3)).data;
    assert.ok(n3 === undefined || n3.deleted === true, `n3 should be gone on device B: ${JSON.stringify(n3)}`);
    await syncOk(A);
    await assertConverged();
    assert.deepEqual(names(await local(B)), ["n4"]);
  });

  await check("kinto.js: outgoing conflict (server changed between pull and push), MANUAL resolve", async () => {
    await B.update({ ...(await named(B, "n4")), text: "four (from B)" });
    interfere = async () => {
      const cur = await aliceNotes.getRecord(id.n4);
      await aliceNotes.updateRecord({ ...cur.data, text: "four (from the web)" });
    };
    const r = await B.sync({ strategy: S.MANUAL });
    assert.equal(interfere, null, "the hook did not run");
    assert.equal(r.ok, false, "an outgoing conflict was expected");
    assert.equal(r.conflicts.length, 1, `conflicts ${JSON.stringify(r.conflicts)}`);
    const c = r.conflicts[0];
    assert.equal(c.type, "outgoing");
    assert.ok(c.remote, "the 412 must carry the existing record (details.existing)");
    assert.equal(c.remote.text, "four (from the web)");
    assert.equal(c.local.text, "four (from B)");
    await B.resolve(c, { ...c.local, text: "four (B + web)" });
    await syncOk(B);
    await syncOk(A);
    await assertConverged();
    assert.equal((await aliceNotes.getRecord(id.n4)).data.text, "four (B + web)");
  });

  await check("kinto.js: outgoing conflict with CLIENT_WINS is re-pushed within the same sync", async () => {
    const n5 = await A.create({ name: "n5", text: "five" });
    id.n5 = n5.data.id;
    await syncOk(A);
    await syncOk(B);
    await B.update({ ...(await named(B, "n5")), text: "five (from B)" });
    interfere = async () => {
      await aliceNotes.updateRecord({ id: id.n5, text: "five (from the web)" }, { patch: true });
    };
    const r = await syncOk(B, { strategy: S.CLIENT_WINS });
    assert.equal(interfere, null, "the hook did not run");
    assert.equal(r.resolved.length, 1, `resolved ${JSON.stringify(r.resolved)}`);
    assert.equal((await aliceNotes.getRecord(id.n5)).data.text, "five (from B)");
    await syncOk(A);
    await assertConverged();
  });

  await check("kinto.js: values of every JSON type survive device A -> server -> device B", async () => {
    const odd = {
      name: "n6",
      text: "h\u00e9llo \u{1F30D} \"q\" \\ \u0001\n",
      float: 0.1,
      exp: -1.5e-7,
      big: 9007199254740991,
      yes: true,
      no: false,
      nothing: null,
      nested: { a: [1, { b: null, c: [[], {}] }] },
      emptyObj: {},
      emptyArr: [],
    };
    const created = await A.create(odd);
    id.n6 = created.data.id;
    await syncOk(A);
    await syncOk(B);
    assert.deepEqual(strip(await named(B, "n6")), { ...odd, id: id.n6 });
    assert.deepEqual(strip((await bobNotes.getRecord(id.n6)).data), { ...odd, id: id.n6 });
    await assertConverged();
  });

  await check("kinto.js: collection metadata is pulled on sync", async () => {
    const meta = await A.metadata();
    const server = await aliceNotes.getData();
    assert.equal(meta.displayName, "Notes");
    assert.deepEqual(meta, server);
  });

  await check("kinto-http: bob's _since poll reflects every change of the devices (tombstones too)", async () => {
    const ch = await bobNotes.listRecords({ since: bobSince, pages: Infinity });
    const got = byId(ch.data);
    for (const gone of ["n1", "n2", "n3"]) assert.equal(got[id[gone]] && got[id[gone]].deleted, true, `${gone} tombstone`);
    assert.equal(got[id.n4] && got[id.n4].text, "four (B + web)");
    assert.equal(got[id.n5] && got[id.n5].text, "five (from B)");
    const live = await bobNotes.listRecords({ pages: Infinity });
    assert.deepEqual(names(live.data), ["n4", "n5", "n6"]);
  });

  await check("kinto.js: a third device starting empty pulls the current state", async () => {
    const C = device("deviceC").collection(NOTES);
    const etag = await aliceNotes.getRecordsTimestamp();
    const r = await syncOk(C, { expectedTimestamp: etag.replace(/"/g, "") }); // adds _expected=
    assert.equal(`"${C.lastModified}"`, etag);
    assert.equal(r.created.length, (await local(A)).length);
    assert.deepEqual(plain(await local(C)), plain(await local(A)));
  });

  await check("kinto.js: sync in the default bucket (implicit collection creation)", async () => {
    const D = new Kinto({
      remote: BASE,
      headers: { Authorization: basic(ALICE.user, ALICE.password) },
      adapterOptions: { dbName: `deviceD-${RUN}` },
    }).collection("offline-default");
    await D.create({ text: "in default" });
    const r = await syncOk(D);
    assert.equal(r.published.length, 1);
    const server = await alice.bucket("default").collection("offline-default").listRecords();
    assert.deepEqual(plain(server.data), plain((await D.list()).data));
  });

  await check("cleanup: bob cannot delete; alice deletes her buckets; they are gone", async () => {
    await rejectsWithStatus(bob.deleteBucket(BID), 403, "bob deletes alice's bucket");
    await rejectsWithStatus(bob.bucket(BID).deleteCollection(NOTES), 403, "bob deletes alice's collection");
    const dc = await aliceBucket.deleteCollection(NOTES);
    assert.equal(dc.data.deleted, true);
    await rejectsWithStatus(aliceNotes.listRecords(), 404, "records of a deleted collection");
    for (const bid of [BID, BID2]) {
      const d = await alice.deleteBucket(bid);
      assert.equal(d.data.deleted, true);
      assert.equal(d.data.id, bid);
    }
    const left = await alice.listBuckets({ pages: Infinity });
    assert.ok(!ids(left.data).includes(BID) && !ids(left.data).includes(BID2), "buckets still listed");
    await rejectsWithStatus(bob.bucket(BID).getData(), 403, "bob reads a deleted bucket");
  });
}

try {
  await main();
} catch (e) {
  failed += 1;
  console.log(`not ok ${++number} - scenario aborted by an unexpected error`);
  for (const line of describeError(e).split("\n")) console.log(`#   ${line}`);
}
if (failures.length) {
  console.log("# failed checks:");
  for (const f of failures) console.log(`#   - ${f}`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
