/**
 * The gateway's state on one node: the server registry it routes by, open
 * sessions, upstream connection pools and protocol probes (each keyed on a
 * server's name and generation, so a changed server never reuses its old
 * definition's), the per-principal and per-node limits, the delivery seam's
 * filters and the upstream credential hook.
 */
import type { ApprovalGate } from '../approvals/gate.ts';
import type { Pool } from 'undici';
import type { RefusalSummaries } from '../audit/summary.ts';
import type { Config } from '../config/load.ts';
import type { AuthError, AuthReason, Principal } from '../identity/verify.ts';
import type { RequestContext } from './context.ts';
import { NO_CREDENTIALS, type CredentialHook } from './credentials.ts';
import { NO_FILTERS, type FilterChain } from './delivery.ts';
import { GatewayError, tokenEnded, type ErrorKind } from './errors.ts';
import type { Exchange, ForwardDeps } from './forward.ts';
import { TokenBuckets } from './limits.ts';
import type { RegisteredServer, ServerChange, ServerRegistry } from './registry.ts';
import { Session, type Access, type SessionDeps } from './session.ts';
import { createPool, HttpUpstream } from './upstream/http.ts';
import { StdioUpstream } from './upstream/stdio.ts';
import type { IdentityMismatchHook } from './upstream/identity.ts';
import type { Upstream, UpstreamHooks } from './upstream/types.ts';
import type { PolicyService } from '../policy/service.ts';

/** The idle sweep runs at half the idle time, at most every 30 s. */
const sweepEvery = (idleMs: number): number => Math.min(30_000, Math.max(250, idleMs / 2));
/** How often open streams and requests are checked against their token's expiry (and revocations). */
const TOKEN_SWEEP_MS = 500;

/** What the gateway asks of the identity plane. */
export interface Authenticator {
  /** The verified caller, null when tokens are not required and none was sent; throws AuthError. */
  authenticate(authorization: string | undefined, server: RegisteredServer): Promise<Principal | null>;
  /** The headers of the answer to a refused token (the WWW-Authenticate challenge, RFC 6750 and RFC 9728). */
  challenge(server: RegisteredServer, error: AuthError): Record<string, string>;
  /** Whether a revocation now covers this token. */
  isRevoked(principal: Principal): boolean;
  /** Calls `listener` whenever new revocations were applied on this node; returns the unsubscribe. */
  onRevocation(listener: () => void): () => void;
}

export interface GatewayDeps extends ForwardDeps {
  registry: ServerRegistry;
  /** This run's id (session events name it, so a crashed run's sessions can be closed in the log). */
  run: string;
  auth: Authenticator;
  /** Counted summaries of repeated refusals (unauthenticated requests, limits). */
  refusals: RefusalSummaries;
  filters?: FilterChain;
  credentials?: CredentialHook;
  /** The policy plane: every request that reaches a server is decided by it (none: nothing is decided, for tests of the transport alone). */
  policy?: PolicyService | null;
  /** The catalog's tool pins: why a call of a tool is refused now (quarantined, or not yet listed), or null. */
  tools?: { refusal(server: RegisteredServer, session: string | null, tool: string): string | null; pinned(server: RegisteredServer, tool: string): boolean | undefined; pinHash?(server: RegisteredServer, tool: string): string } | null;
  /** Approvals of single calls (docs/approvals.md): a call a permit allows only with approval goes on only with one (none: such a call is refused). */
  approvals?: ApprovalGate | null;
  /** Told when an upstream failed its expected-identity check (upstream/identity.ts): the catalog blocks the server and records it. */
  onIdentityMismatch?: IdentityMismatchHook;
}

/** How a refused token is answered, by the reason it was refused. */
const TOKEN_KINDS: Record<AuthReason, ErrorKind> = {
  missing: 'token_missing',
  malformed: 'token_malformed',
  invalid: 'token_invalid',
  expired: 'token_invalid',
  wrong_audience: 'token_invalid',
  revoked: 'token_invalid',
  insufficient_scope: 'insufficient_scope',
};


type HttpServer = RegisteredServer & { url: string };

/** The key of what belongs to one definition of a server. */
const keyOf = (server: RegisteredServer): string => `${server.name}#${server.generation}`;

/** Limits count by subject: the user, or the machine client. */
const principalKey = (principal: Principal | null): string | null => principal?.sub ?? null;

