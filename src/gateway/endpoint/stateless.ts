/**
 * Stateless requests (protocol revision 2026-07-28): no session; every POST
 * carries its protocol version in `_meta` and mirrors method and name into
 * headers, which must match the body. Forwarded to HTTP upstreams that speak
 * the revision; a server that does not gets an UnsupportedProtocolVersion
 * answer listing the session-based versions, so dual-era clients fall back.
 */
import type { IncomingMessage } from 'node:http';
import type { RequestContext } from '../context.ts';
import { GatewayError } from '../errors.ts';
import { startExchange } from '../forward.ts';
import type { Gateway } from '../gateway.ts';
import type { Classified, JsonRpcRequest } from '../jsonrpc.ts';
import type { RegisteredServer } from '../registry.ts';
import { LEGACY_VERSIONS } from '../session.ts';
import { ResponseChannel } from '../stream.ts';
import { header } from './common.ts';

export const MODERN_VERSIONS = ['2026-07-28'] as const;
export const FIRST_MODERN = '2026-07-28';
const META_VERSION = 'io.modelcontextprotocol/protocolVersion';
const NAMED_METHODS: Record<string, 'name' | 'uri'> = { 'tools/call': 'name', 'prompts/get': 'name', 'resources/read': 'uri' };
const ERA_TTL_MS = { modern: 5 * 60_000, legacy: 60_000 };

/** Whether a POST belongs to the stateless revision: by header or by `_meta`. */
export function isModern(req: IncomingMessage, message: Classified['message']): boolean {
  const version = header(req, 'mcp-protocol-version');
  if (version !== undefined && version >= FIRST_MODERN) return true;
  const meta = 'params' in message ? message.params?._meta : undefined;
  return typeof meta === 'object' && meta !== null && META_VERSION in meta;
}

