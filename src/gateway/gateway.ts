/**
 * The gateway's state on one node: configured servers, open sessions, and the
 * shared upstream connections for stateless (2026-07-28) traffic.
 */
import type { Pool } from 'undici';
import type { Config, ResolvedServer } from '../config/load.ts';
import type { Logger } from '../observability/log.ts';
import { GatewayError } from './errors.ts';
import type { Caller, ForwardDeps } from './forward.ts';
import { Session, type SessionDeps } from './session.ts';
import { createPool, HttpUpstream } from './upstream/http.ts';
import { StdioUpstream } from './upstream/stdio.ts';
import type { Upstream, UpstreamHooks } from './upstream/types.ts';

const SWEEP_MS = 30_000;

export interface GatewayDeps extends ForwardDeps {
  log: Logger;
}

export class Gateway {
  readonly config: Config;
  readonly deps: GatewayDeps;
  readonly servers: Map<string, ResolvedServer>;
  private readonly sessions = new Map<string, Session>();
  private readonly pools = new Map<string, Pool>();
  private readonly stateless = new Map<string, HttpUpstream>();
  /** Which protocol era each HTTP server speaks, as last probed (endpoint/stateless.ts). */
  readonly eras = new Map<string, { era: 'modern' | 'legacy'; until: number }>();
  private readonly sessionDeps: SessionDeps;
  private readonly sweeper: NodeJS.Timeout;

  constructor(config: Config, deps: GatewayDeps) {
    this.config = config;
    this.deps = deps;
    this.servers = new Map(config.servers.map((server) => [server.name, server]));
    this.sessionDeps = { ...deps, gateway: config.gateway, createUpstream: (server, hooks) => this.createUpstream(server, hooks) };
    this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweeper.unref();
  }

  private pool(server: ResolvedServer & { url: string }): Pool {
    let pool = this.pools.get(server.name);
    if (!pool) {
      pool = createPool(new URL(server.url));
      this.pools.set(server.name, pool);
    }
    return pool;
  }

  createUpstream(server: ResolvedServer, hooks: UpstreamHooks): Upstream {
    if (server.url !== undefined) {
      return new HttpUpstream({
        server: server.name,
        url: new URL(server.url),
        pool: this.pool(server as ResolvedServer & { url: string }),
        maxMessageBytes: this.config.gateway.maxUpstreamMessageBytes,
        hooks,
      });
    }
    return new StdioUpstream({
      server: server.name,
      command: server.command ?? '',
      args: server.args,
      env: server.env,
      cwd: server.cwd ?? process.cwd(),
      maxMessageBytes: this.config.gateway.maxUpstreamMessageBytes,
      hooks,
    });
  }

  server(name: string): ResolvedServer {
    const server = this.servers.get(name);
    if (!server) throw new GatewayError('unknown_server', `no MCP server named "${name.slice(0, 64)}" is configured`);
    return server;
  }

  /** A new session whose initialize is about to be forwarded. */
  openSession(server: ResolvedServer, caller: Caller | null): Session {
    if (this.sessions.size >= this.config.gateway.maxSessions) {
      throw new GatewayError('session_limit', 'the gateway has too many open sessions; try again later', { headers: { 'retry-after': '5' } });
    }
    const session = new Session(server, this.sessionDeps, caller);
    session.onClose = (closed) => this.sessions.delete(closed.id);
    this.sessions.set(session.id, session);
    return session;
  }

  /** The session with this id on this server, opened by this caller; 404 otherwise (the client must initialize again). */
  session(id: string, server: ResolvedServer, caller: Caller | null): Session {
    const session = this.sessions.get(id);
    if (!session || session.closed || session.server.name !== server.name || session.caller?.key !== caller?.key) {
      throw new GatewayError('session_not_found', 'session not found: initialize a new session');
    }
    return session;
  }

  /** The shared, session-less upstream for stateless requests to an HTTP server. */
  statelessUpstream(server: ResolvedServer & { url: string }): HttpUpstream {
    let upstream = this.stateless.get(server.name);
    if (!upstream) {
      upstream = new HttpUpstream({
        server: server.name,
        url: new URL(server.url),
        pool: this.pool(server),
        maxMessageBytes: this.config.gateway.maxUpstreamMessageBytes,
        hooks: {
          onMessage: () => undefined,
          onError: (error) => this.deps.metrics.errors.inc({ server: server.name, kind: error.kind }),
          onClosed: () => undefined,
        },
      });
      this.stateless.set(server.name, upstream);
    }
    return upstream;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  private sweep(): void {
    const cutoff = Date.now() - this.config.gateway.sessionIdleMs;
    for (const session of this.sessions.values()) {
      if (!session.busy && session.lastActive < cutoff) void session.close('idle');
    }
  }

  async shutdown(): Promise<void> {
    clearInterval(this.sweeper);
    await Promise.all([...this.sessions.values()].map((session) => session.close('gateway stopping')));
    await Promise.all([...this.pools.values()].map((pool) => pool.destroy()));
  }
}
