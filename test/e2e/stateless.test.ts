/**
 * The stateless 2026-07-28 revision through Mandate: a modern upstream built
 * with the v2 server SDK (createMcpHandler), the v2 client pinned to the
 * revision and in auto mode, and raw requests that check how the gateway
 * validates the Mcp-* headers against the body and refuses the revision for
 * servers that do not speak it.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { after, before, describe, test } from 'node:test';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { acceptedContent, createMcpHandler, inputRequired, McpServer, type McpHttpHandler } from '@modelcontextprotocol/server';
import { z } from 'zod';
import { EVERYTHING, NODE, rpcHeaders, startEverythingHttp, startMandate, stopBounded, waitFor, type Mandate, type Proc } from '../helpers/process.ts';

const MODERN = '2026-07-28';
const PROTOCOL_KEY = 'io.modelcontextprotocol/protocolVersion';
/** Session-based (2025-era and older) revisions: what a legacy-only server may offer. */
const SESSION_ERA = new Set(['2025-11-25', '2025-06-18', '2025-03-26', '2024-11-05']);
const REQUEST_TIMEOUT_MS = 20_000;
const TEST_TIMEOUT_MS = 60_000;



function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------
// The modern upstream: v2 McpServer behind createMcpHandler, on node:http.

interface SeenRequest {
  method: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

interface ModernServer {
  url: string;
  seen: SeenRequest[];
  close(): Promise<void>;
}

function buildServer(): McpServer {
  const server = new McpServer({ name: 'mandate-modern-upstream', version: '2.0.0' });
  server.registerTool(
    'add',
    { title: 'Add', description: 'Adds two numbers', inputSchema: z.object({ a: z.number(), b: z.number() }) },
    async ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }] }),
  );
  server.registerTool(
    'shout',
    { description: 'Upper-cases a text', inputSchema: z.object({ text: z.string() }) },
    async ({ text }) => ({ content: [{ type: 'text', text: text.toUpperCase() }], structuredContent: { shouted: text.toUpperCase() } }),
  );
  // Progress: related notifications before the result (the answer becomes SSE).
  server.registerTool('count', { description: 'Counts with progress', inputSchema: z.object({ n: z.number() }) }, async ({ n }, ctx) => {
    const token = ctx.mcpReq._meta?.progressToken;
    for (let i = 1; i <= n; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      if (token !== undefined) await ctx.mcpReq.notify({ method: 'notifications/progress', params: { progressToken: token, progress: i, total: n } });
    }
    return { content: [{ type: 'text', text: `counted to ${n}` }] };
  });
  // Multi-round-trip input: an input_required result, then the retried call with inputResponses.
  const confirmation = z.object({ confirm: z.boolean() });
  server.registerTool('deploy', { description: 'Asks before deploying', inputSchema: z.object({ env: z.string() }) }, async ({ env }, ctx) => {
    const answer = acceptedContent(ctx.mcpReq.inputResponses, 'confirm', confirmation);
    if (answer?.confirm !== true) {
      return inputRequired({ inputRequests: { confirm: inputRequired.elicit({ message: `Deploy to ${env}?`, requestedSchema: confirmation }) } });
    }
    return { content: [{ type: 'text', text: `deployed to ${env}` }] };
  });
  // An argument mirrored into an Mcp-Param-Region header (x-mcp-header).
  server.registerTool(
    'route',
    { description: 'Routes by region', inputSchema: z.object({ region: z.string().meta({ 'x-mcp-header': 'Region' }) }) },
    async ({ region }) => ({ content: [{ type: 'text', text: `routed to ${region}` }] }),
  );
  return server;
}

