/** DELETE {issuer}/mcp/NAME: the client ends its session. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { GatewayError } from '../errors.ts';
import type { Gateway } from '../gateway.ts';
import type { Caller } from '../forward.ts';
import type { ResolvedServer } from '../../config/load.ts';
import { header } from './common.ts';

export async function handleDelete(gateway: Gateway, server: ResolvedServer, req: IncomingMessage, res: ServerResponse, caller: Caller | null): Promise<void> {
  const sessionId = header(req, 'mcp-session-id');
  if (sessionId === undefined) {
    throw new GatewayError('method_not_allowed', 'DELETE needs an Mcp-Session-Id', { headers: { allow: 'POST' } });
  }
  const session = gateway.session(sessionId, server, caller);
  await session.close('client ended the session');
  res.writeHead(200, { 'content-length': '0' }).end();
}
