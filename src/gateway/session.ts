/**
 * A downstream MCP session (protocol revisions up to 2025-11-25): the
 * gateway's own session id, one upstream connection, the streams a client
 * can resume, and the requests in flight in both directions.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { GatewayError, sessionEnded, tokenEnded } from './errors.ts';
import { startExchange, type Caller, type Exchange, type ForwardDeps } from './forward.ts';
import { errorResponse, idKey, RpcCode, targetName, type JsonRpcMessage, type JsonRpcNotification, type JsonRpcRequest, type JsonRpcResponse } from './jsonrpc.ts';
import type { FilterChain } from './delivery.ts';
import type { RegisteredServer } from './registry.ts';
import { ResponseChannel, SseStream } from './stream.ts';
import type { Upstream, UpstreamHooks } from './upstream/types.ts';
import type { Config } from '../config/load.ts';
import type { Principal } from '../identity/verify.ts';
import type { RequestMarks } from './forward.ts';
import type { Decision } from '../policy/engine.ts';

/** Where a client request came from and the policy decision that let it through. */
export interface Asked {
  address: string;
  decision: Decision | null;
  /** What marks its record (a break-glass grant, an approval), if anything. */
  marks?: RequestMarks | null;
}

export const LEGACY_VERSIONS = ['2025-11-25', '2025-06-18', '2025-03-26', '2024-11-05'] as const;

const KEEP_FINISHED_STREAMS = 64;
const SSE_AFTER_MS = 5000;

export interface SessionDeps extends ForwardDeps {
  /** This run's id, named in session events. */
  run: string;
  /** The gateway settings in force (they may change on reload). */
  settings: () => Config['gateway'];
  filters: () => FilterChain;
  createUpstream: (server: RegisteredServer, hooks: UpstreamHooks, principal: Principal | null) => Upstream;
}

/** Who a session belongs to: the verified principal of its latest request, and how the audit log names it. */
export interface Access {
  principal: Principal;
  caller: Caller;
}

interface ServerRequest {
  method: string;
  started: number;
}

export function sessionHandle(id: string): string {
  return createHash('sha256').update(id).digest('hex').slice(0, 16);
}

/**
 * `initialize` may have to wait for the server to start (a new stdio process
 * loading its code, a cold HTTP server): it gets at least this long, however
 * short the server's own timeout is.
 */
const START_ALLOWANCE_MS = 30_000;

function idleTimeout(message: JsonRpcRequest, configured: number): number {
  return message.method === 'initialize' ? Math.max(configured, START_ALLOWANCE_MS) : configured;
}

/** The reason a session ends when its client sends DELETE (`session.closed`): its requests in flight get no answer. */
export const CLIENT_ENDED = 'client ended the session';

export class Session {
  readonly id = randomBytes(32).toString('base64url');
  readonly handle = sessionHandle(this.id);
  readonly server: RegisteredServer;
  /** Who opened it; every later request must come from the same caller. */
  readonly caller: Caller | null;
  /** The principal of the latest request (a refreshed token replaces the one that opened the session). */
  principal: Principal | null;
  readonly upstream: Upstream;
  readonly opened = Date.now();
  protocolVersion: string | null = null;
  lastActive = Date.now();
  requestCount = 0;
  closed = false;
  /** Called once when the session closes (the registry forgets it). */
  onClose: ((session: Session) => void) | null = null;
  private readonly standalone: SseStream;
  /** The principal whose GET request holds the standalone stream open. */
  private listener: Principal | null = null;
  private readonly streams = new Map<string, SseStream>();
  private readonly inflight = new Map<string, Exchange>();
  private readonly serverRequests = new Map<string, ServerRequest>();
  private readonly deps: SessionDeps;

  constructor(server: RegisteredServer, deps: SessionDeps, access: Access | null = null) {
    this.server = server;
    this.caller = access?.caller ?? null;
    this.principal = access?.principal ?? null;
    this.deps = deps;
    this.standalone = new SseStream(this.streamOptions());
    this.upstream = deps.createUpstream(server, {
      onMessage: (message) => this.fromUpstream(message),
      onError: (error) => this.upstreamTrouble(error),
      onClosed: (error) => {
        this.upstreamTrouble(error);
        void this.close('upstream closed');
      },
      onRestarted: (detail) =>
        deps.audit.emit({ type: 'upstream.restarted', server: server.name, outcome: 'success', data: { session: this.handle, detail } }),
    }, this.principal);
  }

  /** A request is in flight. An open standalone stream alone does not keep a session from going idle. */
  get busy(): boolean {
    return this.inflight.size > 0;
  }

  private streamOptions() {
    return {
      resumable: true,
      bufferLimit: this.deps.settings().resumeBufferEvents,
      headers: { 'mcp-session-id': this.id },
      primeEvents: (this.protocolVersion ?? '') >= '2025-11-25',
    };
  }

