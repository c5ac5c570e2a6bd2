/**
 * The HTTP front door: health, readiness, metrics, and the MCP endpoints
 * {issuer}/mcp/NAME. One place turns errors into responses.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { asGatewayError, GatewayError, sendError } from './errors.ts';
import type { Gateway } from './gateway.ts';
import { checkOrigin } from './endpoint/common.ts';
import { handleDelete } from './endpoint/delete.ts';
import { handleGet } from './endpoint/get.ts';
import { handlePost } from './endpoint/post.ts';
import type { Store } from '../store/types.ts';

export interface HttpDeps {
  gateway: Gateway;
  store: Store;
  /** Settles when start-up is recorded; until then requests wait and /readyz says 503. */
  started: Promise<void>;
}

/** The path prefix of MCP endpoints, from the issuer (which may have a path). */
function mcpPrefix(issuer: string): string {
  return `${new URL(issuer).pathname.replace(/\/$/, '')}/mcp/`;
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

async function ready(deps: HttpDeps, res: ServerResponse, started: boolean): Promise<void> {
  if (!started) {
    sendJson(res, 503, { status: 'starting' });
    return;
  }
  try {
    await deps.store.ping();
    sendJson(res, 200, { status: 'ready', store: deps.store.kind, servers: deps.gateway.servers.size });
  } catch {
    sendJson(res, 503, { status: 'unavailable', reason: 'store unreachable' });
  }
}

async function mcp(deps: HttpDeps, name: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { gateway } = deps;
  checkOrigin(req, gateway.config.gateway.allowedOrigins);
  const server = gateway.server(name);
  switch (req.method) {
    case 'POST':
      return handlePost(gateway, server, req, res);
    case 'GET':
      return handleGet(gateway, server, req, res);
    case 'DELETE':
      return handleDelete(gateway, server, req, res);
    default:
      throw new GatewayError('method_not_allowed', `method ${req.method} is not allowed here`, { headers: { allow: 'GET, POST, DELETE' } });
  }
}

export function createHttpServer(deps: HttpDeps): http.Server {
  const prefix = mcpPrefix(deps.gateway.config.issuer);
  const { metrics, log } = deps.gateway.deps;
  const serverLabel = (req: IncomingMessage): string => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const name = path.startsWith(prefix) ? path.slice(prefix.length) : '';
    return deps.gateway.servers.has(name) ? name : 'gateway';
  };
  let started = false;
  deps.started.then(() => (started = true), () => undefined);
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path.startsWith(prefix)) {
      if (!started) await deps.started;
      const name = path.slice(prefix.length);
      if (name.length === 0 || name.includes('/')) throw new GatewayError('unknown_server', 'no MCP server at this path');
      return mcp(deps, name, req, res);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new GatewayError('method_not_allowed', 'not found', { headers: { allow: 'GET' } });
    switch (path) {
      case '/healthz':
        return sendJson(res, 200, { status: 'alive' });
      case '/readyz':
        return ready(deps, res, started);
      case '/metrics': {
        const text = await metrics.registry.metrics();
        res.writeHead(200, { 'content-type': metrics.registry.contentType });
        res.end(text);
        return;
      }
      default:
        sendJson(res, 404, { error: 'not_found' });
    }
  };
  const server = http.createServer({ requestTimeout: 60_000, headersTimeout: 30_000, keepAliveTimeout: 65_000 }, (req, res) => {
    handle(req, res).catch((error: unknown) => {
      const failure = asGatewayError(error);
      if (failure.kind === 'internal') log.error({ err: failure.detail }, 'unexpected error while handling a request');
      metrics.errors.inc({ server: serverLabel(req), kind: failure.kind });
      sendError(res, failure);
    });
  });
  return server;
}
