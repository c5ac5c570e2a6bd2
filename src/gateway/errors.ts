/**
 * Typed gateway errors, mapped to wire codes in one place. The client gets
 * the public message; the private detail goes to the audit log and metrics.
 * An unexpected error becomes "internal gateway error" with a correlation id
 * that the client's error carries and the operational log records with the
 * detail, so one can be found from the other.
 */
import { randomBytes } from 'node:crypto';
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
  | 'server_blocked'
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
  | 'upstream_auth'
  | 'credential_missing'
  | 'connection_required'
  | 'approval_required'
  | 'upstream_identity'
  | 'principal_limit'
  | 'process_limit'
  | 'rate_limited'
  | 'refused'
  | 'unauthorized'
  | 'invalid_params'
  | 'token_missing'
  | 'token_malformed'
  | 'token_invalid'
  | 'insufficient_scope'
  | 'audit_unavailable'
  | 'policy_denied'
  | 'policy_unavailable'
  | 'internal';

/**
 * Each kind's HTTP status and JSON-RPC code; an `oauth` error code means the
 * answer is an OAuth error body (RFC 6750: a refused token), not JSON-RPC.
 */
const WIRE: Record<ErrorKind, { status: number; code: number; oauth?: string }> = {
  parse: { status: 400, code: RpcCode.ParseError },
  invalid_request: { status: 400, code: RpcCode.InvalidRequest },
  origin: { status: 403, code: RpcCode.InvalidRequest },
  method_not_allowed: { status: 405, code: RpcCode.InvalidRequest },
  not_acceptable: { status: 406, code: RpcCode.InvalidRequest },
  unsupported_media_type: { status: 415, code: RpcCode.InvalidRequest },
  body_too_large: { status: 413, code: RpcCode.InvalidRequest },
  unknown_server: { status: 404, code: RpcCode.InvalidRequest },
  server_blocked: { status: 403, code: RpcCode.InvalidRequest },
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
  upstream_auth: { status: 502, code: RpcCode.UpstreamUnavailable },
  credential_missing: { status: 503, code: RpcCode.UpstreamUnavailable },
  /**
   * The user has not connected their account for an `oauth` upstream: a URL
   * elicitation (MCP 2025-11-25) in an HTTP 200, as clients read a JSON-RPC
   * error only from a successful HTTP answer; its message names the link too.
   */
  connection_required: { status: 200, code: RpcCode.UrlElicitationRequired },
  /** A call a permit allows only with a person's approval (docs/approvals.md): a URL elicitation to its request's page, as above. */
  approval_required: { status: 200, code: RpcCode.UrlElicitationRequired },
  /** The upstream failed its expected-identity check (upstream/identity.ts): nothing was sent to it. */
  upstream_identity: { status: 502, code: RpcCode.UpstreamUnavailable },
  principal_limit: { status: 429, code: RpcCode.UpstreamUnavailable },
  process_limit: { status: 429, code: RpcCode.UpstreamUnavailable },
  rate_limited: { status: 429, code: RpcCode.UpstreamUnavailable },
  refused: { status: 403, code: RpcCode.InvalidRequest },
  unauthorized: { status: 401, code: RpcCode.InvalidRequest },
  invalid_params: { status: 400, code: RpcCode.InvalidParams },
  token_missing: { status: 401, code: RpcCode.InvalidRequest, oauth: 'invalid_token' },
  token_malformed: { status: 400, code: RpcCode.InvalidRequest, oauth: 'invalid_request' },
  token_invalid: { status: 401, code: RpcCode.InvalidRequest, oauth: 'invalid_token' },
  insufficient_scope: { status: 403, code: RpcCode.InvalidRequest, oauth: 'insufficient_scope' },
  audit_unavailable: { status: 503, code: RpcCode.InternalError },
  policy_denied: { status: 403, code: RpcCode.PolicyDenied },
  policy_unavailable: { status: 503, code: RpcCode.InternalError },
  internal: { status: 500, code: RpcCode.InternalError },
};

export class GatewayError extends Error {
  override readonly name = 'GatewayError';
  readonly kind: ErrorKind;
  /** Never sent to the client: for the audit log and operators. */
  readonly detail: string | undefined;
  readonly data: unknown;
  readonly headers: Record<string, string>;
  /** The HTTP status an upstream gave, where it decides what happens next (401/403: a credential refused). */
  readonly upstreamStatus: number | undefined;
  /** Already counted in the metrics where it was raised (with more detail than its kind). */
  readonly counted: boolean;
  /** The id of the request this error answers, once known. */
  requestId: RequestId | null = null;

  constructor(kind: ErrorKind, publicMessage: string, options: { detail?: string; data?: unknown; headers?: Record<string, string>; cause?: unknown; upstreamStatus?: number; counted?: boolean } = {}) {
    super(publicMessage, { cause: options.cause });
    this.kind = kind;
    this.detail = options.detail;
    this.data = options.data;
    this.headers = options.headers ?? {};
    this.upstreamStatus = options.upstreamStatus;
    this.counted = options.counted ?? false;
  }

  get status(): number {
    return WIRE[this.kind].status;
  }

  get code(): number {
    return WIRE[this.kind].code;
  }

  /** For a refused token: the OAuth error code its answer carries (an OAuth body, not JSON-RPC). */
  get oauthError(): string | undefined {
    return WIRE[this.kind].oauth;
  }

  toResponse(id: RequestId | null) {
    return errorResponse(id, this.code, this.message, this.data);
  }
}

/** Names one internal error in the client's answer and in the operational log. */
export function correlationId(): string {
  return randomBytes(8).toString('hex');
}

/**
 * Anything thrown that is not a GatewayError becomes a generic internal error:
 * no stack trace leaves, and its correlation id is in `data.correlationId`.
 * Whoever turns one into an answer logs it with `logInternal`.
 */
export function asGatewayError(error: unknown): GatewayError {
  if (error instanceof GatewayError) return error;
  const detail = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return new GatewayError('internal', 'internal gateway error', { detail, cause: error, data: { correlationId: correlationId() } });
}

/** The log line of an internal error: its correlation id and its private detail (never sent). */
export function logInternal(log: { error(obj: object, msg: string): void }, error: GatewayError, where: string): void {
  if (error.kind !== 'internal') return;
  const data = error.data as { correlationId?: string } | undefined;
  const cause = error.cause instanceof Error ? error.cause.stack : undefined;
  log.error({ correlationId: data?.correlationId ?? null, err: error.detail ?? error.message, stack: cause }, `internal error ${where}`);
}

/**
 * The gateway ended the session a request was in flight in (its server was
 * removed, changed, expired or suspended; the upstream closed; the gateway is
 * stopping): the request is answered with this, not left without an answer.
 */
export function sessionEnded(reason: string): GatewayError {
  return new GatewayError('session_not_found', `the session ended at the gateway (${reason}) before this request was answered: initialize a new session`);
}

/** The gateway stopped delivering to a token's holder: its token was revoked or has expired. */
export function tokenEnded(reason: 'revoked' | 'expired'): GatewayError {
  return new GatewayError('unauthorized', reason === 'revoked' ? 'the token of this request was revoked' : 'the token of this request has expired');
}