function mismatch(text: string): GatewayError {
  return new GatewayError('header_mismatch', `Header mismatch: ${text}`);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes the `=?base64?…?=` sentinel form; checks plain values for header-safe characters. */
export function decodeHeaderValue(value: string, name: string): string {
  if (value.startsWith('=?base64?') && value.endsWith('?=')) {
    const encoded = value.slice(9, -2);
    const bytes = Buffer.from(encoded, 'base64');
    // Only canonical base64 (it re-encodes to itself) of valid UTF-8: lenient
    // decoding would let two different header values mean the same name.
    if (bytes.toString('base64') !== encoded) throw mismatch(`${name} is not valid base64`);
    try {
      return utf8.decode(bytes);
    } catch {
      throw mismatch(`${name} is not valid UTF-8`);
    }
  }
  if (!/^[\x20-\x7e\t]*$/.test(value)) throw mismatch(`${name} contains characters that need the base64 form`);
  return value;
}

function unsupported(requested: string): GatewayError {
  return new GatewayError('unsupported_version', 'Unsupported protocol version', {
    data: { supported: [...MODERN_VERSIONS, ...LEGACY_VERSIONS], requested },
  });
}

/** Checks headers against the body, as every server that reads the body must. */
export function validateModern(req: IncomingMessage, message: Classified['message']): { version: string; headers: Record<string, string> } {
  const version = header(req, 'mcp-protocol-version');
  if (version === undefined) throw mismatch('MCP-Protocol-Version header is required');
  const meta = ('params' in message ? message.params?._meta : undefined) as Record<string, unknown> | undefined;
  if (meta?.[META_VERSION] !== version) {
    throw mismatch(`MCP-Protocol-Version header "${version.slice(0, 40)}" does not match _meta ${META_VERSION}`);
  }
  if (!(MODERN_VERSIONS as readonly string[]).includes(version)) throw unsupported(version);
  if (!('method' in message)) throw new GatewayError('invalid_request', 'clients must not send JSON-RPC responses in this protocol revision');
  const method = header(req, 'mcp-method');
  if (method === undefined) throw mismatch('Mcp-Method header is required');
  if (method !== message.method) throw mismatch(`Mcp-Method header value does not match body method "${message.method.slice(0, 64)}"`);
  const headers: Record<string, string> = { 'mcp-protocol-version': version, 'mcp-method': method };
  const field = NAMED_METHODS[message.method];
  if (field) {
    const raw = header(req, 'mcp-name');
    if (raw === undefined) throw mismatch('Mcp-Name header is required for this method');
    const body = message.params?.[field];
    if (decodeHeaderValue(raw, 'Mcp-Name') !== body) throw mismatch(`Mcp-Name header value does not match params.${field}`);
    headers['mcp-name'] = raw;
  }
  for (const [name, value] of Object.entries(req.headers)) {
    if (!name.startsWith('mcp-param-') || typeof value !== 'string') continue;
    decodeHeaderValue(value, name);
    headers[name] = value;
  }
  return { version, headers };
}

async function era(gateway: Gateway, server: RegisteredServer & { url: string }): Promise<'modern' | 'legacy'> {
  const key = gateway.eraKey(server);
  const cached = gateway.eras.get(key);
  if (cached && cached.until > Date.now()) return cached.era;
  const upstream = gateway.statelessUpstream(server);
  const probe: JsonRpcRequest = {
    jsonrpc: '2.0',
    id: 'mandate-era-probe',
    method: 'server/discover',
    params: { _meta: { [META_VERSION]: FIRST_MODERN, 'io.modelcontextprotocol/clientInfo': { name: 'mandate', version: '0' }, 'io.modelcontextprotocol/clientCapabilities': {} } },
  };
  let found: 'modern' | 'legacy' = 'legacy';
  try {
    const { message: response } = await upstream.request(probe, {
      onMessage: () => undefined,
      signal: AbortSignal.timeout(gateway.settings.upstreamTimeoutMs),
      headers: { 'mcp-protocol-version': FIRST_MODERN, 'mcp-method': 'server/discover' },
      principal: null,
    });
    const versions = 'result' in response ? response.result.supportedVersions : undefined;
    if (Array.isArray(versions) && versions.includes(FIRST_MODERN)) found = 'modern';
  } catch (error) {
    if (error instanceof GatewayError && error.kind === 'upstream_unavailable' && !error.detail?.startsWith('HTTP')) throw error;
  }
  // The server may have changed while the probe ran: keep only what still describes it.
  if (gateway.registry.isCurrent(server)) gateway.eras.set(key, { era: found, until: Date.now() + ERA_TTL_MS[found] });
  return found;
}

export async function handleStateless(ctx: RequestContext, gateway: Gateway): Promise<void> {
  const { server, req, res, parsed } = ctx;
  const { version, headers } = validateModern(req, parsed.message);
  if (server.url === undefined) throw unsupportedForServer(version);
  const target = server as RegisteredServer & { url: string };
  if ((await era(gateway, target)) !== 'modern') throw unsupportedForServer(version);
  const upstream = gateway.statelessUpstream(target);
  if (parsed.kind !== 'request') {
    await upstream.send(parsed.message as never);
    res.writeHead(202).end();
    return;
  }
  const exchange = startExchange(
    parsed.message,
    {
      server,
      principal: ctx.principal,
      caller: ctx.caller,
      upstream,
      channel: new ResponseChannel(res, { resumable: false, bufferLimit: 0, headers: {}, primeEvents: false, sseAfterMs: 5000 }),
      filters: gateway.filters,
      idleTimeoutMs: server.timeoutMs ?? gateway.settings.upstreamTimeoutMs,
      maxDurationMs: gateway.settings.maxRequestMs,
      session: null,
      protocol: version,
      address: ctx.address,
      decision: ctx.decision,
      marks: ctx.marks,
      headers,
      notifyCancel: false,
    },
    gateway.deps,
  );
  gateway.track(exchange);
  // Closing the response stream is the client's cancellation in this revision.
  res.once('close', () => {
    if (!res.writableFinished) exchange.cancel();
  });
  await exchange.done;
}

/** This server speaks only session-based versions (or is stdio): say so, so the client can fall back. */
function unsupportedForServer(requested: string): GatewayError {
  return new GatewayError('unsupported_version', 'Unsupported protocol version for this server', {
    data: { supported: [...LEGACY_VERSIONS], requested },
  });
}
