/**
 * The contract every Store must meet, run against SQLite and PostgreSQL.
 * The harness gives each test a fresh, empty database and raw SQL access to
 * it, which tests use the way an attacker with database access would.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ChainVerifier, hashRecord, type VerifyResult } from '../../src/audit/chain.ts';
import type { AuditRecord, EventType, TimedEvent } from '../../src/audit/events.ts';
import { MIGRATIONS } from '../../src/store/migrations.ts';
import { openStore } from '../../src/store/open.ts';
import { AUDIT_LIST_MAX, SchemaError, StoreUnavailableError, type OpenStoreOptions, type Store } from '../../src/store/types.ts';

export interface StoreHarness {
  /** Prepares a fresh, empty database for one test; returns openStore options addressing it. */
  fresh(): Promise<OpenStoreOptions>;
  /** Runs raw SQL (one or more statements) on the current test's database, bypassing the store. */
  exec(sql: string): Promise<void>;
  /** Runs one raw query on the current test's database. */
  rows(sql: string): Promise<Record<string, unknown>[]>;
  /** Raw SQL that drops the append-only triggers. */
  dropTriggersSql: string;
  /** Raw SQL that makes the database refuse inserts of type `upstream.error`. */
  refuseUpstreamErrorSql: string;
  /** Drops the current test's database. */
  cleanup(): Promise<void>;
}

const T0 = Date.parse('2025-01-01T00:00:00.000Z');
const at = (second: number): string => new Date(T0 + second * 1000).toISOString();

function event(type: EventType = 'mcp.request', time = at(0), extra: Partial<TimedEvent> = {}): TimedEvent {
  return { time, type, outcome: 'success', server: 'files', actor: 'alice', data: { n: 1 }, ...extra };
}

/** Reads the whole log page by page, as an auditor would, and verifies it. */
async function verify(store: Store): Promise<VerifyResult> {
  const verifier = new ChainVerifier();
  let afterSeq = 0;
  for (;;) {
    const page = await store.audit.list({ afterSeq });
    for (const record of page) verifier.push(record);
    if (page.length < AUDIT_LIST_MAX) return verifier.result();
    afterSeq = page.at(-1)!.seq;
  }
}

const seqs = (records: readonly AuditRecord[]): number[] => records.map((r) => r.seq);
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const sql = (text: string): string => `'${text.replaceAll("'", "''")}'`;

const OPEN_URL = new URL('../../src/store/open.ts', import.meta.url).href;

/** Each worker process opens a store, migrates, then appends; all start at the same instant. */
const WORKER = `
import { openStore } from ${JSON.stringify(OPEN_URL)};
const { options, batches, batchSize, startAt, worker } = JSON.parse(process.env.MANDATE_TEST_WORKER);
const store = await openStore(options);
await new Promise((r) => setTimeout(r, Math.max(0, startAt - Date.now())));
try {
  await store.migrate();
  for (let i = 0; i < batches; i += 1) {
    const event = { time: new Date().toISOString(), type: 'mcp.request', outcome: 'success', data: { worker, i } };
    await store.audit.append(Array.from({ length: batchSize }, () => event));
  }
} finally {
  await store.close();
}
`;

async function runWorkers(
  options: OpenStoreOptions,
  plan: { workers: number; batches: number; batchSize: number },
): Promise<void> {
  const startAt = Date.now() + 1500;
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  const runs = range(1, plan.workers).map(
    (worker) =>
      new Promise<void>((resolve, reject) => {
        const child = spawn(process.execPath, ['--input-type=module', '--eval', WORKER], {
          cwd: fileURLToPath(new URL('../..', import.meta.url)),
          env: { ...env, MANDATE_TEST_WORKER: JSON.stringify({ options, ...plan, startAt, worker }) },
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let stderr = '';
        child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
        child.on('error', reject);
        child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`worker ${worker} exited ${code}: ${stderr}`))));
      }),
  );
  await Promise.all(runs);
}

export interface FreshStores {
  /** A store on this test's database (closed after the test). */
  open(): Promise<Store>;
  /** The same, migrated. */
  ready(): Promise<Store>;
  /** How this test's database is addressed (for other processes). */
  options(): OpenStoreOptions;
}

