/**
 * The HTTP front door: health, readiness, metrics, the MCP endpoints
 * {issuer}/mcp/NAME (each request walks its method's steps, steps.ts), the
 * sub-registry at {issuer}/v0.1 and the admin API at {issuer}/admin/v1, and
 * everything else to the identity plane (discovery, OAuth endpoints, login
 * and consent). One place turns errors into answers.
 */
import { sendJson } from '../http/json.ts';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { asGatewayError, GatewayError, logInternal } from './errors.ts';
import { sendError } from '../http/errors.ts';
import type { Gateway } from './gateway.ts';
import { RequestContext } from './context.ts';
import { PIPELINES, runSteps } from './steps.ts';
import type { Store } from '../store/types.ts';
import type { Identity } from '../identity/service.ts';
import { clientAddress } from '../identity/service.ts';
import { issuerPath } from '../config/load.ts';

export interface HttpDeps {
  gateway: Gateway;
  store: Store;
  identity: Identity;
  /** The public base URL (MCP endpoints are under its path). */
  issuer: string;
  /** Addresses of reverse proxies whose X-Forwarded-For is believed. */
  trustedProxies: () => readonly string[];
  /** Settles when start-up is recorded; until then requests wait and /readyz says 503. */
  started: Promise<void>;
  /** The catalog's sub-registry API at {issuer}/v0.1/ (src/catalog/registry-http.ts). */
  registryApi?: (req: IncomingMessage, res: ServerResponse, pathAndQuery: string, address: string) => Promise<void>;
  /** The admin API at {issuer}/admin/v1/ (src/admin/api.ts). */
  adminApi?: (req: IncomingMessage, res: ServerResponse, pathAndQuery: string, address: string) => Promise<void>;
}

async function ready(deps: HttpDeps, res: ServerResponse, started: boolean): Promise<void> {
  if (!started) {
    sendJson(res, 503, { status: 'starting' });
    return;
  }
  const policy = deps.gateway.policy;
  if (policy !== null && policy.problem !== null) {
    sendJson(res, 503, { status: 'unavailable', reason: 'no policy set is in force', detail: policy.problem });
    return;
  }
  try {
    await deps.store.ping();
    sendJson(res, 200, { status: 'ready', store: deps.store.kind, servers: deps.gateway.registry.size, ...(policy?.engine ? { policySet: policy.engine.hash } : {}) });
  } catch {
    sendJson(res, 503, { status: 'unavailable', reason: 'store unreachable' });
  }
}

/** One request to an MCP endpoint: its method's steps, in order. */
async function mcp(deps: HttpDeps, name: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const ctx = new RequestContext(req, res, name, clientAddress(req, deps.trustedProxies()));
  const steps = PIPELINES[req.method ?? ''];
  try {
    if (steps === undefined) throw new GatewayError('method_not_allowed', `method ${String(req.method).slice(0, 16)} is not allowed here`, { headers: { allow: 'GET, POST, DELETE' } });
    await runSteps(steps, ctx, deps.gateway);
  } catch (error) {
    if (error instanceof GatewayError) error.requestId ??= ctx.requestId;
    throw error;
  }
}

export function createHttpServer(deps: HttpDeps): http.Server {
  const prefix = `${issuerPath(deps.issuer)}/mcp/`;
  const registryPrefix = `${issuerPath(deps.issuer)}/v0.1`;
  const adminPrefix = `${issuerPath(deps.issuer)}/admin/v1`;
  const { metrics, log } = deps.gateway.deps;
  const serverLabel = (req: IncomingMessage): string => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const name = path.startsWith(prefix) ? path.slice(prefix.length) : '';
    return deps.gateway.registry.has(name) ? name : 'gateway';
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
    if (deps.registryApi !== undefined && (path === registryPrefix || path.startsWith(`${registryPrefix}/`))) {
      if (!started) await deps.started;
      const url = req.url ?? '/';
      return deps.registryApi(req, res, url.slice(issuerPath(deps.issuer).length), clientAddress(req, deps.trustedProxies()));
    }
    if (deps.adminApi !== undefined && (path === adminPrefix || path.startsWith(`${adminPrefix}/`))) {
      if (!started) await deps.started;
      const url = req.url ?? '/';
      return deps.adminApi(req, res, url.slice(issuerPath(deps.issuer).length), clientAddress(req, deps.trustedProxies()));
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
      logInternal(log, failure, `handling ${String(req.method).slice(0, 16)} ${serverLabel(req)}`);
      if (!failure.counted) metrics.errors.inc({ server: serverLabel(req), kind: failure.kind });
      sendError(res, failure);
    });
  });
  return server;
}
