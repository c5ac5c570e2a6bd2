/**
 * GET {issuer}/mcp/NAME: the standalone server-to-client stream of a session,
 * or the resumption of a stream after Last-Event-ID. The stateless revision
 * has no GET: without a session it is 405.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { GatewayError } from '../errors.ts';
import type { Gateway } from '../gateway.ts';
import type { Caller } from '../forward.ts';
import type { ResolvedServer } from '../../config/load.ts';
import { checkGetHeaders, header } from './common.ts';

export function handleGet(gateway: Gateway, server: ResolvedServer, req: IncomingMessage, res: ServerResponse, caller: Caller | null): void {
  const sessionId = header(req, 'mcp-session-id');
  if (sessionId === undefined) {
    throw new GatewayError('method_not_allowed', 'GET needs an Mcp-Session-Id (stateless clients use POST only)', { headers: { allow: 'POST' } });
  }
  checkGetHeaders(req);
  const session = gateway.session(sessionId, server, caller);
  session.listen(res, header(req, 'last-event-id'));
}
