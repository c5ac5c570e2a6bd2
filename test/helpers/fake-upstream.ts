/**
 * Test double: a Streamable HTTP MCP server in the test's own process, on raw
 * node:http (no SDK), whose answers each test scripts. It stands in for an
 * upstream where the subject of a test is the gateway's own behaviour, and it
 * can do what a well-behaved SDK server never does: wrong statuses, garbage,
 * resets, answers held until the test lets them go.
 *
 * Out of the box (127.0.0.1, port 0):
 *   initialize          answers with the client's version and, unless
 *                       `sessions: false`, an Mcp-Session-Id
 *   ping, tools/list    answer ({} and `tools`)
 *   tools/call echo     answers "echo: TEXT" (arguments.text or .message)
 *   server/discover     with `modern: true`, the 2026-07-28 revision's answer
 *   other requests      -32601; notifications and responses get 202
 *   GET                 the standalone stream (push() writes to it); 405 with `standalone: false`
 *   DELETE              ends the session
 * A request on a session the server does not know gets 404, without one 400.
 *
 * `on(method, responder)` replaces the answer to a JSON-RPC method (or to the
 * HTTP methods 'GET' and 'DELETE'); a responder returning undefined falls
 * back to the default. Every request received is kept in `requests`.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { EVERYTHING, NODE } from './process.ts';

export const MODERN_VERSION = '2026-07-28';
export const SESSION_VERSIONS = ['2025-11-25', '2025-06-18', '2025-03-26', '2024-11-05'];

export interface Message {
  jsonrpc: '2.0';
  id?: string | number | null;
  method?: string;
  params?: Record<string, unknown> & { _meta?: Record<string, unknown> };
  result?: unknown;
  error?: { code: number; message: string; data?: unknown };
}

/** One HTTP request as the fake upstream received it. */
export interface Received {
  /** The HTTP method. */
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** The body as a JSON-RPC message, when it is one. */
  message: Message | null;
}

/** One item of an SSE answer: a message, a raw `data:` line (for garbage), or a pause. */
export type SseItem = Message | { data: string } | { waitMs: number } | { waitFor: Promise<unknown> };

interface Common {
  /** Waits this long before anything is written. */
  delayMs?: number;
  headers?: Record<string, string>;
}

/** What the fake upstream answers. */
export type Reply =
  /** A JSON body (any value; a JSON-RPC error body with a 4xx status, too). */
  | (Common & { json: unknown; status?: number })
  /** An event stream: the items in order; ends after the last unless `keepOpen`. */
  | (Common & { sse: SseItem[]; status?: number; keepOpen?: boolean })
  /** Any status with a raw body (unparseable JSON, HTML, an empty 401). */
  | (Common & { status: number; body?: string; contentType?: string })
  /** The connection is reset (TCP RST) without an answer. */
  | { reset: true; delayMs?: number }
  /** No answer at all, until the client gives up or the server closes. */
  | { hang: true };

export type Responder = (message: Message, request: Received) => Reply | undefined | Promise<Reply | undefined>;

export interface Tool {
  name: string;
  description?: string;
  inputSchema: Record<string, unknown>;
  [key: string]: unknown;
}

export interface FakeUpstreamOptions {
  /** Hand out Mcp-Session-Id on initialize and require it after (default true). */
  sessions?: boolean;
  /** The tools/list answer (default: one `echo` tool). */
  tools?: Tool[];
  /** Answer server/discover for the stateless 2026-07-28 revision (default false). */
  modern?: boolean;
  /** Offer the standalone GET stream (default true). */
  standalone?: boolean;
  /** How default answers are sent (default json). */
  answerAs?: 'json' | 'sse';
  /** The protocolVersion initialize answers (default: the client's). */
  protocolVersion?: string;
}

export interface FakeUpstream {
  /** http://127.0.0.1:PORT/mcp */
  url: string;
  /** Every request received, oldest first. */
  requests: Received[];
  /** Session ids handed out and not ended. */
  sessions: Set<string>;
  /** The tools/list answer; tests may change it (then push a list_changed). */
  tools: Tool[];
  /** Scripts the answer to a JSON-RPC method, or to 'GET' / 'DELETE'. */
  on(method: string, responder: Responder): void;
  /** Scripts the answer to tools/call of one tool. */
  onTool(name: string, responder: Responder): void;
  /** The JSON-RPC messages POSTed, optionally only those of one method. */
  messages(method?: string): Message[];
  /** Writes a message on the open standalone GET streams (of one session, or all); how many got it. */
  push(message: Message, session?: string): number;
  /** Resolves once a standalone GET stream is open (of one session, or any). */
  streamOpen(session?: string, timeoutMs?: number): Promise<void>;
  /** Forgets a session, as a server that expired it: later requests on it get 404. */
  forget(session: string): void;
  close(): Promise<void>;
}

export const ECHO_TOOL: Tool = { name: 'echo', description: 'echoes text', inputSchema: { type: 'object', properties: { text: { type: 'string' } } } };

/** A JSON-RPC result answering `request`. */
export function result(request: Message, value: unknown): Message {
  return { jsonrpc: '2.0', id: request.id ?? null, result: value };
}

