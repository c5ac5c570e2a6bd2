/**
 * The HTTP front door: health, readiness, metrics, the MCP endpoints
 * {issuer}/mcp/NAME (each request authenticated before anything else), and
 * everything else to the identity plane (discovery, OAuth endpoints, login
 * and consent). One place turns errors into responses.
 */
import { sendJson } from '../http/json.ts';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { asGatewayError, GatewayError, sendError } from './errors.ts';
import type { Gateway } from './gateway.ts';
import { checkOrigin } from './endpoint/common.ts';
import { handleDelete } from './endpoint/delete.ts';
import { handleGet } from './endpoint/get.ts';
import { handlePost, type Access } from './endpoint/post.ts';
import type { Store } from '../store/types.ts';
import type { Identity } from '../identity/service.ts';
import { AuthError, type Principal } from '../identity/verify.ts';
import type { Caller } from './forward.ts';
import { issuerPath, type ResolvedServer } from '../config/load.ts';

export interface HttpDeps {
  gateway: Gateway;
  store: Store;
  identity: Identity;
  /** Settles when start-up is recorded; until then requests wait and /readyz says 503. */
  started: Promise<void>;
}

/** The path prefix of MCP endpoints, from the issuer (which may have a path). */
function mcpPrefix(issuer: string): string {
  return `${issuerPath(issuer)}/mcp/`;
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

/** One Caller per verified token (principals are cached by the verifier, so this is too). */
const callers = new WeakMap<Principal, Caller>();
function callerOf(principal: Principal): Caller {
  let caller = callers.get(principal);
  if (caller === undefined) {
    caller = { actor: principal.sub, clientId: principal.clientId, key: `${principal.sub}\n${principal.clientId}`, tokenRef: principal.tokenRef };
    callers.set(principal, caller);
  }
  return caller;
}

/** A refused request: recorded (without the token), answered with the challenge the client needs. */
function refuse(deps: HttpDeps, server: ResolvedServer, req: IncomingMessage, res: ServerResponse, error: AuthError): void {
  const { audit, metrics } = deps.gateway.deps;
  audit.emit({
    type: 'auth.rejected',
    actor: error.principal?.sub ?? null,
    server: server.name,
    outcome: 'denied',
    reason: error.reason,
    data: {
      detail: error.message,
      method: req.method ?? null,
      address: req.socket.remoteAddress ?? null,
      ...(error.principal ? { client_id: error.principal.clientId, token: error.principal.tokenRef } : {}),
      ...(error.scope ? { scope: error.scope } : {}),
    },
  });
  metrics.errors.inc({ server: server.name, kind: `auth_${error.reason}` });
  const challenge = deps.identity.challenge(server, error);
  const body = JSON.stringify({ error: challenge.error, error_description: challenge.description });
  res.writeHead(challenge.status, { ...challenge.headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

async function mcp(deps: HttpDeps, name: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { gateway } = deps;
  checkOrigin(req, gateway.config.gateway.allowedOrigins);
  const server = gateway.server(name);
  // The client's token is checked here and never goes further: upstream requests are built afresh.
  try {
    const principal = await deps.identity.authenticate(req, server);
    const access: Access | null = principal ? { principal, caller: callerOf(principal) } : null;
    switch (req.method) {
      case 'POST':
        return await handlePost(gateway, server, req, res, access);
      case 'GET':
        return handleGet(gateway, server, req, res, access?.caller ?? null);
      case 'DELETE':
        return await handleDelete(gateway, server, req, res, access?.caller ?? null);
      default:
        throw new GatewayError('method_not_allowed', `method ${req.method} is not allowed here`, { headers: { allow: 'GET, POST, DELETE' } });
    }
  } catch (error) {
    if (error instanceof AuthError && !res.headersSent) return refuse(deps, server, req, res, error);
    throw error;
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
    const probe = path === '/healthz' || path === '/readyz' || path === '/metrics';
    if (!probe) {
      if (!started) await deps.started;
      return deps.identity.handle(req, res);
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
