/**
 * A frozen database connection: the network path to PostgreSQL stops
 * carrying bytes but no socket closes (a stalled link, a hung pooler). The
 * gateway must fail closed within a few seconds (store.connectTimeoutMs,
 * store.statementTimeoutMs), keep at most one revocation refresh and one
 * health ping waiting on the database however many poll ticks pass, and
 * serve again once the path thaws. Real parts: `mandate up` through a
 * freezable TCP proxy to the test PostgreSQL, the reference `everything`
 * server over stdio, the official MCP SDK client.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { PG_URL, pgAdmin } from '../helpers/pg.ts';
import { FreezableProxy } from '../helpers/pg-proxy.ts';
import { EVERYTHING, NODE, startMandate, stopBounded, type Mandate } from '../helpers/process.ts';

const skip = process.env.MANDATE_TEST_PG === '0' ? 'MANDATE_TEST_PG=0' : false;

/** How long the database stays frozen; the revocation list polls every 500 ms meanwhile. */
const FREEZE_MS = 14_000;
const POLL_MS = 500;
/** Fail closed within this: the defaults' 5 s statement bound (+0.5 s) with room for a loaded machine. */
const BOUND_MS = 8000;
const REFRESH_WARNING = 'could not refresh the revocation list';

interface Outcome {
  ms: number;
  text?: string;
  error?: { code: unknown; message: string };
}

