/**
 * The main-thread side of the SQLite writer thread. Appends are posted to the
 * thread and resolve when their transaction has committed; while one commit
 * is being fsynced, the audit log gathers the next batch. Next to it runs
 * the checkpoint thread (checkpoint-thread.ts), so that no commit waits for
 * a checkpoint.
 */
import { setFlagsFromString } from 'node:v8';
import { Worker } from 'node:worker_threads';
import type { AuditRecord, TimedEvent } from '../../audit/events.ts';
import { StoreUnavailableError, type Durability } from '../types.ts';

interface Reply {
  id: number;
  /** The sealed records, when they were asked for; true when only durability was. */
  records?: AuditRecord[] | true;
  error?: string;
  typeError?: boolean;
}

interface Pending {
  resolve: (records: AuditRecord[] | true) => void;
  reject: (error: Error) => void;
}

/** The writer thread's smallest young-generation semi-space, MB. */
const WRITER_SEMI_SPACE_MB = 8;

/** How often the checkpoint thread copies the WAL into the database file, ms. */
export const CHECKPOINT_INTERVAL_MS = 100;

export class SqliteWriter {
  private worker: Worker | null = null;
  private checkpointer: Worker | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly file: string;
  private readonly description: string;
  private readonly durability: Durability;

  constructor(file: string, description: string, durability: Durability) {
    this.file = file;
    this.description = description;
    this.durability = durability;
  }

  /** The checkpoint thread: started with the writer thread, stopped on close; while it is not running, the backstop checkpoint bounds the WAL. */
  private startCheckpointer(): void {
    const worker = new Worker(new URL('./checkpoint-thread.ts', import.meta.url), {
      workerData: { file: this.file, durability: this.durability, intervalMs: CHECKPOINT_INTERVAL_MS },
      execArgv: [],
    });
    worker.unref();
    const gone = () => {
      if (this.checkpointer === worker) this.checkpointer = null;
    };
    worker.on('error', gone);
    worker.on('exit', gone);
    this.checkpointer = worker;
  }

  private start(): Worker {
    // Before the writer's heap flag below: this thread allocates next to nothing.
    if (this.checkpointer === null) this.startCheckpointer();
    // The thread's young generation would otherwise stay at V8's smallest and be
    // collected every few batches, waking V8's helper threads each time
    // (docs/performance.md). V8 sizes an isolate's heap from its flags when the
    // isolate is created, so this sizes the writer's; the flag is process-wide,
    // and at most keeps the main thread's young generation (which grows past
    // this under load anyway) from shrinking below the same size.
    setFlagsFromString(`--min-semi-space-size=${WRITER_SEMI_SPACE_MB}`);
    const worker = new Worker(new URL('./writer-thread.ts', import.meta.url), { workerData: { file: this.file, durability: this.durability }, execArgv: [] });
    worker.unref();
    worker.on('message', (reply: Reply) => {
      const entry = this.pending.get(reply.id);
      if (!entry) return;
      this.pending.delete(reply.id);
      if (reply.records) entry.resolve(reply.records);
      else if (reply.typeError) entry.reject(new TypeError(reply.error));
      else entry.reject(new StoreUnavailableError(`${this.description}: append audit events failed: ${reply.error}`));
      if (this.pending.size === 0) worker.unref();
    });
    const fail = (error: Error) => {
      if (this.worker === worker) this.worker = null;
      const failure = new StoreUnavailableError(`${this.description}: the writer thread stopped: ${error.message}`, { cause: error });
      for (const entry of this.pending.values()) entry.reject(failure);
      this.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exit code ${code}`)));
    return worker;
  }

  /** Resolves with the sealed records once they are durable. */
  append(events: readonly TimedEvent[]): Promise<AuditRecord[]> {
    return this.post(events, true) as Promise<AuditRecord[]>;
  }

  /** Resolves once the events are durable; no copy of the records comes back. */
  async record(events: readonly TimedEvent[]): Promise<void> {
    await this.post(events, false);
  }

  private post(events: readonly TimedEvent[], records: boolean): Promise<AuditRecord[] | true> {
    this.worker ??= this.start();
    const worker = this.worker;
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.ref();
      worker.postMessage({ id, events, records });
    });
  }

  async close(): Promise<void> {
    const threads = [this.worker, this.checkpointer];
    this.worker = null;
    this.checkpointer = null;
    await Promise.all(
      threads.map(async (worker) => {
        if (!worker) return;
        worker.ref();
        const exited = new Promise((resolve) => worker.once('exit', resolve));
        worker.postMessage('close');
        await exited;
      }),
    );
  }
}
