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
 * before it is forwarded (`before-forward`), or is forwarded at once
 * (`while-forwarding`, the default): then the file is synced when a call
 * is still in flight 5 to 10 ms after its line was written (AGE_CHECK_MS),
 * and a power loss before that can lose the decision of a call that was
 * never answered (an answered call's own `mcp.request` is durable before
 * its answer, so its line needs no sync).
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
  /** Removed (every call in it done): its descriptor is closed or about to be. */
  removed: boolean;
  /** Why a sync of this file failed: its unsynced lines can no longer be trusted to be synced. */
  failed: Error | null;
}

/**
 * With `while-forwarding`, the lines written are looked at every this many
 * ms: when a call whose line is at least this old is still in flight, the
 * file is synced; the lines of calls already done (their own `mcp.request`
 * durable) need no sync. So a line is synced, or its call done, within two
 * of these (and one fdatasync) of being written, and calls that are answered
 * sooner cost no sync at all (docs/performance.md).
 */
export const AGE_CHECK_MS = 5;

/** When a call's journal line is synced (with durability power): before the call is forwarded, or while it runs if it is still in flight (AGE_CHECK_MS). */
export type JournalSync = 'before-forward' | 'while-forwarding';

const journalName = (run: string, part: number) => `${run}.${part}.calls`;
const JOURNAL = /^([0-9a-f]{16})\.(\d+)\.calls$/;

export class CallJournal {
  private readonly dataDir: string;
  private readonly run: string;
  private readonly sync: boolean;
  /** With durability power and before-forward: the call waits for its line's sync before it is forwarded. */
  readonly syncsBeforeForward: boolean;
  private current: JournalFile | null = null;
  private readonly files: JournalFile[] = [];
  /** The file of each call begun and not done (nothing else is kept in memory: the file has the rest). */
  private readonly where = new Map<number, JournalFile>();
  private nextId = 1;
  /** Lines begun in this turn of the event loop, written together at its end (to the current file). */
  private unwritten: string[] = [];
  /** Settles once they are written. */
  private writing: PromiseWithResolvers<void> | null = null;
  private part = 0;
  /** With while-forwarding: the next look at the current file's lines, and the newest line it judges. */
  private aging: NodeJS.Timeout | null = null;
  private judging = 0;

  constructor(dataDir: string, run: string, durability: 'process' | 'power', when: JournalSync = 'while-forwarding') {
    this.dataDir = dataDir;
    this.run = run;
    this.sync = durability === 'power';
    this.syncsBeforeForward = this.sync && when === 'before-forward';
  }

  /** Calls begun and not done, oldest first (an orderly stop records them), read back from the journal. */
  get pending(): JournaledCall[] {
    if (this.where.size === 0) return [];
    this.write();
    const refs = new Set([...this.where.keys()].map((id) => this.ref(id)));
    return journaledCalls(this.dataDir, this.run).entries.filter((entry) => refs.has(entry.ref));
  }

  private open(): JournalFile {
    const file = path.join(this.dataDir, DIR, journalName(this.run, this.part++));
    const fd = openSync(file, 'a', 0o600);
    const journal: JournalFile = { file, fd, size: fstatSync(fd).size, open: 0, next: null, running: null, syncedThrough: 0, failed: null, removed: false };
    this.files.push(journal);
    return journal;
  }

