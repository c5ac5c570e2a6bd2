/**
 * Hardening points of the request path, each found by trying the gateway as
 * an attacker or a new user would: bounded and clean input, internal errors
 * that can be traced, refused upstream credentials said as such, the
 * credential hook on stdio starts, per-principal and per-node limits, rate
 * limits, and refusals that cannot flood the audit log. Mandate runs in this
 * process in front of scripted upstreams (stdio fixtures are real processes).
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import type { CredentialHook } from '../../src/gateway/credentials.ts';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { NODE, ROOT, rpcHeaders, tempDir } from '../helpers/process.ts';
import { machineToken, registerMachine } from '../helpers/oauth.ts';
import { errorOf, initializeMessage, openSession, post, responseOf, toolText, type RawSession } from './raw.ts';

const RAW = path.join(ROOT, 'test/fixtures/raw-server.ts');
const CRASHY = path.join(ROOT, 'test/fixtures/crashy-server.ts');

/** A client-credentials token for `server` from a gateway whose registration is open. */
async function tokenFor(base: string, server: string, name = 'limits-client'): Promise<string> {
  return machineToken(base, await registerMachine(base, name), server);
}

/** A nested arguments object whose whole message nests `depth` levels (the message object is level 1). */
function nestedCall(depth: number): string {
  // {message {params {arguments {a {a ...}}}}}: message 1, params 2, arguments 3, then one per `a`.
  let inner = '{}';
  for (let level = 3; level < depth; level += 1) inner = `{"a":${inner}}`;
  return `{"jsonrpc":"2.0","id":"deep","method":"tools/call","params":{"name":"echo","arguments":${inner}}}`;
}

describe('bounded, clean input', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;
  let upstream: FakeUpstream;
  let session: RawSession;
  const calls = () => upstream.messages('tools/call').length;

  before(async () => {
    upstream = await startFakeUpstream();
    mandate = await startInProcess({ servers: [{ name: 'main', url: upstream.url }] });
    session = await openSession(mandate.endpoint('main'));
  });
  after(async () => {
    await mandate?.stop();
    await upstream?.close();
  });

  it('a tool name over 256 bytes is refused before it is forwarded or stored; 256 bytes pass', async () => {
    const seen = calls();
    for (const name of ['t'.repeat(257), 'é'.repeat(129), 't'.repeat(900_000)]) {
      const res = await session.post({ jsonrpc: '2.0', id: 'long', method: 'tools/call', params: { name, arguments: {} } });
      const { status, body } = await errorOf(res);
      assert.equal(status, 400);
      assert.equal(body.error?.code, -32602);
      assert.match(body.error?.message ?? '', /at most 256 bytes/);
      assert.equal(body.id, 'long');
    }
    assert.equal(calls(), seen, 'a long name reached the upstream');
    const events = await mandate.audit({ types: ['mcp.request'] });
    assert.ok(!events.some((e) => (e.tool ?? '').length > 256), 'a long name was stored');
    const fine = await session.callTool('t'.repeat(256));
    assert.equal(fine.error?.code, -32602, 'the upstream answered (unknown tool), so it was forwarded');
    assert.equal(calls(), seen + 1);
  });

  it('a prompt name over 256 bytes, a resource URI over 8 KiB and a method over 128 bytes are refused', async () => {
    const cases: [Record<string, unknown>, number][] = [
      [{ method: 'prompts/get', params: { name: 'p'.repeat(257) } }, -32602],
      [{ method: 'resources/read', params: { uri: `file:///${'x'.repeat(8 * 1024)}` } }, -32602],
      [{ method: 'completion/complete', params: { ref: { type: 'ref/prompt', name: 'p'.repeat(300) }, argument: { name: 'a', value: '' } } }, -32602],
      [{ method: `x/${'m'.repeat(127)}` }, -32600],
    ];
    const seen = upstream.messages().length;
    for (const [message, code] of cases) {
      const { status, body } = await errorOf(await session.post({ jsonrpc: '2.0', id: 'b', ...message }));
      assert.equal(status, 400, JSON.stringify(message).slice(0, 80));
      assert.equal(body.error?.code, code);
    }
    assert.equal(upstream.messages().length, seen);
  });

  it('nesting deeper than gateway.maxJsonDepth (64) is an invalid request (-32600), not an internal error; 64 levels pass', async () => {
    for (const text of [nestedCall(65), `{"jsonrpc":"2.0","id":"x","method":"ping","params":{"a":${'['.repeat(100_000)}${']'.repeat(100_000)}}}`]) {
      const { status, body } = await errorOf(await session.post(text));
      assert.equal(status, 400);
      assert.equal(body.error?.code, -32600);
      assert.match(body.error?.message ?? '', /deeper than 64/);
    }
    const res = await session.post(nestedCall(64));
    assert.equal(res.status, 200);
    assert.match(toolText(await responseOf(res, 'deep')), /^echo: /);
  });

  it('a body that is not UTF-8, or declares another charset, is refused, never silently replaced', async () => {
    const seen = upstream.messages().length;
    const invalid = Buffer.concat([Buffer.from('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}}}')]);
    const bad = await fetch(session.url, { method: 'POST', headers: rpcHeaders(session.headers), body: invalid });
    const refused = await errorOf(bad);
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error?.code, -32700);
    assert.match(refused.body.error?.message ?? '', /UTF-8/);
    const latin = await fetch(session.url, { method: 'POST', headers: rpcHeaders({ ...session.headers, 'content-type': 'application/json; charset=iso-8859-1' }), body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'ping' }) });
    assert.equal((await errorOf(latin)).status, 415);
    assert.equal(upstream.messages().length, seen);
    const utf8 = await fetch(session.url, { method: 'POST', headers: rpcHeaders({ ...session.headers, 'content-type': 'application/json; charset=UTF-8' }), body: JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'echo', arguments: { text: 'ünïcödé ✓' } } }) });
    assert.equal(toolText(await responseOf(utf8, 3)), 'echo: ünïcödé ✓');
  });
});

