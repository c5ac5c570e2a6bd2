/**
 * The delivery seam: one chain of message filters sees every message an
 * upstream sends toward a client, on every route (a JSON answer, an SSE
 * answer with related messages first, the standalone GET stream, a stdio
 * server, a stateless server), and what it drops never reaches the client,
 * not even in a replay. A message the chain cannot check fails its request.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FilterChain, type Delivery, type MessageFilter, type Verdict } from '../../src/gateway/delivery.ts';
import { GatewayError } from '../../src/gateway/errors.ts';
import type { JsonRpcMessage } from '../../src/gateway/jsonrpc.ts';
import { ECHO_TOOL, MODERN_VERSION, result, startRouteUpstreams, type FakeUpstream, type RouteUpstreams } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { eventually, listedNames as names, openSession, parseSse, post, readEventsUntil, responseOf, type RawSession, type RpcMessage } from './raw.ts';

const SECRET_TOOL = { name: 'secret', description: 'not for you', inputSchema: { type: 'object' } };

interface Seen {
  route: Delivery['route'];
  server: string;
  /** The method of a request or notification, or `response`. */
  what: string;
}

/** Drops tools named in `hidden` from every tools/list result, and whatever `drop` matches; records all it sees. */
class TestFilter implements MessageFilter {
  readonly name = 'test-filter';
  readonly seen: Seen[] = [];
  hidden = new Set<string>([SECRET_TOOL.name]);
  drop: (message: JsonRpcMessage) => boolean = () => false;
  refuse: (message: JsonRpcMessage) => boolean = () => false;
  explode: (message: JsonRpcMessage) => boolean = () => false;
  mangle: (message: JsonRpcMessage) => boolean = () => false;

  filter(message: JsonRpcMessage, delivery: Delivery): Verdict {
    this.seen.push({ route: delivery.route, server: delivery.server.name, what: 'method' in message ? message.method : 'response' });
    if (this.explode(message)) throw new Error('this filter cannot read the message');
    if (this.drop(message)) return { drop: true };
    if (this.refuse(message)) return { refuse: new GatewayError('refused', 'refused by the test filter') };
    if (this.mangle(message)) return { replace: { jsonrpc: '1.0', surprise: true } as unknown as JsonRpcMessage };
    const answer = message as { result?: Record<string, unknown> };
    const tools = answer.result?.tools;
    if (!Array.isArray(tools)) return undefined;
    return { replace: { ...message, result: { ...answer.result, tools: tools.filter((tool: { name?: string }) => !this.hidden.has(String(tool.name))) } } as JsonRpcMessage };
  }

  saw(route: Delivery['route'], what: string): boolean {
    return this.seen.some((s) => s.route === route && s.what === what);
  }
}