export class Gateway {
  /** The gateway settings in force; replaced on reload. */
  settings: Config['gateway'];
  readonly deps: GatewayDeps;
  readonly registry: ServerRegistry;
  readonly auth: Authenticator;
  readonly filters: FilterChain;
  readonly credentials: CredentialHook;
  /** The policy plane (null: no request is decided). */
  readonly policy: PolicyService | null;
  readonly tools: GatewayDeps['tools'];
  readonly approvals: ApprovalGate | null;
  /** Requests without a valid token, per network address. */
  private readonly addressRate = new TokenBuckets(() => this.settings.limits.addressRate);
  /** Requests per verified principal. */
  private readonly principalRate = new TokenBuckets(() => this.settings.limits.principalRate);
  private readonly sessions = new Map<string, Session>();
  /** Stateless requests in flight (they belong to no session). */
  private readonly loose = new Set<Exchange>();
  private readonly perPrincipal = new Map<string, number>();
  private stdioProcesses = 0;
  private readonly pools = new Map<string, Pool>();
  private readonly stateless = new Map<string, HttpUpstream>();
  /** Which protocol era each HTTP server definition speaks, as last probed (endpoint/stateless.ts). */
  readonly eras = new Map<string, { era: 'modern' | 'legacy'; until: number }>();
  private readonly sessionDeps: SessionDeps;
  private sweeper: NodeJS.Timeout;
  private readonly tokenSweeper: NodeJS.Timeout;
  private readonly unsubscribe: () => void;

  constructor(settings: Config['gateway'], deps: GatewayDeps) {
    this.settings = settings;
    this.deps = deps;
    this.registry = deps.registry;
    this.auth = deps.auth;
    this.filters = deps.filters ?? NO_FILTERS;
    this.credentials = deps.credentials ?? NO_CREDENTIALS;
    this.policy = deps.policy ?? null;
    this.tools = deps.tools ?? null;
    this.approvals = deps.approvals ?? null;
    this.sessionDeps = {
      ...deps,
      settings: () => this.settings,
      filters: () => this.filters,
      createUpstream: (server, hooks, principal) => this.createUpstream(server, hooks, principal),
    };
    const unregister = this.registry.onChange((change, previous) => this.serversChanged(change, previous));
    const unrevoke = this.auth.onRevocation(() => this.endTokens());
    this.unsubscribe = () => {
      unregister();
      unrevoke();
    };
    this.sweeper = this.scheduleSweep();
    this.tokenSweeper = setInterval(() => this.endTokens(), TOKEN_SWEEP_MS);
    this.tokenSweeper.unref();
  }

  eraKey(server: RegisteredServer): string {
    return keyOf(server);
  }

  private pool(server: HttpServer): Pool {
    const key = keyOf(server);
    let pool = this.pools.get(key);
    if (!pool) {
      pool = createPool(new URL(server.url), { expectedIdentity: server.expectedIdentity }); // every new connection is checked against it
      this.pools.set(key, pool);
    }
    return pool;
  }

  createUpstream(server: RegisteredServer, hooks: UpstreamHooks, principal: Principal | null): Upstream {
    const maxMessageBytes = this.settings.maxUpstreamMessageBytes;
    if (server.url !== undefined) {
      const http = server as HttpServer;
      return new HttpUpstream({ server: http, pool: this.pool(http), maxMessageBytes, hooks, credentials: this.credentials, principal, onIdentityMismatch: this.deps.onIdentityMismatch });
    }
    return new StdioUpstream({
      server,
      maxMessageBytes,
      hooks,
      credentials: this.credentials,
      principal,
      onIdentityMismatch: this.deps.onIdentityMismatch,
      onProcess: (change) => {
        this.stdioProcesses += change;
      },
    });
  }

  /**
   * The answer to a refused token: recorded (flood-proof: one event per kind
   * and address per interval, then a count), with the challenge the client
   * needs. Requests without a valid token are rate-limited per address.
   */
  refuseToken(ctx: RequestContext, error: AuthError): GatewayError {
    const { server } = ctx;
    if (error.reason !== 'insufficient_scope' && !this.addressRate.take(ctx.address)) {
      return this.limited(ctx, 'gateway.limits.addressRate', this.addressRate.retryAfter(ctx.address));
    }
    const known = error.principal;
    // One kind per source, reason and server, and per token holder where the token names one: a
    // flood of requests without a valid token is counted, each holder's refusal is still on record.
    const holder = known ? `${known.sub}\n${known.clientId}` : '';
    this.deps.refusals.record(`auth.rejected\n${ctx.address}\n${error.reason}\n${server.name}\n${holder}`, {
      type: 'auth.rejected',
      actor: known?.sub ?? null,
      server: server.name,
      outcome: 'denied',
      reason: error.reason,
      data: {
        detail: error.message,
        method: ctx.req.method ?? null,
        address: ctx.address,
        ...(known ? { client_id: known.clientId, token: known.tokenRef } : {}),
        ...(error.scope ? { scope: error.scope } : {}),
      },
    });
    this.deps.metrics.errors.inc({ server: server.name, kind: `auth_${error.reason}` });
    return new GatewayError(TOKEN_KINDS[error.reason], error.message, { headers: this.auth.challenge(server, error), counted: true });
  }

