/**
 * What has been revoked, kept in memory and refreshed from the store, so a
 * check costs a few map lookups. Revocations made on this node apply at
 * once; those made elsewhere (the CLI, another node) within `pollMs`.
 *   jti     one access token
 *   grant   every token of one authorization grant (refresh-token reuse, revoked refresh token)
 *   client  every token issued to a client up to the revocation
 *   user    every token issued for a user up to the revocation
 *           ("up to": by the token's issue time in ms, ISSUED_AT_MS)
 *   consent every token issued for one user through one client up to the
 *           revocation (the user's consent to that client was withdrawn)
 *   task    every token bound to one task (its `task` claim), whenever issued:
 *           the task was closed or revoked (docs/tasks.md)
 */
import { readTaskClaim } from './delegated.ts';
import type { RevocationKind, RevocationRecord, Store } from '../store/types.ts';

export interface TokenFacts {
  jti?: string | undefined;
  grantId?: string | undefined;
  clientId?: string | undefined;
  sub?: string | undefined;
  /** The task the token is bound to (docs/tasks.md), if any. */
  task?: string | undefined;
  /** When it was issued, epoch ms (see issuedAtMs). */
  issuedAtMs: number;
}

/**
 * The precise issue time, epoch ms, that Mandate records with every token it
 * issues: a claim of access tokens, a field of stored refresh tokens and
 * authorization codes. `iat` has whole seconds only, too coarse to tell a
 * token issued just before a revocation from one issued just after it.
 */
export const ISSUED_AT_MS = 'iat_ms';

/** The precise issue time for a token being issued now with this `iat` (seconds): now, kept inside that second. */
export function stampIssuedAt(iat: number, now = Date.now()): number {
  return Math.min(Math.max(now, iat * 1000), iat * 1000 + 999);
}

/**
 * The issue and expiry times (seconds) of a token a grant of Mandate's own
 * makes, fixed from the `now` its lifetime was worked out at: left to the
 * provider, `exp` is the second the token is signed plus its lifetime, a
 * second past what the token may outlive (the subject token, the task) when
 * that second has turned in between.
 */
export function pinnedLifetime(now: number, ttl: number): { iat: number; exp: number } {
  return { iat: now, exp: now + ttl };
}

/**
 * A token's issue time, epoch ms: its `iat_ms` if it lies within its `iat`
 * second; otherwise (a token from before Mandate recorded it) the start of
 * that second, the earliest it can have been issued, so that a revocation in
 * the same second covers it.
 */
export function issuedAtMs(iat: unknown, precise: unknown): number {
  if (typeof iat !== 'number' || !Number.isFinite(iat)) return 0;
  const start = iat * 1000;
  return typeof precise === 'number' && Number.isInteger(precise) && precise >= start && precise < start + 1000 ? precise : start;
}

/** The facts a revocation check needs, from a token's claims or a stored artifact's payload. */
export function tokenFacts(claims: Record<string, unknown>, names: { grant: string; client: string; sub: string } = { grant: 'gid', client: 'client_id', sub: 'sub' }): TokenFacts {
  const text = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);
  return {
    jti: text(claims.jti),
    grantId: text(claims[names.grant]),
    clientId: text(claims[names.client]),
    sub: text(claims[names.sub]),
    issuedAtMs: issuedAtMs(claims.iat, claims[ISSUED_AT_MS]),
    // A task-bound token (docs/tasks.md) ends with its task.
    task: readTaskClaim(claims.task)?.id,
  };
}

interface Entry {
  revokedAt: number;
  expiresAt: number;
}

export class RevocationList {
  private readonly byKind: Record<RevocationKind, Map<string, Entry>> = { jti: new Map(), grant: new Map(), client: new Map(), user: new Map(), consent: new Map(), task: new Map() };
  private lastSeq = 0;
  private timer: NodeJS.Timeout | null = null;
  private refreshing: Promise<void> | null = null;
  private readonly listeners = new Set<() => void>();

  private readonly store: Store;

  constructor(store: Store) {
    this.store = store;
  }

  private apply(record: RevocationRecord): void {
    if (record.seq > this.lastSeq) this.lastSeq = record.seq;
    const map = this.byKind[record.kind];
    const known = map.get(record.value);
    if (known === undefined || record.revokedAt > known.revokedAt) map.set(record.value, { revokedAt: record.revokedAt, expiresAt: record.expiresAt });
  }

  /** Calls `listener` after new revocations were applied here (open streams of revoked tokens end). */
  onApplied(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private applied(): void {
    for (const listener of this.listeners) listener();
  }

  /** Fetches revocations recorded since the last refresh. */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const now = Date.now();
        const records = await this.store.identity.listRevocations(this.lastSeq, now);
        for (const record of records) this.apply(record);
        this.prune(now);
        if (records.length > 0) this.applied();
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  /** Forgets revocations that outlived every token they could cover. */
  private prune(now: number): void {
    for (const map of Object.values(this.byKind)) {
      for (const [value, entry] of map) if (entry.expiresAt <= now) map.delete(value);
    }
  }

  start(pollMs: number, onError: (error: unknown) => void): void {
    // A tick while a refresh is still waiting on the store starts nothing (and reports nothing twice).
    this.timer = setInterval(() => {
      if (this.refreshing === null) void this.refresh().catch(onError);
    }, pollMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Records a revocation durably, then applies it here. */
  async revoke(kind: RevocationKind, value: string, keepUntil: number, at = Date.now()): Promise<RevocationRecord> {
    const record = await this.store.identity.addRevocation({ kind, value, revokedAt: at, expiresAt: keepUntil });
    this.apply(record);
    this.applied();
    return record;
  }

  /**
   * The reason a token is revoked, or null. A client, user or consent
   * revocation covers every token issued up to and including its instant
   * (both in epoch ms): one issued in the same millisecond is refused.
   */
  revokedBy(token: TokenFacts): RevocationKind | null {
    const issuedMs = token.issuedAtMs;
    if (token.jti !== undefined && this.byKind.jti.has(token.jti)) return 'jti';
    if (token.grantId !== undefined && this.byKind.grant.has(token.grantId)) return 'grant';
    const client = token.clientId === undefined ? undefined : this.byKind.client.get(token.clientId);
    if (client !== undefined && issuedMs <= client.revokedAt) return 'client';
    const user = token.sub === undefined ? undefined : this.byKind.user.get(token.sub);
    if (user !== undefined && issuedMs <= user.revokedAt) return 'user';
    const consent = token.sub === undefined || token.clientId === undefined ? undefined : this.byKind.consent.get(consentKey(token.sub, token.clientId));
    if (consent !== undefined && issuedMs <= consent.revokedAt) return 'consent';
    if (token.task !== undefined && this.byKind.task.has(token.task)) return 'task';
    return null;
  }
}

/** The value of a `consent` revocation. */
export function consentKey(user: string, clientId: string): string {
  return `${user}\n${clientId}`;
}

/** How long a revocation is kept: longer than any token it can cover (access tokens ≤ 1 day, refresh tokens ≤ 365 days). */
export const KEEP_MS: Record<RevocationKind, number> = {
  jti: 2 * 86_400_000,
  grant: 366 * 86_400_000,
  client: 366 * 86_400_000,
  user: 366 * 86_400_000,
  consent: 366 * 86_400_000,
  task: 366 * 86_400_000,
};
