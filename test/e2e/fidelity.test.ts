/**
 * Proof of fidelity: the same MCP scenario, driven by the official v1 SDK
 * client, gives the same results directly against server-everything and
 * through Mandate, for a stdio upstream and for a Streamable HTTP upstream.
 * Afterwards the audit log holds the expected events and its chain verifies.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema, ElicitRequestSchema, ListRootsRequestSchema, McpError, type JSONRPCMessage, type MessageExtraInfo } from '@modelcontextprotocol/sdk/types.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import { EVERYTHING, NODE, startEverythingHttp, startMandate, stopBounded, waitFor, type Mandate, type Proc } from '../helpers/process.ts';

/** Upper bound for one MCP request (the long-running operation takes ~1.5 s). */
const REQUEST_TIMEOUT_MS = 30_000;
const CONNECT_TIMEOUT_MS = 30_000;
const TEST_TIMEOUT_MS = 120_000;

const CLIENT_NAME = 'mandate-fidelity-client';
const SAMPLING_TEXT = 'fixed sampling answer from the fidelity client';
const SAMPLING_MODEL = 'fidelity-model-1';
const ELICITATION_CONTENT = { name: 'Ada Lovelace', check: true, email: 'ada@example.com', integer: 7, number: 2.5 };
const ROOTS = [
  { uri: 'file:///srv/fidelity/workspace', name: 'fidelity-workspace' },
  { uri: 'file:///srv/fidelity/notes', name: 'fidelity-notes' },
];
const LONG_RUNNING = { duration: 1.5, steps: 3 };



type Upstream = 'stdio' | 'http';
type Route = 'direct' | 'gateway';

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A result or the JSON-RPC error the call failed with, so both shapes can be compared. */
type Settled = { ok: unknown } | { error: { code: number; message: string; data: unknown } };

async function settle(promise: Promise<unknown>): Promise<Settled> {
  try {
    return { ok: await promise };
  } catch (error) {
    if (error instanceof McpError) return { error: { code: error.code, message: error.message, data: error.data ?? null } };
    throw error;
  }
}

interface ScenarioResult {
  sessionId: string | undefined;
  server: unknown;
  capabilities: unknown;
  instructions: string | undefined;
  tools: unknown;
  echo: unknown;
  sum: unknown;
  resources: unknown;
  resourceTemplates: unknown;
  staticDocument: unknown;
  dynamicText: unknown;
  dynamicBlob: unknown;
  prompts: unknown;
  simplePrompt: unknown;
  argsPrompt: unknown;
  longRunning: unknown;
  /** Progress as the SDK's onprogress callback reported it. */
  progress: { progress: number; total?: number }[];
  /** Progress notifications as they arrived on the wire, before the SDK dispatched them. */
  progressOnWire: unknown[];
  sampling: unknown;
  samplingRequests: unknown[];
  elicitation: unknown;
  elicitationRequests: unknown[];
  roots: Settled;
  rootsRequests: number;
  unknownTool: Settled;
  unknownPrompt: Settled;
  unknownResource: Settled;
}

/**
 * The dynamic resources embed the wall-clock time of the read
 * ("... created at 10:42:17 AM"), which legitimately differs between two
 * reads; everything else about them must be identical.
 */
function normaliseDynamic(value: unknown): unknown {
  const result = structuredClone(value) as { contents: { text?: string; blob?: string }[] };
  for (const content of result.contents) {
    if (typeof content.text === 'string') content.text = content.text.replace(/created at .*$/, 'created at <time>');
    if (typeof content.blob === 'string') {
      const decoded = Buffer.from(content.blob, 'base64').toString('utf8');
      content.blob = decoded.replace(/created at .*$/, 'created at <time>');
    }
  }
  return result;
}

