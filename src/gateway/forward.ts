/**
 * One client request through one upstream: forward, pass what comes back
 * through the delivery seam (delivery.ts) to the client, enforce timeouts,
 * and record the event durably before answering. If the record cannot be
 * written the client gets an error, not the result.
 */
import { asGatewayError, GatewayError, logInternal } from './errors.ts';
import { errorResponse, idKey, isFailure, notificationCancelled, RpcCode, targetName, type JsonRpcMessage, type JsonRpcRequest, type JsonRpcResponse } from './jsonrpc.ts';
import type { Delivery, FilterChain } from './delivery.ts';
import type { RegisteredServer } from './registry.ts';
import type { ResponseChannel } from './stream.ts';
import type { Upstream } from './upstream/types.ts';
import type { AuditLog } from '../audit/log.ts';
import { fixedPart, type CallJournal, type CallLine } from '../audit/calls.ts';
import type { IdentityEvent, Outcome } from '../audit/events.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { Logger } from '../observability/log.ts';
import type { Principal } from '../identity/verify.ts';
import type { Decision } from '../policy/engine.ts';

export interface ForwardDeps {
  audit: AuditLog;
  /** Where an allowed call's decision is written before the call is forwarded. */
  calls: CallJournal;
  metrics: Metrics;
  log: Logger;
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

/** Ids that mark a request's record (docs/breakglass.md, docs/approvals.md). */
export interface RequestMarks {
  breakglass?: string;
  approval?: string;
}

export interface ForwardContext {
  server: RegisteredServer;
  principal: Principal | null;
  caller: Caller | null;
  upstream: Upstream;
  channel: ResponseChannel;
  /** The delivery seam every message toward the client passes. */
  filters: FilterChain;
  /** Idle timeout (reset by every related message) and hard cap, ms. */
  idleTimeoutMs: number;
  maxDurationMs: number;
  /** The client's network address (policy context). */
  address: string | null;
  /** The policy decision that allowed this request (its record names the determining policies). */
  decision: Decision | null;
  /** What marks this request's record and journal line (a break-glass grant's id, an approval's id). */
  marks?: RequestMarks | null;
  /** Session handle (never the id itself) and protocol, for the record. */
  session: string | null;
  protocol: string | null;
  headers?: Record<string, string>;
  /** A related message was delivered (the session notes server requests). */
  onRelated?: (message: JsonRpcMessage) => void;
  /** A server-to-client request the filters withheld: answer the upstream so it does not wait. */
  onWithheld?: (request: JsonRpcRequest) => void;
  /** Builds the identity event; default `mcp.request`. */
  event?: (response: JsonRpcResponse | null, outcome: Outcome, base: IdentityEvent) => IdentityEvent;
  /** Last look at the response before it is written (the session's initialize hook). */
  beforeAnswer?: (response: JsonRpcResponse, channel: ResponseChannel) => Promise<JsonRpcResponse> | JsonRpcResponse;
  /** Whether to tell the upstream with notifications/cancelled when the gateway stops waiting (legacy only). */
  notifyCancel: boolean;
}

/** Where the gateway stopped waiting of its own accord: a timeout, or a message the filters refused. */
const STOPPED_BY_GATEWAY = new Set(['upstream_timeout', 'upstream_protocol', 'refused', 'unauthorized']);


export interface Exchange {
  /** Whose token this request came with. */
  readonly principal: Principal | null;
  /** The client cancelled: stop waiting, answer nothing. */
  cancel(): void;
  /** The gateway stops the request: the client is answered with `error`, the upstream told to cancel. */
  stop(error: GatewayError): void;
  readonly done: Promise<void>;
}

const NO_TIMEOUT_METHODS = new Set(['subscriptions/listen']);

class Cancelled extends Error {}

function timeoutError(server: string, detail: string): GatewayError {
  return new GatewayError('upstream_timeout', `upstream server "${server}" did not answer in time`, { detail });
}

function withheld(server: string, by: string): GatewayError {
  return new GatewayError('refused', `the answer from upstream server "${server}" was withheld by the gateway`, { detail: `dropped by filter ${by}` });
}

/** The final response after the filters: what passed (still a response to this request), or the refusal. */
function filterResponse(response: JsonRpcResponse, request: JsonRpcRequest, ctx: ForwardContext, delivery: Delivery): JsonRpcResponse | GatewayError {
  const outcome = ctx.filters.apply(response, delivery);
  if (outcome.action === 'drop') return withheld(ctx.server.name, outcome.by);
  if (outcome.action === 'refuse') return outcome.error;
  const passed = outcome.message;
  if (!('id' in passed) || 'method' in passed || passed.id === null || idKey(passed.id) !== idKey(request.id)) {
    return new GatewayError('upstream_protocol', `upstream server "${ctx.server.name}" sent a message the gateway could not check`, { detail: 'a filter turned the response into another message' });
  }
  return passed;
}

/** The fixed part of each caller's journal lines, per decision (decisions are shared while their policy set is in force). */
const fixedParts = new WeakMap<Decision, Map<string, string>>();

/** The decision that let a call through, journaled before the call is forwarded (`policy.allowed` if the call's own record never comes). */
function callLine(message: JsonRpcRequest, ctx: ForwardContext): CallLine {
  const decision = ctx.decision as Decision;
  let byCaller = fixedParts.get(decision);
  if (byCaller === undefined) {
    byCaller = new Map();
    fixedParts.set(decision, byCaller);
  }
  const key = `${ctx.caller?.key ?? ''}\0${ctx.caller?.tokenRef ?? ''}\0${ctx.server.name}\0${ctx.marks?.breakglass ?? ''}\0${ctx.marks?.approval ?? ''}`;
  let fixed = byCaller.get(key);
  if (fixed === undefined) {
    fixed = fixedPart(ctx.caller?.actor ?? 'anonymous', ctx.server.name, {
      method: 'tools/call',
      policies: [...decision.policies],
      policySet: decision.set,
      ...(ctx.caller ? { client_id: ctx.caller.clientId, token: ctx.caller.tokenRef } : {}),
      ...ctx.marks,
      ...(ctx.principal !== null && ctx.principal.actors.length > 0 ? { actors: [...ctx.principal.actors] } : {}),
      ...(ctx.principal?.task ? { task: ctx.principal.task.id } : {}),
    });
    if (byCaller.size >= 1000) byCaller.clear();
    byCaller.set(key, fixed);
  }
  return { fixed, tool: targetName(message.method, message.params), session: ctx.session, address: ctx.address };
}

export function startExchange(message: JsonRpcRequest, ctx: ForwardContext, deps: ForwardDeps): Exchange {
  const controller = new AbortController();
  const started = performance.now();
  const name = ctx.server.name;
  const delivery = (route: 'response' | 'related'): Delivery => ({ server: ctx.server, principal: ctx.principal, address: ctx.address, session: ctx.session, request: message, route });
  // A chain that looks at nothing of this request costs nothing.
  const related = ctx.filters.watches(message.method, 'related') ? delivery('related') : null;
  const checked = ctx.filters.watches(message.method, 'response');
  const timed = !NO_TIMEOUT_METHODS.has(message.method);
  // One timer serves both limits: the idle deadline moves with every related
  // message, the hard deadline does not; the timer re-arms itself as needed.
  // (A request ends with its token too: the gateway's token sweep stops it.)
  const hardAt = Date.now() + ctx.maxDurationMs;
  let idleAt = Date.now() + ctx.idleTimeoutMs;
  let timer: NodeJS.Timeout | null = null;
  const check = () => {
    const now = Date.now();
    if (now >= hardAt) controller.abort(timeoutError(name, `longer than ${ctx.maxDurationMs} ms`));
    else if (now >= idleAt) controller.abort(timeoutError(name, `no message for ${ctx.idleTimeoutMs} ms`));
    else timer = setTimeout(check, Math.min(idleAt, hardAt) - now);
  };
  if (timed) timer = setTimeout(check, Math.min(ctx.idleTimeoutMs, ctx.maxDurationMs));
  const arm = () => {
    idleAt = Date.now() + ctx.idleTimeoutMs;
  };

  /** A message related to the request: through the filters, then to the client. */
  const onMessage = (message: JsonRpcMessage): void => {
    arm();
    if (related === null) {
      ctx.onRelated?.(message);
      ctx.channel.message(message);
      return;
    }
    const outcome = ctx.filters.apply(message, related);
    if (outcome.action === 'pass') {
      ctx.onRelated?.(outcome.message);
      ctx.channel.message(outcome.message);
      return;
    }
    if ('id' in message && 'method' in message) ctx.onWithheld?.(message);
    if (outcome.action === 'refuse') controller.abort(outcome.error);
  };

  const done = (async () => {
    let response: JsonRpcResponse | null = null;
    let status = 200;
    let outcome: Outcome;
    let failure: GatewayError | null = null;
    let journaled: number | null = null;
    /** The credential presented upstream, by reference (never its value). */
    let credential: string | undefined;
    try {
      try {
        await deps.audit.ensureWritable();
        // A call's decision is on record before the call is made: a crash after forwarding leaves the decision.
        if (ctx.decision !== null && message.method === 'tools/call') {
          const id = deps.calls.begin(callLine(message, ctx));
          try {
            await deps.calls.forwardable(id);
          } catch (error) {
            // Refused before forwarding: nothing of it is left to recover, and its record names no journal line.
            deps.calls.done(id);
            throw error;
          }
          journaled = id;
        }
      } catch (error) {
        throw new GatewayError('audit_unavailable', 'the audit log is unavailable: the request was refused', { detail: String(error), cause: error });
      }
      const answer = await ctx.upstream.request(message, { signal: controller.signal, headers: ctx.headers, principal: ctx.principal, onMessage });
      credential = answer.credential;
      const passed = checked ? filterResponse(answer.message, message, ctx, delivery('response')) : answer.message;
      if (passed instanceof GatewayError) throw passed;
      response = passed;
      if (passed === answer.message) status = answer.status;
      outcome = isFailure(response) ? 'failure' : 'success';
    } catch (error) {
      if (error instanceof Cancelled) {
        outcome = 'cancelled';
      } else {
        failure = asGatewayError(error);
        logInternal(deps.log, failure, `forwarding ${message.method.slice(0, 64)} to "${name}"`);
        outcome = failure.kind === 'refused' || failure.kind === 'unauthorized' ? 'denied' : 'error';
        response = failure.toResponse(message.id);
        status = 200;
        deps.metrics.errors.inc({ server: name, kind: failure.kind });
        if (failure.kind.startsWith('upstream_')) deps.audit.emit({
          type: 'upstream.error',
          server: name,
          outcome: 'error',
          reason: failure.kind,
          data: { method: message.method, detail: failure.detail ?? failure.message, session: ctx.session },
        });
        if (STOPPED_BY_GATEWAY.has(failure.kind) && ctx.notifyCancel && controller.signal.aborted) {
          ctx.upstream.send(notificationCancelled(message.id, failure.kind === 'upstream_timeout' ? 'timed out at the gateway' : 'refused at the gateway')).catch(() => undefined);
        }
      }
    } finally {
      if (timer) clearTimeout(timer);
    }
    const seconds = (performance.now() - started) / 1000;
    deps.metrics.request(name, message.method, outcome, seconds);

    if (response && ctx.beforeAnswer && outcome !== 'cancelled') {
      try {
        response = await ctx.beforeAnswer(response, ctx.channel);
        if (isFailure(response) && outcome === 'success') outcome = 'failure';
      } catch (error) {
        failure = asGatewayError(error);
        logInternal(deps.log, failure, `answering ${message.method.slice(0, 64)} from "${name}"`);
        outcome = 'error';
        response = failure.toResponse(message.id);
        status = 200;
      }
    }

    const base: IdentityEvent = {
      type: 'mcp.request',
      actor: ctx.caller?.actor ?? null,
      server: name,
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
        ...(ctx.decision ? { policies: [...ctx.decision.policies], policySet: ctx.decision.set } : {}),
        ...ctx.marks,
        ...(ctx.principal !== null && ctx.principal.actors.length > 0 ? { actors: [...ctx.principal.actors] } : {}),
        ...(ctx.principal?.task ? { task: ctx.principal.task.id } : {}),
        ...(journaled !== null ? { call: deps.calls.ref(journaled) } : {}),
        ...(credential !== undefined ? { credential } : {}),
      },
    };
    const event = ctx.event ? ctx.event(response, outcome, base) : base;
    if (failure?.kind === 'audit_unavailable') {
      // Nothing was forwarded and the store is known to be failing: the refusal is answered
      // at once, and its record goes in when the store is back (or is counted as lost).
      deps.audit.emit(event);
      ctx.channel.final(response as JsonRpcResponse, status);
      return;
    }
    try {
      await deps.audit.record(event);
      if (journaled !== null) deps.calls.done(journaled);
    } catch {
      deps.metrics.errors.inc({ server: name, kind: 'audit_unavailable' });
      if (outcome === 'cancelled') return;
      response = errorResponse(message.id, RpcCode.InternalError, 'the audit log is unavailable: the request was refused');
      status = 200;
    }
    if (outcome === 'cancelled' || !response) ctx.channel.abandon();
    else ctx.channel.final(response, status);
  })();

  return {
    principal: ctx.principal,
    cancel: () => controller.abort(new Cancelled('cancelled by the client')),
    stop: (error) => controller.abort(error),
    done,
  };
}