/** Serves a fetch-shaped MCP handler on node:http (the adapter package is not installed). */
async function startModernServer(): Promise<ModernServer> {
  const handler: McpHttpHandler = createMcpHandler(() => buildServer(), { onerror: () => undefined });
  const seen: SeenRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      void (async () => {
        const body = Buffer.concat(chunks).toString('utf8');
        seen.push({ method: req.method ?? '', headers: req.headers, body });
        const headers = new Headers();
        for (const [name, value] of Object.entries(req.headers)) {
          if (typeof value === 'string') headers.set(name, value);
          else if (Array.isArray(value)) for (const item of value) headers.append(name, item);
        }
        const hasBody = req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'DELETE';
        const request = new Request(`http://127.0.0.1${req.url ?? '/'}`, { method: req.method, headers, body: hasBody ? body : undefined });
        const response = await handler.fetch(request);
        res.writeHead(response.status, Object.fromEntries(response.headers));
        if (!response.body) {
          res.end();
          return;
        }
        Readable.fromWeb(response.body as NodeReadableStream<Uint8Array>).pipe(res);
      })().catch((error: unknown) => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(String(error));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    seen,
    close: async () => {
      await handler.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// ---------------------------------------------------------------------------
// Raw requests.

function modernMeta(): Record<string, unknown> {
  return {
    [PROTOCOL_KEY]: MODERN,
    'io.modelcontextprotocol/clientInfo': { name: 'mandate-raw-test', version: '1.0.0' },
    'io.modelcontextprotocol/clientCapabilities': {},
  };
}

function modernRequest(id: number | string, method: string, params: Record<string, unknown> = {}): Record<string, unknown> {
  return { jsonrpc: '2.0', id, method, params: { ...params, _meta: modernMeta() } };
}

interface RawAnswer {
  status: number;
  headers: Headers;
  /** The JSON-RPC response (from a JSON body, or the last response event of an SSE body). */
  message: { id?: unknown; result?: Record<string, unknown>; error?: { code: number; message: string; data?: unknown } } | null;
}

async function post(url: string, body: unknown, headers: Record<string, string>): Promise<RawAnswer> {
  const response = await fetch(url, { method: 'POST', headers: rpcHeaders(headers), body: JSON.stringify(body), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  const text = await response.text();
  const type = response.headers.get('content-type') ?? '';
  let message: RawAnswer['message'] = null;
  if (type.startsWith('application/json') && text.length > 0) {
    message = JSON.parse(text) as RawAnswer['message'];
  } else if (type.startsWith('text/event-stream')) {
    for (const block of text.split(/\r?\n\r?\n/)) {
      const data = block
        .split(/\r?\n/)
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).trimStart())
        .join('\n');
      if (data === '') continue;
      const parsed = JSON.parse(data) as NonNullable<RawAnswer['message']> & { method?: string };
      if (parsed.method === undefined) message = parsed;
    }
  }
  return { status: response.status, headers: response.headers, message };
}

function base64Sentinel(value: string): string {
  return `=?base64?${Buffer.from(value, 'utf8').toString('base64')}?=`;
}

/** A fetch that records every response's headers, for the v2 client. */
function recordingFetch(log: { method: string; status: number; sessionId: string | null; requestHeaders: Headers }[]) {
  return async (url: string | URL, init?: RequestInit): Promise<Response> => {
    const response = await fetch(url, init);
    log.push({ method: init?.method ?? 'GET', status: response.status, sessionId: response.headers.get('mcp-session-id'), requestHeaders: new Headers(init?.headers) });
    return response;
  };
}

interface AuditEvent {
  type: string;
  server: string | null;
  tool?: string | null;
  outcome: string;
  data?: Record<string, unknown>;
}

describe('stateless 2026-07-28 revision through Mandate', { timeout: 5 * TEST_TIMEOUT_MS }, () => {
  let modern: ModernServer;
  let everything: Proc & { url: string };
  let mandate: Mandate;

  before(async () => {
    modern = await startModernServer();
    everything = await startEverythingHttp();
    mandate = await startMandate({
      servers: [
        { name: 'modern', url: modern.url },
        { name: 'everything-stdio', command: NODE, args: [EVERYTHING, 'stdio'] },
        { name: 'everything-http', url: everything.url },
      ],
    });
  });

  after(async () => {
    if (mandate) await stopBounded(mandate);
    if (everything) await stopBounded(everything);
    await modern?.close();
  });

  test('the v2 client pinned to 2026-07-28 lists and calls tools without a session, as directly', { timeout: TEST_TIMEOUT_MS }, async () => {
    const run = async (url: string, log: Parameters<typeof recordingFetch>[0]) => {
      const client = new Client(
        { name: 'mandate-v2-client', version: '1.0.0' },
        { capabilities: { elicitation: {} }, versionNegotiation: { mode: { pin: MODERN } } },
      );
      const elicitations: unknown[] = [];
      client.setRequestHandler('elicitation/create', async (request) => {
        elicitations.push(request.params);
        return { action: 'accept', content: { confirm: true } };
      });
      await withTimeout(client.connect(new StreamableHTTPClientTransport(new URL(url), { fetch: recordingFetch(log) }), { timeout: REQUEST_TIMEOUT_MS }), REQUEST_TIMEOUT_MS, 'connect');
      try {
        const opts = { timeout: REQUEST_TIMEOUT_MS };
        const progress: unknown[] = [];
        return {
          count: await client.callTool({ name: 'count', arguments: { n: 3 } }, { ...opts, onprogress: (p) => progress.push(p) }),
          progress,
          deploy: await client.callTool({ name: 'deploy', arguments: { env: 'production' } }, opts),
          elicitations,
          route: await client.callTool({ name: 'route', arguments: { region: 'eu-west' } }, opts),
          era: client.getProtocolEra(),
          version: client.getNegotiatedProtocolVersion(),
          server: client.getServerVersion(),
          tools: await client.listTools(undefined, { ...opts, cacheMode: 'bypass' }),
          add: await client.callTool({ name: 'add', arguments: { a: 2, b: 40 } }, opts),
          shout: await client.callTool({ name: 'shout', arguments: { text: 'grüezi' } }, opts),
          unknown: await client.callTool({ name: 'no-such-tool', arguments: {} }, opts).then(
            (result) => ({ result }),
            (error: unknown) => ({ error: { name: (error as Error).name, code: (error as { code?: unknown }).code, message: (error as Error).message } }),
          ),
        };
      } finally {
        await withTimeout(client.close(), 10_000, 'close');
      }
    };

    const directLog: Parameters<typeof recordingFetch>[0] = [];
    const gatewayLog: Parameters<typeof recordingFetch>[0] = [];
    const directSeenBefore = modern.seen.length;
    const direct = await run(modern.url, directLog);
    const upstreamSeenBefore = modern.seen.length;
    const viaGateway = await run(mandate.endpoint('modern'), gatewayLog);
    const directCalls = modern.seen.slice(directSeenBefore, upstreamSeenBefore).filter((seen) => seen.headers['mcp-method'] === 'tools/call');

    assert.equal(viaGateway.era, 'modern');
    assert.equal(viaGateway.version, MODERN);
    assert.deepEqual(viaGateway.server, direct.server);
    assert.deepEqual(viaGateway.tools, direct.tools);
    assert.deepEqual(
      viaGateway.tools.tools.map((tool) => tool.name),
      ['add', 'shout', 'count', 'deploy', 'route'],
    );
    assert.deepEqual(viaGateway.add, direct.add);
    assert.deepEqual(viaGateway.add.content, [{ type: 'text', text: '42' }]);
    assert.deepEqual(viaGateway.shout, direct.shout);
    assert.deepEqual(viaGateway.shout.structuredContent, { shouted: 'GRÜEZI' });
    assert.deepEqual(viaGateway.unknown, direct.unknown);
    assert.deepEqual(viaGateway.count, direct.count);
    assert.deepEqual(viaGateway.progress, direct.progress);
    assert.deepEqual(viaGateway.progress, [
      { progress: 1, total: 3 },
      { progress: 2, total: 3 },
      { progress: 3, total: 3 },
    ]);
    assert.deepEqual(viaGateway.deploy, direct.deploy);
    assert.deepEqual(viaGateway.deploy.content, [{ type: 'text', text: 'deployed to production' }]);
    assert.deepEqual(viaGateway.elicitations, direct.elicitations);
    assert.equal(viaGateway.elicitations.length, 1, 'one input_required round trip');
    assert.deepEqual(viaGateway.route, direct.route);
    assert.deepEqual(viaGateway.route.content, [{ type: 'text', text: 'routed to eu-west' }]);

    // Stateless: only POSTs, none carries or receives a session id.
    assert.ok(gatewayLog.length >= 5, `the client made its requests through the gateway (${gatewayLog.length})`);
    // The gateway relays each HTTP status as the upstream gave it (an error answered with 400 stays 400).
    assert.deepEqual(gatewayLog.map((entry) => entry.status), directLog.map((entry) => entry.status));
    for (const entry of gatewayLog) {
      assert.equal(entry.method, 'POST');
      assert.equal(entry.sessionId, null, 'no Mcp-Session-Id in a gateway response');
      assert.equal(entry.requestHeaders.get('mcp-session-id'), null);
      assert.equal(entry.requestHeaders.get('mcp-protocol-version'), MODERN);
    }
    // What reached the upstream through the gateway: no session, the revision's headers intact.
    const forwarded = modern.seen.slice(upstreamSeenBefore);
    const calls = forwarded.filter((seen) => seen.headers['mcp-method'] === 'tools/call');
    assert.equal(calls.length, directCalls.length, 'as many tools/call reached the upstream as directly');
    // count, deploy twice (input_required, then the retry with inputResponses),
    // route twice (sent before the client knew its x-mcp-header declaration, the
    // upstream refuses it; the client lists tools and retries with the header),
    // add, shout, the unknown tool.
    assert.equal(calls.length, 8, calls.map((seen) => seen.body).join('\n'));
    assert.ok(calls.some((seen) => seen.headers['mcp-param-region'] === 'eu-west'), 'the Mcp-Param-Region header was forwarded');
    for (const seen of forwarded) {
      assert.equal(seen.method, 'POST');
      assert.equal(seen.headers['mcp-session-id'], undefined);
      assert.equal(seen.headers['mcp-protocol-version'], MODERN);
      const body = JSON.parse(seen.body) as { method: string; params?: { name?: string } };
      assert.equal(seen.headers['mcp-method'], body.method);
      if (body.method === 'tools/call') assert.equal(seen.headers['mcp-name'], body.params?.name);
    }
  });

  test('server/discover answers through the gateway', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new Client({ name: 'mandate-v2-client', version: '1.0.0' }, { versionNegotiation: { mode: { pin: MODERN } } });
    await withTimeout(client.connect(new StreamableHTTPClientTransport(new URL(mandate.endpoint('modern'))), { timeout: REQUEST_TIMEOUT_MS }), REQUEST_TIMEOUT_MS, 'connect');
    try {
      const discovered = await client.discover({ timeout: REQUEST_TIMEOUT_MS });
      assert.ok(discovered.supportedVersions.includes(MODERN));
      assert.ok(discovered.capabilities.tools, 'the upstream capabilities come through');
    } finally {
      await client.close();
    }

    const raw = await post(mandate.endpoint('modern'), modernRequest(7, 'server/discover'), { 'mcp-protocol-version': MODERN, 'mcp-method': 'server/discover' });
    assert.equal(raw.status, 200);
    assert.equal(raw.headers.get('mcp-session-id'), null);
    assert.equal(raw.message?.id, 7);
    const versions = raw.message?.result?.supportedVersions;
    assert.ok(Array.isArray(versions) && versions.includes(MODERN), JSON.stringify(raw.message));
  });

  test('Mcp-Method not matching the body: 400, HeaderMismatch -32020', { timeout: TEST_TIMEOUT_MS }, async () => {
    const seenBefore = modern.seen.length;
    const answer = await post(mandate.endpoint('modern'), modernRequest(11, 'tools/list'), { 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/call', 'mcp-name': 'add' });
    assert.equal(answer.status, 400);
    assert.equal(answer.message?.error?.code, -32020);
    assert.equal(answer.message?.id, 11, 'the error answers the request id');
    assert.equal(answer.headers.get('mcp-session-id'), null);
    assert.equal(modern.seen.length, seenBefore, 'nothing was forwarded');

    const missing = await post(mandate.endpoint('modern'), modernRequest(12, 'tools/list'), { 'mcp-protocol-version': MODERN });
    assert.equal(missing.status, 400);
    assert.equal(missing.message?.error?.code, -32020, 'a missing Mcp-Method is a mismatch too');
  });

  test('Mcp-Name not matching params.name on tools/call: 400, -32020', { timeout: TEST_TIMEOUT_MS }, async () => {
    const seenBefore = modern.seen.length;
    const body = modernRequest(21, 'tools/call', { name: 'add', arguments: { a: 1, b: 2 } });
    const wrong = await post(mandate.endpoint('modern'), body, { 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/call', 'mcp-name': 'shout' });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.message?.error?.code, -32020);
    assert.equal(wrong.message?.id, 21);

    const missing = await post(mandate.endpoint('modern'), body, { 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/call' });
    assert.equal(missing.status, 400);
    assert.equal(missing.message?.error?.code, -32020, 'a missing Mcp-Name is a mismatch too');

    const wrongSentinel = await post(mandate.endpoint('modern'), body, { 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/call', 'mcp-name': base64Sentinel('shout') });
    assert.equal(wrongSentinel.status, 400);
    assert.equal(wrongSentinel.message?.error?.code, -32020, 'a sentinel that decodes to another name is a mismatch');
    assert.equal(modern.seen.length, seenBefore, 'nothing was forwarded');
  });

  test('a base64-sentinel Mcp-Name that decodes to the right name is accepted', { timeout: TEST_TIMEOUT_MS }, async () => {
    const body = modernRequest(31, 'tools/call', { name: 'add', arguments: { a: 20, b: 22 } });
    const answer = await post(mandate.endpoint('modern'), body, { 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/call', 'mcp-name': base64Sentinel('add') });
    assert.equal(answer.status, 200, JSON.stringify(answer.message));
    assert.equal(answer.message?.id, 31);
    assert.equal(answer.message?.error, undefined, JSON.stringify(answer.message?.error));
    assert.deepEqual(answer.message?.result?.content, [{ type: 'text', text: '42' }]);
    assert.equal(answer.headers.get('mcp-session-id'), null);
  });

  test('a non-canonical base64 sentinel in Mcp-Name is refused at the gateway: 400, -32020', { timeout: TEST_TIMEOUT_MS }, async () => {
    // "YWRk==" is "YWRk" ("add") with surplus padding: not canonical base64.
    // The spec requires servers to reject such a sentinel, and the v2 server
    // SDK does (checked first, directly against the upstream).
    const body = modernRequest(35, 'tools/call', { name: 'add', arguments: { a: 1, b: 2 } });
    const headers = { 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/call', 'mcp-name': '=?base64?YWRk==?=' };
    const direct = await post(modern.url, body, headers);
    assert.equal(direct.status, 400);
    assert.equal(direct.message?.error?.code, -32020);

    const seenBefore = modern.seen.length;
    const answer = await post(mandate.endpoint('modern'), body, headers);
    // Lenient base64 decoding would let two header values name the same tool:
    // the gateway accepts only canonical base64 of valid UTF-8.
    assert.equal(modern.seen.length, seenBefore, 'the gateway refused it without forwarding');
    assert.equal(answer.status, 400);
    assert.equal(answer.message?.error?.code, -32020);
    assert.equal(answer.message?.id, 35);
  });

  test('an upstream HeaderMismatch answer keeps its HTTP 400 through the gateway', { timeout: TEST_TIMEOUT_MS }, async () => {
    // Mcp-Param-Region disagrees with arguments.region: only the upstream knows
    // the tool's x-mcp-header declaration, so the gateway forwards and the
    // upstream answers -32020, which the revision requires at HTTP 400.
    const body = modernRequest(36, 'tools/call', { name: 'route', arguments: { region: 'eu-west' } });
    const headers = { 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/call', 'mcp-name': 'route', 'mcp-param-region': 'us-east' };
    const direct = await post(modern.url, body, headers);
    assert.equal(direct.status, 400);
    assert.equal(direct.message?.error?.code, -32020);

    const answer = await post(mandate.endpoint('modern'), body, headers);
    assert.equal(answer.message?.error?.code, -32020);
    assert.deepEqual(answer.message?.error, direct.message?.error, 'the upstream error is relayed as is');
    assert.equal(answer.message?.id, 36);
    // The upstream's HTTP status travels with its JSON-RPC error answer.
    assert.equal(answer.status, direct.status, 'HTTP status of the upstream error answer');
  });

  test('missing MCP-Protocol-Version with a modern _meta: 400, -32020', { timeout: TEST_TIMEOUT_MS }, async () => {
    const answer = await post(mandate.endpoint('modern'), modernRequest(41, 'tools/list'), { 'mcp-method': 'tools/list' });
    assert.equal(answer.status, 400);
    assert.equal(answer.message?.error?.code, -32020);
    assert.equal(answer.message?.id, 41);

    // Same to a stdio server: the header check comes before the era answer.
    const stdio = await post(mandate.endpoint('everything-stdio'), modernRequest(42, 'tools/list'), { 'mcp-method': 'tools/list' });
    assert.equal(stdio.status, 400);
    assert.equal(stdio.message?.error?.code, -32020);
  });

  test('a revision the gateway does not know: 400, -32022 listing what it supports', { timeout: TEST_TIMEOUT_MS }, async () => {
    const body = { jsonrpc: '2.0', id: 45, method: 'tools/list', params: { _meta: { ...modernMeta(), [PROTOCOL_KEY]: '2099-01-01' } } };
    const answer = await post(mandate.endpoint('modern'), body, { 'mcp-protocol-version': '2099-01-01', 'mcp-method': 'tools/list' });
    assert.equal(answer.status, 400);
    assert.equal(answer.message?.error?.code, -32022);
    const supported = (answer.message?.error?.data as { supported?: unknown } | undefined)?.supported;
    assert.ok(Array.isArray(supported) && supported.includes(MODERN), JSON.stringify(answer.message));
  });

  for (const server of ['everything-stdio', 'everything-http'] as const) {
    test(`a modern request to ${server} (no 2026-07-28): 400, -32022 listing only session-era versions`, { timeout: TEST_TIMEOUT_MS }, async () => {
      const answer = await post(mandate.endpoint(server), modernRequest(51, 'tools/list'), { 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/list' });
      assert.equal(answer.status, 400, JSON.stringify(answer.message));
      assert.equal(answer.message?.error?.code, -32022);
      assert.equal(answer.message?.id, 51);
      assert.equal(answer.headers.get('mcp-session-id'), null);
      const supported = (answer.message?.error?.data as { supported?: unknown } | undefined)?.supported;
      assert.ok(Array.isArray(supported) && supported.length > 0, JSON.stringify(answer.message));
      for (const version of supported) assert.ok(SESSION_ERA.has(String(version)), `only session-era versions, got ${String(version)}`);
      assert.ok(supported.includes('2025-11-25'));
      assert.ok(!supported.includes(MODERN));
    });
  }

  test('a v2 client in auto mode falls back to initialize against the stdio server and calls echo', { timeout: TEST_TIMEOUT_MS }, async () => {
    const log: Parameters<typeof recordingFetch>[0] = [];
    const client = new Client({ name: 'mandate-v2-auto', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } });
    const transport = new StreamableHTTPClientTransport(new URL(mandate.endpoint('everything-stdio')), { fetch: recordingFetch(log) });
    await withTimeout(client.connect(transport, { timeout: REQUEST_TIMEOUT_MS }), REQUEST_TIMEOUT_MS, 'connect');
    try {
      assert.equal(client.getProtocolEra(), 'legacy');
      const version = client.getNegotiatedProtocolVersion();
      assert.ok(version !== undefined && SESSION_ERA.has(version), `negotiated ${String(version)}`);
      assert.equal(client.getServerVersion()?.name, 'mcp-servers/everything');
      const echoed = await client.callTool({ name: 'echo', arguments: { message: 'fallback works' } }, { timeout: REQUEST_TIMEOUT_MS });
      assert.deepEqual(echoed.content, [{ type: 'text', text: 'Echo: fallback works' }]);
      // The probe was refused with 400 first; then the legacy session got a gateway session id.
      assert.equal(log[0]?.status, 400);
      assert.ok(log.slice(1).some((entry) => entry.sessionId !== null), 'the fallback opened a session');
      assert.equal(transport.sessionId, log.find((entry) => entry.sessionId !== null)?.sessionId);
    } finally {
      await withTimeout(transport.terminateSession(), 10_000, 'terminate').catch(() => undefined);
      await withTimeout(client.close(), 10_000, 'close');
    }
  });

  test('a v2 client in auto mode picks 2026-07-28 for the modern server', { timeout: TEST_TIMEOUT_MS }, async () => {
    const client = new Client({ name: 'mandate-v2-auto', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } });
    await withTimeout(client.connect(new StreamableHTTPClientTransport(new URL(mandate.endpoint('modern'))), { timeout: REQUEST_TIMEOUT_MS }), REQUEST_TIMEOUT_MS, 'connect');
    try {
      assert.equal(client.getProtocolEra(), 'modern');
      assert.equal(client.getNegotiatedProtocolVersion(), MODERN);
      const added = await client.callTool({ name: 'add', arguments: { a: 1, b: 1 } }, { timeout: REQUEST_TIMEOUT_MS });
      assert.deepEqual(added.content, [{ type: 'text', text: '2' }]);
    } finally {
      await client.close();
    }
  });

  test('stateless requests are audited without a session, and the chain verifies', { timeout: TEST_TIMEOUT_MS }, async () => {
    let events: AuditEvent[] = [];
    await waitFor(async () => {
      const listed = await mandate.cli(['audit', 'list', '--json', '--limit', '10000']);
      events = JSON.parse(listed.stdout) as AuditEvent[];
      return events.some((event) => event.type === 'session.closed' && event.server === 'everything-stdio');
    }, 'the fallback session to be closed', 15_000);
    const calls = events.filter((event) => event.type === 'mcp.request' && event.server === 'modern' && event.data?.method === 'tools/call');
    const add = calls.find((event) => event.tool === 'add' && event.outcome === 'success');
    assert.ok(add, 'tools/call add recorded');
    assert.equal(add.data?.protocol, MODERN);
    assert.equal(add.data?.session, null);
    assert.ok(calls.some((event) => event.tool === 'shout'));
    const discover = events.find((event) => event.type === 'mcp.request' && event.server === 'modern' && event.data?.method === 'server/discover');
    assert.ok(discover, 'server/discover recorded');
    const echo = events.find((event) => event.type === 'mcp.request' && event.server === 'everything-stdio' && event.tool === 'echo');
    assert.equal(echo?.outcome, 'success', 'the fallback echo is recorded as a session request');
    assert.ok(!events.some((event) => event.type === 'session.opened' && event.server === 'modern'), 'no session for stateless traffic');

    const verified = await mandate.cli(['audit', 'verify']);
    assert.equal(verified.code, 0, `${verified.stdout}${verified.stderr}`);
  });
});
