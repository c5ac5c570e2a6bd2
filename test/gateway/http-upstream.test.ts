/**
 * What a client sees when an HTTP upstream misbehaves: statuses, garbage,
 * oversize answers, resets, silence, and answers that stream messages before
 * their response. Mandate runs in this process in front of scripted upstreams
 * (test/helpers/fake-upstream.ts); every case asserts the JSON-RPC answer, that
 * nothing private leaks, what the audit log and metrics say, and that the
 * session goes on.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MODERN_VERSION, progress, rpcError, startFakeUpstream, textResult, type FakeUpstream, type Message } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { eventually, messagesOf, metricsText, openSession, post, responseOf, sample, toolText, type RawSession, type RpcMessage } from './raw.ts';

const LIMIT = 4096;
const TIMEOUT_MS = 1000;
const SECRET = 'private-upstream-detail-7f3a';

describe('an HTTP upstream that misbehaves', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;
  let upstream: FakeUpstream;
  let session: RawSession;

  before(async () => {
    upstream = await startFakeUpstream();
    mandate = await startInProcess({ servers: [{ name: 'scripted', url: upstream.url, timeoutMs: TIMEOUT_MS }], gateway: { maxUpstreamMessageBytes: LIMIT } });
    session = await openSession(mandate.endpoint('scripted'));
  });

  after(async () => {
    await mandate?.stop();
    await upstream?.close();
  });

  /** Calls `tool` once through the gateway; its final answer. */
  const call = (tool: string, id: string) => session.call('tools/call', { name: tool, arguments: {} }, id);

  /** The upstream.error event for a request id's tool, once written. */
  async function upstreamError(reason: string): Promise<void> {
    await eventually(() => mandate.audit({ types: ['upstream.error'] }), (list) => list.some((e) => e.server === 'scripted' && e.reason === reason), `upstream.error ${reason}`);
  }

  /** The session still answers: the fault stayed with its request. */
  async function stillWorks(): Promise<void> {
    assert.equal(toolText(await session.callTool('echo', { text: 'still here' })), 'echo: still here');
  }

  it('an SSE answer: a log message and progress before the result reach the client in order, as SSE', async () => {
    upstream.onTool('chatty', (m) => ({
      sse: [{ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'working' } }, progress(m, 1, 1), textResult(m, 'chatty done')],
    }));
    const res = await session.post({ jsonrpc: '2.0', id: 'c1', method: 'tools/call', params: { name: 'chatty', arguments: {}, _meta: { progressToken: 'c1-progress' } } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
    const messages = await messagesOf(res);
    assert.deepEqual(messages.map((m) => m.method ?? `response ${String(m.id)}`), ['notifications/message', 'notifications/progress', 'response c1']);
    assert.equal(messages[1]?.params?.progressToken, 'c1-progress');
    assert.equal(toolText(messages[2] as RpcMessage), 'chatty done');
  });

  it('HTTP 500 with a private body: a -32000 naming the server, nothing of the body or status; upstream.error', async () => {
    upstream.onTool('status-500', () => ({ status: 500, body: `${SECRET} (500)`, contentType: 'text/plain' }));
    const answer = await call('status-500', 's500');
    assert.equal(answer.error?.code, -32000, JSON.stringify(answer));
    assert.match(answer.error?.message ?? '', /"scripted"/);
    assert.ok(!JSON.stringify(answer).includes(SECRET), "the upstream's body leaked");
    assert.ok(!JSON.stringify(answer.error).includes('500'), "the upstream's status leaked");
    await upstreamError('upstream_unavailable');
    await stillWorks();
  });

  it("HTTP 401 and 403: said as the gateway's credentials refused, naming the server, nothing of the body; upstream.error upstream_auth", async () => {
    for (const status of [401, 403]) {
      upstream.onTool(`status-${status}`, () => ({ status, body: `${SECRET} (${status})`, contentType: 'text/plain', headers: { 'www-authenticate': 'Bearer realm="private"' } }));
      const answer = await call(`status-${status}`, `s${status}`);
      assert.equal(answer.error?.code, -32000, `${status}: ${JSON.stringify(answer)}`);
      assert.equal(answer.error?.message, `upstream credential rejected for server "scripted": it refused the gateway\'s credentials (HTTP ${status})`);
      assert.ok(!JSON.stringify(answer).includes(SECRET), `${status}: the upstream's body leaked`);
      assert.ok(!JSON.stringify(answer).includes('private'), `${status}: the upstream's challenge leaked`);
    }
    await upstreamError('upstream_auth');
    await stillWorks();
  });

  it("a 4xx with a JSON-RPC error body is the upstream's answer: relayed with its code and message", async () => {
    upstream.onTool('bad-args', (m) => ({ status: 400, json: rpcError(m, -32602, 'bad arguments: x is required') }));
    const res = await session.post({ jsonrpc: '2.0', id: 'b1', method: 'tools/call', params: { name: 'bad-args', arguments: {} } });
    const answer = await responseOf(res, 'b1');
    assert.deepEqual(answer.error, { code: -32602, message: 'bad arguments: x is required' });
    const events = await eventually(() => mandate.audit({ types: ['mcp.request'] }), (list) => list.some((e) => e.tool === 'bad-args'), 'mcp.request for bad-args');
    const event = events.find((e) => e.tool === 'bad-args');
    assert.equal(event?.outcome, 'failure');
    assert.equal(event?.data.errorCode, -32602);
    await stillWorks();
  });

  it('an unparseable JSON body and an unparseable SSE event: -32000, nothing of the garbage; upstream.error upstream_protocol', async () => {
    upstream.onTool('garbage-json', () => ({ status: 200, body: `{"jsonrpc": "2.0", ${SECRET}`, contentType: 'application/json' }));
    upstream.onTool('garbage-sse', (m) => ({ sse: [{ data: `not json ${SECRET}` }, textResult(m, 'never seen')] }));
    for (const tool of ['garbage-json', 'garbage-sse']) {
      const res = await session.post({ jsonrpc: '2.0', id: tool, method: 'tools/call', params: { name: tool, arguments: {} } });
      const text = await res.text();
      assert.ok(!text.includes(SECRET), `${tool}: garbage reached the client: ${text}`);
      assert.ok(!text.includes('never seen'), `${tool}: a message after the garbage reached the client`);
      const answer = (await messagesOf(new Response(text, { headers: res.headers }))).at(-1);
      assert.equal(answer?.id, tool);
      assert.equal(answer?.error?.code, -32000, `${tool}: ${text}`);
      assert.match(answer?.error?.message ?? '', /"scripted" sent an invalid message/);
    }
    await upstreamError('upstream_protocol');
    await stillWorks();
  });

  it(`an answer over maxUpstreamMessageBytes (${LIMIT}), as JSON or as one SSE event, is refused`, async () => {
    upstream.onTool('huge-json', (m) => ({ json: textResult(m, 'x'.repeat(LIMIT * 2)) }));
    upstream.onTool('huge-sse', (m) => ({ sse: [textResult(m, 'y'.repeat(LIMIT * 2))] }));
    for (const tool of ['huge-json', 'huge-sse']) {
      const answer = await call(tool, tool);
      assert.equal(answer.result, undefined, `${tool}: an oversize answer was passed on`);
      assert.equal(answer.error?.code, -32000);
      assert.match(answer.error?.message ?? '', /"scripted"/);
    }
    await stillWorks();
  });

  it('a connection reset: -32000 naming the server; upstream.error upstream_unavailable', async () => {
    upstream.onTool('reset', () => ({ reset: true }));
    const answer = await call('reset', 'r1');
    assert.equal(answer.error?.code, -32000, JSON.stringify(answer));
    assert.match(answer.error?.message ?? '', /"scripted" is unavailable/);
    assert.ok(!/ECONNRESET|socket|127\.0\.0\.1/.test(JSON.stringify(answer)), `a private detail leaked: ${JSON.stringify(answer)}`);
    await upstreamError('upstream_unavailable');
    await stillWorks();
  });

  it(`silence past the server's timeoutMs (${TIMEOUT_MS}): -32001 naming the server, and the upstream is told with notifications/cancelled`, async () => {
    upstream.onTool('silent', () => ({ hang: true }));
    const started = Date.now();
    const answer = await call('silent', 'quiet-1');
    const elapsed = Date.now() - started;
    assert.equal(answer.error?.code, -32001, JSON.stringify(answer));
    assert.match(answer.error?.message ?? '', /"scripted" did not answer in time/);
    assert.ok(elapsed >= TIMEOUT_MS - 50 && elapsed < TIMEOUT_MS + 2000, `answered after ${elapsed} ms`);
    const cancelled = await eventually(
      async () => upstream.messages('notifications/cancelled'),
      (list) => list.length > 0,
      'notifications/cancelled upstream',
    );
    // The upstream knows the request by the id it was sent with.
    const forwarded = upstream.messages('tools/call').find((m: Message) => m.params?.name === 'silent');
    assert.equal(cancelled[0]?.params?.requestId, forwarded?.id);
    const text = await metricsText(mandate.base);
    assert.ok((sample(text, 'mandate_errors_total', { server: 'scripted', kind: 'upstream_timeout' }) ?? 0) >= 1);
    await stillWorks();
  });

  it('HTTP 404 on a session request: the upstream ended its session; the client is told to start a new one', async () => {
    const other = await openSession(mandate.endpoint('scripted'));
    const upstreamSession = [...upstream.sessions].at(-1);
    assert.ok(upstreamSession);
    upstream.forget(upstreamSession);
    const answer = await other.call('tools/call', { name: 'echo', arguments: { text: 'x' } }, 'gone-1');
    assert.equal(answer.error?.code, -32000, JSON.stringify(answer));
    assert.match(answer.error?.message ?? '', /"scripted" ended the session; start a new one/);
    await upstreamError('upstream_session_expired');
    await stillWorks();
  });
});

