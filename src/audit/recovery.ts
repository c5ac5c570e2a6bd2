/**
 * Evidence of an unclean stop. Each gateway run leaves a marker file in the
 * data directory (runs/RUN.json: its run id, process id and start time) that
 * an orderly stop removes. A marker whose process is gone at the next start
 * is a run that crashed (kill -9, OOM kill, power loss): the new run records
 * `gateway.recovered` naming it, closes in the log every session that run
 * opened and never closed (`session.closed`, reason `crash`), and records the
 * calls it forwarded whose own record never came (`policy.allowed`,
 * `recovered`, from the run's call journal: src/audit/calls.ts).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Store } from '../store/types.ts';
import type { AuditLog } from './log.ts';
import type { IdentityEvent } from './events.ts';
import { forgetCalls, journaledCalls, recoveredCall } from './calls.ts';

export interface RunMarker {
  run: string;
  pid: number;
  startedAt: string;
}

const DIR = 'runs';
const PAGE = 5000;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function markerFile(dataDir: string, run: string): string {
  return path.join(dataDir, DIR, `${run}.json`);
}

/** Writes this run's marker; returns it. */
export function beginRun(dataDir: string, now = new Date()): RunMarker {
  const marker: RunMarker = { run: randomBytes(8).toString('hex'), pid: process.pid, startedAt: now.toISOString() };
  mkdirSync(path.join(dataDir, DIR), { recursive: true, mode: 0o700 });
  writeFileSync(markerFile(dataDir, marker.run), `${JSON.stringify(marker)}\n`, { mode: 0o600 });
  return marker;
}

/** Removes this run's marker: the run ended in order. */
export function endRun(dataDir: string, marker: RunMarker): void {
  rmSync(markerFile(dataDir, marker.run), { force: true });
}

/** Markers of earlier runs whose process is gone, oldest first. */
export function crashedRuns(dataDir: string): RunMarker[] {
  let names: string[];
  try {
    names = readdirSync(path.join(dataDir, DIR));
  } catch {
    return [];
  }
  const found: RunMarker[] = [];
  for (const name of names) {
    if (!/^[0-9a-f]{16}\.json$/.test(name)) continue;
    try {
      const marker = JSON.parse(readFileSync(path.join(dataDir, DIR, name), 'utf8')) as RunMarker;
      if (typeof marker.run === 'string' && Number.isInteger(marker.pid) && typeof marker.startedAt === 'string' && !alive(marker.pid)) found.push(marker);
    } catch {
      // an unreadable marker (a crash while it was written) names no run
    }
  }
  return found.sort((a, b) => (a.startedAt < b.startedAt ? -1 : 1));
}

interface SessionBody {
  type: string;
  actor: string | null;
  server: string | null;
  outcome: string;
  data?: { session?: string; run?: string };
}

/** Sessions the run opened (successfully) and never closed, as their `session.opened` events. */
async function openSessionsOf(store: Store, run: RunMarker): Promise<SessionBody[]> {
  const open = new Map<string, SessionBody>();
  let afterSeq = 0;
  for (;;) {
    const page = await store.audit.list({ afterSeq, since: run.startedAt, types: ['session.opened', 'session.closed'], limit: PAGE });
    for (const record of page) {
      const event = JSON.parse(record.body) as SessionBody;
      const handle = event.data?.session;
      if (event.data?.run !== run.run || typeof handle !== 'string') continue;
      if (event.type === 'session.opened' && event.outcome === 'success') open.set(handle, event);
      else if (event.type === 'session.closed') open.delete(handle);
    }
    const last = page.at(-1);
    if (page.length < PAGE || !last) break;
    afterSeq = last.seq;
  }
  return [...open.values()];
}

/** Which of the run's journaled calls the log has an `mcp.request` for (read from the first journaled call's time on). */
async function answeredCalls(store: Store, run: RunMarker, since: string): Promise<Set<string>> {
  const answered = new Set<string>();
  const prefix = `${run.run}.`;
  let afterSeq = 0;
  for (;;) {
    const page = await store.audit.list({ afterSeq, since, types: ['mcp.request'], limit: PAGE });
    for (const record of page) {
      const call = (JSON.parse(record.body) as { data?: { call?: unknown } }).data?.call;
      if (typeof call === 'string' && call.startsWith(prefix)) answered.add(call);
    }
    const last = page.at(-1);
    if (page.length < PAGE || !last) break;
    afterSeq = last.seq;
  }
  return answered;
}

/** Records every crashed run found in the data directory, and closes its sessions in the log; then forgets its marker. */
export async function recoverCrashedRuns(dataDir: string, store: Store, audit: AuditLog, current: RunMarker): Promise<RunMarker[]> {
  const crashed = crashedRuns(dataDir).filter((marker) => marker.run !== current.run);
  for (const marker of crashed) {
    const sessions = await openSessionsOf(store, marker);
    const journal = journaledCalls(dataDir, marker.run);
    const answered = journal.entries.length === 0 ? new Set<string>() : await answeredCalls(store, marker, (journal.entries[0] as { time: string }).time);
    const calls = { entries: journal.entries.filter((entry) => !answered.has(entry.ref)), files: journal.files };
    const events: IdentityEvent[] = [
      {
        type: 'gateway.recovered',
        outcome: 'success',
        reason: 'the previous run stopped without an orderly shutdown',
        data: { previousRun: marker.run, previousPid: marker.pid, previousStartedAt: marker.startedAt, sessionsClosed: sessions.length, callsRecovered: calls.entries.length, run: current.run },
      },
      ...calls.entries.map((entry) => recoveredCall(entry, marker.run)),
      ...sessions.map(
        (opened): IdentityEvent => ({
          type: 'session.closed',
          actor: opened.actor,
          server: opened.server,
          outcome: 'success',
          reason: 'crash',
          data: { session: opened.data?.session ?? null, run: marker.run },
        }),
      ),
    ];
    await Promise.all(events.map((event) => audit.record(event)));
    forgetCalls(calls.files);
    rmSync(markerFile(dataDir, marker.run), { force: true });
  }
  return crashed;
}
