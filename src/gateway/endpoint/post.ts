/**
 * POST {issuer}/mcp/NAME: one JSON-RPC message from the client.
 * Steps: (token, verified by the front door) → headers → body → parse →
 * scope → era → session → dispatch. (Policy slots in before dispatch.)
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { GatewayError } from '../errors.ts';
import type { Gateway } from '../gateway.ts';
import { MessageError, parseMessage, type Classified } from '../jsonrpc.ts';
import { LEGACY_VERSIONS, type Session } from '../session.ts';
import type { ResolvedServer } from '../../config/load.ts';
import { checkPostHeaders, header, readBody } from './common.ts';
import type { Caller } from '../forward.ts';
import { AuthError, type Principal } from '../../identity/verify.ts';
import { missingScope } from '../../identity/scopes.ts';

/** The verified caller of one request: null when tokens are not required and none was sent. */
export interface Access {
  caller: Caller;
  principal: Principal;
}

/** A tool-scoped token reaches only its tools; answers to server requests need no scope. */
function checkScope(server: ResolvedServer, access: Access | null, parsed: Classified): void {
  if (access === null || parsed.kind === 'response') return;
  const { method } = parsed.message;
  const params = parsed.message.params as { name?: unknown } | undefined;
  const tool = method === 'tools/call' && typeof params?.name === 'string' ? params.name : null;
  const needed = missingScope(server.name, access.principal.grants, method, tool);
  if (needed !== null) {
    throw new AuthError('insufficient_scope', tool !== null ? `the token does not allow the tool "${tool.slice(0, 128)}"` : `the token does not allow ${method.slice(0, 64)}`, { scope: needed, principal: access.principal });
  }
}
import { handleStateless, isModern } from './stateless.ts';

function parse(text: string): Classified {
  try {
    return parseMessage(text);
  } catch (error) {
    if (error instanceof MessageError) {
      const failure = new GatewayError(error.code === -32700 ? 'parse' : 'invalid_request', error.message);
      failure.requestId = error.id;
      throw failure;
    }
    throw error;
  }
}

/** After initialize, a client states the negotiated version on every request. */
function checkVersion(req: IncomingMessage, session: Session): void {
  const version = header(req, 'mcp-protocol-version');
  if (version === undefined || session.protocolVersion === null) return;
  if (!(LEGACY_VERSIONS as readonly string[]).includes(version)) {
    throw new GatewayError('unsupported_version', `unsupported MCP-Protocol-Version "${version.slice(0, 40)}"`, {
      data: { supported: [...LEGACY_VERSIONS], requested: version.slice(0, 40) },
    });
  }
  if (version !== session.protocolVersion) {
    throw new GatewayError('invalid_request', `MCP-Protocol-Version "${version}" differs from the version negotiated for this session`);
  }
}

async function dispatch(session: Session, parsed: Classified, res: ServerResponse): Promise<void> {
  switch (parsed.kind) {
    case 'request':
      await session.request(parsed.message, res);
      return;
    case 'notification':
      await session.notification(parsed.message);
      res.writeHead(202, { 'mcp-session-id': session.id }).end();
      return;
    case 'response':
      await session.response(parsed.message);
      res.writeHead(202, { 'mcp-session-id': session.id }).end();
      return;
  }
}

export async function handlePost(gateway: Gateway, server: ResolvedServer, req: IncomingMessage, res: ServerResponse, access: Access | null): Promise<void> {
  checkPostHeaders(req);
  const parsed = parse(await readBody(req, gateway.config.gateway.maxBodyBytes));
  const requestId = parsed.kind === 'request' ? parsed.message.id : null;
  checkScope(server, access, parsed);
  const caller = access?.caller ?? null;
  try {
    if (isModern(req, parsed.message)) {
      await handleStateless(gateway, server, req, res, parsed, caller);
      return;
    }
    const sessionId = header(req, 'mcp-session-id');
    if (sessionId === undefined) {
      if (parsed.kind === 'request' && parsed.message.method === 'initialize') {
        await gateway.openSession(server, caller).initialize(parsed.message, res);
        return;
      }
      throw new GatewayError('session_missing', 'Bad Request: Mcp-Session-Id header is required (send initialize first)');
    }
    const session = gateway.session(sessionId, server, caller);
    checkVersion(req, session);
    await dispatch(session, parsed, res);
  } catch (error) {
    if (error instanceof GatewayError) error.requestId ??= requestId;
    throw error;
  }
}
