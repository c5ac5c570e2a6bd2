/**
 * Streams end with their token: an open SSE stream (the standalone GET
 * stream, or a long POST) stops delivering within a second of a revocation
 * that covers its token, made here or by another process, and when its
 * token expires; and an open stream no longer keeps an idle session alive.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { progress, startFakeUpstream, textResult, type FakeUpstream, type Message } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { jwtClaims, machineToken, registerMachine } from '../helpers/oauth.ts';
import { eventually, initializeMessage, post, readEventsUntil, responseOf, type RpcMessage } from './raw.ts';

type Machine = Awaited<ReturnType<typeof registerMachine>>;

const basic = (client: Machine) => `Basic ${Buffer.from(`${encodeURIComponent(client.id)}:${encodeURIComponent(client.secret)}`).toString('base64')}`;
const tokenFor = (base: string, client: Machine) => machineToken(base, client, 'main');

interface Opened {
  headers: Record<string, string>;
  url: string;
}

async function openWith(mandate: InProcessMandate, token: string): Promise<Opened> {
  const auth = { authorization: `Bearer ${token}` };
  const res = await post(mandate.endpoint('main'), initializeMessage('init'), auth);
  assert.equal(res.status, 200);
  const id = res.headers.get('mcp-session-id') ?? '';
  await responseOf(res, 'init');
  const headers = { ...auth, 'mcp-session-id': id, 'mcp-protocol-version': '2025-11-25' };
  const done = await post(mandate.endpoint('main'), { jsonrpc: '2.0', method: 'notifications/initialized' }, headers);
  await done.body?.cancel();
  return { headers, url: mandate.endpoint('main') };
}

/** Opens the standalone GET stream; resolves once the upstream has its own open. */
async function listen(session: Opened, upstream: FakeUpstream): Promise<Response> {
  const res = await fetch(session.url, { headers: { ...session.headers, accept: 'text/event-stream' } });
  assert.equal(res.status, 200);
  await upstream.streamOpen();
  return res;
}

/** Reads until the stream ends; how long that took from `from`. */
async function endsWithin(res: Response, from: number, timeoutMs = 5000): Promise<number> {
  const { ended } = await readEventsUntil(res, () => false, timeoutMs).catch(() => ({ ended: false }));
  assert.ok(ended, 'the stream did not end');
  return Date.now() - from;
}

describe('streams end with their token', { timeout: 90_000 }, () => {
  let mandate: InProcessMandate;
  let upstream: FakeUpstream;
  let client: Machine;
  let release: () => void = () => undefined;

  before(async () => {
    upstream = await startFakeUpstream();
    // A call that sends progress, then holds its answer until the test lets it go.
    upstream.onTool('hold', (message: Message) => ({
      sse: [progress(message, 1, 2), { waitFor: new Promise<void>((resolve) => (release = resolve)) }, textResult(message, 'held')],
    }));
    mandate = await startInProcess({ servers: [{ name: 'main', url: upstream.url }], identity: { registration: { mode: 'open' } } });
    client = await registerMachine(mandate.base);
  });
  after(async () => {
    release();
    await mandate?.stop();
    await upstream?.close();
  });

  it('a revocation on this node (POST /oauth/revoke) ends the GET stream and a long POST within a second', async () => {
    const token = await tokenFor(mandate.base, client);
    const other = await tokenFor(mandate.base, client);
    const session = await openWith(mandate, token);
    const untouched = await openWith(mandate, other);
    const stream = await listen(session, upstream);
    const call = await post(session.url, { jsonrpc: '2.0', id: 'long', method: 'tools/call', params: { name: 'hold', arguments: {}, _meta: { progressToken: 'p' } } }, session.headers);
    assert.match(call.headers.get('content-type') ?? '', /event-stream/);
    const otherStream = await fetch(untouched.url, { headers: { ...untouched.headers, accept: 'text/event-stream' } });

    const revokedAt = Date.now();
    const revoked = await fetch(`${mandate.base}/oauth/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(client) },
      body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
    });
    assert.equal(revoked.status, 200);
    const [getMs, answer] = await Promise.all([endsWithin(stream, revokedAt), responseOf(call, 'long')]);
    const postMs = Date.now() - revokedAt;
    assert.ok(getMs < 1000, `the GET stream ended ${getMs} ms after the revocation`);
    assert.ok(postMs < 1000, `the POST stream ended ${postMs} ms after the revocation`);
    assert.equal((answer as RpcMessage).error?.message, 'the token of this request was revoked');
    await eventually(async () => upstream.messages('notifications/cancelled'), (list) => list.some((m) => m.params?.requestId === 'long'), 'the upstream to be told to cancel');
    // Another token's stream stays open.
    upstream.push({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'still here' } });
    const { events, ended } = await readEventsUntil(otherStream, (list) => list.some((e) => e.data.includes('still here')));
    assert.equal(ended, false);
    assert.ok(events.length > 0);
    await otherStream.body?.cancel();
  });

  it('a revocation by another process (mandate tokens revoke --jti) ends the stream within a second of the command', async () => {
    const token = await tokenFor(mandate.base, client);
    const session = await openWith(mandate, token);
    const stream = await listen(session, upstream);
    const out = await mandate.cli(['tokens', 'revoke', '--jti', String(jwtClaims(token).jti)]);
    assert.equal(out.code, 0, out.stderr);
    const ms = await endsWithin(stream, Date.now());
    assert.ok(ms < 1000, `the stream ended ${ms} ms after the command`);
  });

  it('the stream ends when its token expires', async (t) => {
    const token = await tokenFor(mandate.base, client);
    const session = await openWith(mandate, token);
    const stream = await listen(session, upstream);
    // The gateway runs in this process: its clock moves past the token's expiry instead of the test waiting.
    const exp = Number(jwtClaims(token).exp) * 1000;
    t.mock.timers.enable({ apis: ['Date'], now: exp + 1000 });
    try {
      const { ended } = await readEventsUntil(stream, () => false, 3000).catch(() => ({ ended: false }));
      assert.ok(ended, 'the stream outlived its token');
    } finally {
      t.mock.timers.reset();
    }
  });
});

describe('an open stream does not keep an idle session alive', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;
  let upstream: FakeUpstream;

  before(async () => {
    upstream = await startFakeUpstream();
    mandate = await startInProcess({ servers: [{ name: 'main', url: upstream.url }], gateway: { sessionIdleMs: 1500 } });
  });
  after(async () => {
    await mandate?.stop();
    await upstream?.close();
  });

  it('a session with only its GET stream open is closed after gateway.sessionIdleMs', async () => {
    const res = await post(mandate.endpoint('main'), initializeMessage('init'));
    const id = res.headers.get('mcp-session-id') ?? '';
    await responseOf(res, 'init');
    const stream = await fetch(mandate.endpoint('main'), { headers: { 'mcp-session-id': id, 'mcp-protocol-version': '2025-11-25', accept: 'text/event-stream' } });
    assert.equal(stream.status, 200);
    const { ended } = await readEventsUntil(stream, () => false, 6000).catch(() => ({ ended: false }));
    assert.ok(ended, 'the idle session kept its stream open');
    await eventually(() => mandate.audit({ types: ['session.closed'] }), (closed) => closed.some((e) => e.reason === 'idle'), 'session.closed, reason idle');
  });
});