/**
 * Called inside a describe: every test gets a fresh, empty database from the
 * harness; its stores are closed and the database dropped after the test.
 */
export function freshStores(harness: StoreHarness): FreshStores {
  let options: OpenStoreOptions;
  let opened: Store[] = [];
  beforeEach(async () => {
    options = await harness.fresh();
  });
  afterEach(async () => {
    await Promise.all(opened.map((s) => s.close()));
    opened = [];
    await harness.cleanup();
  });
  const open = async (): Promise<Store> => {
    const store = await openStore(options);
    opened.push(store);
    return store;
  };
  const ready = async (): Promise<Store> => {
    const store = await open();
    await store.migrate();
    return store;
  };
  return { open, ready, options: () => options };
}

export function runStoreContract(label: string, harness: StoreHarness): void {
  describe(`Store contract: ${label}`, () => {
    const { open, ready, options } = freshStores(harness);
    /** Five events, seq 1..5; returns them as appended. */
    async function seeded(): Promise<{ store: Store; records: AuditRecord[] }> {
      const store = await ready();
      const records = await store.audit.append(range(1, 5).map((i) => event('mcp.request', at(i), { data: { i } })));
      return { store, records };
    }
    async function tamper(...statements: string[]): Promise<void> {
      await harness.exec(harness.dropTriggersSql);
      for (const statement of statements) await harness.exec(statement);
    }

    describe('migrations', () => {
      it('applies every migration once and reports them; rerunning changes nothing', async () => {
        const store = await open();
        assert.deepEqual(await store.migrations(), []);
        const first = await store.migrate();
        assert.deepEqual(first.map((m) => m.version), MIGRATIONS.map((m) => m.version));
        assert.equal(first[0]?.name, 'audit_events');
        assert.ok(!Number.isNaN(Date.parse(first[0]!.appliedAt)));
        assert.deepEqual(await store.migrate(), first, 'second migrate re-applied something');
        assert.deepEqual(await store.migrations(), first);
        const rows = await harness.rows('SELECT CAST(count(*) AS integer) AS n FROM schema_migrations');
        assert.equal(Number(rows[0]?.n), MIGRATIONS.length);
      });

      it('schema() compares without changing anything: all pending, then none; a newer schema is reported and refused', async () => {
        const store = await open();
        const before = await store.schema();
        assert.deepEqual(before, { applied: [], pending: MIGRATIONS.map(({ version, name }) => ({ version, name })), unknown: [] });
        assert.deepEqual(await store.migrations(), [], 'schema() created something');
        const applied = await store.migrate();
        assert.deepEqual(await store.schema(), { applied, pending: [], unknown: [] });

        await harness.exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'from_the_future', '2030-01-01T00:00:00.000Z')");
        const newer = await store.schema();
        assert.deepEqual(newer.unknown.map((m) => [m.version, m.name]), [[999, 'from_the_future']]);
        assert.deepEqual(newer.pending, []);
        await assert.rejects(store.migrate(), (error: unknown) => {
          assert.ok(error instanceof SchemaError, String(error));
          assert.match(error.message, /newer than this build/);
          return true;
        });
        assert.equal((await store.migrations()).length, MIGRATIONS.length + 1);
      });

      it('two stores migrating at once both succeed with one set of rows', async () => {
        const [a, b] = [await open(), await open()];
        const [ra, rb] = await Promise.all([a.migrate(), b.migrate()]);
        assert.deepEqual(ra, rb);
        assert.equal(ra.length, MIGRATIONS.length);
        const rows = await harness.rows('SELECT version FROM schema_migrations ORDER BY version');
        assert.deepEqual(rows.map((r) => Number(r.version)), MIGRATIONS.map((m) => m.version));
      });
    });

    describe('append, list, head', () => {
      it('an empty log has no head and no records', async () => {
        const store = await ready();
        assert.equal(await store.audit.head(), null);
        assert.deepEqual(await store.audit.list(), []);
        assert.deepEqual(await store.audit.append([]), []);
        assert.deepEqual(await verify(store), { ok: true, count: 0, head: null });
      });

      it('round-trips records with contiguous seqs from 1 and a chain that verifies', async () => {
        const store = await ready();
        const first = await store.audit.append([event('gateway.started', at(0)), event('session.opened', at(1))]);
        assert.deepEqual(seqs(first), [1, 2]);
        const second = await store.audit.append([event('mcp.request', at(2), { server: null })]);
        assert.deepEqual(seqs(second), [3]);
        assert.equal(second[0]?.prevHash, first[1]?.hash);
        const listed = await store.audit.list();
        assert.deepEqual(listed, [...first, ...second]);
        assert.equal(listed[2]?.server, null);
        assert.equal(listed[0]?.time, at(0), 'time must be kept as the exact string');
        assert.deepEqual(await store.audit.head(), { seq: 3, hash: second[0]!.hash });
        assert.deepEqual(await verify(store), { ok: true, count: 3, head: { seq: 3, hash: second[0]!.hash } });
      });

      it('audit.record appends like audit.append, resolving with nothing; the chain runs on across both', async () => {
        const store = await ready();
        await store.audit.append([event('gateway.started', at(0))]);
        assert.equal(await store.audit.record([event('mcp.request', at(1), { data: { i: 1 } }), event('auth.rejected', at(2))]), undefined);
        await store.audit.record([]);
        const [last] = await store.audit.append([event('mcp.request', at(3))]);
        const listed = await store.audit.list();
        assert.deepEqual(seqs(listed), [1, 2, 3, 4]);
        assert.deepEqual(listed.map((r) => r.type), ['gateway.started', 'mcp.request', 'auth.rejected', 'mcp.request']);
        assert.deepEqual(JSON.parse(listed[1]!.body).data, { i: 1 });
        assert.equal(last?.prevHash, listed[2]?.hash);
        assert.deepEqual(await verify(store), { ok: true, count: 4, head: { seq: 4, hash: last!.hash } });
      });

      it('a second store on the same database continues the same chain', async () => {
        const a = await ready();
        await a.audit.append([event()]);
        const b = await open();
        const [record] = await b.audit.append([event()]);
        assert.equal(record?.seq, 2);
        assert.deepEqual(await a.audit.head(), { seq: 2, hash: record!.hash });
      });
    });

    describe('concurrency', () => {
      async function assertSerial(store: Store, results: AuditRecord[][], total: number): Promise<void> {
        for (const batch of results) {
          assert.deepEqual(seqs(batch), range(batch[0]!.seq, batch[0]!.seq + batch.length - 1), 'batch not contiguous');
        }
        assert.deepEqual(seqs(results.flat()).sort((x, y) => x - y), range(1, total));
        assert.deepEqual(seqs(await store.audit.list()), range(1, total));
        const result = await verify(store);
        assert.equal(result.ok, true, JSON.stringify(result));
        assert.equal(result.count, total);
      }

      it('50 concurrent appends on one store yield contiguous seqs and a valid chain', async () => {
        const store = await ready();
        const results = await Promise.all(
          range(1, 50).map((i) => store.audit.append(range(1, (i % 3) + 1).map(() => event('mcp.request', at(i))))),
        );
        await assertSerial(store, results, results.flat().length);
      });

      it('two store instances appending concurrently share one serial chain', async () => {
        const [a, b] = [await ready(), await open()];
        const results = await Promise.all(range(1, 50).map((i) => (i % 2 ? a : b).audit.append([event(), event()])));
        await assertSerial(a, results, 100);
      });

      it('separate processes migrating and appending at once share one serial chain', async () => {
        await runWorkers(options(), { workers: 3, batches: 15, batchSize: 2 });
        const store = await open();
        assert.deepEqual((await store.migrations()).map((m) => m.version), MIGRATIONS.map((m) => m.version));
        const rows = await harness.rows('SELECT CAST(count(*) AS integer) AS n FROM schema_migrations');
        assert.equal(Number(rows[0]?.n), MIGRATIONS.length);
        assert.deepEqual(seqs(await store.audit.list()), range(1, 90));
        assert.deepEqual(await verify(store), { ok: true, count: 90, head: await store.audit.head() });
      });
    });

    describe('failures', () => {
      it('a refused insert rolls back the whole batch and leaves the store usable', async () => {
        const store = await ready();
        await store.audit.append([event()]);
        await harness.exec(harness.refuseUpstreamErrorSql);
        await assert.rejects(
          store.audit.append([event(), event('upstream.error'), event()]),
          StoreUnavailableError,
        );
        await assert.rejects(store.audit.record([event('upstream.error')]), StoreUnavailableError);
        assert.deepEqual(seqs(await store.audit.list()), [1]);
        const [next] = await store.audit.append([event()]);
        assert.equal(next?.seq, 2);
        assert.equal((await verify(store)).ok, true);
      });

      it('an unserialisable event is a caller error (TypeError), and nothing is written', async () => {
        const store = await ready();
        const bad = event('mcp.request', at(0), { data: { big: 1n as never } });
        await assert.rejects(store.audit.append([event(), bad]), TypeError);
        await assert.rejects(store.audit.record([event(), bad]), TypeError);
        assert.equal(await store.audit.head(), null);
        assert.deepEqual(seqs(await store.audit.append([event()])), [1]);
      });

      it('a closed store rejects with StoreUnavailableError', async () => {
        const store = await ready();
        await store.close();
        await assert.rejects(store.ping(), StoreUnavailableError);
        await assert.rejects(store.audit.append([event()]), StoreUnavailableError);
        await assert.rejects(store.audit.record([event()]), StoreUnavailableError);
        await store.close();
      });
    });

    describe('audit.list filters', () => {
      const types: EventType[] = ['gateway.started', 'session.opened', 'mcp.request', 'session.closed', 'mcp.request', 'upstream.error'];
      async function six(): Promise<Store> {
        const store = await ready();
        await store.audit.append(types.map((type, i) => event(type, at(i))));
        return store;
      }
      const list = async (store: Store, query: Parameters<Store['audit']['list']>[0]): Promise<number[]> =>
        seqs(await store.audit.list(query));

      it('types: exact names, prefixes ending in .*, and an empty list', async () => {
        const store = await six();
        assert.deepEqual(await list(store, { types: ['mcp.request'] }), [3, 5]);
        assert.deepEqual(await list(store, { types: ['session.*'] }), [2, 4]);
        assert.deepEqual(await list(store, { types: ['session.*', 'upstream.error'] }), [2, 4, 6]);
        assert.deepEqual(await list(store, { types: ['session'] }), [], 'an exact name is not a prefix');
        assert.deepEqual(await list(store, { types: ['sess.*'] }), [], 'a prefix ends at a dot');
        assert.deepEqual(await list(store, { types: ['SESSION.*', 'MCP.REQUEST'] }), [], 'matching is case-sensitive');
        assert.deepEqual(await list(store, { types: [] }), []);
      });

      it('since is inclusive and accepts any ISO 8601 form of the instant', async () => {
        const store = await six();
        assert.deepEqual(await list(store, { since: at(2) }), [3, 4, 5, 6]);
        assert.deepEqual(await list(store, { since: '2025-01-01T00:00:02Z' }), [3, 4, 5, 6]);
        assert.deepEqual(await list(store, { since: '2025-01-01T01:00:02.001+01:00' }), [4, 5, 6]);
        assert.deepEqual(await list(store, { since: at(60) }), []);
        await assert.rejects(store.audit.list({ since: 'yesterday' }), RangeError);
      });

      it('afterSeq, limit, and combinations', async () => {
        const store = await six();
        assert.deepEqual(await list(store, { afterSeq: 4 }), [5, 6]);
        assert.deepEqual(await list(store, { afterSeq: 6 }), []);
        assert.deepEqual(await list(store, { limit: 2 }), [1, 2]);
        assert.deepEqual(await list(store, { limit: 0 }), []);
        assert.deepEqual(await list(store, { types: ['mcp.request'], afterSeq: 3 }), [5]);
        assert.deepEqual(await list(store, { types: ['session.*', 'mcp.*'], since: at(2), limit: 2 }), [3, 4]);
      });

      it(`limit defaults to and is capped at ${AUDIT_LIST_MAX}`, async () => {
        const store = await ready();
        const total = AUDIT_LIST_MAX + 1;
        const appended = await store.audit.append(range(1, total).map((i) => event('mcp.request', at(i))));
        assert.equal(appended.length, total);
        const page = await store.audit.list();
        assert.equal(page.length, AUDIT_LIST_MAX);
        assert.equal(page.at(-1)?.seq, AUDIT_LIST_MAX);
        assert.equal((await store.audit.list({ limit: total * 2 })).length, AUDIT_LIST_MAX);
        assert.deepEqual(await list(store, { afterSeq: AUDIT_LIST_MAX }), [total]);
        assert.deepEqual(await verify(store), { ok: true, count: total, head: await store.audit.head() });
      });
    });

    describe('append-only', () => {
      it('the database refuses UPDATE and DELETE on audit_events', async () => {
        const { store, records } = await seeded();
        await assert.rejects(harness.exec("UPDATE audit_events SET outcome = 'denied' WHERE seq = 2"), /append-only/);
        await assert.rejects(harness.exec('DELETE FROM audit_events WHERE seq = 5'), /append-only/);
        await assert.rejects(harness.exec('DELETE FROM audit_events'), /append-only/);
        assert.deepEqual(await store.audit.list(), records);
      });
    });

    describe('tamper detection (triggers dropped first)', () => {
      async function assertBrokenAt(store: Store, seq: number): Promise<void> {
        const result = await verify(store);
        assert.equal(result.ok, false, 'tampering went unnoticed');
        assert.equal(result.ok === false && result.seq, seq, JSON.stringify(result));
      }

      it('editing one event body breaks the chain at that event', async () => {
        const { store } = await seeded();
        await tamper(
          `UPDATE audit_events SET body = replace(body, '"outcome":"success"', '"outcome":"denied"'), outcome = 'denied' WHERE seq = 3`,
        );
        assert.equal((await store.audit.list({ afterSeq: 2, limit: 1 }))[0]?.outcome, 'denied');
        await assertBrokenAt(store, 3);
      });

      it('editing a body and recomputing its hash breaks the chain at the next event', async () => {
        const { store, records } = await seeded();
        const third = records[2]!;
        const body = third.body.replace('"outcome":"success"', '"outcome":"denied"');
        await tamper(
          `UPDATE audit_events SET body = ${sql(body)}, outcome = 'denied', hash = ${sql(hashRecord(third.prevHash, body))} WHERE seq = 3`,
        );
        await assertBrokenAt(store, 4);
      });

      it('deleting an event in the middle is reported at the missing seq', async () => {
        const { store } = await seeded();
        await tamper('DELETE FROM audit_events WHERE seq = 3');
        await assertBrokenAt(store, 3);
      });

      it('swapping the seqs of two events is reported at the first of them', async () => {
        const { store } = await seeded();
        await tamper(
          'UPDATE audit_events SET seq = 1000 WHERE seq = 3',
          'UPDATE audit_events SET seq = 3 WHERE seq = 4',
          'UPDATE audit_events SET seq = 4 WHERE seq = 1000',
        );
        assert.deepEqual(seqs(await store.audit.list()), [1, 2, 3, 4, 5]);
        await assertBrokenAt(store, 3);
      });

      it('swapping the contents of two events is reported at the first of them', async () => {
        const { store, records } = await seeded();
        const put = (seq: number, r: AuditRecord): string =>
          `UPDATE audit_events SET time = ${sql(r.time)}, body = ${sql(r.body)}, prev_hash = ${sql(r.prevHash)}, hash = ${sql(r.hash)} WHERE seq = ${seq}`;
        await tamper(put(3, records[3]!), put(4, records[2]!));
        await assertBrokenAt(store, 3);
      });

      it('known limit: deleting the newest events verifies, but the head no longer matches an anchored copy', async () => {
        const { store } = await seeded();
        const anchored = await store.audit.head();
        await tamper('DELETE FROM audit_events WHERE seq >= 4');
        const result = await verify(store);
        assert.equal(result.ok, true);
        assert.equal(result.count, 3);
        assert.notDeepEqual(result.ok && result.head, anchored);
      });
    });
  });
}