  private upstreamTrouble(error: GatewayError): void {
    this.deps.metrics.errors.inc({ server: this.server.name, kind: error.kind });
    this.deps.audit.emit({
      type: 'upstream.error',
      server: this.server.name,
      outcome: 'error',
      reason: error.kind,
      data: { detail: error.detail ?? error.message, session: this.handle },
    });
  }

  /** Notes server-to-client requests so the client's answer can be matched and recorded. */
  private noteServerMessage(message: JsonRpcMessage): void {
    if ('method' in message && 'id' in message) {
      this.serverRequests.set(idKey(message.id), { method: message.method, started: performance.now() });
    }
  }

  /** A message related to no request: through the filters, then onto the standalone stream. */
  private fromUpstream(message: JsonRpcMessage): void {
    const filters = this.deps.filters();
    if (filters.watches(null, 'standalone')) {
      const outcome = filters.apply(message, { server: this.server, principal: this.principal, address: null, session: this.handle, request: null, route: 'standalone' });
      if (outcome.action !== 'pass') {
        this.deps.metrics.errors.inc({ server: this.server.name, kind: outcome.action === 'drop' ? 'message_dropped' : 'message_refused' });
        if ('id' in message && 'method' in message) this.withhold(message);
        return;
      }
      message = outcome.message;
    }
    this.noteServerMessage(message);
    this.standalone.push(message);
  }

  /** A server-to-client request the filters did not let through: the upstream hears so rather than waiting. */
  private withhold(request: JsonRpcRequest): void {
    this.upstream.send(errorResponse(request.id, RpcCode.InvalidRequest, 'the request was withheld by the gateway')).catch(() => undefined);
  }

  private channel(res: ServerResponse): ResponseChannel {
    return new ResponseChannel(res, {
      ...this.streamOptions(),
      sseAfterMs: SSE_AFTER_MS,
      onStream: (stream) => this.keepStream(stream),
    });
  }

  private keepStream(stream: SseStream): void {
    this.streams.set(stream.key, stream);
    // Delivered to the end on a live connection: nothing to resume, forget it.
    stream.onDone = () => this.streams.delete(stream.key);
    if (this.streams.size <= KEEP_FINISHED_STREAMS) return;
    for (const [key, old] of this.streams) {
      if (this.streams.size <= KEEP_FINISHED_STREAMS) break;
      if (old.done) this.streams.delete(key);
    }
  }

  /** The initialize request that opens this session. */
  initialize(message: JsonRpcRequest, res: ServerResponse, asked: Asked): Promise<void> {
    this.requestCount += 1;
    const clientInfo = (message.params?.clientInfo ?? {}) as { name?: unknown; version?: unknown };
    return this.forward(message, res, asked, {
      event: (response, outcome, base) => ({
        ...base,
        type: 'session.opened',
        outcome: outcome === 'success' ? 'success' : 'failure',
        data: {
          ...base.data,
          run: this.deps.run,
          client: typeof clientInfo.name === 'string' ? clientInfo.name.slice(0, 200) : null,
          clientVersion: typeof clientInfo.version === 'string' ? clientInfo.version.slice(0, 100) : null,
          protocol: response && 'result' in response ? String(response.result.protocolVersion ?? '') : null,
        },
      }),
      beforeAnswer: (response, channel) => {
        if (!('result' in response)) {
          channel.dropHeader('mcp-session-id');
          void this.close('initialize failed', false);
          return response;
        }
        const version = response.result.protocolVersion;
        if (typeof version !== 'string' || !(LEGACY_VERSIONS as readonly string[]).includes(version)) {
          channel.dropHeader('mcp-session-id');
          void this.close('unsupported protocol version', false);
          throw new GatewayError('upstream_protocol', `upstream server "${this.server.name}" chose a protocol version the gateway does not support`, {
            detail: `protocolVersion ${String(version)}`,
          });
        }
        this.protocolVersion = version;
        this.deps.metrics.sessions.inc({ server: this.server.name });
        return response;
      },
    });
  }

  request(message: JsonRpcRequest, res: ServerResponse, asked: Asked): Promise<void> {
    if (message.method === 'initialize') {
      throw new GatewayError('invalid_request', 'this session is already initialized');
    }
    this.requestCount += 1;
    return this.forward(message, res, asked, {});
  }

  private forward(message: JsonRpcRequest, res: ServerResponse, asked: Asked, extra: Pick<Parameters<typeof startExchange>[1], 'event' | 'beforeAnswer'>): Promise<void> {
    const key = idKey(message.id);
    if (this.inflight.has(key)) throw new GatewayError('duplicate_id', 'a request with this id is still in flight in this session');
    this.touch();
    const settings = this.deps.settings();
    const exchange = startExchange(
      message,
      {
        server: this.server,
        principal: this.principal,
        caller: this.caller,
        upstream: this.upstream,
        channel: this.channel(res),
        filters: this.deps.filters(),
        idleTimeoutMs: idleTimeout(message, this.server.timeoutMs ?? settings.upstreamTimeoutMs),
        maxDurationMs: settings.maxRequestMs,
        session: this.handle,
        protocol: this.protocolVersion,
        address: asked.address,
        decision: asked.decision,
        marks: asked.marks ?? null,
        notifyCancel: true,
        onRelated: (related) => this.noteServerMessage(related),
        onWithheld: (request) => this.withhold(request),
        ...extra,
      },
      this.deps,
    );
    this.inflight.set(key, exchange);
    return exchange.done.finally(() => {
      if (this.inflight.get(key) === exchange) this.inflight.delete(key);
      this.touch();
    });
  }