  /** A verified principal over its request rate is refused (429). */
  limitPrincipal(ctx: RequestContext, principal: Principal): void {
    if (!this.principalRate.take(principal.sub)) throw this.limited(ctx, 'gateway.limits.principalRate', this.principalRate.retryAfter(principal.sub), principal);
  }

  /** A request refused by a rate limit: answered with 429. */
  private limited(ctx: RequestContext, limit: string, retryAfter: number, principal: Principal | null = null): GatewayError {
    return this.overLimit(ctx, 'rate_limited', `too many requests (${limit}); try again in ${retryAfter} s`, String(retryAfter), { limit }, principal);
  }



  /** The registered server of this name; 403 with the reason for a blocked one, 404 for an unknown one. */
  server(name: string): RegisteredServer {
    const server = this.registry.get(name);
    if (server) return server;
    const blocked = this.registry.blockedReason(name);
    if (blocked !== undefined) throw new GatewayError('server_blocked', `MCP server "${name}" is not available: ${blocked}`);
    throw new GatewayError('unknown_server', `no MCP server named "${name.slice(0, 64)}" is configured`);
  }

  /** A request refused by a limit: recorded as a counted summary (limit.exceeded), answered with 429 or 503. */
  private overLimit(ctx: RequestContext, kind: ErrorKind, message: string, retryAfter: string, data: { limit: string; value?: number }, principal = ctx.principal): GatewayError {
    const error = new GatewayError(kind, message, { headers: { 'retry-after': retryAfter }, data, counted: true });
    const { limit } = data;
    const who = principal?.sub ?? ctx.address;
    this.deps.refusals.record(`limit.exceeded\n${who}\n${limit}`, {
      type: 'limit.exceeded',
      actor: principal?.sub ?? null,
      server: ctx.server.name,
      outcome: 'denied',
      reason: limit,
      data: { address: ctx.address, method: ctx.req.method ?? null, ...(principal ? { client_id: principal.clientId } : {}) },
    });
    this.deps.metrics.errors.inc({ server: ctx.server.name, kind: error.kind });
    return error;
  }

  /** A new session for the request's initialize, about to be forwarded; refused (nothing started) beyond a limit. */
  openSession(ctx: RequestContext): Session {
    const { server, access } = ctx;
    const { maxSessions, limits } = this.settings;
    if (this.sessions.size >= maxSessions) {
      throw this.overLimit(ctx, 'session_limit', 'the gateway has too many open sessions; try again later', '5', { limit: 'gateway.maxSessions', value: maxSessions });
    }
    const key = principalKey(access?.principal ?? null);
    const held = key === null ? 0 : (this.perPrincipal.get(key) ?? 0);
    if (key !== null && held >= limits.sessionsPerPrincipal) {
      throw this.overLimit(ctx, 'principal_limit', `too many open sessions for this principal (gateway.limits.sessionsPerPrincipal is ${limits.sessionsPerPrincipal}): end one first`, '30', {
        limit: 'gateway.limits.sessionsPerPrincipal',
        value: limits.sessionsPerPrincipal,
      });
    }
    if (server.command !== undefined && this.stdioProcesses >= limits.stdioProcesses) {
      throw this.overLimit(ctx, 'process_limit', `too many server processes on this gateway node (gateway.limits.stdioProcesses is ${limits.stdioProcesses}); try again later`, '30', {
        limit: 'gateway.limits.stdioProcesses',
        value: limits.stdioProcesses,
      });
    }
    const session = new Session(server, this.sessionDeps, access);
    if (key !== null) this.perPrincipal.set(key, held + 1);
    session.onClose = (closed) => {
      this.sessions.delete(closed.id);
      if (key === null) return;
      const left = (this.perPrincipal.get(key) ?? 1) - 1;
      if (left > 0) this.perPrincipal.set(key, left);
      else this.perPrincipal.delete(key);
    };
    this.sessions.set(session.id, session);
    return session;
  }