async function timed(call: () => Promise<Record<string, unknown>>): Promise<Outcome> {
  const started = Date.now();
  try {
    const result = await call();
    const content = result.content as { type: string; text: string }[] | undefined;
    return { ms: Date.now() - started, text: content?.[0]?.text ?? JSON.stringify(result) };
  } catch (error) {
    const e = error as { code?: unknown; message?: string };
    return { ms: Date.now() - started, error: { code: e.code, message: String(e.message) } };
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** `mandate up` on a schema of its own, through the proxy, serving the everything server over stdio; and an SDK client to it. */
async function gatewayBehind(proxy: FreezableProxy, schema: string, extra?: Record<string, unknown>): Promise<{ mandate: Mandate; client: Client }> {
  const viaProxy = new URL(PG_URL);
  viaProxy.port = String(proxy.port);
  viaProxy.searchParams.set('options', `-c search_path=${schema}`);
  const mandate = await startMandate({ servers: [{ name: 'everything', command: NODE, args: [EVERYTHING, 'stdio'] }], databaseUrl: viaProxy.toString(), extra });
  const client = new Client({ name: 'freeze-test', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(mandate.endpoint('everything'))));
  return { mandate, client };
}

const echo = (client: Client, message: string) => () => client.callTool({ name: 'echo', arguments: { message } });

describe('PostgreSQL frozen under a running gateway', { skip, timeout: 240_000 }, () => {
  const schema = `mandate_freeze_${randomBytes(5).toString('hex')}`;
  const target = new URL(PG_URL);
  const proxy = new FreezableProxy({ host: target.hostname, port: Number(target.port || 5432) });
  let mandate: Mandate | undefined;

  const seen: {
    before?: Outcome;
    first?: Outcome;
    concurrent?: Outcome[];
    /** Queries in flight, sampled every 200 ms while frozen. */
    samples: { at: number; inFlight: string[] }[];
    requestsWhileFrozen?: number;
    refreshWarnings?: number;
    frozenMs?: number;
    after?: Outcome;
    recoveredMs?: number;
    auditedAfter?: boolean;
    failure?: unknown;
  } = { samples: [] };

  before(async () => {
    await pgAdmin(`CREATE SCHEMA ${schema}`);
    await proxy.start();
    const started = await gatewayBehind(proxy, schema);
    mandate = started.mandate;
    const { client } = started;
    try {
      seen.before = await timed(echo(client, 'before'));

      const logFrom = mandate.output().length;
      const requestsBefore = proxy.counts().requests;
      proxy.freeze();
      const frozenAt = Date.now();
      const sampler = setInterval(() => seen.samples.push({ at: Date.now() - frozenAt, inFlight: proxy.counts().inFlight }), 200);
      try {
        seen.first = await timed(echo(client, 'during-1'));
        seen.concurrent = await Promise.all(['during-2', 'during-3', 'during-4'].map((m) => timed(echo(client, m))));
        await sleep(frozenAt + FREEZE_MS - Date.now());
      } finally {
        clearInterval(sampler);
      }
      seen.frozenMs = Date.now() - frozenAt;
      seen.requestsWhileFrozen = proxy.counts().requests - requestsBefore;
      seen.refreshWarnings = mandate.output().slice(logFrom).split(REFRESH_WARNING).length - 1;
      proxy.thaw();

      const thawedAt = Date.now();
      for (;;) {
        seen.after = await timed(echo(client, 'after'));
        if (seen.after.text !== undefined || Date.now() - thawedAt > 30_000) break;
        await sleep(250);
      }
      seen.recoveredMs = Date.now() - thawedAt;
      const listed = await mandate.cli(['audit', 'list', '--json', '--type', 'mcp.request']);
      const events = JSON.parse(listed.stdout || '[]') as { tool?: string; outcome?: string }[];
      seen.auditedAfter = events.some((e) => e.tool === 'echo' && e.outcome === 'success') && listed.code === 0;
    } catch (error) {
      seen.failure = error;
    } finally {
      await client.close().catch(() => undefined);
    }
  });

  after(async () => {
    if (mandate) await stopBounded(mandate);
    await proxy.stop();
    await pgAdmin(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  });

  it('the scripted freeze ran to the end', (t) => {
    const max = Math.max(0, ...seen.samples.map((s) => s.inFlight.length));
    t.diagnostic(
      `first request failed after ${seen.first?.ms} ms; concurrent ones after ${seen.concurrent?.map((o) => o.ms).join(', ')} ms; ` +
        `frozen ${seen.frozenMs} ms (${Math.floor((seen.frozenMs ?? 0) / POLL_MS)} poll ticks): ${seen.requestsWhileFrozen} requests sent, ` +
        `at most ${max} in flight, ${seen.refreshWarnings} refresh warnings; served again ${seen.recoveredMs} ms after the thaw`,
    );
    assert.equal(seen.failure, undefined, String((seen.failure as Error | undefined)?.stack ?? seen.failure));
    assert.equal(seen.before?.text, 'Echo: before');
  });

  it('a request while frozen fails closed (a JSON-RPC error, no result) within a few seconds', () => {
    for (const outcome of [seen.first, ...(seen.concurrent ?? [])]) {
      assert.ok(outcome?.error, `expected an error, got ${JSON.stringify(outcome)}`);
      assert.equal(outcome.text, undefined);
      assert.equal(outcome.error.code, -32603);
      assert.match(outcome.error.message, /audit log is unavailable/);
      assert.ok(outcome.ms < BOUND_MS, `failed only after ${outcome.ms} ms`);
    }
  });

  it('queries in flight stay bounded however many poll ticks pass: one refresh, one ping, one catalog read, one secrets read and one break-glass read at most', () => {
    assert.ok(seen.samples.length >= (FREEZE_MS / 200) * 0.8, `only ${seen.samples.length} samples`);
    for (const { at, inFlight } of seen.samples) {
      const refreshes = inFlight.filter((q) => /FROM revocations/.test(q)).length;
      const pings = inFlight.filter((q) => q === 'SELECT 1').length;
      assert.ok(refreshes <= 1, `${refreshes} revocation refreshes in flight at ${at} ms: ${JSON.stringify(inFlight)}`);
      assert.ok(pings <= 1, `${pings} pings in flight at ${at} ms: ${JSON.stringify(inFlight)}`);
      const catalogPolls = inFlight.filter((q) => /FROM catalog_/.test(q)).length;
      assert.ok(catalogPolls <= 1, `${catalogPolls} catalog reads in flight at ${at} ms: ${JSON.stringify(inFlight)}`);
      const secretPolls = inFlight.filter((q) => /FROM secret/.test(q)).length;
      assert.ok(secretPolls <= 1, `${secretPolls} secret reads in flight at ${at} ms: ${JSON.stringify(inFlight)}`);
      const breakglassPolls = inFlight.filter((q) => /FROM breakglass/.test(q)).length;
      assert.ok(breakglassPolls <= 1, `${breakglassPolls} break-glass reads in flight at ${at} ms: ${JSON.stringify(inFlight)}`);
      // A revocation refresh, a ping, the audit log's write, and the catalog's, the secrets' and the break-glass grants' polls: nothing else waits on the database.
      assert.ok(inFlight.length <= 6, `${inFlight.length} queries in flight at ${at} ms: ${JSON.stringify(inFlight)}`);
    }
    const ticks = Math.floor((seen.frozenMs ?? 0) / POLL_MS);
    assert.ok((seen.requestsWhileFrozen ?? Infinity) < ticks, `${seen.requestsWhileFrozen} requests for ${ticks} poll ticks`);
    // One warning per failed refresh (each waits out the statement bound), not one per tick.
    assert.ok((seen.refreshWarnings ?? Infinity) <= Math.ceil((seen.frozenMs ?? 0) / 3000), `${seen.refreshWarnings} refresh warnings`);
  });

  it('after the thaw, requests succeed again and are audited', () => {
    assert.equal(seen.after?.text, 'Echo: after', JSON.stringify(seen.after));
    assert.ok((seen.recoveredMs ?? Infinity) < 10_000, `served again only after ${seen.recoveredMs} ms`);
    assert.equal(seen.auditedAfter, true);
  });
});

describe('PostgreSQL frozen: the configured bounds are the ones used', { skip, timeout: 120_000 }, () => {
  const schema = `mandate_freeze_${randomBytes(5).toString('hex')}`;
  const target = new URL(PG_URL);
  const proxy = new FreezableProxy({ host: target.hostname, port: Number(target.port || 5432) });
  let mandate: Mandate | undefined;

  after(async () => {
    proxy.thaw();
    if (mandate) await stopBounded(mandate);
    await proxy.stop();
    await pgAdmin(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  });

  it('with store.statementTimeoutMs 1000 and store.connectTimeoutMs 500, a request fails closed in under 3 s', async () => {
    await pgAdmin(`CREATE SCHEMA ${schema}`);
    await proxy.start();
    const started = await gatewayBehind(proxy, schema, { store: { connectTimeoutMs: 500, statementTimeoutMs: 1000 } });
    mandate = started.mandate;
    const { client } = started;
    try {
      assert.equal((await timed(echo(client, 'before'))).text, 'Echo: before');
      proxy.freeze();
      const outcomes = [await timed(echo(client, 'frozen-1')), await timed(echo(client, 'frozen-2'))];
      for (const outcome of outcomes) {
        assert.equal(outcome.error?.code, -32603, JSON.stringify(outcome));
        assert.ok(outcome.ms < 3000, `failed only after ${outcome.ms} ms`);
      }
      proxy.thaw();
    } finally {
      await client.close().catch(() => undefined);
    }
  });
});