describe('the stateless 2026-07-28 revision against scripted upstreams', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;
  let modern: FakeUpstream;
  let legacy: FakeUpstream;

  before(async () => {
    [modern, legacy] = await Promise.all([startFakeUpstream({ sessions: false, modern: true }), startFakeUpstream()]);
    mandate = await startInProcess({
      servers: [
        { name: 'modern', url: modern.url },
        { name: 'legacy', url: legacy.url },
      ],
    });
  });

  after(async () => {
    await mandate?.stop();
    await Promise.all([modern?.close(), legacy?.close()]);
  });

  const statelessCall = (server: string, id: string, text: string) =>
    post(
      mandate.endpoint(server),
      { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echo', arguments: { text }, _meta: { 'io.modelcontextprotocol/protocolVersion': MODERN_VERSION } } },
      { 'mcp-protocol-version': MODERN_VERSION, 'mcp-method': 'tools/call', 'mcp-name': 'echo' },
    );

  it('an upstream whose server/discover lists the revision gets the request, without a session, with its Mcp-* headers', async () => {
    const res = await statelessCall('modern', 'm1', 'stateless hello');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('mcp-session-id'), null);
    assert.equal(toolText(await responseOf(res, 'm1')), 'echo: stateless hello');
    assert.equal(modern.messages('server/discover').length, 1, 'the gateway asked which revisions the upstream speaks');
    const forwarded = modern.requests.find((r) => r.message?.method === 'tools/call');
    assert.ok(forwarded);
    assert.equal(forwarded.headers['mcp-protocol-version'], MODERN_VERSION);
    assert.equal(forwarded.headers['mcp-method'], 'tools/call');
    assert.equal(forwarded.headers['mcp-name'], 'echo');
    assert.equal(forwarded.headers['mcp-session-id'], undefined);
    assert.equal(modern.messages('initialize').length, 0, 'no session was opened upstream');
    // The answer about the era is kept: a second call does not ask again.
    assert.equal(toolText(await responseOf(await statelessCall('modern', 'm2', 'again'), 'm2')), 'echo: again');
    assert.equal(modern.messages('server/discover').length, 1);
  });

  it('an upstream that does not speak it: UnsupportedProtocolVersion listing the session-based versions, nothing forwarded', async () => {
    const res = await statelessCall('legacy', 'l1', 'x');
    const answer = (await messagesOf(res)).at(-1);
    assert.equal(answer?.id, 'l1');
    assert.equal(answer?.error?.code, -32022, JSON.stringify(answer));
    const supported = (answer?.error?.data as { supported?: string[] } | undefined)?.supported ?? [];
    assert.ok(supported.includes('2025-11-25') && !supported.includes(MODERN_VERSION), JSON.stringify(answer?.error));
    assert.equal(legacy.messages('tools/call').length, 0, 'the request reached a server that does not speak the revision');
  });
});
