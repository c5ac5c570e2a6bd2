/**
 * Tool pins at run time (docs/catalog.md, "Tool pins"). For a server
 * admitted through the catalog, every `tools/list` answer from its upstream
 * is compared with the pins recorded on approval (src/catalog/pins.ts):
 *
 * - a tool whose definition equals its pin is listed, and may be called in
 *   this session;
 * - a changed or new tool is quarantined: hidden from the list, its calls
 *   refused, and reported once per definition (`server.drift_detected`, with
 *   a readable diff) until someone approves it by hash;
 * - a tool that is no longer listed is gone.
 *
 * A call is allowed only for a tool whose current definition this session
 * (or, for stateless requests, the server's last list) saw under its pin.
 * Servers from mandate.yaml are not pinned: the file is their review.
 */
import type { AuditLog } from '../audit/log.ts';
import type { Delivery, MessageFilter, Verdict } from '../gateway/delivery.ts';
import { GatewayError } from '../gateway/errors.ts';
import { isObject, type JsonRpcMessage } from '../gateway/jsonrpc.ts';
import type { RegisteredServer } from '../gateway/registry.ts';
import type { Logger } from '../observability/log.ts';
import type { Store } from '../store/types.ts';
import { compareTools, pinDefinition } from './pins.ts';
import type { ToolPin } from './types.ts';

/** At most this many sessions' views are kept per node; the oldest go first (their calls then need a new list). */
const MAX_VIEWS = 10_000;

export interface ToolGateDeps {
  store: Store;
  audit: AuditLog;
  log: Logger;
  /** The pins of a catalog entry in force, by route; undefined for a server that is not pinned (mandate.yaml's). */
  pins: (route: string) => readonly ToolPin[] | undefined;
}

export class ToolGate {
  private readonly deps: ToolGateDeps;
  /** `route#generation session` → the tools listed under their pins in that view. */
  private readonly views = new Map<string, Set<string>>();
  /** `route tool` → the live hash this node last reported as quarantined (a definition that changes again, or returns, is reported again). */
  private readonly reported = new Map<string, string>();

  constructor(deps: ToolGateDeps) {
    this.deps = deps;
  }

  private key(server: RegisteredServer, session: string | null): string {
    return `${server.name}#${server.generation} ${session ?? ''}`;
  }

  /** Forgets every view (pins changed: each session lists again before it calls). */
  reset(): void {
    this.views.clear();
  }

  /** For a catalog server: whether `tool` has a reviewed pin (Cedar's `resource.pinned`); undefined for a server that is not pinned. */
  pinned(server: RegisteredServer, tool: string): boolean | undefined {
    const pins = this.deps.pins(server.name);
    return pins === undefined ? undefined : pins.some((pin) => pin.name === tool);
  }

  /** The reviewed pin's hash of `tool` ('' when it has none): what an approval of a call is bound to. */
  pinHash(server: RegisteredServer, tool: string): string {
    return this.deps.pins(server.name)?.find((pin) => pin.name === tool)?.hash ?? '';
  }

  /** Why a call of `tool` on `server` is refused now, or null when it may go on. */
  refusal(server: RegisteredServer, session: string | null, tool: string): string | null {
    if (this.deps.pins(server.name) === undefined) return null;
    const seen = this.views.get(this.key(server, session)) ?? (session !== null ? undefined : this.views.get(this.key(server, null)));
    if (seen?.has(tool)) return null;
    return seen === undefined
      ? `list the tools first: a call of a catalog server's tool needs its reviewed definition to be seen in this session`
      : `tool "${tool}" is quarantined: its definition is not the one reviewed in the catalog (mandate servers drift ${server.name})`;
  }

  /** The list filter, on the delivery seam. */
  filter(): MessageFilter {
    return {
      name: 'catalog-pins',
      responsesTo: new Set(['tools/list']),
      filter: (message: JsonRpcMessage, delivery: Delivery): Verdict => this.review(message, delivery),
    };
  }