/** A JSON-RPC error answering `request`. */
export function rpcError(request: Message, code: number, message: string, data?: unknown): Message {
  return { jsonrpc: '2.0', id: request.id ?? null, error: { code, message, ...(data === undefined ? {} : { data }) } };
}

/** A text tool result, as servers answer tools/call. */
export function textResult(request: Message, text: string): Message {
  return result(request, { content: [{ type: 'text', text }] });
}

/** notifications/progress for a request that carries a progressToken. */
export function progress(request: Message, value: number, total?: number): Message {
  return { jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: request.params?._meta?.progressToken ?? null, progress: value, ...(total === undefined ? {} : { total }) } };
}

function parse(body: string): Message | null {
  try {
    const value = JSON.parse(body) as unknown;
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Message) : null;
  } catch {
    return null;
  }
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function sseEvent(data: string): string {
  return `event: message\ndata: ${data}\n\n`;
}

/** Writes a scripted reply; a client that went away stops it quietly. */
async function send(res: ServerResponse, reply: Reply): Promise<void> {
  if ('hang' in reply) return;
  if (reply.delayMs) await delay(reply.delayMs);
  if (res.destroyed) return;
  if ('reset' in reply) {
    res.socket?.resetAndDestroy();
    return;
  }
  const headers = reply.headers ?? {};
  if ('json' in reply) {
    res.writeHead(reply.status ?? 200, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(reply.json));
  } else if ('sse' in reply) {
    res.writeHead(reply.status ?? 200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', ...headers });
    res.flushHeaders();
    for (const item of reply.sse) {
      if ('waitMs' in item) await delay(item.waitMs);
      else if ('waitFor' in item) await item.waitFor;
      else if (res.destroyed) return;
      else if ('jsonrpc' in item) res.write(sseEvent(JSON.stringify(item)));
      else res.write(sseEvent(item.data));
    }
    if (!reply.keepOpen && !res.destroyed) res.end();
  } else {
    const type = reply.contentType === undefined ? {} : { 'content-type': reply.contentType };
    res.writeHead(reply.status, { ...type, ...headers }).end(reply.body ?? '');
  }
}

export async function startFakeUpstream(options: FakeUpstreamOptions = {}): Promise<FakeUpstream> {
  const useSessions = options.sessions ?? true;
  const requests: Received[] = [];
  const sessions = new Set<string>();
  const responders = new Map<string, Responder>();
  const toolResponders = new Map<string, Responder>();
  const streams = new Set<{ session: string | null; res: ServerResponse }>();
  const streamWaiters = new Set<() => void>();

  const answer = (message: Message, extraHeaders: Record<string, string> = {}): Reply =>
    options.answerAs === 'sse' ? { sse: [message], headers: extraHeaders } : { json: message, headers: extraHeaders };

  function defaultReply(message: Message): Reply {
    const params = message.params ?? {};
    switch (message.method) {
      case 'initialize': {
        const version = options.protocolVersion ?? (typeof params.protocolVersion === 'string' ? params.protocolVersion : SESSION_VERSIONS[0]);
        const headers: Record<string, string> = {};
        if (useSessions) {
          const id = randomBytes(16).toString('hex');
          sessions.add(id);
          headers['mcp-session-id'] = id;
        }
        return answer(result(message, { protocolVersion: version, capabilities: { tools: { listChanged: true }, logging: {} }, serverInfo: { name: 'fake-upstream', version: '1.0.0' } }), headers);
      }
      case 'ping':
        return answer(result(message, {}));
      case 'tools/list':
        return answer(result(message, { tools: fake.tools }));
      case 'tools/call': {
        const args = (params.arguments ?? {}) as { text?: unknown; message?: unknown };
        if (params.name === 'echo') return answer(textResult(message, `echo: ${String(args.text ?? args.message ?? '')}`));
        return answer(rpcError(message, -32602, `unknown tool: ${String(params.name)}`));
      }
      case 'server/discover':
        if (options.modern) {
          return answer(result(message, { supportedVersions: [MODERN_VERSION, ...SESSION_VERSIONS], capabilities: { tools: {} }, serverInfo: { name: 'fake-upstream', version: '1.0.0' } }));
        }
        return answer(rpcError(message, -32601, 'Method not found'));
      default:
        return answer(rpcError(message, -32601, 'Method not found'));
    }
  }

  /** 400 without a session id, 404 for one this server does not know; null if the session is fine. */
  function sessionRefusal(req: IncomingMessage, message: Message | null): Reply | null {
    if (!useSessions || message?.method === 'initialize') return null;
    if (options.modern && header(req, 'mcp-protocol-version') === MODERN_VERSION) return null;
    const id = header(req, 'mcp-session-id');
    const error = (text: string): Message => ({ jsonrpc: '2.0', id: message?.id ?? null, error: { code: -32000, message: text } });
    if (id === undefined) return { json: error('Bad Request: Mcp-Session-Id header is required'), status: 400 };
    if (!sessions.has(id)) return { json: error('Session not found'), status: 404 };
    return null;
  }

  async function onPost(req: IncomingMessage, res: ServerResponse, request: Received): Promise<void> {
    const message = request.message;
    if (message === null) return send(res, { json: { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } }, status: 400 });
    const refusal = sessionRefusal(req, message);
    if (refusal) return send(res, refusal);
    const scripted = message.method === undefined ? undefined : responders.get(message.method);
    const tool = message.method === 'tools/call' ? toolResponders.get(String(message.params?.name)) : undefined;
    const reply = (await tool?.(message, request)) ?? (await scripted?.(message, request));
    if (reply) return send(res, reply);
    if (message.id === undefined || message.method === undefined) return void res.writeHead(202).end();
    return send(res, defaultReply(message));
  }

  async function onGet(req: IncomingMessage, res: ServerResponse, request: Received): Promise<void> {
    const scripted = await responders.get('GET')?.({ jsonrpc: '2.0' }, request);
    if (scripted) return send(res, scripted);
    if (options.standalone === false) return void res.writeHead(405, { allow: 'POST, DELETE' }).end();
    const refusal = sessionRefusal(req, null);
    if (refusal) return send(res, refusal);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.flushHeaders();
    const stream = { session: header(req, 'mcp-session-id') ?? null, res };
    streams.add(stream);
    res.once('close', () => streams.delete(stream));
    for (const wake of streamWaiters) wake();
  }

  async function onDelete(req: IncomingMessage, res: ServerResponse, request: Received): Promise<void> {
    const scripted = await responders.get('DELETE')?.({ jsonrpc: '2.0' }, request);
    if (scripted) return send(res, scripted);
    if (!useSessions) return void res.writeHead(405, { allow: 'GET, POST' }).end();
    const refusal = sessionRefusal(req, null);
    if (refusal) return send(res, refusal);
    fake.forget(header(req, 'mcp-session-id') ?? '');
    res.writeHead(200).end();
  }

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const request: Received = { method: req.method ?? '', path: req.url ?? '', headers: { ...req.headers }, body, message: body === '' ? null : parse(body) };
      requests.push(request);
      const handle = req.method === 'POST' ? onPost : req.method === 'GET' ? onGet : req.method === 'DELETE' ? onDelete : null;
      if (handle === null) return void res.writeHead(405).end();
      handle(req, res, request).catch((error: unknown) => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end(`fake upstream: ${String(error)}`);
        else res.destroy();
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  const fake: FakeUpstream = {
    url: `http://127.0.0.1:${port}/mcp`,
    requests,
    sessions,
    tools: options.tools ?? [ECHO_TOOL],
    on: (method, responder) => void responders.set(method, responder),
    onTool: (name, responder) => void toolResponders.set(name, responder),
    messages: (method) => requests.flatMap((r) => (r.message && (method === undefined || r.message.method === method) ? [r.message] : [])),
    push(message, session) {
      let count = 0;
      for (const stream of streams) {
        if (session !== undefined && stream.session !== session) continue;
        stream.res.write(sseEvent(JSON.stringify(message)));
        count += 1;
      }
      return count;
    },
    async streamOpen(session, timeoutMs = 5000) {
      const open = () => [...streams].some((s) => session === undefined || s.session === session);
      if (open()) return;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          streamWaiters.delete(wake);
          reject(new Error('fake upstream: no standalone stream was opened'));
        }, timeoutMs);
        const wake = () => {
          if (!open()) return;
          clearTimeout(timer);
          streamWaiters.delete(wake);
          resolve();
        };
        streamWaiters.add(wake);
      });
    },
    forget(session) {
      sessions.delete(session);
      for (const stream of streams) if (stream.session === session) stream.res.end();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const stream of streams) stream.res.end();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return fake;
}

