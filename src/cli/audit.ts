/** `mandate audit list | verify | export`. */
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { ChainVerifier } from '../audit/chain.ts';
import { EVENT_TYPES, type AuditRecord } from '../audit/events.ts';
import type { Store } from '../store/types.ts';
import { openAdminStore, UsageError, type StoreFlags } from './common.ts';

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
    throw new UsageError(`--since: "${value}" is not an ISO 8601 time (2026-01-31T12:00:00Z) or a duration (30m, 2h, 7d)`);
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
    if (!known) throw new UsageError(`--type: unknown event type "${type}" (known: ${EVENT_TYPES.join(', ')}; or a prefix such as session.*)`);
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
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(records.map(expand), null, 2)}\n`);
      return 0;
    }
    for (const record of records) {
      const event = expand(record) as { actor?: string | null; tool?: string | null; reason?: string | null; data?: Record<string, unknown> };
      const method = typeof event.data?.method === 'string' ? event.data.method : '';
      const parts = [
        String(record.seq).padStart(6),
        record.time,
        record.type.padEnd(18),
        (record.server ?? '-').padEnd(12),
        record.outcome.padEnd(9),
        [method, event.tool ?? ''].filter(Boolean).join(' '),
        event.reason ? `(${event.reason})` : '',
      ];
      process.stdout.write(`${parts.join('  ').trimEnd()}\n`);
    }
    if (records.length === query.limit) process.stderr.write(`(showing ${records.length}; continue with --after ${records.at(-1)?.seq})\n`);
    return 0;
  });
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
    if (flags.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else if (result.ok) {
      const head = result.head ? `; head is event ${result.head.seq} with hash ${result.head.hash}` : '';
      process.stdout.write(`audit log intact: ${result.count} events${head}\n`);
    } else {
      process.stdout.write(`audit log BROKEN at event ${result.seq}: ${result.reason} (${result.count} events before it verified)\n`);
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
        await write(out, `${JSON.stringify({ seq: record.seq, prevHash: record.prevHash, hash: record.hash, event: JSON.parse(record.body) })}\n`);
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