  private review(message: JsonRpcMessage, delivery: Delivery): Verdict {
    const { server, request } = delivery;
    const pins = this.deps.pins(server.name);
    if (pins === undefined || delivery.route !== 'response' || request === null || !('result' in message)) return;
    const result = message.result;
    if (!isObject(result) || !Array.isArray(result.tools)) {
      return { refuse: new GatewayError('upstream_protocol', `upstream server "${server.name}" sent a tools/list answer the gateway could not check`, { detail: 'no tools array' }) };
    }
    const tools = result.tools as unknown[];
    const review = compareTools(pins, tools);
    const allowed = new Set(review.allowed);
    // A paginated list adds to what this session saw; the first page starts afresh.
    const key = this.key(server, delivery.session);
    const cursor = isObject(request.params) ? request.params.cursor : undefined;
    const seen = cursor === undefined ? new Set<string>() : (this.views.get(key) ?? new Set<string>());
    for (const name of allowed) seen.add(name);
    this.remember(key, seen);
    // What is no longer as reviewed leaves every view of this server: every session lists again before it calls it.
    const unreviewed = new Set([...review.quarantined.map((drift) => drift.name), ...review.removed, ...review.invalid.flatMap((item) => (item.name !== undefined ? [item.name] : []))]);
    if (unreviewed.size > 0) this.forget(server, unreviewed, key);
    if (delivery.session !== null) {
      const shared = this.key(server, null);
      this.remember(shared, new Set([...(this.views.get(shared) ?? []), ...allowed].filter((name) => !unreviewed.has(name))));
    }
    for (const name of allowed) this.settled(server, name);
    for (const drift of review.quarantined) void this.report(server, drift, tools);
    if (allowed.size === tools.length) return;
    const kept = tools.filter((tool) => isObject(tool) && typeof tool.name === 'string' && allowed.has(tool.name));
    return { replace: { ...message, result: { ...result, tools: kept } } as JsonRpcMessage };
  }

  /** Takes these tools out of every view of this server definition but `except` (the list that found them holds only what it allowed). */
  private forget(server: RegisteredServer, names: ReadonlySet<string>, except: string): void {
    const prefix = `${server.name}#${server.generation} `;
    for (const [key, seen] of this.views) {
      if (key === except || !key.startsWith(prefix)) continue;
      for (const name of names) seen.delete(name);
    }
  }

  /** A tool listed as reviewed again: a drift this node reported for it is over (its kept definition goes, so `servers drift` shows what is live). */
  private settled(server: RegisteredServer, tool: string): void {
    const mark = `${server.name} ${tool}`;
    if (!this.reported.has(mark)) return;
    this.reported.delete(mark);
    void this.deps.store.catalog.clearDrift(server.name, tool).catch((error: unknown) => this.deps.log.warn({ server: server.name, tool, err: String(error) }, 'could not clear a settled tool drift'));
  }

  private remember(key: string, seen: Set<string>): void {
    this.views.delete(key);
    this.views.set(key, seen);
    if (this.views.size > MAX_VIEWS) {
      const oldest = this.views.keys().next().value;
      if (oldest !== undefined) this.views.delete(oldest);
    }
  }

  /** Keeps the live definition for review and records `server.drift_detected` once per change of the live definition. */
  private async report(server: RegisteredServer, drift: ReturnType<typeof compareTools>['quarantined'][number], tools: unknown[]): Promise<void> {
    const mark = `${server.name} ${drift.name}`;
    if (this.reported.get(mark) === drift.hash) return;
    this.reported.set(mark, drift.hash);
    const live = tools.find((tool) => isObject(tool) && tool.name === drift.name);
    try {
      const definition = pinDefinition(live);
      const fresh = await this.deps.store.catalog.noteDrift({ route: server.name, tool: drift.name, hash: drift.hash, kind: drift.kind, definition, diff: drift.diff, detectedAt: new Date().toISOString() });
      if (!fresh) return;
      await this.deps.audit.record({
        type: 'server.drift_detected',
        actor: 'mandate',
        server: server.name,
        tool: drift.name,
        outcome: 'denied',
        reason: drift.kind === 'new' ? 'a tool that was never reviewed' : 'the tool\'s definition changed since it was reviewed',
        data: { kind: drift.kind, hash: drift.hash, pinnedHash: drift.pinnedHash ?? null, diff: drift.diff },
      });
      this.deps.log.warn({ server: server.name, tool: drift.name, kind: drift.kind }, 'a tool was quarantined: its definition is not the one reviewed');
    } catch (error) {
      this.reported.delete(mark);
      this.deps.log.error({ server: server.name, tool: drift.name, err: String(error) }, 'could not record a quarantined tool (it stays hidden)');
    }
  }
}