  async notification(message: JsonRpcNotification): Promise<void> {
    this.touch();
    if (message.method === 'notifications/cancelled') {
      const requestId = message.params?.requestId;
      if (typeof requestId === 'string' || typeof requestId === 'number') this.inflight.get(idKey(requestId))?.cancel();
    }
    await this.upstream.send(message);
  }

  /** The client's answer to a server-to-client request (sampling, elicitation, roots). */
  async response(message: JsonRpcResponse): Promise<void> {
    this.touch();
    const key = message.id === null ? null : idKey(message.id);
    const pending = key === null ? undefined : this.serverRequests.get(key);
    if (!pending || key === null) throw new GatewayError('invalid_request', 'no server request with this id is waiting for an answer');
    this.serverRequests.delete(key);
    const failed = 'error' in message;
    // Recorded before it is forwarded: without a record, the answer does not reach the server.
    await this.deps.audit.record({
      type: 'mcp.request',
      actor: this.caller?.actor ?? null,
      server: this.server.name,
      tool: targetName(pending.method, undefined),
      outcome: failed ? 'failure' : 'success',
      data: {
        method: pending.method,
        direction: 'server-to-client',
        session: this.handle,
        protocol: this.protocolVersion,
        latencyMs: Math.round((performance.now() - pending.started) * 100) / 100,
        ...(failed ? { errorCode: message.error.code } : {}),
      },
    }).catch((error: unknown) => {
      throw new GatewayError('audit_unavailable', 'the audit log is unavailable: the answer was not forwarded', { detail: String(error), cause: error });
    });
    await this.upstream.send(message);
  }

  /** GET: the standalone stream, or the resumption of any stream after Last-Event-ID. */
  listen(res: ServerResponse, lastEventId: string | undefined): void {
    this.touch();
    if (lastEventId !== undefined) {
      const parsed = SseStream.parseEventId(lastEventId);
      const stream = parsed && (parsed.key === this.standalone.key ? this.standalone : this.streams.get(parsed.key));
      if (!parsed || !stream || !stream.canResumeFrom(parsed.n)) {
        throw new GatewayError('resume_unknown', 'cannot resume: the event id is unknown or too old');
      }
      stream.attach(res, parsed.n);
      if (stream === this.standalone) {
        this.holdStandalone();
        this.upstream.listen();
      }
      return;
    }
    if (this.standalone.attached) throw new GatewayError('stream_conflict', 'a standalone stream is already open for this session');
    this.standalone.attach(res);
    this.holdStandalone();
    this.upstream.listen();
  }

  /** The standalone stream is held open by this session's current principal (until its token ends). */
  private holdStandalone(): void {
    this.listener = this.principal;
  }

  /**
   * Stops delivering to every token that has ended (`ended` says why: a
   * revocation, or its expiry): its open standalone stream ends (its events
   * stay for a resumption with a valid token), and its requests in flight are
   * answered with an error and cancelled upstream. Returns how many stopped.
   */
  endStreamsOf(ended: (principal: Principal) => 'revoked' | 'expired' | null): number {
    let stopped = 0;
    const listener = this.listener;
    if (listener !== null && this.standalone.attached && ended(listener) !== null) {
      this.listener = null;
      this.standalone.disconnect();
      stopped += 1;
    }
    for (const exchange of this.inflight.values()) {
      const why = exchange.principal === null ? null : ended(exchange.principal);
      if (why !== null) {
        exchange.stop(tokenEnded(why));
        stopped += 1;
      }
    }
    return stopped;
  }

  touch(): void {
    this.lastActive = Date.now();
  }

  /**
   * Ends the session: what is in flight is stopped upstream and answered
   * with an error naming `reason` (nothing, when the client itself ended the
   * session: CLIENT_ENDED), the upstream is closed, and why is recorded.
   */
  async close(reason: string, record = true): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const ended = reason === CLIENT_ENDED ? null : sessionEnded(reason);
    for (const exchange of this.inflight.values()) {
      if (ended === null) exchange.cancel();
      else exchange.stop(ended);
    }
    this.standalone.end();
    for (const stream of this.streams.values()) stream.end();
    if (this.protocolVersion !== null) this.deps.metrics.sessions.dec({ server: this.server.name });
    this.onClose?.(this);
    await this.upstream.close();
    if (record) {
      this.deps.audit.emit({
        type: 'session.closed',
        actor: this.caller?.actor ?? null,
        server: this.server.name,
        outcome: 'success',
        reason,
        data: { session: this.handle, run: this.deps.run, requests: this.requestCount, durationMs: Date.now() - this.opened },
      });
    }
  }
}