describe('the delivery seam: every route through one filter chain', { timeout: 120_000 }, () => {
  const filter = new TestFilter();
  let mandate: InProcessMandate;
  let routes: RouteUpstreams;
  let json: FakeUpstream;
  let sse: FakeUpstream;
  let modern: FakeUpstream;

  before(async () => {
    routes = await startRouteUpstreams([ECHO_TOOL, SECRET_TOOL]);
    ({ json, sse, modern } = routes);
    mandate = await startInProcess({ servers: routes.servers, app: { filters: new FilterChain([filter]) } });
  });

  after(async () => {
    await mandate?.stop();
    await routes?.close();
  });

  it('a tools/list answered as JSON: the filter sees the response and drops the tool', async () => {
    const session = await openSession(mandate.endpoint('json'));
    filter.seen.length = 0;
    const answer = await session.call('tools/list');
    assert.deepEqual(names(answer), ['echo']);
    assert.ok(filter.saw('response', 'response'));
    assert.ok(json.messages('tools/list').length >= 1, 'the upstream was asked');
  });

  it('a tools/list answered as SSE with a notification first: the filter sees both, the tool is dropped', async () => {
    const session = await openSession(mandate.endpoint('sse'));
    filter.seen.length = 0;
    const res = await session.post({ jsonrpc: '2.0', id: 'l1', method: 'tools/list' });
    assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
    const messages = parseSse(await res.text()).filter((e) => e.data !== '').map((e) => JSON.parse(e.data) as RpcMessage);
    assert.equal(messages[0]?.method, 'notifications/message', 'the notification came first');
    const answer = messages.find((m) => m.id === 'l1');
    assert.ok(answer);
    assert.deepEqual(names(answer), ['echo']);
    assert.ok(filter.saw('related', 'notifications/message'));
    assert.ok(filter.saw('response', 'response'));
  });

  it('the standalone GET stream: list_changed passes the filter, the re-list drops the tool, a dropped message is not replayed', async () => {
    const session = await openSession(mandate.endpoint('json'));
    const listening = new AbortController();
    const stream = await fetch(session.url, { headers: { ...session.headers, accept: 'text/event-stream' }, signal: listening.signal });
    assert.equal(stream.status, 200);
    await json.streamOpen();
    filter.seen.length = 0;
    filter.drop = (message) => 'method' in message && message.method === 'notifications/message';
    try {
      json.push({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'hidden' } });
      json.push({ jsonrpc: '2.0', method: 'notifications/tools/list_changed' });
      const { events } = await readEventsUntil(stream, (list) => list.some((e) => e.data.includes('list_changed')));
      listening.abort();
      assert.ok(filter.saw('standalone', 'notifications/tools/list_changed'));
      assert.ok(filter.saw('standalone', 'notifications/message'), 'the filter saw the message it dropped');
      assert.ok(!events.some((e) => e.data.includes('hidden')), 'the dropped message reached the client');
      // A resumption from the start replays what the filter let through, and nothing else.
      const first = events.find((e) => e.id !== undefined && e.data !== '');
      assert.ok(first?.id);
      const key = first.id.slice(0, first.id.lastIndexOf('.'));
      const replay = await fetch(session.url, { headers: { ...session.headers, accept: 'text/event-stream', 'last-event-id': `${key}.0` }, signal: AbortSignal.timeout(5000) });
      const again = await readEventsUntil(replay, (list) => list.some((e) => e.data.includes('list_changed')));
      await replay.body?.cancel();
      assert.ok(!again.events.some((e) => e.data.includes('hidden')), 'the replay carried the dropped message');
    } finally {
      filter.drop = () => false;
      listening.abort();
    }
    assert.deepEqual(names(await session.call('tools/list')), ['echo']);
  });

  it('a stdio server: the filter drops a tool from its tools/list', async () => {
    const session = await openSession(mandate.endpoint('stdio'));
    filter.hidden = new Set(['echo']);
    try {
      const listed = names(await session.call('tools/list'));
      assert.ok(listed.length > 1, `the reference server lists its tools: ${listed.join(', ')}`);
      assert.ok(!listed.includes('echo'), 'echo was dropped');
      filter.hidden = new Set();
      assert.ok(names(await session.call('tools/list')).includes('echo'), 'without the filter echo is listed');
    } finally {
      filter.hidden = new Set([SECRET_TOOL.name]);
      await fetch(session.url, { method: 'DELETE', headers: session.headers });
    }
  });

  it('a stateless (2026-07-28) server: the filter drops the tool', async () => {
    filter.seen.length = 0;
    const res = await post(
      mandate.endpoint('modern'),
      { jsonrpc: '2.0', id: 's1', method: 'tools/list', params: { _meta: { 'io.modelcontextprotocol/protocolVersion': MODERN_VERSION } } },
      { 'mcp-protocol-version': MODERN_VERSION, 'mcp-method': 'tools/list' },
    );
    assert.equal(res.status, 200);
    const answer = await responseOf(res, 's1');
    assert.deepEqual(names(answer), ['echo']);
    assert.ok(filter.seen.some((s) => s.server === 'modern' && s.route === 'response'));
  });

  describe('failing closed', () => {
    let session: RawSession;
    before(async () => {
      session = await openSession(mandate.endpoint('json'));
    });

    it('an unparseable upstream message (a JSON body, an SSE event) is an error for its request, never the raw bytes', async () => {
      json.onTool('garbage-json', () => ({ status: 200, contentType: 'application/json', body: '{"jsonrpc":"2.0","RAW-UPSTREAM-BYTES":' }));
      json.onTool('garbage-sse', (message) => ({ sse: [{ data: 'RAW-UPSTREAM-BYTES {not json' }, result(message, { tools: [SECRET_TOOL] })] }));
      for (const tool of ['garbage-json', 'garbage-sse']) {
        const res = await session.post({ jsonrpc: '2.0', id: tool, method: 'tools/call', params: { name: tool, arguments: {} } });
        const text = await res.text();
        assert.ok(!text.includes('RAW-UPSTREAM-BYTES'), `raw upstream bytes reached the client: ${text}`);
        assert.ok(!text.includes('secret'), 'the message after the broken one reached the client');
        assert.match(text, /-32000/, text);
      }
    });

    it('a filter that throws, or rewrites into something that is not JSON-RPC, fails the request closed', async () => {
      for (const fault of ['explode', 'mangle'] as const) {
        filter[fault] = (message) => 'result' in message;
        try {
          const answer = await session.call('tools/list', undefined, `boom-${fault}`);
          assert.equal(answer.error?.code, -32000, fault);
          assert.match(answer.error?.message ?? '', /could not check/);
          assert.equal(answer.result, undefined);
        } finally {
          filter[fault] = () => false;
        }
      }
    });

    it('a refused related message fails its request with the filter\'s error, and the upstream is told to cancel', async () => {
      json.onTool('chatty', (message) => ({ sse: [{ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'psst' } }, { waitMs: 300 }, result(message, { content: [] })] }));
      filter.refuse = (message) => 'method' in message && message.method === 'notifications/message';
      try {
        const res = await session.post({ jsonrpc: '2.0', id: 'chatty-1', method: 'tools/call', params: { name: 'chatty', arguments: {} } });
        const answer = await responseOf(res, 'chatty-1');
        assert.equal(answer.error?.code, -32600);
        assert.match(answer.error?.message ?? '', /refused by the test filter/);
        // The notice goes out without holding the answer: wait for the upstream to have it.
        await eventually(async () => json.messages('notifications/cancelled'), (list) => list.some((m) => m.params?.requestId === 'chatty-1'), 'the upstream to hear notifications/cancelled');
      } finally {
        filter.refuse = () => false;
      }
    });

    it('a dropped final answer is withheld: the client gets an error, not the result', async () => {
      filter.drop = (message) => 'result' in message;
      try {
        const answer = await session.call('ping', undefined, 'withheld');
        assert.equal(answer.result, undefined);
        assert.match(answer.error?.message ?? '', /withheld by the gateway/);
      } finally {
        filter.drop = () => false;
      }
      const events = await mandate.audit({ types: ['mcp.request'] });
      const record = events.find((e) => e.server === 'json' && e.data.method === 'ping' && e.outcome === 'denied');
      assert.ok(record, 'the withheld answer is on record as denied');
      assert.equal(record.reason, 'refused');
    });
  });
});
