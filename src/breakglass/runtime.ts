/**
 * Break-glass grants at the gateway (docs/breakglass.md): which grants are in
 * force, for the policy context (`context.breakglass`) and the marking of
 * every request one covers.
 *
 * A grant covers a user's requests on one server: every request there when
 * it names no tools, else the calls of the tools it names (and the listing
 * of those tools). It is in force from its opening until it expires or is
 * closed. Each node reads the grants in force when the store's break-glass
 * change counter moves (polled once a second) and when one of them expires,
 * so a grant opened or closed anywhere is in force, or not, within about a
 * second, and an expired one is never used: its expiry is checked against
 * the clock on each request as well.
 *
 * The number of grants whose review is overdue (`breakglass.reviewDays`
 * after opening, unreviewed) is read for the metric when the grants change,
 * and once a minute (a grant becomes overdue with time alone).
 */
import type { BreakglassLookup } from '../policy/service.ts';
import type { BreakglassFacts } from '../policy/request.ts';
import type { Logger } from '../observability/log.ts';
import type { BreakglassRecord } from '../store/breakglass.ts';
import { Poller } from '../store/poller.ts';

/** What the runtime reads of a grant. */
export type Grant = Pick<BreakglassRecord, 'id' | 'user' | 'openedBy' | 'server' | 'tools' | 'ticket' | 'reason' | 'expiresAt'>;

/** The store's break-glass plane, as far as the gateway reads it. */
export interface GrantSource {
  active(now: number): Promise<Grant[]>;
  unreviewed(before: number): Promise<unknown[]>;
  lastChange(): Promise<number>;
}

export interface RuntimeDeps {
  source: GrantSource;
  log: Logger;
  /** Read at each count (a reload may change it). */
  reviewDays: () => number;
  /** The overdue count, for the metric. */
  onOverdue?: (count: number) => void;
  now?: () => number;
  refreshMs?: number;
}

const DAY_MS = 86_400_000;
const OVERDUE_EVERY_MS = 60_000;

export class BreakglassRuntime implements BreakglassLookup {
  private readonly deps: RuntimeDeps;
  /** Grants in force, by user. */
  private byUser = new Map<string, Grant[]>();
  private seen = -1;
  private nextExpiry = Number.POSITIVE_INFINITY;
  private readonly poller = new Poller(
    (force) => this.read(force),
    (error) => this.deps.log.warn({ err: String(error) }, 'could not read the break-glass grants; the ones read before stay in force until they expire'),
  );
  private countedAt = 0;

  constructor(deps: RuntimeDeps) {
    this.deps = deps;
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  start(): Promise<void> {
    return this.poller.start(this.deps.refreshMs ?? 1000);
  }

  stop(): void {
    this.poller.stop();
  }

  /** Reads the grants in force again if they changed, one expired, or when forced. */
  refresh(force = false): Promise<void> {
    return this.poller.run(force);
  }

  private async read(force: boolean): Promise<void> {
    const now = this.now();
    const last = await this.deps.source.lastChange();
    const changed = last !== this.seen;
    if (force || changed || this.nextExpiry <= now) {
      const grants = await this.deps.source.active(now);
      const byUser = new Map<string, Grant[]>();
      for (const grant of grants) byUser.set(grant.user, [...(byUser.get(grant.user) ?? []), grant]);
      this.byUser = byUser;
      this.nextExpiry = Math.min(Number.POSITIVE_INFINITY, ...grants.map((grant) => grant.expiresAt));
      this.seen = last;
    }
    if (this.deps.onOverdue !== undefined && (force || changed || now - this.countedAt >= OVERDUE_EVERY_MS)) {
      this.countedAt = now;
      this.deps.onOverdue((await this.deps.source.unreviewed(now - this.deps.reviewDays() * DAY_MS)).length);
    }
  }

  /** The grant in force covering `user`'s request on `server` (and `tool`; null: a request on the server itself). */
  covering(user: string, server: string, tool: string | null): BreakglassFacts | null {
    const grants = this.byUser.get(user);
    if (grants === undefined) return null;
    const now = this.now();
    for (const grant of grants) {
      if (grant.server !== server || grant.expiresAt <= now) continue;
      if (grant.tools.length > 0 && (tool === null || !grant.tools.includes(tool))) continue;
      return { id: grant.id, ticket: grant.ticket, reason: grant.reason, openedBy: grant.openedBy };
    }
    return null;
  }
}
