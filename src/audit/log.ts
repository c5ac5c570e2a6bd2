/**
 * The audit log: components report identity events here. Writes are grouped
 * (every event reported in one turn of the event loop shares one
 * transaction), and `record` resolves only once its event is durable.
 */
import type { Store } from '../store/types.ts';
import type { IdentityEvent, TimedEvent } from './events.ts';

/** Events that will share one transaction, and the promise they all wait on. */
interface Batch {
  events: TimedEvent[];
  done: Promise<void>;
  resolve: () => void;
  reject: (error: unknown) => void;
}

function newBatch(): Batch {
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  // A batch nobody waits on (every event emitted) must not be an unhandled rejection.
  promise.catch(() => undefined);
  return { events: [], done: promise, resolve, reject };
}

/** Told of each event once it is durable. */
export type AuditListener = (event: TimedEvent) => void;

const MAX_BATCH = 512;

export class AuditLog {
  /** Batches waiting to be written, oldest first; only the last one still takes events. */
  private readonly waiting: Batch[] = [];
  private flushing: Promise<void> | null = null;
  private scheduled = false;
  private lastFailure: { at: number; error: unknown } | null = null;
  private lastProbe = 0;
  private probing: Promise<void> | null = null;
  private readonly listeners = new Set<AuditListener>();
  private readonly store: Store;
  private readonly now: () => Date;
  /** Called for a fire-and-forget event that could not be written. */
  onLost: ((event: IdentityEvent, error: unknown) => void) | null = null;

  constructor(store: Store, now: () => Date = () => new Date()) {
    this.store = store;
    this.now = now;
  }

  /** True unless the last write failed. */
  get healthy(): boolean {
    return this.lastFailure === null;
  }

  /**
   * Resolves if events can be written now; rejects otherwise. While the last
   * write failed (at most every 250 ms), or the store has seen a lost
   * connection, this pings the store, so that a request is refused before
   * anything is forwarded.
   */
  async ensureWritable(): Promise<void> {
    const failure = this.lastFailure;
    if (!failure && this.store.healthy) return;
    if (failure && Date.now() - this.lastProbe < 250) throw failure.error;
    // One ping at a time: requests that arrive while it runs share its outcome,
    // so a stalled database sees one probe, not one per request.
    this.probing ??= this.probe(failure).finally(() => {
      this.probing = null;
    });
    return this.probing;
  }

  private async probe(failure: { at: number; error: unknown } | null): Promise<void> {
    this.lastProbe = Date.now();
    try {
      await this.store.ping();
    } catch (error) {
      this.lastFailure = { at: Date.now(), error };
      throw error;
    }
    if (this.lastFailure === failure) this.lastFailure = null;
  }

  subscribe(listener: AuditListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves once the event is durable; rejects (StoreUnavailableError) if it could not be written. */
  record(event: IdentityEvent): Promise<void> {
    let batch = this.waiting.at(-1);
    if (batch === undefined || batch.events.length >= MAX_BATCH) {
      batch = newBatch();
      this.waiting.push(batch);
    }
    batch.events.push({ ...event, time: this.now().toISOString() });
    this.schedule();
    return batch.done;
  }

  /** Records without waiting; a lost event is reported through onLost. */
  emit(event: IdentityEvent): void {
    this.record(event).catch((error: unknown) => this.onLost?.(event, error));
  }

  /** Waits until everything reported so far was written (or failed). */
  async flush(): Promise<void> {
    while (this.waiting.length > 0 || this.flushing) {
      if (this.flushing) await this.flushing;
      else await this.write();
    }
  }

  private schedule(): void {
    if (this.scheduled || this.flushing) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.write();
    });
  }

  private write(): Promise<void> {
    if (this.flushing) return this.flushing;
    const batch = this.waiting.shift();
    if (batch === undefined) return Promise.resolve();
    this.flushing = this.store.audit
      .record(batch.events)
      .then(
        () => {
          this.lastFailure = null;
          batch.resolve();
          for (const event of batch.events) for (const listener of this.listeners) listener(event);
        },
        (error: unknown) => {
          this.lastFailure = { at: Date.now(), error };
          batch.reject(error);
        },
      )
      .finally(() => {
        this.flushing = null;
        if (this.waiting.length > 0) this.schedule();
      });
    return this.flushing;
  }
}
