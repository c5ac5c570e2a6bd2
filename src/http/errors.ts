/**
 * The one place an error becomes an answer on the wire, for the gateway and
 * for the identity plane: a GatewayError as a JSON-RPC error body (or, for a
 * refused token, an OAuth error body with its challenge), an OAuthRefusal as
 * an OAuth error body (RFC 6749 §5.2, RFC 6750 §3). Statuses and codes come
 * from one table per error type (src/gateway/errors.ts, the refusal itself);
 * every answer is `no-store`.
 */
import type { ServerResponse } from 'node:http';
import { GatewayError } from '../gateway/errors.ts';
import { OAuthRefusal } from '../identity/errors.ts';

export interface WireAnswer {
  status: number;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

export function wireAnswer(error: GatewayError | OAuthRefusal): WireAnswer {
  const headers = { 'cache-control': 'no-store', ...error.headers };
  if (error instanceof OAuthRefusal) return { status: error.status, headers, body: { error: error.error, error_description: error.message } };
  const oauth = error.oauthError;
  const body = oauth === undefined ? (error.toResponse(error.requestId) as unknown as Record<string, unknown>) : { error: oauth, error_description: error.message };
  return { status: error.status, headers, body };
}

/** Writes an error answer, if the response is still open (else ends what was started). */
export function sendError(res: ServerResponse, error: GatewayError | OAuthRefusal, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) {
    if (!res.writableEnded) res.end();
    return;
  }
  const answer = wireAnswer(error);
  const text = JSON.stringify(answer.body);
  res.writeHead(answer.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...answer.headers, ...headers });
  res.end(text);
}