/** Runs the whole scenario on one connected client. */
async function runScenario(transport: Transport & { sessionId?: string | undefined }, onConnected?: () => Promise<void>): Promise<ScenarioResult> {
  const client = new Client(
    { name: CLIENT_NAME, version: '1.0.0' },
    { capabilities: { sampling: {}, elicitation: {}, roots: { listChanged: true } } },
  );
  const samplingRequests: unknown[] = [];
  const elicitationRequests: unknown[] = [];
  let rootsRequests = 0;
  client.setRequestHandler(CreateMessageRequestSchema, (request) => {
    samplingRequests.push(request.params);
    return { role: 'assistant', model: SAMPLING_MODEL, stopReason: 'endTurn', content: { type: 'text', text: SAMPLING_TEXT } };
  });
  client.setRequestHandler(ElicitRequestSchema, (request) => {
    elicitationRequests.push(request.params);
    return { action: 'accept', content: ELICITATION_CONTENT };
  });
  client.setRequestHandler(ListRootsRequestSchema, () => {
    rootsRequests += 1;
    return { roots: ROOTS };
  });
  const opts = { timeout: REQUEST_TIMEOUT_MS };
  await withTimeout(client.connect(transport, opts), CONNECT_TIMEOUT_MS, 'connect');
  // Tap the transport: every message the client receives, before the SDK dispatches it.
  const wire: JSONRPCMessage[] = [];
  const dispatch = transport.onmessage;
  transport.onmessage = ((message: JSONRPCMessage, extra?: MessageExtraInfo) => {
    wire.push(message);
    dispatch?.(message, extra);
  }) as typeof transport.onmessage;
  try {
    await onConnected?.();
    const tools = await client.listTools(undefined, opts);
    const echo = await client.callTool({ name: 'echo', arguments: { message: 'fidelity ✓ ünïcödé' } }, undefined, opts);
    const sum = await client.callTool({ name: 'get-sum', arguments: { a: 19, b: 23.5 } }, undefined, opts);

    const resources = await client.listResources(undefined, opts);
    const resourceTemplates = await client.listResourceTemplates(undefined, opts);
    const staticUri = resources.resources.map((r) => r.uri).find((uri) => uri.startsWith('demo://resource/static/document/'));
    assert.ok(staticUri, 'server-everything lists at least one static document');
    const staticDocument = await client.readResource({ uri: staticUri }, opts);
    const dynamicText = normaliseDynamic(await client.readResource({ uri: 'demo://resource/dynamic/text/3' }, opts));
    const dynamicBlob = normaliseDynamic(await client.readResource({ uri: 'demo://resource/dynamic/blob/4' }, opts));

    const prompts = await client.listPrompts(undefined, opts);
    const simplePrompt = await client.getPrompt({ name: 'simple-prompt' }, opts);
    const argsPrompt = await client.getPrompt({ name: 'args-prompt', arguments: { city: 'Zürich', state: 'ZH' } }, opts);

    const progress: { progress: number; total?: number }[] = [];
    const longRunning = await client.callTool({ name: 'trigger-long-running-operation', arguments: LONG_RUNNING }, undefined, {
      ...opts,
      resetTimeoutOnProgress: true,
      onprogress: (p) => progress.push({ progress: p.progress, ...(p.total === undefined ? {} : { total: p.total }) }),
    });

    // The progress token is the SDK's own request counter: drop it, keep the rest of each notification.
    const progressOnWire = wire
      .filter((message) => 'method' in message && message.method === 'notifications/progress')
      .map((message) => {
        const { progressToken: _token, ...rest } = (message as { params: Record<string, unknown> }).params;
        return rest;
      });

    const sampling = await client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'Say hello to Mandate', maxTokens: 42 } }, undefined, opts);
    const elicitation = await client.callTool({ name: 'trigger-elicitation-request', arguments: {} }, undefined, opts);
    const roots = await settle(client.callTool({ name: 'get-roots-list', arguments: {} }, undefined, opts));

    const unknownTool = await settle(client.callTool({ name: 'no-such-tool', arguments: { x: 1 } }, undefined, opts));
    const unknownPrompt = await settle(client.getPrompt({ name: 'no-such-prompt' }, opts));
    const unknownResource = await settle(client.readResource({ uri: 'demo://resource/static/document/no-such-file.md' }, opts));

    return {
      sessionId: transport.sessionId,
      server: client.getServerVersion(),
      capabilities: client.getServerCapabilities(),
      instructions: client.getInstructions(),
      tools,
      echo,
      sum,
      resources,
      resourceTemplates,
      staticDocument,
      dynamicText,
      dynamicBlob,
      prompts,
      simplePrompt,
      argsPrompt,
      longRunning,
      progress,
      progressOnWire,
      sampling,
      samplingRequests,
      elicitation,
      elicitationRequests,
      roots,
      rootsRequests,
      unknownTool,
      unknownPrompt,
      unknownResource,
    };
  } finally {
    // End the session explicitly (DELETE) so the gateway records session.closed.
    if (transport instanceof StreamableHTTPClientTransport) {
      await withTimeout(transport.terminateSession(), 10_000, 'terminate session').catch(() => undefined);
    }
    await withTimeout(client.close(), 10_000, 'close client');
  }
}

function textOf(result: unknown): string {
  const content = (result as { content?: { type: string; text?: string }[] }).content ?? [];
  return content.map((part) => part.text ?? '').join('\n');
}

