/**
 * What has been revoked, kept in memory and refreshed from the store, so a
 * check costs a few map lookups. Revocations made on this node apply at
 * once; those made elsewhere (the CLI, another node) within `pollMs`.
 *   jti     one access token
 *   grant   every token of one authorization grant (refresh-token reuse, revoked refresh token)
 *   client  every token issued to a client up to the revocation
 *   user    every token issued for a user up to the revocation
 *   consent every token issued for one user through one client up to the
 *           revocation (the user's consent to that client was withdrawn)
 */
import type { RevocationKind, RevocationRecord, Store } from '../store/types.ts';

export interface TokenFacts {
  jti?: string | undefined;
  grantId?: string | undefined;
  clientId?: string | undefined;
  sub?: string | undefined;
  /** Issued at, epoch seconds. */
  iat: number;
}

/** The facts a revocation check needs, from a token's claims or a stored artifact's payload. */
export function tokenFacts(claims: Record<string, unknown>, names: { grant: string; client: string; sub: string } = { grant: 'gid', client: 'client_id', sub: 'sub' }): TokenFacts {
  const text = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);
  return {
    jti: text(claims.jti),
    grantId: text(claims[names.grant]),
    clientId: text(claims[names.client]),
    sub: text(claims[names.sub]),
    iat: typeof claims.iat === 'number' ? claims.iat : 0,
  };
}

interface Entry {
  revokedAt: number;
  expiresAt: number;
}

export class RevocationList {
  private readonly byKind: Record<RevocationKind, Map<string, Entry>> = { jti: new Map(), grant: new Map(), client: new Map(), user: new Map(), consent: new Map() };
  private lastSeq = 0;
  private timer: NodeJS.Timeout | null = null;
  private refreshing: Promise<void> | null = null;

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

  /** Fetches revocations recorded since the last refresh. */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const now = Date.now();
        for (const record of await this.store.identity.listRevocations(this.lastSeq, now)) this.apply(record);
        this.prune(now);
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
    return record;
  }

  /** The reason a token is revoked, or null. */
  revokedBy(token: TokenFacts): RevocationKind | null {
    const issuedMs = token.iat * 1000;
    if (token.jti !== undefined && this.byKind.jti.has(token.jti)) return 'jti';
    if (token.grantId !== undefined && this.byKind.grant.has(token.grantId)) return 'grant';
    const client = token.clientId === undefined ? undefined : this.byKind.client.get(token.clientId);
    if (client !== undefined && issuedMs <= client.revokedAt) return 'client';
    const user = token.sub === undefined ? undefined : this.byKind.user.get(token.sub);
    if (user !== undefined && issuedMs <= user.revokedAt) return 'user';
    const consent = token.sub === undefined || token.clientId === undefined ? undefined : this.byKind.consent.get(consentKey(token.sub, token.clientId));
    if (consent !== undefined && issuedMs <= consent.revokedAt) return 'consent';
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
};
