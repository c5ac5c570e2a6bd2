/**
 * Trivial MCP Streamable HTTP server used as the benchmark baseline.
 *
 * Raw node:http, no SDK, as little work per request as possible: one endpoint
 * (`/mcp`), one tool (`echo`), JSON responses only (never SSE).
 *
 *   node bench/upstream.ts --port N     (N = 0 picks a free port)
 *
 * Listens on 127.0.0.1 only. When ready it prints one JSON line on stdout:
 * `{"listening":<port>}`.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { serve } from './serve.ts';

const SUPPORTED_VERSIONS = new Set(['2025-06-18', '2025-11-25']);
const LATEST_VERSION = '2025-11-25';
const MAX_BODY_BYTES = 1024 * 1024;
/** Bounded session table: the oldest session is forgotten past this. */
const MAX_SESSIONS = 10_000;

const ECHO_TOOL = {
  name: 'echo',
  description: 'Returns its message unchanged.',
  inputSchema: {
    type: 'object',
    properties: { message: { type: 'string' } },
    required: ['message'],
  },
};

const sessions = new Set<string>();

type Id = string | number;

function sendJson(res: ServerResponse, status: number, body: unknown, extraHeaders?: Record<string, string>): void {
  const text = JSON.stringify(body);
  const headers: Record<string, string | number> = {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  };
  if (extraHeaders) Object.assign(headers, extraHeaders);
  res.writeHead(status, headers);
  res.end(text);
}

function sendEmpty(res: ServerResponse, status: number): void {
  res.writeHead(status, { 'content-length': 0 });
  res.end();
}

function rpcError(res: ServerResponse, status: number, id: Id | null, code: number, message: string): void {
  sendJson(res, status, { jsonrpc: '2.0', id, error: { code, message } });
}

function rpcResult(res: ServerResponse, id: Id, result: unknown, extraHeaders?: Record<string, string>): void {
  sendJson(res, 200, { jsonrpc: '2.0', id, result }, extraHeaders);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function handlePost(req: IncomingMessage, res: ServerResponse, raw: string): void {
  let msg: unknown;
  try {
    msg = JSON.parse(raw);
  } catch {
    rpcError(res, 400, null, -32700, 'Parse error');
    return;
  }
  if (!isObject(msg) || msg['jsonrpc'] !== '2.0') {
    rpcError(res, 400, null, -32600, 'Invalid Request');
    return;
  }
  const method = msg['method'];
  const rawId = msg['id'];
  const hasId = typeof rawId === 'string' || typeof rawId === 'number';
  const sessionId = header(req, 'mcp-session-id');

  if (method === 'initialize') {
    if (!hasId) {
      rpcError(res, 400, null, -32600, 'initialize must be a request');
      return;
    }
    const params = isObject(msg['params']) ? msg['params'] : {};
    const asked = params['protocolVersion'];
    const version = typeof asked === 'string' && SUPPORTED_VERSIONS.has(asked) ? asked : LATEST_VERSION;
    const id = randomUUID();
    sessions.add(id);
    if (sessions.size > MAX_SESSIONS) {
      const oldest = sessions.values().next().value;
      if (oldest !== undefined) sessions.delete(oldest);
    }
    rpcResult(
      res,
      rawId,
      {
        protocolVersion: version,
        capabilities: { tools: {} },
        serverInfo: { name: 'mandate-bench-upstream', version: '0.1.0' },
      },
      { 'mcp-session-id': id },
    );
    return;
  }

  if (sessionId === undefined) {
    rpcError(res, 400, hasId ? rawId : null, -32000, 'Missing Mcp-Session-Id');
    return;
  }
  if (!sessions.has(sessionId)) {
    rpcError(res, 404, hasId ? rawId : null, -32001, 'Session not found');
    return;
  }

  // Notifications and client responses: accepted, no body.
  if (!hasId || typeof method !== 'string') {
    sendEmpty(res, 202);
    return;
  }

  switch (method) {
    case 'tools/call': {
      const params = isObject(msg['params']) ? msg['params'] : {};
      if (params['name'] !== 'echo') {
        rpcError(res, 200, rawId, -32602, `Unknown tool: ${String(params['name'])}`);
        return;
      }
      const args = isObject(params['arguments']) ? params['arguments'] : {};
      const message = args['message'];
      if (typeof message !== 'string') {
        rpcError(res, 200, rawId, -32602, 'echo: message must be a string');
        return;
      }
      rpcResult(res, rawId, { content: [{ type: 'text', text: message }] });
      return;
    }
    case 'tools/list':
      rpcResult(res, rawId, { tools: [ECHO_TOOL] });
      return;
    case 'ping':
      rpcResult(res, rawId, {});
      return;
    default:
      rpcError(res, 200, rawId, -32601, `Method not found: ${method}`);
  }
}

const server = createServer((req, res) => {
  const path = req.url === undefined ? '' : req.url.split('?', 1)[0];
  if (path !== '/mcp') {
    sendEmpty(res, 404);
    req.resume();
    return;
  }
  if (req.method === 'POST') {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    req.on('data', (chunk: Buffer) => {
      if (tooBig) return;
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        tooBig = true;
        rpcError(res, 413, null, -32600, 'Request body too large');
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (tooBig) return;
      const raw = chunks.length === 1 ? (chunks[0] as Buffer).toString('utf8') : Buffer.concat(chunks).toString('utf8');
      handlePost(req, res, raw);
    });
    return;
  }
  req.resume();
  if (req.method === 'DELETE') {
    const sessionId = header(req, 'mcp-session-id');
    if (sessionId === undefined) {
      sendEmpty(res, 400);
      return;
    }
    if (!sessions.delete(sessionId)) {
      sendEmpty(res, 404);
      return;
    }
    sendEmpty(res, 200);
    return;
  }
  // No server-initiated stream (GET) in this baseline.
  res.writeHead(405, { allow: 'POST, DELETE', 'content-length': 0 });
  res.end();
});

const { values } = parseArgs({ options: { port: { type: 'string', default: '0' } } });
const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write(`upstream: invalid --port ${String(values.port)}\n`);
  process.exit(2);
}
serve(server, port);
