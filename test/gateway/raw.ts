/**
 * Raw MCP over fetch for the gateway tests: what a client puts on the wire,
 * without an SDK smoothing over status codes or stream details.
 */
import assert from 'node:assert/strict';
import type { AuditEntry } from '../helpers/audit.ts';
import { rpcHeaders } from '../helpers/process.ts';

export const CLIENT_VERSION = '2025-11-25';

export interface RpcMessage {
  jsonrpc: '2.0';
  id?: string | number | null;
  method?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { code: number; message: string; data?: unknown };
}

export interface SseEvent {
  id?: string;
  data: string;
}

/** Parses a complete SSE body (or a prefix of one: the unfinished tail is ignored). */
export function parseSse(text: string): SseEvent[] {
  const events: SseEvent[] = [];
  for (const block of text.replace(/\r\n/g, '\n').split('\n\n').slice(0, -1)) {
    let id: string | undefined;
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':') || line === '') continue;
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'id') id = value;
      else if (field === 'data') data.push(value);
    }
    if (id !== undefined || data.length > 0) events.push({ id, data: data.join('\n') });
  }
  return events;
}

/** Every JSON-RPC message of a response, JSON or SSE (primer events skipped). */
export async function messagesOf(res: Response): Promise<RpcMessage[]> {
  const type = res.headers.get('content-type') ?? '';
  const text = await res.text();
  if (type.startsWith('application/json')) return [JSON.parse(text) as RpcMessage];
  if (type.startsWith('text/event-stream')) {
    return parseSse(text).filter((e) => e.data !== '').map((e) => JSON.parse(e.data) as RpcMessage);
  }
  if (text === '') return [];
  throw new Error(`unexpected content type ${type} (HTTP ${res.status}): ${text.slice(0, 200)}`);
}

/** The final response to request `id` among the messages of an answer. */
export async function responseOf(res: Response, id: string | number): Promise<RpcMessage> {
  const messages = await messagesOf(res);
  const answer = messages.find((m) => m.id === id && (m.result !== undefined || m.error !== undefined));
  assert.ok(answer, `no response to ${id} in ${JSON.stringify(messages)}`);
  return answer;
}

export function post(url: string, body: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: rpcHeaders(headers),
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal: signal ?? AbortSignal.timeout(30_000),
  });
}

export interface RawSession {
  url: string;
  id: string;
  protocol: string;
  /** Headers a client sends on every request after initialize. */
  headers: Record<string, string>;
  initializeResult: Record<string, unknown>;
  /** POSTs a request and returns its final response (asserting HTTP 200). */
  call(method: string, params?: Record<string, unknown>, id?: string | number): Promise<RpcMessage>;
  callTool(name: string, args?: Record<string, unknown>): Promise<RpcMessage>;
  post(body: unknown, headers?: Record<string, string>, signal?: AbortSignal): Promise<Response>;
}

let nextId = 1;

/** An initialize request as a session-based client sends it. */
export function initializeMessage(id: string | number, clientName = 'mandate-tests') {
  return {
    jsonrpc: '2.0' as const,
    id,
    method: 'initialize',
    params: { protocolVersion: CLIENT_VERSION, capabilities: {}, clientInfo: { name: clientName, version: '1.0.0' } },
  };
}

/** initialize + notifications/initialized, as a session-based (2025-11-25) client does. */
export async function openSession(url: string, clientName = 'mandate-tests', extra: Record<string, string> = {}): Promise<RawSession> {
  const res = await post(url, initializeMessage('init', clientName), extra);
  assert.equal(res.status, 200, `initialize answered HTTP ${res.status}`);
  const id = res.headers.get('mcp-session-id');
  assert.ok(id, 'initialize answer carries Mcp-Session-Id');
  const answer = await responseOf(res, 'init');
  assert.ok(answer.result, `initialize failed: ${JSON.stringify(answer.error)}`);
  const protocol = String(answer.result.protocolVersion);
  const headers = { ...extra, 'mcp-session-id': id, 'mcp-protocol-version': protocol };
  const initialized = await post(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, headers);
  assert.equal(initialized.status, 202);
  await initialized.body?.cancel();
  const session: RawSession = {
    url,
    id,
    protocol,
    headers,
    initializeResult: answer.result,
    post: (body, extra = {}, signal) => post(url, body, { ...headers, ...extra }, signal),
    async call(method, params, requestId = `r${nextId++}`) {
      const reply = await session.post({ jsonrpc: '2.0', id: requestId, method, ...(params ? { params } : {}) });
      assert.equal(reply.status, 200, `${method} answered HTTP ${reply.status}`);
      return responseOf(reply, requestId);
    },
    callTool: (name, args = {}) => session.call('tools/call', { name, arguments: args }),
  };
  return session;
}

