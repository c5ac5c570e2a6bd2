/**
 * The failed-login throttle: at most `limit` failed sign-in attempts per user
 * name and per network address within a sliding window, in memory, one per
 * provider unless the caller supplies its own.
 */
import type Provider from 'oidc-provider';

export interface ThrottleOptions {
  /** Failed attempts allowed per window, per user name and per address. */
  limit?: number;
  windowMs?: number;
  /** Keys kept per table before the oldest are dropped. */
  maxKeys?: number;
  now?: () => number;
}

/** One attempt in progress: counted from the start, so parallel guesses cannot slip past the limit. */
export interface ThrottleTicket {
  /** The attempt succeeded: forget the name's failures and this attempt's mark on the address. */
  succeeded(): void;
}

/**
 * At most `limit` failed sign-in attempts per user name and per network
 * address within a sliding window. In memory, per process.
 */
export class LoginThrottle {
  readonly limit: number;
  readonly windowMs: number;
  private readonly maxKeys: number;
  private readonly now: () => number;
  private readonly names = new Map<string, number[]>();
  private readonly addresses = new Map<string, number[]>();

  constructor(options: ThrottleOptions = {}) {
    this.limit = options.limit ?? 5;
    this.windowMs = options.windowMs ?? 15 * 60_000;
    this.maxKeys = options.maxKeys ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  private recent(table: Map<string, number[]>, key: string, now: number): number[] {
    const marks = table.get(key);
    if (!marks) return [];
    const live = marks.filter((at) => now - at < this.windowMs);
    if (live.length === 0) table.delete(key);
    else if (live.length !== marks.length) table.set(key, live);
    return live;
  }

  private mark(table: Map<string, number[]>, key: string, at: number): void {
    const marks = this.recent(table, key, at);
    table.delete(key);
    table.set(key, [...marks, at].slice(-this.limit));
    while (table.size > this.maxKeys) {
      const oldest = table.keys().next().value as string;
      table.delete(oldest);
    }
  }

  /** Seconds until an attempt for this name from this address would be allowed; 0 if allowed now. */
  retryAfter(name: string | null, address: string): number {
    const now = this.now();
    let until = 0;
    for (const [table, key] of [[this.names, name], [this.addresses, address]] as const) {
      if (key === null) continue;
      const marks = this.recent(table, key, now);
      if (marks.length >= this.limit) until = Math.max(until, marks[marks.length - this.limit]! + this.windowMs);
    }
    return until === 0 ? 0 : Math.max(1, Math.ceil((until - now) / 1000));
  }

  /** Starts an attempt, counted as failed unless the ticket reports success; null if refused. */
  begin(name: string | null, address: string): ThrottleTicket | null {
    if (this.retryAfter(name, address) > 0) return null;
    const at = this.now();
    if (name !== null) this.mark(this.names, name, at);
    this.mark(this.addresses, address, at);
    return {
      succeeded: () => {
        if (name !== null) this.names.delete(name);
        const marks = this.addresses.get(address);
        const index = marks?.indexOf(at) ?? -1;
        if (marks && index >= 0) {
          marks.splice(index, 1);
          if (marks.length === 0) this.addresses.delete(address);
        }
      },
    };
  }
}

const throttles = new WeakMap<Provider, LoginThrottle>();

/** The throttle given, else the one kept for this provider (created on first use). */
export function throttleFor(deps: { provider: Provider; throttle?: LoginThrottle | undefined }): LoginThrottle {
  if (deps.throttle) return deps.throttle;
  let throttle = throttles.get(deps.provider);
  if (!throttle) {
    throttle = new LoginThrottle();
    throttles.set(deps.provider, throttle);
  }
  return throttle;
}
