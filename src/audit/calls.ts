/**
 * The journal of calls in flight: before an allowed `tools/call` is
 * forwarded, its decision (who, which tool, which policies, which set) is
 * appended to this run's journal in the data directory (runs/RUN.N.calls),
 * and the call's `mcp.request` event names it (`data.call`: RUN.ID). A crash
 * leaves the journal behind: at the next start every call in it that the
 * log has no `mcp.request` for is recorded as `policy.allowed` (`recovered`),
 * so no forwarded call is left without the record of why it was allowed.
 * A journal file is removed once all its calls are answered and recorded.
 *
 * Appending is a write to a file the process holds open: it survives a
 * crash of the process (kill -9, an OOM kill) at once. With
 * `audit.durability: power` the file is also synced (one fdatasync for every
 * line written while the one before it ran), so that the line survives a
 * power loss too. `audit.journalSync` says whether the call waits for that
 * before it is forwarded (`before-forward`), or is forwarded while the sync
 * runs (`while-forwarding`, the default): then a power loss within one sync
 * of forwarding can lose the decision of a call that was never answered
 * (an answered call's own `mcp.request` is durable before its answer).
 */
import { closeSync, fdatasync, fstatSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { IdentityEvent, JsonValue } from './events.ts';

const DIR = 'runs';
/** A journal file is replaced by a new one past this size, and removed once every call in it is done. */
const ROTATE_BYTES = 16 * 1024 * 1024;

/** What the journal keeps of a call: the data of its `policy.allowed` event. */
export interface CallEntry {
  actor: string;
  server: string;
  tool: string | null;
  data: { [key: string]: JsonValue };
}

/** A call read back from a journal: its entry, when it was made, and its ref (RUN.ID). */
export type JournaledCall = CallEntry & { time: string; ref: string };

/**
 * A call as it is journaled: what is the same for every call of one caller
 * under one decision (`fixed`: the JSON of `actor`, `server` and `data`,
 * without its braces, made once by `fixedPart`), and what is not.
 */
export interface CallLine {
  fixed: string;
  tool: string | null;
  session: string | null;
  address: string | null;
}

/** The part of a journal line shared by every call of one caller under one decision. */
export function fixedPart(actor: string, server: string, data: { [key: string]: JsonValue }): string {
  return JSON.stringify({ actor, server, data }).slice(1, -1);
}

interface JournalFile {
  file: string;
  fd: number;
  size: number;
  /** How many calls begun in this file are not done yet. */
  open: number;
  /** The next sync of this file (not started yet), and the one running. */
  next: Promise<void> | null;
  running: Promise<void> | null;
  /** Every call with an id up to this one is synced. */
  syncedThrough: number;
  /** Why a sync of this file failed: its unsynced lines can no longer be trusted to be synced. */
  failed: Error | null;
}

/** When a call's journal line must be synced (with durability power): before the call is forwarded, or before it is answered. */
export type JournalSync = 'before-forward' | 'while-forwarding';

const journalName = (run: string, part: number) => `${run}.${part}.calls`;
const JOURNAL = /^([0-9a-f]{16})\.(\d+)\.calls$/;

export class CallJournal {
  private readonly dataDir: string;
  private readonly run: string;
  private readonly sync: boolean;
  /** With durability power: the call waits for its line's sync before it is forwarded (else before it is answered). */
  readonly syncsBeforeForward: boolean;
  private current: JournalFile | null = null;
  private readonly files: JournalFile[] = [];
  /** The file of each call begun and not done (nothing else is kept in memory: the file has the rest). */
  private readonly where = new Map<number, JournalFile>();
  private nextId = 1;
  private part = 0;

  constructor(dataDir: string, run: string, durability: 'process' | 'power', when: JournalSync = 'while-forwarding') {
    this.dataDir = dataDir;
    this.run = run;
    this.sync = durability === 'power';
    this.syncsBeforeForward = this.sync && when === 'before-forward';
  }

  /** Calls begun and not done, oldest first (an orderly stop records them), read back from the journal. */
  get pending(): JournaledCall[] {
    if (this.where.size === 0) return [];
    const refs = new Set([...this.where.keys()].map((id) => this.ref(id)));
    return journaledCalls(this.dataDir, this.run).entries.filter((entry) => refs.has(entry.ref));
  }

  private open(): JournalFile {
    const file = path.join(this.dataDir, DIR, journalName(this.run, this.part++));
    const fd = openSync(file, 'a', 0o600);
    const journal: JournalFile = { file, fd, size: fstatSync(fd).size, open: 0, next: null, running: null, syncedThrough: 0, failed: null };
    this.files.push(journal);
    return journal;
  }

  private append(journal: JournalFile, line: string): void {
    writeSync(journal.fd, line);
    // Characters, not bytes: the size only decides when a new file starts.
    journal.size += line.length;
  }

  /** One fdatasync covering every line appended before it starts. */
  private synced(journal: JournalFile): Promise<void> {
    if (journal.next !== null) return journal.next;
    const after = journal.running ?? Promise.resolve();
    const next = after
      .catch(() => undefined)
      .then(() => {
        journal.next = null;
        // Every line written so far (writes are synchronous) is covered by this sync.
        const through = this.nextId - 1;
        const running = new Promise<void>((resolve, reject) =>
          fdatasync(journal.fd, (error) => {
            if (error) {
              // A failed sync may have dropped the pages it could not write: a later sync
              // that succeeds proves nothing about them.
              journal.failed ??= error;
              reject(error);
              return;
            }
            if (journal.failed === null) journal.syncedThrough = Math.max(journal.syncedThrough, through);
            resolve();
          }),
        );
        journal.running = running;
        return running.finally(() => {
          if (journal.running === running) journal.running = null;
        });
      });
    journal.next = next;
    return next;
  }

  /**
   * Appends a call about to be forwarded and returns its id; throws if the
   * line cannot be written. The line is written at once (so the call waits
   * for no turn of the loop) and, with durability power, a sync of the file
   * starts (or the next one is queued): one sync covers every line written
   * before it starts. `durable` says when the call may go on.
   */
  begin(call: CallLine, now = Date.now()): number {
    if (this.current === null || this.current.size > ROTATE_BYTES || this.current.failed !== null) {
      const replaced = this.current;
      this.current = this.open();
      if (replaced !== null && replaced.open === 0) this.remove(replaced);
    }
    const journal = this.current;
    const id = this.nextId;
    this.append(journal, `{"begin":${id},"at":${now},"tool":${JSON.stringify(call.tool)},"session":${JSON.stringify(call.session)},"address":${JSON.stringify(call.address)},${call.fixed}}\n`);
    this.nextId += 1;
    journal.open += 1;
    this.where.set(id, journal);
    // Its outcome is read through durable(); a failure marks the file.
    if (this.sync) this.synced(journal).catch(() => undefined);
    return id;
  }

  /**
   * Resolves once the call's line is synced (at once with durability
   * process, or when a sync already covered it: then null, nothing to wait
   * for); rejects if the file could not be synced.
   */
  durable(id: number): Promise<void> | null {
    if (!this.sync) return null;
    const journal = this.where.get(id);
    if (journal === undefined || journal.syncedThrough >= id) return null;
    if (journal.failed !== null) return Promise.reject(journal.failed);
    return this.synced(journal).then(() => {
      if (journal.syncedThrough < id) throw journal.failed ?? new Error('the call journal was not synced');
    });
  }

  /** The call's own record is durable: it needs no recovery (its file goes once all its calls are done). */
  done(id: number): void {
    const journal = this.where.get(id);
    if (journal === undefined) return;
    this.where.delete(id);
    journal.open -= 1;
    if (journal !== this.current && journal.open === 0) this.remove(journal);
  }

  /** How the call's own `mcp.request` event names it (`data.call`): recovery leaves out the calls the log has. */
  ref(id: number): string {
    return `${this.run}.${id}`;
  }

  private remove(journal: JournalFile): void {
    const index = this.files.indexOf(journal);
    if (index >= 0) this.files.splice(index, 1);
    if (journal.running !== null || journal.next !== null) {
      // A sync still uses the descriptor: close once it settles.
      void Promise.allSettled([journal.running, journal.next]).then(() => this.discard(journal));
      return;
    }
    this.discard(journal);
  }

  private discard(journal: JournalFile): void {
    try {
      closeSync(journal.fd);
    } catch {
      // already closed
    }
    rmSync(journal.file, { force: true });
  }

  /** Orderly stop with nothing pending: the journal is no longer needed. */
  close(): void {
    for (const journal of [...this.files]) this.remove(journal);
    this.current = null;
  }
}

/** A crashed run's journaled calls, oldest first, each with its ref (a torn last line is skipped). */
export function journaledCalls(dataDir: string, run: string): { entries: JournaledCall[]; files: string[] } {
  let names: string[];
  try {
    names = readdirSync(path.join(dataDir, DIR));
  } catch {
    return { entries: [], files: [] };
  }
  const files = names
    .map((name) => JOURNAL.exec(name))
    .filter((match): match is RegExpExecArray => match !== null && match[1] === run)
    .sort((a, b) => Number(a[2]) - Number(b[2]))
    .map((match) => path.join(dataDir, DIR, match[0]));
  const entries: JournaledCall[] = [];
  for (const file of files) {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (line === '') continue;
      let parsed: { begin?: unknown; at?: unknown; actor?: unknown; server?: unknown; tool?: unknown; session?: unknown; address?: unknown; data?: unknown };
      try {
        parsed = JSON.parse(line) as typeof parsed;
      } catch {
        continue;
      }
      if (typeof parsed.begin !== 'number' || typeof parsed.at !== 'number' || typeof parsed.actor !== 'string' || typeof parsed.server !== 'string') continue;
      const data = typeof parsed.data === 'object' && parsed.data !== null ? (parsed.data as { [key: string]: JsonValue }) : {};
      entries.push({
        ref: `${run}.${parsed.begin}`,
        time: new Date(parsed.at).toISOString(),
        actor: parsed.actor,
        server: parsed.server,
        tool: typeof parsed.tool === 'string' ? parsed.tool : null,
        data: {
          ...data,
          session: typeof parsed.session === 'string' ? parsed.session : null,
          address: typeof parsed.address === 'string' ? parsed.address : null,
        },
      });
    }
  }
  return { entries, files };
}

/** The `policy.allowed` event of a call recovered from a journal: it was forwarded, its own record never written. */
export function recoveredCall(entry: JournaledCall, run: string): IdentityEvent {
  const policies = Array.isArray(entry.data.policies) ? entry.data.policies.filter((p): p is string => typeof p === 'string') : [];
  return {
    type: 'policy.allowed',
    actor: entry.actor,
    server: entry.server,
    tool: entry.tool,
    outcome: 'success',
    reason: `permitted by ${policies.join(', ')}`,
    data: { ...entry.data, call: entry.ref, recovered: true, calledAt: entry.time, run },
  };
}

/** Removes a recovered run's journal. */
export function forgetCalls(files: readonly string[]): void {
  for (const file of files) rmSync(file, { force: true });
}