function sessionIdsPrinted(proc: Proc): string[] {
  return [...proc.output().matchAll(/Session initialized with ID: (\S+)/g)].map((match) => match[1] ?? '');
}

interface AuditEvent {
  seq: number;
  type: string;
  server: string | null;
  tool?: string | null;
  outcome: string;
  reason?: string | null;
  data?: Record<string, unknown>;
}

describe('fidelity: v1 SDK client, direct vs through Mandate', { timeout: 5 * TEST_TIMEOUT_MS }, () => {
  let everything: Proc & { url: string };
  let mandate: Mandate;
  const results = new Map<string, ScenarioResult>();
  let gatewayUpstreamSessionId: string | undefined;

  before(async () => {
    everything = await startEverythingHttp();
    mandate = await startMandate({
      servers: [
        { name: 'everything-stdio', command: NODE, args: [EVERYTHING, 'stdio'] },
        { name: 'everything-http', url: everything.url },
      ],
    });
  });

  after(async () => {
    if (mandate) await stopBounded(mandate);
    if (everything) await stopBounded(everything);
  });

  function transportFor(upstream: Upstream, route: Route): Transport & { sessionId?: string | undefined } {
    if (route === 'gateway') return new StreamableHTTPClientTransport(new URL(mandate.endpoint(`everything-${upstream}`)));
    if (upstream === 'http') return new StreamableHTTPClientTransport(new URL(everything.url));
    return new StdioClientTransport({ command: NODE, args: [EVERYTHING, 'stdio'], stderr: 'ignore' });
  }

  for (const upstream of ['stdio', 'http'] as const) {
    describe(`${upstream} upstream`, () => {
      before(async () => {
        results.set(`${upstream}/direct`, await runScenario(transportFor(upstream, 'direct')));
        const printedBefore = new Set(sessionIdsPrinted(everything));
        results.set(
          `${upstream}/gateway`,
          await runScenario(transportFor(upstream, 'gateway'), async () => {
            if (upstream !== 'http') return;
            // The gateway opened its own upstream session while forwarding initialize.
            await waitFor(async () => sessionIdsPrinted(everything).some((id) => !printedBefore.has(id)), 'the upstream session id of the gateway', 10_000);
            gatewayUpstreamSessionId = sessionIdsPrinted(everything).find((id) => !printedBefore.has(id));
          }),
        );
      });

      const pair = (): { direct: ScenarioResult; gateway: ScenarioResult } => {
        const direct = results.get(`${upstream}/direct`);
        const gateway = results.get(`${upstream}/gateway`);
        assert.ok(direct && gateway, 'both scenario runs completed');
        return { direct, gateway };
      };

      test('initialize: same server info, capabilities and instructions', () => {
        const { direct, gateway } = pair();
        assert.deepEqual(gateway.server, direct.server);
        assert.deepEqual(gateway.capabilities, direct.capabilities);
        assert.equal(gateway.instructions, direct.instructions);
        assert.ok(typeof gateway.instructions === 'string' && gateway.instructions.length > 0);
      });

      test('tools/list: same names, schemas and annotations', () => {
        const { direct, gateway } = pair();
        assert.deepEqual(gateway.tools, direct.tools);
        const names = (gateway.tools as { tools: { name: string }[] }).tools.map((tool) => tool.name);
        for (const name of ['echo', 'get-sum', 'trigger-long-running-operation', 'trigger-sampling-request', 'trigger-elicitation-request', 'get-roots-list']) {
          assert.ok(names.includes(name), `tools/list names ${name}`);
        }
      });

      test('tools/call: echo and get-sum', () => {
        const { direct, gateway } = pair();
        assert.deepEqual(gateway.echo, direct.echo);
        assert.deepEqual(gateway.sum, direct.sum);
        assert.equal(textOf(gateway.echo), 'Echo: fidelity ✓ ünïcödé');
        assert.equal(textOf(gateway.sum), 'The sum of 19 and 23.5 is 42.5.');
      });

      test('resources: list, templates, a static document and dynamic ones', () => {
        const { direct, gateway } = pair();
        assert.deepEqual(gateway.resources, direct.resources);
        assert.deepEqual(gateway.resourceTemplates, direct.resourceTemplates);
        assert.deepEqual(gateway.staticDocument, direct.staticDocument);
        assert.ok(textOf({ content: (gateway.staticDocument as { contents: { text?: string }[] }).contents }).length > 0);
        assert.deepEqual(gateway.dynamicText, direct.dynamicText);
        assert.deepEqual(gateway.dynamicBlob, direct.dynamicBlob);
        assert.deepEqual(gateway.dynamicText, {
          contents: [{ uri: 'demo://resource/dynamic/text/3', mimeType: 'text/plain', text: 'Resource 3: This is a plaintext resource created at <time>' }],
        });
      });

      test('prompts: list, without and with arguments', () => {
        const { direct, gateway } = pair();
        assert.deepEqual(gateway.prompts, direct.prompts);
        assert.deepEqual(gateway.simplePrompt, direct.simplePrompt);
        assert.deepEqual(gateway.argsPrompt, direct.argsPrompt);
        assert.equal(
          (gateway.argsPrompt as { messages: { content: { text: string } }[] }).messages[0]?.content.text,
          "What's weather in Zürich, ZH?",
        );
      });

      test('progress: notifications reach the client, as many as directly', () => {
        const { direct, gateway } = pair();
        assert.deepEqual(gateway.longRunning, direct.longRunning);
        assert.ok(gateway.progress.length >= 1, 'at least one progress notification reached onprogress through the gateway');
        // Counted on the wire, not in onprogress: the v1 SDK client dispatches
        // notifications on a microtask but responses synchronously, so when the
        // last progress notification and the response arrive in one read (as
        // they often do on stdio) the response unregisters the progress
        // handler first and onprogress misses that notification. That race is
        // the SDK's, on either route; what the server sent and the client
        // received is what the gateway must preserve.
        const expected = [
          { progress: 1, total: 3 },
          { progress: 2, total: 3 },
          { progress: 3, total: 3 },
        ];
        assert.deepEqual(direct.progressOnWire, expected);
        assert.equal(gateway.progressOnWire.length, direct.progressOnWire.length);
        assert.deepEqual(gateway.progressOnWire, direct.progressOnWire);
        assert.deepEqual(gateway.progress, expected.slice(0, gateway.progress.length), 'onprogress saw a prefix of them, in order');
      });

      test('sampling: the server request is relayed and the client answer returns in the result', () => {
        const { direct, gateway } = pair();
        assert.deepEqual(gateway.samplingRequests, direct.samplingRequests);
        assert.equal(gateway.samplingRequests.length, 1);
        assert.deepEqual(gateway.sampling, direct.sampling);
        const text = textOf(gateway.sampling);
        assert.ok(text.includes(SAMPLING_TEXT), `sampling answer in the tool result: ${text}`);
        assert.ok(text.includes(SAMPLING_MODEL));
      });

      test('elicitation: the server request is relayed and the client answer returns in the result', () => {
        const { direct, gateway } = pair();
        assert.deepEqual(gateway.elicitationRequests, direct.elicitationRequests);
        assert.equal(gateway.elicitationRequests.length, 1);
        assert.deepEqual(gateway.elicitation, direct.elicitation);
        const text = textOf(gateway.elicitation);
        assert.ok(text.includes('- Name: Ada Lovelace'), text);
        assert.ok(text.includes('- Email: ada@example.com'), text);
        assert.ok(text.includes('"action": "accept"'), text);
      });

      test('roots: get-roots-list sees the client roots, as directly', () => {
        const { direct, gateway } = pair();
        assert.deepEqual(gateway.roots, direct.roots);
        assert.ok('ok' in gateway.roots, 'get-roots-list succeeded');
        const text = textOf(gateway.roots.ok);
        for (const root of ROOTS) assert.ok(text.includes(root.uri), `root ${root.uri} in: ${text}`);
        assert.ok(gateway.rootsRequests >= 1, 'the client answered roots/list through the gateway');
      });

      test('errors: unknown tool (isError), unknown prompt and resource (JSON-RPC errors) keep their shape', () => {
        const { direct, gateway } = pair();
        assert.deepEqual(gateway.unknownTool, direct.unknownTool);
        assert.ok('ok' in gateway.unknownTool && (gateway.unknownTool.ok as { isError?: boolean }).isError === true);
        assert.deepEqual(gateway.unknownPrompt, direct.unknownPrompt);
        assert.ok('error' in gateway.unknownPrompt && gateway.unknownPrompt.error.code === -32602);
        assert.deepEqual(gateway.unknownResource, direct.unknownResource);
        assert.ok('error' in gateway.unknownResource);
      });

      test('sessions: the gateway issues its own session id', () => {
        const { direct, gateway } = pair();
        assert.ok(gateway.sessionId, 'the gateway answered initialize with an Mcp-Session-Id');
        assert.match(gateway.sessionId, /^[\x21-\x7e]+$/, 'visible ASCII, as the spec requires');
        if (upstream === 'http') {
          const printed = sessionIdsPrinted(everything);
          assert.ok(direct.sessionId && printed.includes(direct.sessionId), 'the upstream session ids are captured from its output');
          assert.ok(gatewayUpstreamSessionId, 'the gateway opened an upstream session');
          assert.notEqual(gateway.sessionId, gatewayUpstreamSessionId, 'the client never sees the upstream session id');
          assert.ok(!printed.includes(gateway.sessionId), 'the gateway session id is none of the upstream ones');
        } else {
          assert.equal(direct.sessionId, undefined);
        }
      });
    });
  }

  describe('audit', () => {
    const expectedTools = ['echo', 'get-sum', 'trigger-long-running-operation', 'trigger-sampling-request', 'trigger-elicitation-request', 'get-roots-list'];

    async function events(): Promise<AuditEvent[]> {
      const listed = await mandate.cli(['audit', 'list', '--json', '--limit', '10000']);
      assert.equal(listed.code, 0, listed.stderr);
      return JSON.parse(listed.stdout) as AuditEvent[];
    }

    test('mcp.request, session.opened and session.closed events were recorded', { timeout: TEST_TIMEOUT_MS }, async () => {
      // session.closed is written after the DELETE is answered: wait for both.
      let all: AuditEvent[] = [];
      await waitFor(async () => {
        all = await events();
        return all.filter((event) => event.type === 'session.closed').length >= 2;
      }, 'two session.closed events', 15_000);

      for (const server of ['everything-stdio', 'everything-http']) {
        const calls = all.filter((event) => event.type === 'mcp.request' && event.server === server && event.data?.method === 'tools/call');
        for (const tool of expectedTools) {
          const call = calls.find((event) => event.tool === tool);
          assert.ok(call, `${server}: tools/call ${tool} recorded`);
          assert.equal(call.outcome, 'success', `${server}: ${tool} outcome`);
          assert.equal(call.data?.direction, 'client-to-server');
          assert.equal(typeof call.data?.latencyMs, 'number');
          assert.ok((call.data?.latencyMs as number) >= 0);
        }
        const longRunning = calls.find((event) => event.tool === 'trigger-long-running-operation');
        assert.ok((longRunning?.data?.latencyMs as number) >= LONG_RUNNING.duration * 1000 * 0.9, 'the latency covers the long-running operation');
        assert.ok(calls.some((event) => event.tool === 'no-such-tool'), `${server}: the unknown tool call is recorded too`);

        const unknownPrompt = all.find((event) => event.type === 'mcp.request' && event.server === server && event.data?.method === 'prompts/get' && event.tool === 'no-such-prompt');
        assert.ok(unknownPrompt, `${server}: prompts/get no-such-prompt recorded`);
        assert.equal(unknownPrompt.outcome, 'failure');
        assert.equal(unknownPrompt.data?.errorCode, -32602);

        for (const method of ['sampling/createMessage', 'elicitation/create']) {
          const relayed = all.find((event) => event.type === 'mcp.request' && event.server === server && event.data?.method === method);
          assert.ok(relayed, `${server}: the client's answer to ${method} is recorded`);
          assert.equal(relayed.outcome, 'success');
          assert.equal(relayed.data?.direction, 'server-to-client');
        }

        const opened = all.filter((event) => event.type === 'session.opened' && event.server === server);
        assert.equal(opened.length, 1, `${server}: one session opened`);
        assert.equal(opened[0]?.outcome, 'success');
        assert.equal(opened[0]?.data?.client, CLIENT_NAME);
        const closed = all.filter((event) => event.type === 'session.closed' && event.server === server);
        assert.equal(closed.length, 1, `${server}: one session closed`);
        assert.equal(closed[0]?.data?.session, opened[0]?.data?.session, 'opened and closed name the same session handle');
      }
      // No event carries a raw session id: only the handle.
      const text = JSON.stringify(all);
      for (const key of ['stdio/gateway', 'http/gateway']) {
        const id = results.get(key)?.sessionId;
        if (id) assert.ok(!text.includes(id), `the audit log does not contain the session id of ${key}`);
      }
    });

    test('mandate audit verify exits 0', { timeout: TEST_TIMEOUT_MS }, async () => {
      const verified = await mandate.cli(['audit', 'verify']);
      assert.equal(verified.code, 0, `${verified.stdout}${verified.stderr}`);
      assert.match(verified.stdout, /intact/);
    });
  });
});