  /** The session with this id on this server's current definition, opened by this caller; 404 otherwise (the client must initialize again). */
  session(id: string, server: RegisteredServer, access: Access | null): Session {
    const session = this.sessions.get(id);
    if (!session || session.closed || session.server !== server || session.caller?.key !== access?.caller.key) {
      throw new GatewayError('session_not_found', 'session not found: initialize a new session');
    }
    if (access !== null) session.principal = access.principal;
    return session;
  }

  /** The shared, session-less upstream for stateless requests to an HTTP server's current definition. */
  statelessUpstream(server: HttpServer): HttpUpstream {
    const key = keyOf(server);
    let upstream = this.stateless.get(key);
    if (!upstream) {
      upstream = new HttpUpstream({
        server,
        pool: this.pool(server),
        maxMessageBytes: this.settings.maxUpstreamMessageBytes,
        credentials: this.credentials,
        principal: null,
        onIdentityMismatch: this.deps.onIdentityMismatch,
        hooks: {
          onMessage: () => undefined,
          onError: (error) => this.deps.metrics.errors.inc({ server: server.name, kind: error.kind }),
          onClosed: () => undefined,
        },
      });
      this.stateless.set(key, upstream);
    }
    return upstream;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /**
   * Ends the open streams and requests of every token that was revoked or
   * has expired: at once when revocations arrive (here, or from another node
   * within the revocation list's poll), and on a short sweep for expiry.
   * Returns how many were ended.
   */
  endTokens(now = Date.now()): number {
    const ended = (principal: Principal): 'revoked' | 'expired' | null =>
      principal.exp * 1000 <= now ? 'expired' : this.auth.isRevoked(principal) ? 'revoked' : null;
    let count = 0;
    for (const session of this.sessions.values()) count += session.endStreamsOf(ended);
    for (const exchange of this.loose) {
      const why = exchange.principal === null ? null : ended(exchange.principal);
      if (why === null) continue;
      exchange.stop(tokenEnded(why));
      count += 1;
    }
    return count;
  }

  /** Keeps a stateless request in sight until it is done (its token may end first). */
  track(exchange: Exchange): void {
    this.loose.add(exchange);
    const forget = () => void this.loose.delete(exchange);
    exchange.done.then(forget, forget);
  }

  /**
   * A server was removed or changed: its sessions end (their stdio processes
   * stop), and what belonged to its old definition (pools, the stateless
   * upstream, protocol probes) is let go. New sessions use the new definition.
   */
  private serversChanged(change: ServerChange, previous: ReadonlyMap<string, RegisteredServer>): void {
    const gone = new Set([...change.removed, ...change.changed]);
    if (gone.size === 0) return;
    const closing: Promise<void>[] = [];
    for (const session of this.sessions.values()) {
      if (gone.has(session.server.name)) closing.push(session.close(change.removed.includes(session.server.name) ? 'server removed' : 'server changed'));
    }
    const keys = [...gone].map((name) => previous.get(name)).filter((server) => server !== undefined).map(keyOf);
    for (const key of keys) {
      this.eras.delete(key);
      const upstream = this.stateless.get(key);
      this.stateless.delete(key);
      if (upstream) closing.push(upstream.close());
    }
    void Promise.allSettled(closing).then(() => {
      for (const key of keys) {
        const pool = this.pools.get(key);
        this.pools.delete(key);
        void pool?.close().catch(() => undefined);
      }
    });
  }

  /** Closes sessions idle for gateway.sessionIdleMs (as in force at each sweep). */
  private scheduleSweep(): NodeJS.Timeout {
    const timer = setTimeout(() => {
      const cutoff = Date.now() - this.settings.sessionIdleMs;
      for (const session of this.sessions.values()) {
        if (!session.busy && session.lastActive < cutoff) void session.close('idle');
      }
      this.sweeper = this.scheduleSweep();
    }, sweepEvery(this.settings.sessionIdleMs));
    timer.unref();
    return timer;
  }

  async shutdown(): Promise<void> {
    clearTimeout(this.sweeper);
    clearInterval(this.tokenSweeper);
    this.unsubscribe();
    await Promise.all([...this.sessions.values()].map((session) => session.close('gateway stopping')));
    await Promise.all([...this.pools.values()].map((pool) => pool.destroy()));
  }
}
