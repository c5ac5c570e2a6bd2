/**
 * Upstream faults: a server that is down, slow, crashing or writing garbage,
 * and a client that loses its connection mid-stream and resumes. One gateway
 * (in this process) with several servers, so a fault in one is seen not to
 * affect the others. The stdio servers are real processes (test/fixtures),
 * started by the gateway: a crash or a slow start is a process's.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { freePort, NODE, ROOT, tempDir } from '../helpers/process.ts';
import { type AuditEntry, errorOf, eventually, initializeMessage, metricsText, openSession, parseSse, post, readEventsUntil, responseOf, type RpcMessage, sample, toolText } from './raw.ts';

const SLOW = path.join(ROOT, 'test/fixtures/slow-server.ts');
const CRASHY = path.join(ROOT, 'test/fixtures/crashy-server.ts');
const RAW = path.join(ROOT, 'test/fixtures/raw-server.ts');
const NOISE = 'NOT-JSON-RPC';
/** A well-formed session id (43 characters of base64url) that no gateway handed out. */
const MADE_UP_SESSION = 'bm90LWEtc2Vzc2lvbi1hbnlib2R5LWhhbmRlZC1vdXQ';

describe('upstream faults', { timeout: 180_000 }, () => {
  let mandate: InProcessMandate;
  let healthy: FakeUpstream;
  let downPort = 0;
  let startsFile = '';
  const dir = tempDir('mandate-faults-');
  const markFile = path.join(dir, 'patient-marks.txt');

  before(async () => {
    healthy = await startFakeUpstream();
    downPort = await freePort();
    startsFile = path.join(dir, 'starts.txt');
    writeFileSync(startsFile, '');
    mandate = await startInProcess({
      servers: [
        { name: 'down', url: `http://127.0.0.1:${downPort}/mcp` },
        { name: 'healthy', url: healthy.url },
        // Starts slower than its timeout: initialize gets the start-up allowance, calls do not.
        { name: 'slow', command: NODE, args: [SLOW], timeoutMs: 500, env: { START_DELAY_MS: '800' } },
        // The same short timeout, started at once.
        { name: 'steady', command: NODE, args: [SLOW], timeoutMs: 500 },
        { name: 'patient', command: NODE, args: [SLOW], env: { MARK_FILE: markFile } },
        { name: 'crashy', command: NODE, args: [CRASHY], env: { STARTS_FILE: startsFile } },
        { name: 'missing', command: '/nonexistent/bin/mcp-tool' },
      ],
      gateway: { maxRequestMs: 2500 },
    });
  });

  after(async () => {
    await mandate?.stop();
    await healthy?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const errorsMetric = async (server: string, kind: string) => sample(await metricsText(mandate.base), 'mandate_errors_total', { server, kind }) ?? 0;
  const audit = (types?: string[]) => mandate.audit({ types });

  describe('(a) an HTTP upstream that is down', () => {
    it('initialize gets a JSON-RPC error naming the server, never its URL; errors and audit record it; other servers keep working', async () => {
      const before = await errorsMetric('down', 'upstream_unavailable');
      const res = await post(mandate.endpoint('down'), initializeMessage('init-down', 'faults'));
      const answer = await responseOf(res, 'init-down');
      assert.ok(answer.error, `expected an error, got ${JSON.stringify(answer)}`);
      assert.equal(answer.error.code, -32000);
      assert.match(answer.error.message, /"down"/);
      const wire = JSON.stringify(answer);
      assert.ok(!wire.includes(String(downPort)), `the upstream port leaked: ${wire}`);
      assert.ok(!wire.includes('127.0.0.1'), `the upstream host leaked: ${wire}`);
      assert.ok(!/ECONNREFUSED/.test(wire), `a private error detail leaked: ${wire}`);

      // A failed initialize opens no session: no id is handed out, and one the client makes up is unknown.
      assert.equal(res.headers.get('mcp-session-id'), null, 'a failed initialize answered with an Mcp-Session-Id');
      const later = await post(mandate.endpoint('down'), { jsonrpc: '2.0', id: 1, method: 'tools/list' }, { 'mcp-session-id': MADE_UP_SESSION });
      const refused = await errorOf(later);
      assert.equal(refused.status, 404);
      assert.match(refused.body.error?.message ?? '', /session/i);

      const afterCount = await errorsMetric('down', 'upstream_unavailable');
      assert.ok(afterCount > before, `mandate_errors_total{server="down",kind="upstream_unavailable"} did not rise (${before} → ${afterCount})`);

      const events = await eventually(() => audit(['upstream.error', 'session.opened']), (list) =>
        list.some((e) => e.type === 'upstream.error' && e.server === 'down'), 'upstream.error for "down"');
      const upstreamError = events.find((e) => e.type === 'upstream.error' && e.server === 'down');
      assert.equal(upstreamError?.outcome, 'error');
      assert.equal(upstreamError?.reason, 'upstream_unavailable');
      const opened = events.filter((e) => e.type === 'session.opened' && e.server === 'down');
      assert.ok(opened.length >= 1 && opened.every((e) => e.outcome !== 'success'), `initialize failure recorded as ${JSON.stringify(opened)}`);

      // The healthy server on the same gateway is unaffected.
      const session = await openSession(mandate.endpoint('healthy'));
      assert.match(toolText(await session.callTool('echo', { message: 'still here' })), /still here/);
      await fetch(session.url, { method: 'DELETE', headers: session.headers });
    });

    it('a failed initialize hands out no session id', async () => {
      const res = await post(mandate.endpoint('down'), initializeMessage('init-down-2', 'faults'));
      assert.ok((await responseOf(res, 'init-down-2')).error);
      // A failed initialize opens no session, so its answer carries no Mcp-Session-Id.
      assert.equal(res.headers.get('mcp-session-id'), null, 'a failed initialize answered with an Mcp-Session-Id');
    });

    it('a stdio server whose command does not exist: a prompt -32000 naming the server', async () => {
      const started = Date.now();
      const res = await post(mandate.endpoint('missing'), initializeMessage('init-missing', 'faults'));
      const answer = await responseOf(res, 'init-missing');
      assert.equal(answer.error?.code, -32000, JSON.stringify(answer));
      assert.match(answer.error?.message ?? '', /"missing"/);
      assert.ok(!(answer.error?.message ?? '').includes('/nonexistent'), 'the command path leaked');
      assert.ok(Date.now() - started < 5000);
    });

    it('a burst of initializes against the down server all fail fast and leave no sessions behind', async () => {
      const started = Date.now();
      const answers = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          post(mandate.endpoint('down'), initializeMessage(i, 'burst')).then((res) => responseOf(res, i)),
        ),
      );
      assert.ok(answers.every((a) => a.error?.code === -32000));
      assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
      const text = await metricsText(mandate.base);
      assert.equal(sample(text, 'mandate_sessions_active', { server: 'down' }) ?? 0, 0);
    });
  });

  describe('(b) slow upstreams (timeoutMs 500; "slow" also starts in over 800 ms)', () => {
    it('initialize waits for the slow start; a call slower than the timeout gets -32001 naming the server; audit says error/upstream_timeout; the session keeps working', async () => {
      const session = await openSession(mandate.endpoint('slow'));
      const started = Date.now();
      const answer = await session.call('tools/call', { name: 'sleep', arguments: { ms: 3000 } }, 'too-slow');
      const elapsed = Date.now() - started;
      assert.ok(answer.error, JSON.stringify(answer));
      assert.equal(answer.error.code, -32001);
      assert.match(answer.error.message, /"slow"/);
      assert.ok(elapsed >= 450 && elapsed < 2000, `answered after ${elapsed} ms (timeout 500 ms)`);

      const fast = await session.callTool('echo', { text: 'after the timeout' });
      assert.match(toolText(fast), /after the timeout/);

      const events = await eventually(() => audit(['mcp.request']), (list) =>
        list.some((e) => e.server === 'slow' && e.tool === 'sleep'), 'mcp.request for sleep');
      const timedOut = events.find((e) => e.server === 'slow' && e.tool === 'sleep');
      assert.equal(timedOut?.outcome, 'error');
      assert.equal(timedOut?.reason, 'upstream_timeout');
      assert.equal(timedOut?.data.errorCode, -32001);
      const echoed = events.find((e) => e.server === 'slow' && e.tool === 'echo');
      assert.equal(echoed?.outcome, 'success');
      const text = await metricsText(mandate.base);
      assert.ok((sample(text, 'mandate_errors_total', { server: 'slow', kind: 'upstream_timeout' }) ?? 0) >= 1);
      assert.ok((sample(text, 'mandate_mcp_requests_total', { server: 'slow', method: 'tools/call', outcome: 'error' }) ?? 0) >= 1);
      await fetch(session.url, { method: 'DELETE', headers: session.headers });
    });

    it('progress resets the idle timeout: 4 × 300 ms with progress succeeds under a 500 ms timeout', async () => {
      const session = await openSession(mandate.endpoint('steady'));
      const res = await session.post({
        jsonrpc: '2.0',
        id: 'steady',
        method: 'tools/call',
        params: { name: 'progress', arguments: { steps: 4, intervalMs: 300, finalDelayMs: 300 }, _meta: { progressToken: 'steady' } },
      });
      assert.equal(res.status, 200);
      const answer = await responseOf(res, 'steady');
      assert.match(toolText(answer), /done after 4 steps/);
      await fetch(session.url, { method: 'DELETE', headers: session.headers });
    });

    it('gateway.maxRequestMs caps a request that keeps sending progress', async () => {
      const session = await openSession(mandate.endpoint('steady'));
      const started = Date.now();
      const res = await session.post({
        jsonrpc: '2.0',
        id: 'forever',
        method: 'tools/call',
        params: { name: 'progress', arguments: { steps: 30, intervalMs: 250, finalDelayMs: 0 }, _meta: { progressToken: 'forever' } },
      });
      const answer = await responseOf(res, 'forever');
      const elapsed = Date.now() - started;
      assert.equal(answer.error?.code, -32001, JSON.stringify(answer));
      assert.ok(elapsed >= 2400 && elapsed < 5000, `capped after ${elapsed} ms (maxRequestMs 2500)`);
      await fetch(session.url, { method: 'DELETE', headers: session.headers });
    });
  });

  describe('(f) cancellation by the client', () => {
    it('the SDK client aborts a call: the upstream hears notifications/cancelled, the audit says cancelled, the session goes on', async () => {
      const client = new Client({ name: 'canceller', version: '1.0.0' });
      const transport = new StreamableHTTPClientTransport(new URL(mandate.endpoint('patient')));
      await client.connect(transport);
      try {
        const controller = new AbortController();
        const call = client.callTool({ name: 'sleep', arguments: { ms: 4000 } }, undefined, { signal: controller.signal });
        setTimeout(() => controller.abort('changed my mind'), 300);
        await assert.rejects(call);
        await eventually(async () => (existsSync(markFile) ? readFileSync(markFile, 'utf8') : ''), (text) => text.includes('cancelled 4000'), 'the upstream to see the cancellation');

        const after = await client.callTool({ name: 'echo', arguments: { text: 'still here' } });
        assert.deepEqual(after.content, [{ type: 'text', text: 'echo: still here' }]);

        const events = await eventually(() => audit(['mcp.request']), (list) =>
          list.some((e) => e.server === 'patient' && e.tool === 'sleep'), 'mcp.request for the cancelled sleep');
        const cancelled = events.find((e) => e.server === 'patient' && e.tool === 'sleep');
        assert.equal(cancelled?.outcome, 'cancelled');
        assert.ok(Number(cancelled?.data.latencyMs) < 4000, `recorded when cancelled, not when the sleep would have ended (${String(cancelled?.data.latencyMs)} ms)`);
      } finally {
        await transport.terminateSession().catch(() => undefined);
        await client.close();
      }
    });
  });

  describe('(c) a crashing stdio upstream', () => {
    it('a crash fails the call naming the server; the process is restarted and re-initialised; the session keeps working', async () => {
      const session = await openSession(mandate.endpoint('crashy'));
      const firstPid = /pid (\d+)/.exec(toolText(await session.callTool('echo', { text: 'one' })))?.[1];
      assert.ok(firstPid);

      const crashed = await session.call('tools/call', { name: 'crash', arguments: {} }, 'crash-1');
      assert.ok(crashed.error, JSON.stringify(crashed));
      assert.equal(crashed.error.code, -32000);
      assert.match(crashed.error.message, /"crashy"/);
      assert.ok(!crashed.error.message.includes('crashing on purpose'), 'the process stderr leaked to the client');

      const again = toolText(await session.callTool('echo', { text: 'two' }));
      assert.match(again, /echo: two/);
      const secondPid = /pid (\d+)/.exec(again)?.[1];
      assert.ok(secondPid && secondPid !== firstPid, `expected a new process, got pid ${secondPid} (was ${firstPid})`);

      const events = await eventually(() => audit(['upstream.*']), (list) =>
        list.some((e) => e.type === 'upstream.restarted' && e.server === 'crashy'), 'upstream.restarted');
      const error = events.find((e) => e.type === 'upstream.error' && e.server === 'crashy' && e.reason === 'upstream_crashed');
      assert.ok(error, JSON.stringify(events));
      assert.equal(error.outcome, 'error');
      // The private detail (exit code, stderr) goes to the audit log, not to the client.
      assert.match(String(error.data.detail), /code 3/);
      const restarted = events.find((e) => e.type === 'upstream.restarted' && e.server === 'crashy');
      assert.equal(restarted?.outcome, 'success');
      await fetch(session.url, { method: 'DELETE', headers: session.headers });
    });

    it('after 3 restarts in a minute a 4th crash ends the session (404 afterwards)', async () => {
      const session = await openSession(mandate.endpoint('crashy'));
      for (let i = 1; i <= 3; i++) {
        const crashed = await session.call('tools/call', { name: 'crash', arguments: {} }, `c${i}`);
        assert.equal(crashed.error?.code, -32000, `crash ${i}: ${JSON.stringify(crashed)}`);
        assert.match(toolText(await session.callTool('echo', { text: `alive ${i}` })), new RegExp(`alive ${i}`));
      }
      const last = await session.call('tools/call', { name: 'crash', arguments: {} }, 'c4');
      assert.equal(last.error?.code, -32000);
      await eventually(
        async () => (await session.post({ jsonrpc: '2.0', id: 'gone', method: 'tools/list' })).status,
        (status) => status === 404,
        'the session to close after too many restarts',
      );
      const closed = await eventually(() => audit(['session.closed']), (list) =>
        list.some((e) => e.server === 'crashy' && e.reason === 'upstream closed'), 'session.closed for crashy');
      assert.ok(closed.length > 0);
    });
  });

  describe('(d) an upstream that writes non-JSON on stdout', () => {
    it('the garbage never reaches the client, is recorded as upstream.error, and the session keeps working', async () => {
      const session = await openSession(mandate.endpoint('crashy'));
      // A standalone GET stream is open too: garbage must not appear there either.
      const controller = new AbortController();
      const standalone = await fetch(session.url, { method: 'GET', headers: { ...session.headers, accept: 'text/event-stream' }, signal: controller.signal });
      assert.equal(standalone.status, 200);
      const seenOnStandalone = (async () => {
        let text = '';
        const reader = (standalone.body as ReadableStream<Uint8Array>).getReader();
        const decoder = new TextDecoder();
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            text += decoder.decode(value, { stream: true });
          }
        } catch {
          // aborted below, once the noisy call is over
        }
        return text;
      })();

      const before = (await audit(['upstream.error'])).length;
      const res = await session.post({ jsonrpc: '2.0', id: 'noise', method: 'tools/call', params: { name: 'noise', arguments: {} } });
      assert.equal(res.status, 200);
      const raw = await res.text();
      assert.ok(!raw.includes(NOISE), `garbage reached the client: ${raw}`);
      assert.ok(!raw.includes('bogus'), `an invalid message reached the client: ${raw}`);
      assert.match(raw, /noise made/);

      const events = await eventually(() => audit(['upstream.error']), (list) => list.length >= before + 2, 'two upstream.error events');
      const fresh = events.slice(before).filter((e: AuditEntry) => e.server === 'crashy');
      assert.ok(fresh.length >= 2, JSON.stringify(fresh));
      assert.ok(fresh.every((e) => e.reason === 'upstream_protocol'), JSON.stringify(fresh));

      assert.match(toolText(await session.callTool('echo', { text: 'clean' })), /clean/);

      await new Promise((resolve) => setTimeout(resolve, 200));
      controller.abort();
      const seen = await seenOnStandalone;
      assert.ok(!seen.includes(NOISE) && !seen.includes('bogus'), `garbage on the standalone stream: ${seen}`);
      await fetch(session.url, { method: 'DELETE', headers: session.headers });
    });
  });

  describe('(e) Last-Event-ID resumption', () => {
    const progressCall = (id: string, args: Record<string, number>) => ({
      jsonrpc: '2.0',
      id,
      method: 'tools/call',
      params: { name: 'progress', arguments: args, _meta: { progressToken: `tok-${id}` } },
    });

    it('drop the POST stream after the first event; GET with Last-Event-ID delivers the rest, final response included', async () => {
      const session = await openSession(mandate.endpoint('steady'));
      const controller = new AbortController();
      const res = await session.post(progressCall('resume-1', { steps: 3, intervalMs: 300, finalDelayMs: 300 }), {}, controller.signal);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
      const { events: first } = await readEventsUntil(res, (events) => events.some((e) => e.data !== ''));
      const firstEvent = first.find((e) => e.data !== '');
      assert.ok(firstEvent?.id, `the first event has no id: ${JSON.stringify(first)}`);
      const firstMessage = JSON.parse(firstEvent.data) as RpcMessage;
      assert.equal(firstMessage.method, 'notifications/progress');
      assert.equal(firstMessage.params?.progress, 1);
      controller.abort();

      const resumed = await fetch(session.url, {
        method: 'GET',
        headers: { ...session.headers, accept: 'text/event-stream', 'last-event-id': firstEvent.id },
        signal: AbortSignal.timeout(10_000),
      });
      assert.equal(resumed.status, 200);
      const { events, ended } = await readEventsUntil(resumed, () => false, 8000);
      assert.ok(ended, 'the resumed stream ends after the final response');
      const messages = events.filter((e) => e.data !== '').map((e) => JSON.parse(e.data) as RpcMessage);
      assert.deepEqual(
        messages.filter((m) => m.method === 'notifications/progress').map((m) => m.params?.progress),
        [2, 3],
        `no event is lost or repeated: ${JSON.stringify(messages)}`,
      );
      const final = messages.at(-1);
      assert.equal(final?.id, 'resume-1');
      assert.match(toolText(final as RpcMessage), /done after 3 steps/);
      const ids = events.map((e) => e.id);
      assert.ok(ids.every((id) => id !== undefined && id !== firstEvent.id), `event ids: ${JSON.stringify(ids)}`);
      assert.equal(new Set(ids).size, ids.length);
      await fetch(session.url, { method: 'DELETE', headers: session.headers });
    });

    it('resuming after the request finished replays the missed events and closes', async () => {
      const session = await openSession(mandate.endpoint('steady'));
      const controller = new AbortController();
      const res = await session.post(progressCall('resume-2', { steps: 2, intervalMs: 100, finalDelayMs: 100 }), {}, controller.signal);
      const { events: first } = await readEventsUntil(res, (events) => events.some((e) => e.data !== ''));
      const firstId = first.find((e) => e.data !== '')?.id;
      assert.ok(firstId);
      controller.abort();
      await new Promise((resolve) => setTimeout(resolve, 800));
      const resumed = await fetch(session.url, {
        method: 'GET',
        headers: { ...session.headers, accept: 'text/event-stream', 'last-event-id': firstId },
        signal: AbortSignal.timeout(10_000),
      });
      assert.equal(resumed.status, 200);
      const { events, ended } = await readEventsUntil(resumed, () => false, 5000);
      assert.ok(ended);
      const messages = events.filter((e) => e.data !== '').map((e) => JSON.parse(e.data) as RpcMessage);
      assert.equal(messages.length, 2, JSON.stringify(messages));
      assert.equal(messages[0]?.params?.progress, 2);
      assert.equal(messages[1]?.id, 'resume-2');
      await fetch(session.url, { method: 'DELETE', headers: session.headers });
    });

    it('an unknown or malformed Last-Event-ID → 400, and an event id of one session is unknown in another', async () => {
      const a = await openSession(mandate.endpoint('steady'));
      const b = await openSession(mandate.endpoint('steady'));
      for (const id of ['nonsense', 'abc.999', '.1', 'abc.-1']) {
        const res = await fetch(a.url, { method: 'GET', headers: { ...a.headers, accept: 'text/event-stream', 'last-event-id': id } });
        assert.equal((await errorOf(res)).status, 400, id);
      }
      const controller = new AbortController();
      const res = await a.post(progressCall('cross', { steps: 2, intervalMs: 100, finalDelayMs: 0 }), {}, controller.signal);
      const { events } = await readEventsUntil(res, (list) => list.some((e) => e.data !== ''));
      const id = events.find((e) => e.data !== '')?.id;
      assert.ok(id);
      controller.abort();
      const cross = await fetch(b.url, { method: 'GET', headers: { ...b.headers, accept: 'text/event-stream', 'last-event-id': id } });
      assert.equal((await errorOf(cross)).status, 400, "session b resumed session a's stream");
      for (const s of [a, b]) await fetch(s.url, { method: 'DELETE', headers: s.headers });
    });
  });

  it('after all of this the audit chain still verifies', async () => {
    const out = await mandate.cli(['audit', 'verify']);
    assert.equal(out.code, 0, out.stdout + out.stderr);
    assert.match(out.stdout, /intact/);
    assert.equal(readFileSync(startsFile, 'utf8').trim().split('\n').length >= 6, true, 'crashy restarts were counted');
  });
});