  /**
   * One fdatasync covering every line written before it starts, at once
   * after the one running.
   */
  private synced(journal: JournalFile): Promise<void> {
    if (journal.next !== null) return journal.next;
    const after = journal.running ?? Promise.resolve();
    const next = after
      .catch(() => undefined)
      .then(() => {
        journal.next = null;
        if (journal.removed) return;
        // Every line begun so far is written now (writes are synchronous), so this sync covers it.
        if (journal === this.current) this.write();
        if (journal.failed !== null) throw journal.failed;
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
   * Begins a call about to be forwarded and returns its id. Its line is
   * written at the end of this turn of the event loop, with every other line
   * begun in it; with before-forward a sync of the file is queued (one sync
   * covers every line written before it starts), with while-forwarding the
   * line is looked at later (watch). `forwardable` says when the call may go on.
   */
  begin(call: CallLine, now = Date.now()): number {
    if (this.current === null || this.current.size > ROTATE_BYTES || this.current.failed !== null) {
      // What was begun for the file it replaces goes there first.
      this.write();
      const replaced = this.current;
      this.current = this.open();
      if (replaced !== null && replaced.open === 0) void this.remove(replaced);
      // Its calls still in flight are no longer looked at: their lines are synced now.
      else if (replaced !== null && this.sync && replaced.failed === null) this.synced(replaced).catch(() => undefined);
    }
    const journal = this.current;
    const id = this.nextId;
    const line = `{"begin":${id},"at":${now},"tool":${JSON.stringify(call.tool)},"session":${JSON.stringify(call.session)},"address":${JSON.stringify(call.address)},${call.fixed}}\n`;
    this.unwritten.push(line);
    // Characters, not bytes: the size only decides when a new file starts.
    journal.size += line.length;
    this.nextId += 1;
    journal.open += 1;
    this.where.set(id, journal);
    if (this.writing === null) {
      this.writing = Promise.withResolvers<void>();
      // A call whose line cannot be written is refused: nobody waiting is no unhandled rejection.
      this.writing.promise.catch(() => undefined);
      setImmediate(() => this.write());
    }
    // The sync's outcome is read through durable(); a failure marks the file.
    if (this.syncsBeforeForward) this.synced(journal).catch(() => undefined);
    else if (this.sync && this.aging === null) this.watch();
    return id;
  }

  /** Looks at the lines written so far (the current file's) AGE_CHECK_MS from now. */
  private watch(): void {
    this.judging = this.nextId - 1;
    this.aging = setTimeout(() => this.age(), AGE_CHECK_MS);
    this.aging.unref();
  }

  /** Syncs the current file if a call whose line is old enough is still in flight; else its lines need none. */
  private age(): void {
    this.aging = null;
    const journal = this.current;
    if (journal === null || journal.removed || journal.failed !== null) return;
    const old = this.judging;
    let inFlight = false;
    for (const [id, file] of this.where) {
      if (file === journal && id > journal.syncedThrough && id <= old) {
        inFlight = true;
        break;
      }
    }
    if (inFlight) this.synced(journal).catch(() => undefined);
    // Every call up to `old` is done: its own record is durable, its line needs no sync.
    else journal.syncedThrough = Math.max(journal.syncedThrough, old);
    if (this.nextId - 1 > old) this.watch();
  }

  /**
   * Resolves once the call may be forwarded: its line written (every line
   * begun in one turn of the event loop goes in one write, at its end) and,
   * with `before-forward`, synced; rejects if it could not be. Null when
   * there is nothing to wait for.
   */
  forwardable(id: number): Promise<void> | null {
    if (this.syncsBeforeForward) return this.durable(id);
    return this.writing?.promise ?? null;
  }

  /** Writes the lines begun and not written yet (to the current file), and settles their wait. */
  private write(): void {
    const writing = this.writing;
    if (writing === null) return;
    this.writing = null;
    const lines = this.unwritten.join('');
    this.unwritten = [];
    const journal = this.current;
    if (journal === null) return writing.reject(new Error('the call journal is closed'));
    try {
      writeSync(journal.fd, lines);
      writing.resolve();
    } catch (error) {
      // Part of the lines may be in the file: it is not written to again.
      journal.failed ??= error instanceof Error ? error : new Error(String(error));
      writing.reject(error);
    }
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
    if (journal !== this.current && journal.open === 0) void this.remove(journal);
  }

  /** How the call's own `mcp.request` event names it (`data.call`): recovery leaves out the calls the log has. */
  ref(id: number): string {
    return `${this.run}.${id}`;
  }

  /** Closes and deletes a file whose calls are all done; settles once it is gone. */
  private remove(journal: JournalFile): Promise<void> {
    const index = this.files.indexOf(journal);
    if (index >= 0) this.files.splice(index, 1);
    // Every call in it is done: a sync not started yet has nothing left to do.
    journal.removed = true;
    // A sync still using the descriptor: close once it settles.
    if (journal.running !== null) return journal.running.catch(() => undefined).then(() => this.discard(journal));
    this.discard(journal);
    return Promise.resolve();
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
  async close(): Promise<void> {
    if (this.aging !== null) clearTimeout(this.aging);
    this.aging = null;
    this.write();
    this.current = null;
    await Promise.all([...this.files].map((journal) => this.remove(journal)));
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
