/**
 * The audit log: components report identity events here. Writes are grouped
 * (every event reported in one turn of the event loop shares one
 * transaction), and `record` resolves only once its event is durable.
 */
import type { Store } from '../store/types.ts';
import type { AuditRecord, IdentityEvent, TimedEvent } from './events.ts';

interface Queued {
  event: TimedEvent;
  resolve: () => void;
  reject: (error: unknown) => void;
}

export type AuditListener = (record: AuditRecord) => void;

const MAX_BATCH = 512;

export class AuditLog {
  private queue: Queued[] = [];
  private flushing: Promise<void> | null = null;
  private scheduled = false;
  private lastFailure: { at: number; error: unknown } | null = null;
  private lastProbe = 0;
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
    return new Promise((resolve, reject) => {
      this.queue.push({ event: { ...event, time: this.now().toISOString() }, resolve, reject });
      this.schedule();
    });
  }

  /** Records without waiting; a lost event is reported through onLost. */
  emit(event: IdentityEvent): void {
    this.record(event).catch((error: unknown) => this.onLost?.(event, error));
  }

  /** Waits until everything reported so far was written (or failed). */
  async flush(): Promise<void> {
    while (this.queue.length > 0 || this.flushing) {
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
    const batch = this.queue.splice(0, MAX_BATCH);
    if (batch.length === 0) return Promise.resolve();
    this.flushing = this.store
      .appendAudit(batch.map((entry) => entry.event))
      .then(
        (records) => {
          this.lastFailure = null;
          for (const entry of batch) entry.resolve();
          for (const record of records) for (const listener of this.listeners) listener(record);
        },
        (error: unknown) => {
          this.lastFailure = { at: Date.now(), error };
          for (const entry of batch) entry.reject(error);
        },
      )
      .finally(() => {
        this.flushing = null;
        if (this.queue.length > 0) this.schedule();
      });
    return this.flushing;
  }
}
