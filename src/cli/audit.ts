/** `mandate audit list | verify | export`. */
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { ChainVerifier } from '../audit/chain.ts';
import { EVENT_TYPES, type AuditRecord } from '../audit/events.ts';
import type { Store } from '../store/types.ts';
import { openAdminStore, UsageError, type StoreFlags } from './common.ts';
import { clean, jsonText, printJson, printLine, printNote } from './output.ts';

const PAGE = 5000;
const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `--since`: an ISO 8601 time, or a duration back from now (`30m`, `2h`, `7d`). */
export function parseSince(value: string, now = Date.now()): string {
  const relative = /^(\d{1,6})([smhd])$/.exec(value);
  if (relative) return new Date(now - Number(relative[1]) * (UNITS[relative[2] ?? 's'] ?? 1000)).toISOString();
  const time = Date.parse(value);
  // Date.parse rolls 2026-02-30 over to March: the calendar date itself must exist.
  const date = /^(\d{4}-\d{2}-\d{2})(?:$|T)/.exec(value)?.[1];
  if (date === undefined || Number.isNaN(time) || !validCalendarDate(date)) {
    throw new UsageError(`--since: "${clean(value)}" is not an ISO 8601 time (2026-01-31T12:00:00Z) or a duration (30m, 2h, 7d)`);
  }
  return new Date(time).toISOString();
}

function validCalendarDate(date: string): boolean {
  const [y, m, d] = date.split('-').map(Number) as [number, number, number];
  const probe = new Date(Date.UTC(y, m - 1, d));
  return probe.getUTCFullYear() === y && probe.getUTCMonth() === m - 1 && probe.getUTCDate() === d;
}

/** `--type`: known event types, or `prefix.*`; comma-separated or repeated. */
export function parseTypes(values: readonly string[]): string[] {
  const types = values.flatMap((value) => value.split(',')).map((value) => value.trim()).filter(Boolean);
  for (const type of types) {
    const known = type.endsWith('.*')
      ? EVENT_TYPES.some((name) => name.startsWith(type.slice(0, -1)))
      : (EVENT_TYPES as readonly string[]).includes(type);
    if (!known) throw new UsageError(`--type: unknown event type "${clean(type)}" (known: ${EVENT_TYPES.join(', ')}; or a prefix such as session.*)`);
  }
  return types;
}

function parseLimit(value: string | undefined): number {
  if (value === undefined) return 1000;
  const limit = Number(value);
  if (!/^\d+$/.test(value) || limit < 1 || limit > 10_000) throw new UsageError('--limit takes a whole number from 1 to 10000');
  return limit;
}

function expand(record: AuditRecord) {
  const body = JSON.parse(record.body) as Record<string, unknown>;
  return { ...body, hash: record.hash };
}

async function withStore<T>(flags: StoreFlags, body: (store: Store) => Promise<T>): Promise<T> {
  const store = await openAdminStore(flags);
  try {
    return await body(store);
  } finally {
    await store.close();
  }
}

export interface ListFlags extends StoreFlags {
  json?: boolean;
  since?: string;
  type?: string[];
  limit?: string;
  after?: string;
}

export function list(flags: ListFlags): Promise<number> {
  const query = {
    since: flags.since !== undefined ? parseSince(flags.since) : undefined,
    types: flags.type?.length ? parseTypes(flags.type) : undefined,
    limit: parseLimit(flags.limit),
    afterSeq: flags.after === undefined ? undefined : Number(flags.after),
  };
  if (query.afterSeq !== undefined && (!Number.isSafeInteger(query.afterSeq) || query.afterSeq < 0)) {
    throw new UsageError('--after takes an event sequence number');
  }
  return withStore(flags, async (store) => {
    const records = await store.audit.list(query);
    const last = records.at(-1);
    // A full page asks once more, for one event after it: exactly whether more follow.
    const more = last !== undefined && records.length === query.limit && (await store.audit.list({ ...query, afterSeq: last.seq, limit: 1 })).length > 0;
    if (flags.json) {
      printJson(records.map(expand));
      // stdout stays the bare array; the cursor goes to stderr as one JSON line (docs/cli.md).
      if (more) process.stderr.write(`${JSON.stringify({ more: true, after: last.seq })}\n`);
      return 0;
    }
    for (const record of records) printLine(textLine(record));
    if (more) printNote(`(showing ${records.length}; continue with --after ${last.seq})`);
    return 0;
  });
}

/** One event as a line of text: seq, time, type, server, outcome, method and tool, reason; every column cleaned. */
function textLine(record: AuditRecord): string {
  const event = expand(record) as { tool?: unknown; reason?: unknown; data?: Record<string, unknown> };
  const text = (value: unknown): string => (typeof value === 'string' ? clean(value) : '');
  const parts = [
    String(record.seq).padStart(6),
    clean(record.time),
    clean(record.type).padEnd(18),
    clean(record.server ?? '-').padEnd(12),
    clean(record.outcome).padEnd(9),
    [text(event.data?.method), text(event.tool)].filter(Boolean).join(' '),
    event.reason ? `(${text(event.reason)})` : '',
  ];
  return parts.join('  ').trimEnd();
}

export function verify(flags: StoreFlags & { json?: boolean }): Promise<number> {
  return withStore(flags, async (store) => {
    const verifier = new ChainVerifier();
    let afterSeq = 0;
    for (;;) {
      const page = await store.audit.list({ afterSeq, limit: PAGE });
      for (const record of page) if (!verifier.push(record)) break;
      const last = page.at(-1);
      if (page.length < PAGE || !last || !verifier.result().ok) break;
      afterSeq = last.seq;
    }
    const result = verifier.result();
    if (flags.json) process.stdout.write(`${jsonText(result)}\n`);
    else if (result.ok) {
      const head = result.head ? `; head is event ${result.head.seq} with hash ${result.head.hash}` : '';
      printLine(`audit log intact: ${result.count} events${head}`);
    } else {
      printLine(`audit log BROKEN at event ${result.seq}: ${result.reason} (${result.count} events before it verified)`);
    }
    return result.ok ? 0 : 1;
  });
}

async function write(out: Writable, text: string): Promise<void> {
  if (!out.write(text)) await once(out, 'drain');
}

export function exportLog(flags: StoreFlags & { format?: string; output?: string; since?: string }): Promise<number> {
  if ((flags.format ?? 'jsonl') !== 'jsonl') throw new UsageError(`--format: "${flags.format}" is not supported (use jsonl)`);
  const since = flags.since !== undefined ? parseSince(flags.since) : undefined;
  return withStore(flags, async (store) => {
    const out: Writable = flags.output ? createWriteStream(flags.output, { flags: 'wx', mode: 0o600 }) : process.stdout;
    if (flags.output) await once(out, 'open');
    let afterSeq = 0;
    for (;;) {
      const page = await store.audit.list({ afterSeq, limit: PAGE, since });
      for (const record of page) {
        await write(out, `${jsonText({ seq: record.seq, prevHash: record.prevHash, hash: record.hash, event: JSON.parse(record.body) })}\n`);
      }
      const last = page.at(-1);
      if (page.length < PAGE || !last) break;
      afterSeq = last.seq;
    }
    if (flags.output) {
      out.end();
      await once(out, 'finish');
    }
    return 0;
  });
}
