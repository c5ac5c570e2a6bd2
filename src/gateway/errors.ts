/**
 * Typed gateway errors, mapped to wire codes in one place. The client gets
 * the public message; the private detail goes to the audit log and metrics.
 */
import type { ServerResponse } from 'node:http';
import { errorResponse, RpcCode, type RequestId } from './jsonrpc.ts';

export type ErrorKind =
  | 'parse'
  | 'invalid_request'
  | 'origin'
  | 'method_not_allowed'
  | 'not_acceptable'
  | 'unsupported_media_type'
  | 'body_too_large'
  | 'unknown_server'
  | 'session_missing'
  | 'session_not_found'
  | 'session_limit'
  | 'stream_conflict'
  | 'resume_unknown'
  | 'unsupported_version'
  | 'header_mismatch'
  | 'duplicate_id'
  | 'upstream_unavailable'
  | 'upstream_timeout'
  | 'upstream_protocol'
  | 'upstream_crashed'
  | 'upstream_session_expired'
  | 'audit_unavailable'
  | 'internal';

const WIRE: Record<ErrorKind, { status: number; code: number }> = {
  parse: { status: 400, code: RpcCode.ParseError },
  invalid_request: { status: 400, code: RpcCode.InvalidRequest },
  origin: { status: 403, code: RpcCode.InvalidRequest },
  method_not_allowed: { status: 405, code: RpcCode.InvalidRequest },
  not_acceptable: { status: 406, code: RpcCode.InvalidRequest },
  unsupported_media_type: { status: 415, code: RpcCode.InvalidRequest },
  body_too_large: { status: 413, code: RpcCode.InvalidRequest },
  unknown_server: { status: 404, code: RpcCode.InvalidRequest },
  session_missing: { status: 400, code: RpcCode.UpstreamUnavailable },
  session_not_found: { status: 404, code: RpcCode.RequestTimeout },
  session_limit: { status: 503, code: RpcCode.UpstreamUnavailable },
  stream_conflict: { status: 409, code: RpcCode.InvalidRequest },
  resume_unknown: { status: 400, code: RpcCode.InvalidRequest },
  unsupported_version: { status: 400, code: RpcCode.UnsupportedProtocolVersion },
  header_mismatch: { status: 400, code: RpcCode.HeaderMismatch },
  duplicate_id: { status: 400, code: RpcCode.InvalidRequest },
  upstream_unavailable: { status: 502, code: RpcCode.UpstreamUnavailable },
  upstream_timeout: { status: 504, code: RpcCode.RequestTimeout },
  upstream_protocol: { status: 502, code: RpcCode.UpstreamUnavailable },
  upstream_crashed: { status: 502, code: RpcCode.UpstreamUnavailable },
  upstream_session_expired: { status: 502, code: RpcCode.UpstreamUnavailable },
  audit_unavailable: { status: 503, code: RpcCode.InternalError },
  internal: { status: 500, code: RpcCode.InternalError },
};

export class GatewayError extends Error {
  override readonly name = 'GatewayError';
  readonly kind: ErrorKind;
  /** Never sent to the client: for the audit log and operators. */
  readonly detail: string | undefined;
  readonly data: unknown;
  readonly headers: Record<string, string>;
  /** The id of the request this error answers, once known. */
  requestId: RequestId | null = null;

  constructor(kind: ErrorKind, publicMessage: string, options: { detail?: string; data?: unknown; headers?: Record<string, string>; cause?: unknown } = {}) {
    super(publicMessage, { cause: options.cause });
    this.kind = kind;
    this.detail = options.detail;
    this.data = options.data;
    this.headers = options.headers ?? {};
  }

  get status(): number {
    return WIRE[this.kind].status;
  }

  get code(): number {
    return WIRE[this.kind].code;
  }

  toResponse(id: RequestId | null) {
    return errorResponse(id, this.code, this.message, this.data);
  }
}

/** Anything thrown that is not a GatewayError becomes a generic internal error: no stack trace leaves. */
export function asGatewayError(error: unknown): GatewayError {
  if (error instanceof GatewayError) return error;
  const detail = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return new GatewayError('internal', 'internal gateway error', { detail, cause: error });
}

/** Writes an HTTP error with a JSON-RPC error body, if the response is still open. */
export function sendError(res: ServerResponse, error: GatewayError, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) {
    if (!res.writableEnded) res.end();
    return;
  }
  const body = JSON.stringify(error.toResponse(error.requestId));
  res.writeHead(error.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...error.headers,
    ...headers,
  });
  res.end(body);
}
