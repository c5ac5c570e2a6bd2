/**
 * Bad input is answered at the edge: the right HTTP status and a JSON-RPC
 * error body, before anything reaches an upstream. Raw fetch against Mandate
 * running in this process, in front of scripted HTTP upstreams (the subject
 * is the gateway's edge, not a server's behaviour).
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { progress, startFakeUpstream, textResult, type FakeUpstream, type Message } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { freePort, rpcHeaders } from '../helpers/process.ts';
import { errorOf, initializeMessage, metricsText, openSession, post, readEventsUntil, responseOf, sample, toolText } from './raw.ts';

const ALLOWED_ORIGIN = 'https://app.example.com';
const MAX_BODY = 2048;

/** A tools/call the upstream answers with a progress notification at once and its result only once `release` settles. */
function heldCall(upstream: FakeUpstream, tool: string, release: Promise<unknown>): void {
  upstream.onTool(tool, (message: Message) => ({ sse: [progress(message, 1, 2), { waitFor: release }, textResult(message, `${tool} done`)] }));
}

describe('gateway edge: bad input gets the right status and JSON-RPC error', { timeout: 120_000 }, () => {
  let mandate: InProcessMandate;
  let upstream: FakeUpstream;
  let alt: FakeUpstream;
  let url: string;
  /** JSON-RPC messages the main upstream has received so far. */
  const forwarded = () => upstream.messages().length;

  before(async () => {
    [upstream, alt] = await Promise.all([startFakeUpstream(), startFakeUpstream()]);
    mandate = await startInProcess({
      servers: [
        { name: 'main', url: upstream.url },
        { name: 'alt', url: alt.url },
      ],
      gateway: { maxBodyBytes: MAX_BODY, allowedOrigins: [ALLOWED_ORIGIN] },
    });
    url = mandate.endpoint('main');
  });

  after(async () => {
    await mandate?.stop();
    await Promise.all([upstream?.close(), alt?.close()]);
  });

  it('invalid JSON → 400, -32700, id null; nothing reaches the upstream', async () => {
    const seen = forwarded();
    const { status, body } = await errorOf(await post(url, '{"jsonrpc": "2.0", "id": 1, "method": '));
    assert.equal(status, 400);
    assert.equal(body.jsonrpc, '2.0');
    assert.equal(body.error?.code, -32700);
    assert.equal(body.id, null);
    assert.equal(forwarded(), seen, 'the upstream received a message');
  });

  it('an empty body is a parse error too', async () => {
    const { status, body } = await errorOf(await post(url, ''));
    assert.equal(status, 400);
    assert.equal(body.error?.code, -32700);
  });

  it('a JSON-RPC batch (array) → 400, -32600; nothing reaches the upstream', async () => {
    const seen = forwarded();
    const batch = [
      { jsonrpc: '2.0', id: 1, method: 'ping' },
      { jsonrpc: '2.0', id: 2, method: 'ping' },
    ];
    const { status, body } = await errorOf(await post(url, batch));
    assert.equal(status, 400);
    assert.equal(body.error?.code, -32600);
    assert.match(body.error?.message ?? '', /batch/i);
    assert.equal(forwarded(), seen, 'the upstream received a message');
  });

  it('`jsonrpc` missing or wrong → 400, -32600', async () => {
    for (const message of [{ id: 1, method: 'initialize', params: {} }, { jsonrpc: '1.0', id: 1, method: 'ping' }]) {
      const { status, body } = await errorOf(await post(url, message));
      assert.equal(status, 400, JSON.stringify(message));
      assert.equal(body.error?.code, -32600);
      assert.match(body.error?.message ?? '', /jsonrpc/);
    }
  });

  it('an invalid request whose id can be read is answered with that id', async () => {
    const { status, body } = await errorOf(await post(url, { jsonrpc: '1.0', id: 'readable-id', method: 'ping' }));
    assert.equal(status, 400);
    assert.equal(body.error?.code, -32600);
    // JSON-RPC 2.0 §5: the error answer carries the request's id whenever it could be read.
    assert.equal(body.id, 'readable-id');
  });

  it('a JSON value that is not an object, and a request id that is an object → 400, -32600', async () => {
    for (const message of ['"hello"', '42', 'null', JSON.stringify({ jsonrpc: '2.0', id: { a: 1 }, method: 'ping' })]) {
      const { status, body } = await errorOf(await post(url, message));
      assert.equal(status, 400, message);
      assert.equal(body.error?.code, -32600, message);
    }
  });

  it('a body over gateway.maxBodyBytes → 413 (declared length); nothing reaches the upstream', async () => {
    const seen = forwarded();
    const big = { jsonrpc: '2.0', id: 1, method: 'ping', params: { pad: 'x'.repeat(MAX_BODY) } };
    const { status, body } = await errorOf(await post(url, big));
    assert.equal(status, 413);
    assert.equal(body.error?.code, -32600);
    assert.match(body.error?.message ?? '', new RegExp(String(MAX_BODY)));
    assert.equal(forwarded(), seen, 'the upstream received a message');
  });

  it('a chunked body that grows over gateway.maxBodyBytes → 413 (without waiting for its end)', async () => {
    // node:http rather than fetch: the gateway answers and closes while the upload is still going.
    const target = new URL(url);
    const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request({ host: target.hostname, port: target.port, path: target.pathname, method: 'POST', headers: rpcHeaders() }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        res.on('error', reject);
      });
      req.on('error', () => undefined); // EPIPE once the gateway closes: the response is what matters
      req.write('{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"');
      let sent = 0;
      const timer = setInterval(() => {
        if (sent >= 40 || req.destroyed) {
          clearInterval(timer);
          return;
        }
        sent += 1;
        req.write('x'.repeat(500));
      }, 10);
      setTimeout(() => reject(new Error('no answer within 10 s')), 10_000).unref();
    });
    assert.equal(status, 413);
    const body = JSON.parse(text) as { error?: { code: number } };
    assert.equal(body.error?.code, -32600);
  });

  it('a body exactly at the limit is accepted (parsed, not refused for size)', async () => {
    const base = { jsonrpc: '2.0', id: 1, method: 'tools/list', params: { pad: '' } };
    const pad = MAX_BODY - JSON.stringify(base).length;
    const text = JSON.stringify({ ...base, params: { pad: 'x'.repeat(pad) } });
    assert.equal(Buffer.byteLength(text), MAX_BODY);
    const { status, body } = await errorOf(await post(url, text));
    // No session: refused for that reason, not for the size.
    assert.equal(status, 400);
    assert.match(body.error?.message ?? '', /Mcp-Session-Id/);
  });

  it('wrong Content-Type → 415', async () => {
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/jsonx']) {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': type, accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
      });
      const { status, body } = await errorOf(res);
      assert.equal(status, 415, type);
      assert.equal(body.error?.code, -32600);
    }
    // Parameters on the media type are fine.
    const ok = await post(url, { jsonrpc: '2.0', id: 1, method: 'ping' }, { 'content-type': 'application/json; charset=utf-8' });
    assert.notEqual(ok.status, 415);
    await ok.body?.cancel();
  });

  it('Accept without text/event-stream → 406', async () => {
    for (const accept of ['application/json', 'text/event-stream', 'text/html']) {
      const { status, body } = await errorOf(await post(url, { jsonrpc: '2.0', id: 1, method: 'ping' }, { accept }));
      assert.equal(status, 406, accept);
      assert.equal(body.error?.code, -32600);
    }
  });

  it('unknown server name → 404, and nested or empty names too', async () => {
    const seen = forwarded();
    for (const path of ['/mcp/nosuchserver', '/mcp/main/extra', '/mcp/', '/mcp/MAIN']) {
      const res = await post(`${mandate.base}${path}`, { jsonrpc: '2.0', id: 1, method: 'ping' });
      const { status, body } = await errorOf(res);
      assert.equal(status, 404, path);
      assert.equal(body.error?.code, -32600, path);
    }
    assert.equal(forwarded(), seen, 'the upstream received a message');
  });

  it('POST tools/list without Mcp-Session-Id → 400', async () => {
    const seen = forwarded();
    const { status, body } = await errorOf(await post(url, { jsonrpc: '2.0', id: 'l1', method: 'tools/list' }));
    assert.equal(status, 400);
    assert.match(body.error?.message ?? '', /Mcp-Session-Id/);
    assert.equal(body.id, 'l1');
    assert.equal(forwarded(), seen, 'the upstream received a message');
  });

  it('unknown Mcp-Session-Id → 404', async () => {
    const res = await post(url, { jsonrpc: '2.0', id: 'l2', method: 'tools/list' }, { 'mcp-session-id': 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' });
    const { status, body } = await errorOf(res);
    assert.equal(status, 404);
    assert.ok(body.error);
    assert.match(body.error.message, /session/i);
  });

  it("a session id is bound to its server: on another server's path it is unknown (404), and the session survives", async () => {
    const session = await openSession(url);
    const altUrl = mandate.endpoint('alt');
    const res = await post(altUrl, { jsonrpc: '2.0', id: 1, method: 'tools/list' }, session.headers);
    const { status, body } = await errorOf(res);
    assert.equal(status, 404);
    assert.match(body.error?.message ?? '', /session/i);
    const get = await fetch(altUrl, { method: 'GET', headers: { ...session.headers, accept: 'text/event-stream' } });
    assert.equal((await errorOf(get)).status, 404);
    const del = await fetch(altUrl, { method: 'DELETE', headers: session.headers });
    assert.equal((await errorOf(del)).status, 404);
    assert.equal(alt.requests.length, 0, "the other server's upstream was reached");
    assert.ok((await session.call('tools/list')).result, 'the session still works on its own server');
    await fetch(url, { method: 'DELETE', headers: session.headers });
  });

  it('GET with a session: Accept without text/event-stream → 406; a second standalone stream → 409', async () => {
    const session = await openSession(url);
    const wrongAccept = await fetch(url, { method: 'GET', headers: { ...session.headers, accept: 'application/json' } });
    assert.equal((await errorOf(wrongAccept)).status, 406);
    const controller = new AbortController();
    const first = await fetch(url, { method: 'GET', headers: { ...session.headers, accept: 'text/event-stream' }, signal: controller.signal });
    assert.equal(first.status, 200);
    assert.match(first.headers.get('content-type') ?? '', /text\/event-stream/);
    assert.equal(first.headers.get('mcp-session-id'), session.id);
    const second = await fetch(url, { method: 'GET', headers: { ...session.headers, accept: 'text/event-stream' } });
    assert.equal((await errorOf(second)).status, 409);
    controller.abort();
    // Once the first stream is gone, a new one may open.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const controller2 = new AbortController();
    const third = await fetch(url, { method: 'GET', headers: { ...session.headers, accept: 'text/event-stream' }, signal: controller2.signal });
    assert.equal(third.status, 200);
    controller2.abort();
    await fetch(url, { method: 'DELETE', headers: session.headers });
  });

  it("a message the upstream pushes on its standalone stream reaches the client's GET stream", async () => {
    const known = new Set(upstream.sessions);
    const session = await openSession(url);
    const upstreamSession = [...upstream.sessions].find((id) => !known.has(id));
    assert.ok(upstreamSession, 'the gateway opened an upstream session');
    const controller = new AbortController();
    const stream = await fetch(url, { method: 'GET', headers: { ...session.headers, accept: 'text/event-stream' }, signal: controller.signal });
    assert.equal(stream.status, 200);
    await upstream.streamOpen(upstreamSession);
    assert.equal(upstream.push({ jsonrpc: '2.0', method: 'notifications/tools/list_changed' }, upstreamSession), 1);
    const { events } = await readEventsUntil(stream, (list) => list.some((e) => e.data !== ''));
    controller.abort();
    const messages = events.filter((e) => e.data !== '').map((e) => JSON.parse(e.data) as { method?: string });
    assert.deepEqual(messages.map((m) => m.method), ['notifications/tools/list_changed']);
    assert.ok(events.every((e) => e.id === undefined || !e.id.includes(upstreamSession)), 'the upstream session id reached the client');
    await fetch(url, { method: 'DELETE', headers: session.headers });
  });

  it('GET without a session → 405 with Allow', async () => {
    const res = await fetch(url, { method: 'GET', headers: { accept: 'text/event-stream' } });
    const { status, body } = await errorOf(res);
    assert.equal(status, 405);
    assert.ok(body.error);
    assert.match(res.headers.get('allow') ?? '', /POST/);
  });

  it('PUT, PATCH → 405 with Allow: GET, POST, DELETE', async () => {
    for (const method of ['PUT', 'PATCH']) {
      const res = await fetch(url, { method, headers: rpcHeaders(), body: '{}' });
      const { status } = await errorOf(res);
      assert.equal(status, 405, method);
      assert.equal(res.headers.get('allow'), 'GET, POST, DELETE');
    }
  });

  it('an Origin not in gateway.allowedOrigins → 403; an allowed one passes', async () => {
    const init = initializeMessage('o1', 'browser');
    for (const origin of ['https://evil.example.com', 'http://app.example.com', `${ALLOWED_ORIGIN}:8443`, 'null', mandate.base]) {
      const { status, body } = await errorOf(await post(url, init, { origin }));
      assert.equal(status, 403, origin);
      assert.equal(body.error?.code, -32600);
    }
    const ok = await post(url, init, { origin: ALLOWED_ORIGIN });
    assert.equal(ok.status, 200);
    const sessionId = ok.headers.get('mcp-session-id');
    assert.ok(sessionId);
    assert.ok((await responseOf(ok, 'o1')).result);
    // The Origin check applies to every method, with a session too.
    const del = await fetch(url, { method: 'DELETE', headers: { 'mcp-session-id': sessionId, origin: 'https://evil.example.com' } });
    assert.equal(del.status, 403);
    await del.body?.cancel();
    const del2 = await fetch(url, { method: 'DELETE', headers: { 'mcp-session-id': sessionId, origin: ALLOWED_ORIGIN } });
    assert.equal(del2.status, 200);
  });

  it('DELETE ends a session: later requests on it → 404', async () => {
    const session = await openSession(url);
    assert.ok((await session.call('tools/list')).result);
    const upstreamSessions = upstream.sessions.size;
    const del = await fetch(url, { method: 'DELETE', headers: session.headers });
    assert.equal(del.status, 200);
    assert.equal(upstream.sessions.size, upstreamSessions - 1, 'the upstream session was not ended');
    const after = await session.post({ jsonrpc: '2.0', id: 'after', method: 'tools/list' });
    assert.equal((await errorOf(after)).status, 404);
    const again = await fetch(url, { method: 'DELETE', headers: session.headers });
    assert.equal((await errorOf(again)).status, 404);
    const get = await fetch(url, { method: 'GET', headers: { ...session.headers, accept: 'text/event-stream' } });
    assert.equal((await errorOf(get)).status, 404);
    const closed = await mandate.audit({ types: ['session.closed'] });
    assert.ok(closed.some((e) => e.reason === 'client ended the session'), JSON.stringify(closed));
  });

  it('DELETE without a session id → 405', async () => {
    const res = await fetch(url, { method: 'DELETE' });
    assert.equal((await errorOf(res)).status, 405);
  });

  it('the session id is opaque and high-entropy (≥ 32 chars of base64url, fresh per session)', async () => {
    const a = await openSession(url);
    const b = await openSession(url);
    for (const id of [a.id, b.id]) {
      assert.ok(id.length >= 32, `too short: ${id}`);
      assert.match(id, /^[A-Za-z0-9_-]+$/);
    }
    assert.notEqual(a.id, b.id);
    // Not derived from anything guessable: no long common prefix.
    let common = 0;
    while (common < a.id.length && a.id[common] === b.id[common]) common += 1;
    assert.ok(common < 8, `ids share a ${common}-char prefix`);
    // The audit log keeps a handle, never the id itself.
    const opened = await mandate.audit({ types: ['session.opened'] });
    const text = JSON.stringify(opened);
    assert.ok(!text.includes(a.id) && !text.includes(b.id), 'a session id appears in the audit log');
    for (const s of [a, b]) await fetch(url, { method: 'DELETE', headers: s.headers });
  });

  it('a duplicate in-flight request id in one session → 400; the first request still completes', async () => {
    const session = await openSession(url);
    const release = Promise.withResolvers<void>();
    heldCall(upstream, 'slow', release.promise);
    const slow = { jsonrpc: '2.0', id: 'dup', method: 'tools/call', params: { name: 'slow', arguments: {}, _meta: { progressToken: 'dup-progress' } } };
    const first = await session.post(slow);
    // The progress notification switched the answer to SSE: the request is in flight now.
    assert.equal(first.status, 200);
    assert.match(first.headers.get('content-type') ?? '', /text\/event-stream/);
    const second = await session.post({ ...slow, params: { name: 'echo', arguments: { message: 'x' } } });
    const { status, body } = await errorOf(second);
    assert.equal(status, 400);
    assert.equal(body.error?.code, -32600);
    assert.equal(body.id, 'dup');
    release.resolve();
    const answer = await responseOf(first, 'dup');
    assert.equal(toolText(answer), 'slow done');
    // Done: the id is free again.
    const reuse = await session.post({ jsonrpc: '2.0', id: 'dup', method: 'tools/call', params: { name: 'echo', arguments: { message: 'again' } } });
    assert.equal(reuse.status, 200);
    assert.match(toolText(await responseOf(reuse, 'dup')), /again/);
    await fetch(url, { method: 'DELETE', headers: session.headers });
  });

  it('ids 7 and "7" are different ids: both may be in flight at once', async () => {
    const session = await openSession(url);
    const release = Promise.withResolvers<void>();
    heldCall(upstream, 'slow', release.promise);
    const slow = (id: string | number) => ({
      jsonrpc: '2.0',
      id,
      method: 'tools/call',
      params: { name: 'slow', arguments: {}, _meta: { progressToken: `p-${typeof id}` } },
    });
    const numeric = await session.post(slow(7));
    assert.equal(numeric.status, 200);
    const text = await session.post(slow('7'));
    assert.equal(text.status, 200, 'the string id "7" was refused while the number 7 was in flight');
    release.resolve();
    const [a, b] = await Promise.all([responseOf(numeric, 7), responseOf(text, '7')]);
    assert.ok(a.result && b.result);
    await fetch(url, { method: 'DELETE', headers: session.headers });
  });

  it('MCP-Protocol-Version differing from the negotiated version → 400; an unknown one → 400 -32022', async () => {
    const session = await openSession(url);
    const other = session.protocol === '2025-06-18' ? '2025-03-26' : '2025-06-18';
    const res = await session.post({ jsonrpc: '2.0', id: 'v1', method: 'tools/list' }, { 'mcp-protocol-version': other });
    const { status, body } = await errorOf(res);
    assert.equal(status, 400);
    assert.equal(body.error?.code, -32600);
    assert.equal(body.id, 'v1');
    const bogus = await session.post({ jsonrpc: '2.0', id: 'v2', method: 'tools/list' }, { 'mcp-protocol-version': '1999-01-01' });
    const wrong = await errorOf(bogus);
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body.error?.code, -32022);
    // The session is still usable with the right header.
    assert.ok((await session.call('tools/list')).result);
    await fetch(url, { method: 'DELETE', headers: session.headers });
  });

  it('a JSON-RPC response nobody asked for → 400 -32600, session intact', async () => {
    const session = await openSession(url);
    const res = await session.post({ jsonrpc: '2.0', id: 'never-asked', result: {} });
    const { status, body } = await errorOf(res);
    assert.equal(status, 400);
    assert.equal(body.error?.code, -32600);
    assert.ok((await session.call('tools/list')).result);
    await fetch(url, { method: 'DELETE', headers: session.headers });
  });

  it('initialize twice in one session → 400', async () => {
    const session = await openSession(url);
    const res = await session.post(initializeMessage('again', 'x'));
    assert.equal((await errorOf(res)).status, 400);
    await fetch(url, { method: 'DELETE', headers: session.headers });
  });

  it('/healthz 200; /readyz 200 with store info; unknown paths 404; POST /healthz 405', async () => {
    const health = await fetch(`${mandate.base}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'alive' });
    const ready = await fetch(`${mandate.base}/readyz`);
    assert.equal(ready.status, 200);
    const body = (await ready.json()) as Record<string, unknown>;
    assert.equal(body.status, 'ready');
    assert.equal(body.store, 'sqlite');
    assert.equal(body.servers, 2);
    const missing = await fetch(`${mandate.base}/nothing-here`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    const postHealth = await fetch(`${mandate.base}/healthz`, { method: 'POST', body: '{}' });
    assert.equal(postHealth.status, 405);
    await postHealth.body?.cancel();
  });

  it('/metrics: requests, upstream latency and errors with bounded labels after traffic', async () => {
    const session = await openSession(url);
    assert.match(toolText(await session.callTool('echo', { message: 'metrics' })), /metrics/);
    // A method name the client makes up must not become a label value.
    const custom = await session.post({ jsonrpc: '2.0', id: 'weird', method: 'x-evil/label-injection', params: {} });
    assert.equal(custom.status, 200);
    assert.ok((await responseOf(custom, 'weird')).error);
    // Errors at the edge.
    await (await post(url, '{not json')).body?.cancel();
    await (await post(`${mandate.base}/mcp/nosuchserver`, { jsonrpc: '2.0', id: 1, method: 'ping' })).body?.cancel();

    const text = await metricsText(mandate.base);
    const calls = sample(text, 'mandate_mcp_requests_total', { server: 'main', method: 'tools/call', outcome: 'success' });
    assert.ok(calls !== undefined && calls >= 1, 'tools/call success counted');
    const init = sample(text, 'mandate_mcp_requests_total', { server: 'main', method: 'initialize', outcome: 'success' });
    assert.ok(init !== undefined && init >= 1, 'initialize counted');
    const other = sample(text, 'mandate_mcp_requests_total', { server: 'main', method: 'other', outcome: 'failure' });
    assert.ok(other !== undefined && other >= 1, 'an unknown method is counted as "other" with outcome failure');
    const latency = sample(text, 'mandate_upstream_latency_seconds_count', { server: 'main', method: 'tools/call' });
    assert.ok(latency !== undefined && latency >= 1, 'latency histogram observed');
    const bucket = sample(text, 'mandate_upstream_latency_seconds_bucket', { server: 'main', method: 'tools/call', le: '+Inf' });
    assert.equal(bucket, latency);
    const parse = sample(text, 'mandate_errors_total', { server: 'main', kind: 'parse' });
    assert.ok(parse !== undefined && parse >= 1, 'parse errors counted under the server');
    const unknown = sample(text, 'mandate_errors_total', { server: 'gateway', kind: 'unknown_server' });
    assert.ok(unknown !== undefined && unknown >= 1, 'unknown server counted under "gateway"');
    assert.ok(!text.includes('label-injection'), 'a raw method name leaked into a label');
    assert.ok(!text.includes('nosuchserver'), 'a raw server name leaked into a label');
    assert.ok(!text.includes(session.id), 'a session id leaked into metrics');
    await fetch(url, { method: 'DELETE', headers: session.headers });
  });
});

describe('gateway edge: gateway.maxSessions', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;
  let upstream: FakeUpstream;

  before(async () => {
    upstream = await startFakeUpstream();
    mandate = await startInProcess({
      servers: [
        { name: 'main', url: upstream.url },
        { name: 'down', url: `http://127.0.0.1:${await freePort()}/mcp` },
      ],
      gateway: { maxSessions: 2 },
    });
  });

  after(async () => {
    await mandate?.stop();
    await upstream?.close();
  });

  const init = (id: string) => initializeMessage(id, 'limits');

  it('failed initializes do not use up session slots', async () => {
    for (let i = 0; i < 5; i++) {
      const answer = await responseOf(await post(mandate.endpoint('down'), init(`d${i}`)), `d${i}`);
      assert.equal(answer.error?.code, -32000);
    }
    const a = await openSession(mandate.endpoint('main'));
    const b = await openSession(mandate.endpoint('main'));
    for (const s of [a, b]) await fetch(s.url, { method: 'DELETE', headers: s.headers });
  });

  it('beyond maxSessions: 503 with Retry-After; after a DELETE a new session opens', async () => {
    const url = mandate.endpoint('main');
    const a = await openSession(url);
    const b = await openSession(url);
    const res = await post(url, init('third'));
    const { status, body } = await errorOf(res);
    assert.equal(status, 503);
    assert.equal(body.id, 'third');
    assert.ok(body.error);
    assert.ok(Number(res.headers.get('retry-after')) > 0, 'Retry-After is set');
    // Existing sessions are unaffected.
    assert.ok((await a.call('tools/list')).result);
    await fetch(url, { method: 'DELETE', headers: b.headers });
    const c = await openSession(url);
    assert.ok((await c.call('tools/list')).result);
    for (const s of [a, c]) await fetch(url, { method: 'DELETE', headers: s.headers });
    const errors = sample(await metricsText(mandate.base), 'mandate_errors_total', { server: 'main', kind: 'session_limit' });
    assert.ok((errors ?? 0) >= 1);
  });
});