describe('errors that can be traced, and refused upstream credentials', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;
  let upstream: FakeUpstream;
  let guarded: FakeUpstream;
  const lines: string[] = [];
  const dir = tempDir('mandate-hardening-');

  before(async () => {
    [upstream, guarded] = await Promise.all([startFakeUpstream(), startFakeUpstream()]);
    guarded.on('initialize', () => ({ status: 401, contentType: 'application/json', headers: { 'www-authenticate': 'Bearer realm="upstream"' }, body: '{"error":"invalid_token"}' }));
    const credentials: CredentialHook = {
      credential: ({ server, purpose }) => {
        if (server.name === 'broken') throw new Error('the credential store is on fire');
        return purpose === 'spawn' ? { env: { FIXTURE_SECRET: 'from-the-hook' } } : {};
      },
    };
    const log = pino({ level: 'error' }, { write: (line: string) => void lines.push(line) });
    mandate = await startInProcess({
      servers: [
        { name: 'broken', url: upstream.url },
        { name: 'guarded', url: guarded.url },
        { name: 'local', command: NODE, args: [RAW, 'ok'] },
      ],
      app: { credentials, log },
    });
  });
  after(async () => {
    await mandate?.stop();
    await Promise.all([upstream?.close(), guarded?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('an internal error carries a correlation id that the log records with the detail; no detail reaches the client', async () => {
    const res = await post(mandate.endpoint('broken'), initializeMessage('init-broken'));
    const answer = await responseOf(res, 'init-broken');
    assert.equal(answer.error?.code, -32603);
    assert.equal(answer.error?.message, 'internal gateway error');
    const id = (answer.error?.data as { correlationId?: string } | undefined)?.correlationId;
    assert.match(id ?? '', /^[0-9a-f]{16}$/);
    assert.ok(!JSON.stringify(answer).includes('on fire'), 'the detail reached the client');
    const logged = lines.map((line) => JSON.parse(line) as { correlationId?: string; err?: string }).find((entry) => entry.correlationId === id);
    assert.ok(logged, `no log line with correlation id ${id}: ${lines.join('')}`);
    assert.match(logged.err ?? '', /on fire/);
  });

  it('an internal error of the authorization server carries a correlation id that the log records too', async () => {
    const identity = mandate.app.store.identity;
    const original = identity.getClient.bind(identity);
    identity.getClient = async () => {
      throw new Error('the client table is on fire');
    };
    try {
      const res = await fetch(`${mandate.base}/oauth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from('someone:secret').toString('base64')}` },
        body: new URLSearchParams({ grant_type: 'client_credentials', resource: mandate.endpoint('local') }),
      });
      assert.equal(res.status, 500);
      const body = (await res.json()) as { error?: string; correlation_id?: string };
      assert.equal(body.error, 'server_error');
      assert.match(body.correlation_id ?? '', /^[0-9a-f]{16}$/);
      assert.ok(!JSON.stringify(body).includes('on fire'));
      const logged = lines.map((line) => JSON.parse(line) as { correlationId?: string; err?: string }).find((entry) => entry.correlationId === body.correlation_id);
      assert.match(logged?.err ?? '', /on fire/);
    } finally {
      identity.getClient = original;
    }
  });

  it('an upstream 401 is reported as refused credentials naming the server, not as unavailable; the upstream challenge is not relayed', async () => {
    const res = await post(mandate.endpoint('guarded'), initializeMessage('init-guarded'));
    assert.equal(res.headers.get('www-authenticate'), null);
    const answer = await responseOf(res, 'init-guarded');
    assert.equal(answer.error?.code, -32000);
    assert.equal(answer.error?.message, 'upstream credential rejected for server "guarded": it refused the gateway\'s credentials (HTTP 401)');
    const events = await mandate.audit({ types: ['upstream.error'] });
    assert.ok(events.some((e) => e.server === 'guarded' && e.reason === 'upstream_auth'), JSON.stringify(events));
  });

  it('the credential hook gives a stdio server its environment when the process starts', async () => {
    const session = await openSession(mandate.endpoint('local'));
    assert.equal(toolText(await session.callTool('env', { name: 'FIXTURE_SECRET' })), 'from-the-hook');
    await fetch(session.url, { method: 'DELETE', headers: session.headers });
  });
});

describe('per-principal and per-node limits', { timeout: 90_000 }, () => {
  let mandate: InProcessMandate;
  let upstream: FakeUpstream;
  const dir = tempDir('mandate-limits-');
  const startsFile = path.join(dir, 'starts.txt');
  let token = '';

  before(async () => {
    writeFileSync(startsFile, '');
    upstream = await startFakeUpstream();
    mandate = await startInProcess({
      servers: [
        { name: 'main', url: upstream.url },
        { name: 'local', command: NODE, args: [CRASHY], env: { STARTS_FILE: startsFile } },
      ],
      gateway: { limits: { sessionsPerPrincipal: 2, stdioProcesses: 1, principalRate: { perSecond: 0, burst: 1 }, addressRate: { perSecond: 0.5, burst: 4 } } },
      identity: { registration: { mode: 'open' } },
      // Summaries are written when the test says so (the interval never ends during it).
      extra: { audit: { summaryIntervalSeconds: 3600 } },
    });
    token = await tokenFor(mandate.base, 'main');
  });
  after(async () => {
    await mandate?.stop();
    await upstream?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('gateway.limits.sessionsPerPrincipal: beyond it initialize gets 429 naming the limit, and nothing reaches the upstream', async () => {
    const auth = { authorization: `Bearer ${token}` };
    const opened: string[] = [];
    for (const id of ['a', 'b']) {
      const res = await post(mandate.endpoint('main'), initializeMessage(id), auth);
      assert.equal(res.status, 200);
      opened.push(res.headers.get('mcp-session-id') ?? '');
      await res.body?.cancel();
    }
    const before = upstream.messages('initialize').length;
    const refused = await post(mandate.endpoint('main'), initializeMessage('c'), auth);
    const { status, body } = await errorOf(refused);
    assert.equal(status, 429);
    assert.ok(refused.headers.get('retry-after'));
    assert.match(body.error?.message ?? '', /gateway\.limits\.sessionsPerPrincipal/);
    assert.equal(body.id, 'c');
    assert.equal(upstream.messages('initialize').length, before, 'the refused initialize was forwarded');
    // Ending one session makes room.
    const ended = await fetch(mandate.endpoint('main'), { method: 'DELETE', headers: { ...auth, 'mcp-session-id': opened[0] ?? '' } });
    assert.equal(ended.status, 200);
    const again = await post(mandate.endpoint('main'), initializeMessage('d'), auth);
    assert.equal(again.status, 200);
    await again.body?.cancel();
    const limited = await mandate.audit({ types: ['limit.exceeded'] });
    assert.ok(limited.some((e) => e.reason === 'gateway.limits.sessionsPerPrincipal'), JSON.stringify(limited));
  });

  it('gateway.limits.stdioProcesses: beyond it initialize gets 429 and no process is started', async () => {
    const local = await tokenFor(mandate.base, 'local', 'stdio-client');
    const auth = { authorization: `Bearer ${local}` };
    const first = await post(mandate.endpoint('local'), initializeMessage('p1'), auth);
    assert.equal(first.status, 200);
    await first.body?.cancel();
    const refused = await errorOf(await post(mandate.endpoint('local'), initializeMessage('p2'), auth));
    assert.equal(refused.status, 429);
    assert.match(refused.body.error?.message ?? '', /gateway\.limits\.stdioProcesses/);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(readFileSync(startsFile, 'utf8').trim().split('\n').length, 1, 'a second process was started');
  });

  it('requests without a valid token are rate-limited per address (429), and the flood is counted, not written row by row', async () => {
    const bogus = { authorization: 'Bearer not-a-token' };
    const statuses: number[] = [];
    for (let i = 0; i < 40; i += 1) {
      const res = await post(mandate.endpoint('main'), { jsonrpc: '2.0', id: i, method: 'ping' }, bogus);
      statuses.push(res.status);
      await res.body?.cancel();
    }
    assert.deepEqual(statuses.slice(0, 4), [401, 401, 401, 401]);
    assert.ok(statuses.slice(4).every((s) => s === 429 || s === 401), statuses.join(','));
    assert.ok(statuses.filter((s) => s === 429).length >= 30, statuses.join(','));
    // At the end of the interval: one row for the first refusal of each kind, one summary with the rest counted.
    mandate.app.gateway.deps.refusals.flush();
    const rejected = (await mandate.audit({ types: ['auth.rejected'] })).filter((e) => e.reason === 'invalid');
    assert.equal(rejected.length, 2, `${rejected.length} auth.rejected rows for one flood`);
    const counted = rejected.reduce((sum, e) => sum + Number(e.data.count ?? 0), 0);
    assert.equal(counted, statuses.filter((s) => s === 401).length, 'every refusal is counted');
    assert.ok(rejected.some((e) => e.data.summary === true));
    const limited = (await mandate.audit({ types: ['limit.exceeded'] })).filter((e) => e.reason === 'gateway.limits.addressRate');
    assert.equal(limited.length, 2, `${limited.length} limit.exceeded rows`);
    assert.equal(limited.reduce((sum, e) => sum + Number(e.data.count ?? 0), 0), statuses.filter((s) => s === 429).length);
  });
});

describe('per-principal rate limit', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;
  let upstream: FakeUpstream;

  before(async () => {
    upstream = await startFakeUpstream();
    mandate = await startInProcess({
      servers: [{ name: 'main', url: upstream.url }],
      gateway: { limits: { principalRate: { perSecond: 1, burst: 3 } } },
      identity: { registration: { mode: 'open' } },
    });
  });
  after(async () => {
    await mandate?.stop();
    await upstream?.close();
  });

  it('gateway.limits.principalRate: a principal over its rate gets 429 with Retry-After; another principal does not', async () => {
    const token = await tokenFor(mandate.base, 'main', 'busy');
    const other = await tokenFor(mandate.base, 'main', 'quiet');
    const statuses: number[] = [];
    for (let i = 0; i < 6; i += 1) {
      const res = await post(mandate.endpoint('main'), initializeMessage(i), { authorization: `Bearer ${token}` });
      statuses.push(res.status);
      if (res.status === 429) assert.ok(Number(res.headers.get('retry-after')) >= 1);
      await res.body?.cancel();
    }
    assert.deepEqual(statuses.slice(0, 3), [200, 200, 200]);
    assert.ok(statuses.slice(3).includes(429), statuses.join(','));
    const res = await post(mandate.endpoint('main'), initializeMessage('q'), { authorization: `Bearer ${other}` });
    assert.equal(res.status, 200);
    await res.body?.cancel();
  });
});
