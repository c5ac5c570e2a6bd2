/**
 * The server registry: the one source of the MCP servers behind the gateway
 * (the configuration today, the catalog later). It can change while the
 * gateway runs. Every change bumps `generation`, and each server carries the
 * generation it was last defined in, so whatever is kept per server (upstream
 * pools, protocol probes, sessions) is keyed on `name` and `generation` and a
 * changed server never reuses what belonged to its old definition.
 */
import canonicalize from 'canonicalize';
import type { ResolvedServer } from '../config/load.ts';

export interface RegisteredServer extends ResolvedServer {
  /** The registry generation in which this definition was added or last changed. */
  readonly generation: number;
}

/** What one change did, by server name (each list sorted). */
export interface ServerChange {
  generation: number;
  added: string[];
  removed: string[];
  changed: string[];
}

export type ChangeListener = (change: ServerChange, previous: ReadonlyMap<string, RegisteredServer>) => void;

/** A server definition as text, to tell an unchanged server from a changed one. */
function definition(server: ResolvedServer): string {
  const { generation: _generation, ...rest } = server as ResolvedServer & { generation?: number };
  return canonicalize(rest) ?? '';
}

export class ServerRegistry {
  private servers = new Map<string, RegisteredServer>();
  private byEndpoint = new Map<string, RegisteredServer>();
  private current = 0;
  private blocked = new Map<string, string>();
  private readonly listeners = new Set<ChangeListener>();

  constructor(servers: readonly ResolvedServer[] = []) {
    this.replace(servers);
  }

  /** Bumped by every change that added, removed or changed a server. */
  get generation(): number {
    return this.current;
  }

  get size(): number {
    return this.servers.size;
  }

  get(name: string): RegisteredServer | undefined {
    return this.servers.get(name);
  }

  has(name: string): boolean {
    return this.servers.has(name);
  }

  /** The server whose canonical URI ({issuer}/mcp/NAME) is exactly `endpoint`. */
  forEndpoint(endpoint: string): RegisteredServer | undefined {
    return this.byEndpoint.get(endpoint);
  }

  /**
   * Why NAME is known but not routable now (an expired, suspended, pending
   * or retired catalog entry, or one whose identity did not match), or
   * undefined. A blocked name is answered 403 with this reason, not 404.
   */
  blockedReason(name: string): string | undefined {
    return this.blocked.get(name);
  }

  /** Replaces the blocked names (a name that is also registered stays routable: the registry wins). */
  setBlocked(blocked: ReadonlyMap<string, string>): void {
    this.blocked = new Map(blocked);
  }

  list(): RegisteredServer[] {
    return [...this.servers.values()];
  }

  /** Whether `server` is still the registered definition (not removed, not changed since). */
  isCurrent(server: RegisteredServer): boolean {
    return this.servers.get(server.name) === server;
  }

  onChange(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * What `replace(next)` would do, without doing it: the resulting servers
   * (unchanged ones keep their object and generation) and the change.
   */
  plan(next: readonly ResolvedServer[]): { servers: Map<string, RegisteredServer>; change: ServerChange } {
    const previous = this.servers;
    const generation = this.current + 1;
    const servers = new Map<string, RegisteredServer>();
    const change: ServerChange = { generation, added: [], removed: [], changed: [] };
    for (const server of next) {
      const old = previous.get(server.name);
      if (old !== undefined && definition(old) === definition(server)) {
        servers.set(server.name, old);
        continue;
      }
      servers.set(server.name, { ...server, generation });
      (old === undefined ? change.added : change.changed).push(server.name);
    }
    for (const name of previous.keys()) if (!servers.has(name)) change.removed.push(name);
    for (const list of [change.added, change.removed, change.changed]) list.sort();
    if (change.added.length + change.removed.length + change.changed.length === 0) change.generation = this.current;
    return { servers, change };
  }

  /**
   * Makes `next` the set of servers. Unchanged servers keep their object and
   * generation; listeners hear of the change after it is in force.
   */
  replace(next: readonly ResolvedServer[]): ServerChange {
    const previous = this.servers;
    const { servers, change } = this.plan(next);
    if (change.generation === this.current) return change;
    this.current = change.generation;
    this.servers = servers;
    this.byEndpoint = new Map([...servers.values()].map((server) => [server.endpoint, server]));
    for (const listener of this.listeners) listener(change, previous);
    return change;
  }
}