/** The text of a tools/call result's first content block. */
export function toolText(message: RpcMessage): string {
  assert.ok(message.result, `expected a result, got ${JSON.stringify(message.error)}`);
  const content = message.result.content as { type: string; text?: string }[] | undefined;
  return content?.[0]?.text ?? '';
}

/** The names in a list answer (`tools` by default; `field` and `key` for prompts, resources and templates). */
export function listedNames(answer: RpcMessage, field = 'tools', key = 'name'): string[] {
  return ((answer.result?.[field] ?? []) as Record<string, string>[]).map((item) => item[key] as string);
}

/** Reads an error answer: HTTP status and the JSON-RPC error body. */
export async function errorOf(res: Response): Promise<{ status: number; body: RpcMessage }> {
  const text = await res.text();
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/, `HTTP ${res.status}: ${text.slice(0, 200)}`);
  return { status: res.status, body: JSON.parse(text) as RpcMessage };
}

/** Prometheus text → value of one sample (labels matched exactly, any order); undefined if absent. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.startsWith(name)) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) found[pair[1] ?? ''] = pair[2] ?? '';
    const wanted = Object.entries(labels);
    if (wanted.length !== Object.keys(found).length) continue;
    if (wanted.every(([key, value]) => found[key] === value)) return Number(match[3]);
  }
  return undefined;
}

export async function metricsText(base: string): Promise<string> {
  const res = await fetch(`${base}/metrics`, { signal: AbortSignal.timeout(10_000) });
  assert.equal(res.status, 200);
  return res.text();
}

export type { AuditEntry } from '../helpers/audit.ts';

/** `mandate audit list --json` against a gateway's store. */
export async function auditEvents(cli: (args: string[]) => Promise<{ code: number; stdout: string; stderr: string }>, extra: string[] = []): Promise<AuditEntry[]> {
  const out = await cli(['audit', 'list', '--json', ...extra]);
  assert.equal(out.code, 0, `audit list failed: ${out.stderr}`);
  return JSON.parse(out.stdout) as AuditEntry[];
}

/** Polls until `check` passes (audit events are written asynchronously after an answer in some paths). */
export async function eventually<T>(get: () => Promise<T>, check: (value: T) => boolean, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T = await get();
  while (!check(last)) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; last value: ${JSON.stringify(last).slice(0, 2000)}`);
    await new Promise((resolve) => setTimeout(resolve, 150));
    last = await get();
  }
  return last;
}

/**
 * Reads an SSE response incrementally until `enough(events)` holds or the
 * stream ends; returns the events so far and whether the stream ended.
 */
export async function readEventsUntil(res: Response, enough: (events: SseEvent[]) => boolean, timeoutMs = 10_000): Promise<{ events: SseEvent[]; ended: boolean }> {
  assert.ok(res.body, 'response has a body');
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      const events = parseSse(text);
      if (enough(events)) return { events, ended: false };
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`timed out reading events; got so far: ${text.slice(0, 2000)}`);
      let timer: NodeJS.Timeout | undefined;
      const next = await Promise.race([
        reader.read(),
        new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), left);
        }),
      ]);
      clearTimeout(timer);
      if (next === 'timeout') continue;
      if (next.done) return { events: parseSse(text), ended: true };
      text += decoder.decode(next.value, { stream: true });
    }
  } finally {
    reader.releaseLock();
  }
}