describe('upstream faults: messages an SDK server would never send', { timeout: 60_000 }, () => {
  const LIMIT = 4096;
  let mandate: InProcessMandate;

  before(async () => {
    mandate = await startInProcess({
      servers: [
        { name: 'badver', command: NODE, args: [RAW, 'bad-version'] },
        { name: 'raw', command: NODE, args: [RAW, 'ok'], timeoutMs: 1000 },
      ],
      gateway: { maxUpstreamMessageBytes: LIMIT },
    });
  });

  after(async () => {
    await mandate?.stop();
  });

  it('an upstream that picks an unsupported protocol version: initialize fails naming the server; no session', async () => {
    const res = await post(mandate.endpoint('badver'), initializeMessage('init-bad', 'faults'));
    const answer = await responseOf(res, 'init-bad');
    assert.equal(answer.error?.code, -32000, JSON.stringify(answer));
    assert.match(answer.error?.message ?? '', /"badver"/);
    assert.equal(answer.result, undefined, 'the unsupported InitializeResult was passed on');
    // No session: no id is handed out, and one the client makes up is unknown.
    assert.equal(res.headers.get('mcp-session-id'), null, 'a failed initialize answered with an Mcp-Session-Id');
    const later = await post(mandate.endpoint('badver'), { jsonrpc: '2.0', id: 1, method: 'tools/list' }, { 'mcp-session-id': MADE_UP_SESSION });
    assert.equal((await errorOf(later)).status, 404);
    assert.equal(sample(await metricsText(mandate.base), 'mandate_sessions_active', { server: 'badver' }) ?? 0, 0, 'a session was counted as open');
    const opened = await eventually(() => mandate.audit({ types: ['session.opened'] }), (list) => list.some((e) => e.server === 'badver'), 'session.opened');
    const event = opened.find((e) => e.server === 'badver');
    assert.ok(event && event.outcome !== 'success', JSON.stringify(event));
    assert.equal(event.reason, 'upstream_protocol');
  });

  it('a response to an id nobody asked for is dropped (the caller times out; upstream.error recorded)', async () => {
    const session = await openSession(mandate.endpoint('raw'));
    const res = await session.post({ jsonrpc: '2.0', id: 'real', method: 'tools/call', params: { name: 'wrong-id', arguments: {} } });
    const messages = await messagesOfText(await res.text());
    assert.ok(!messages.some((m) => m.id === 'not-real'), 'the stray response reached the client');
    const answer = messages.find((m) => m.id === 'real');
    assert.equal(answer?.error?.code, -32001);
    const errors = await eventually(() => mandate.audit({ types: ['upstream.error'] }), (list) =>
      list.some((e) => e.server === 'raw' && e.reason === 'upstream_protocol'), 'upstream_protocol error');
    assert.ok(errors.length > 0);
    assert.match(toolText(await session.callTool('hello')), /hello from/);
    await fetch(session.url, { method: 'DELETE', headers: session.headers });
  });

  it(`an upstream message over maxUpstreamMessageBytes (${LIMIT}) is not passed on, whatever its size`, async () => {
    const session = await openSession(mandate.endpoint('raw'));
    // Far over the limit (spans several pipe reads): refused.
    const giant = await session.callTool('huge', { bytes: 200_000 });
    assert.equal(giant.result, undefined, 'a 200 kB message was passed on');
    assert.equal(giant.error?.code, -32000);
    assert.match(giant.error?.message ?? '', /"raw"/);
    // The session recovers (the process is restarted).
    assert.match(toolText(await session.callTool('hello')), /hello from/);
    // Just over the limit (arrives in one pipe read).
    const big = await session.callTool('huge', { bytes: 10_000 });
    // The limit holds for a complete line arriving in one chunk too (pipes deliver up to 64 KiB at once).
    assert.equal(big.result, undefined, `a ${JSON.stringify(big).length}-byte message was passed on despite the ${LIMIT}-byte limit`);
    assert.equal(big.error?.code, -32000);
    await fetch(session.url, { method: 'DELETE', headers: session.headers });
  });
});

function messagesOfText(text: string): RpcMessage[] {
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) return [JSON.parse(trimmed) as RpcMessage];
  return parseSse(text).filter((e) => e.data !== '').map((e) => JSON.parse(e.data) as RpcMessage);
}
