/**
 * Request rate limits: a token bucket per key (a principal, or the network
 * address of requests that carry no valid token). A bucket holds up to
 * `burst` requests and refills at `perSecond`; a request that finds it empty
 * is refused with 429. A rate of 0 turns the limit off.
 */

export interface Rate {
  /** Requests per second a key may sustain; 0: no limit. */
  perSecond: number;
  /** Requests a key may make at once after a quiet spell. */
  burst: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** Buckets kept at most; beyond it the fullest (least recently used) are forgotten. */
const MAX_KEYS = 50_000;

export class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();
  private readonly rate: () => Rate;
  private readonly now: () => number;

  constructor(rate: () => Rate, now: () => number = () => performance.now()) {
    this.rate = rate;
    this.now = now;
  }

  /** Takes one request from `key`'s bucket: false when it is empty (the request is over the limit). */
  take(key: string): boolean {
    const { perSecond, burst } = this.rate();
    if (perSecond <= 0) return true;
    const now = this.now();
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      if (this.buckets.size >= MAX_KEYS) this.forgetFull(now, perSecond, burst);
      bucket = { tokens: burst, at: now };
      this.buckets.set(key, bucket);
    } else {
      bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) / 1000) * perSecond);
      bucket.at = now;
      // Most recently used last, so the oldest are found first.
      this.buckets.delete(key);
      this.buckets.set(key, bucket);
    }
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Seconds until `key` may make a request again (for Retry-After). */
  retryAfter(key: string): number {
    const { perSecond } = this.rate();
    const bucket = this.buckets.get(key);
    if (perSecond <= 0 || bucket === undefined) return 0;
    return Math.max(1, Math.ceil((1 - bucket.tokens) / perSecond));
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Forgets buckets that would be full by now (they hold no state); else the least recently used tenth. */
  private forgetFull(now: number, perSecond: number, burst: number): void {
    for (const [key, bucket] of this.buckets) {
      if (bucket.tokens + ((now - bucket.at) / 1000) * perSecond >= burst) this.buckets.delete(key);
    }
    if (this.buckets.size < MAX_KEYS) return;
    let drop = Math.ceil(MAX_KEYS / 10);
    for (const key of this.buckets.keys()) {
      if (drop-- <= 0) break;
      this.buckets.delete(key);
    }
  }
}
