/**
 * One client request through one upstream: forward, relay what comes back,
 * enforce timeouts, and record the event durably before answering. If the
 * record cannot be written the client gets an error, not the result.
 */
import { asGatewayError, GatewayError } from './errors.ts';
import { errorResponse, isFailure, notificationCancelled, RpcCode, targetName, upstreamStatus, type JsonRpcMessage, type JsonRpcRequest, type JsonRpcResponse } from './jsonrpc.ts';
import type { ResponseChannel } from './stream.ts';
import type { Upstream } from './upstream/types.ts';
import type { AuditLog } from '../audit/log.ts';
import type { IdentityEvent, Outcome } from '../audit/events.ts';
import type { Metrics } from '../observability/metrics.ts';

export interface ForwardDeps {
  audit: AuditLog;
  metrics: Metrics;
}

/** Who is calling, as the audit log names them (from the verified token). */
export interface Caller {
  /** The user, or the client for machine clients. */
  actor: string;
  clientId: string;
  /** Sessions are bound to this: the same user through the same client. */
  key: string;
  /** Names the token without revealing it. */
  tokenRef: string;
}

export interface ForwardContext {
  server: string;
  caller: Caller | null;
  upstream: Upstream;
  channel: ResponseChannel;
  /** Idle timeout (reset by every related message) and hard cap, ms. */
  idleTimeoutMs: number;
  maxDurationMs: number;
  /** Session handle (never the id itself) and protocol, for the record. */
  session: string | null;
  protocol: string | null;
  headers?: Record<string, string>;
  /** A related message arrived (the session notes server requests). */
  onRelated?: (message: JsonRpcMessage) => void;
  /** Builds the identity event; default `mcp.request`. */
  event?: (response: JsonRpcResponse | null, outcome: Outcome, base: IdentityEvent) => IdentityEvent;
  /** Last look at the response before it is written (the session's initialize hook). */
  beforeAnswer?: (response: JsonRpcResponse, channel: ResponseChannel) => Promise<JsonRpcResponse> | JsonRpcResponse;
  /** Whether to tell the upstream about a timeout with notifications/cancelled (legacy only). */
  notifyCancel: boolean;
}

export interface Exchange {
  /** The client cancelled: stop waiting, answer nothing. */
  cancel(): void;
  readonly done: Promise<void>;
}

const NO_TIMEOUT_METHODS = new Set(['subscriptions/listen']);

class Cancelled extends Error {}

function timeoutError(server: string, detail: string): GatewayError {
  return new GatewayError('upstream_timeout', `upstream server "${server}" did not answer in time`, { detail });
}

export function startExchange(message: JsonRpcRequest, ctx: ForwardContext, deps: ForwardDeps): Exchange {
  const controller = new AbortController();
  const started = performance.now();
  const timed = !NO_TIMEOUT_METHODS.has(message.method);
  // One timer serves both limits: the idle deadline moves with every related
  // message, the hard deadline does not; the timer re-arms itself as needed.
  const hardAt = Date.now() + ctx.maxDurationMs;
  let idleAt = Date.now() + ctx.idleTimeoutMs;
  let timer: NodeJS.Timeout | null = null;
  const check = () => {
    const now = Date.now();
    if (now >= hardAt) controller.abort(timeoutError(ctx.server, `longer than ${ctx.maxDurationMs} ms`));
    else if (now >= idleAt) controller.abort(timeoutError(ctx.server, `no message for ${ctx.idleTimeoutMs} ms`));
    else timer = setTimeout(check, Math.min(idleAt, hardAt) - now);
  };
  if (timed) timer = setTimeout(check, Math.min(ctx.idleTimeoutMs, ctx.maxDurationMs));
  const arm = () => {
    idleAt = Date.now() + ctx.idleTimeoutMs;
  };

  const done = (async () => {
    let response: JsonRpcResponse | null = null;
    let outcome: Outcome;
    let failure: GatewayError | null = null;
    try {
      try {
        await deps.audit.ensureWritable();
      } catch (error) {
        throw new GatewayError('audit_unavailable', 'the audit log is unavailable: the request was refused', { detail: String(error), cause: error });
      }
      response = await ctx.upstream.request(message, {
        signal: controller.signal,
        headers: ctx.headers,
        onMessage: (related) => {
          arm();
          ctx.onRelated?.(related);
          ctx.channel.message(related);
        },
      });
      outcome = isFailure(response) ? 'failure' : 'success';
    } catch (error) {
      if (error instanceof Cancelled) {
        outcome = 'cancelled';
      } else {
        failure = asGatewayError(error);
        outcome = 'error';
        response = failure.toResponse(message.id);
        deps.metrics.errors.inc({ server: ctx.server, kind: failure.kind });
        if (failure.kind.startsWith('upstream_')) deps.audit.emit({
          type: 'upstream.error',
          server: ctx.server,
          outcome: 'error',
          reason: failure.kind,
          data: { method: message.method, detail: failure.detail ?? failure.message, session: ctx.session },
        });
        if (failure.kind === 'upstream_timeout' && ctx.notifyCancel) {
          ctx.upstream.send(notificationCancelled(message.id, 'timed out at the gateway')).catch(() => undefined);
        }
      }
    } finally {
      if (timer) clearTimeout(timer);
    }
    const seconds = (performance.now() - started) / 1000;
    deps.metrics.request(ctx.server, message.method, outcome, seconds);

    if (response && ctx.beforeAnswer && outcome !== 'cancelled') {
      try {
        response = await ctx.beforeAnswer(response, ctx.channel);
        if (isFailure(response) && outcome === 'success') outcome = 'failure';
      } catch (error) {
        failure = asGatewayError(error);
        outcome = 'error';
        response = failure.toResponse(message.id);
      }
    }

    const base: IdentityEvent = {
      type: 'mcp.request',
      actor: ctx.caller?.actor ?? null,
      server: ctx.server,
      tool: targetName(message.method, message.params),
      outcome,
      reason: failure?.kind ?? null,
      data: {
        method: message.method,
        direction: 'client-to-server',
        session: ctx.session,
        protocol: ctx.protocol,
        latencyMs: Math.round(seconds * 1000 * 100) / 100,
        ...(ctx.caller ? { client_id: ctx.caller.clientId, token: ctx.caller.tokenRef } : {}),
        ...(response && isFailure(response) ? { errorCode: response.error.code } : {}),
      },
    };
    try {
      await deps.audit.record(ctx.event ? ctx.event(response, outcome, base) : base);
    } catch {
      deps.metrics.errors.inc({ server: ctx.server, kind: 'audit_unavailable' });
      if (outcome === 'cancelled') return;
      response = errorResponse(message.id, RpcCode.InternalError, 'the audit log is unavailable: the request was refused');
    }
    if (outcome === 'cancelled' || !response) ctx.channel.abandon();
    else ctx.channel.final(response, upstreamStatus.get(response));
  })();

  return {
    cancel: () => controller.abort(new Cancelled('cancelled by the client')),
    done,
  };
}