export interface RouteUpstreams {
  json: FakeUpstream;
  sse: FakeUpstream;
  modern: FakeUpstream;
  /** The gateway's servers for every route: these three by their names, and `stdio` (server-everything). */
  servers: Record<string, unknown>[];
  close(): Promise<void>;
}

/**
 * Three upstreams for tests of every delivery route: `json` answers as JSON,
 * `sse` answers tools/list as an event stream with a notification before
 * the result, `modern` is stateless (2026-07-28). Each lists `tools`.
 */
export async function startRouteUpstreams(tools: Tool[]): Promise<RouteUpstreams> {
  const [json, sse, modern] = await Promise.all([
    startFakeUpstream({ tools: [...tools] }),
    startFakeUpstream({ tools: [...tools] }),
    startFakeUpstream({ tools: [...tools], modern: true, sessions: false }),
  ]);
  sse.on('tools/list', (message: Message) => ({
    sse: [{ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'listing tools' } }, result(message, { tools: sse.tools })],
  }));
  return {
    json,
    sse,
    modern,
    servers: [
      { name: 'json', url: json.url },
      { name: 'sse', url: sse.url },
      { name: 'modern', url: modern.url },
      { name: 'stdio', command: NODE, args: [EVERYTHING, 'stdio'] },
    ],
    close: async () => {
      await Promise.all([json.close(), sse.close(), modern.close()]);
    },
  };
}
