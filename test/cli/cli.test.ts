/**
 * The CLI contract: exit codes (0 ok, 1 failure/broken log, 2 usage), clear
 * one-line messages, and `audit list | verify | export` on a real SQLite store,
 * intact and tampered with.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, before, describe, it } from 'node:test';
import canonicalize from 'canonicalize';
import { PG_URL, pgAdmin } from '../helpers/pg.ts';
import type { TimedEvent } from '../../src/audit/events.ts';
import { openStore } from '../../src/store/open.ts';
import { freePort, MANDATE, NODE, startProcess, tempDir, waitFor } from '../helpers/process.ts';
import { mandate, type CliResult } from './run.ts';

const dir = tempDir('mandate-cli-');
const skipPg = process.env.MANDATE_TEST_PG === '0' ? 'MANDATE_TEST_PG=0' : false;
const GENESIS = '0'.repeat(64);
const HOUR = 3_600_000;

after(() => rmSync(dir, { recursive: true, force: true }));

/** A store with 3 events from 3 hours ago and 9 recent ones (12 in all). */
async function seededStore(name: string): Promise<string> {
  const dataDir = path.join(dir, name);
  const old = new Date(Date.now() - 3 * HOUR).toISOString();
  const now = () => new Date().toISOString();
  const events: TimedEvent[] = [
    { time: old, type: 'gateway.started', outcome: 'success', data: { version: '0.1.0' } },
    { time: old, type: 'config.loaded', outcome: 'success' },
    { time: old, type: 'session.opened', server: 'files', outcome: 'success', data: { session: 'abcd' } },
    ...Array.from({ length: 5 }, (_, i): TimedEvent => ({
      time: now(),
      type: 'mcp.request',
      server: 'files',
      tool: `read-${i}`,
      outcome: i === 3 ? 'failure' : 'success',
      data: { method: 'tools/call', latencyMs: i + 0.5 },
    })),
    { time: now(), type: 'upstream.error', server: 'files', outcome: 'error', reason: 'upstream_crashed', data: { detail: 'exit 3' } },
    { time: now(), type: 'upstream.restarted', server: 'files', outcome: 'success' },
    { time: now(), type: 'session.closed', server: 'files', outcome: 'success', reason: 'client ended the session' },
    { time: now(), type: 'gateway.stopped', outcome: 'success' },
  ];
  const store = await openStore({ dataDir });
  try {
    await store.migrate();
    await store.audit.append(events);
  } finally {
    await store.close();
  }
  return dataDir;
}

/** A copy of a store, tampered with through node:sqlite after dropping the append-only triggers. */
function tampered(source: string, name: string, sql: string): string {
  const copy = path.join(dir, name);
  cpSync(source, copy, { recursive: true });
  const db = new DatabaseSync(path.join(copy, 'mandate.db'));
  try {
    db.exec('DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;');
    db.exec(sql);
  } finally {
    db.close();
  }
  return copy;
}

interface ListedEvent {
  seq?: number;
  type: string;
  server: string | null;
  tool: string | null;
  outcome: string;
  hash: string;
}

/** Polls /readyz every 5 ms (as tight as a client could) until it answers 200. */
async function pollReady(port: number, proc: { output(): string }): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status === 200, () => false);
    if (ok) return;
    assert.ok(Date.now() < deadline, `never ready: ${proc.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('mandate audit list', { timeout: 60_000, concurrency: 3 }, () => {
  let data = '';
  before(async () => {
    data = await seededStore('list');
  });

  const list = async (args: string[]) => {
    const out = await mandate(['audit', 'list', '--data', data, '--json', ...args]);
    assert.equal(out.code, 0, out.stderr);
    return JSON.parse(out.stdout) as ListedEvent[];
  };

  it('--json lists every event oldest first, with its hash', async () => {
    const events = await list([]);
    assert.equal(events.length, 12);
    assert.deepEqual(events.map((e) => e.seq), Array.from({ length: 12 }, (_, i) => i + 1));
    assert.ok(events.every((e) => /^[0-9a-f]{64}$/.test(e.hash)));
    assert.equal(events[3]?.tool, 'read-0');
  });

  it('text output: one line per event with seq, type, server, outcome, method and tool', async () => {
    const out = await mandate(['audit', 'list', '--data', data]);
    assert.equal(out.code, 0, out.stderr);
    const lines = out.stdout.trim().split('\n');
    assert.equal(lines.length, 12);
    assert.match(lines[3] ?? '', /^\s+4\s+\S+Z\s+mcp\.request\s+files\s+success\s+tools\/call read-0$/);
    assert.match(lines[8] ?? '', /upstream\.error\s+files\s+error.*\(upstream_crashed\)/);
  });

  it('--type: exact, comma-separated, repeated, and prefix.*', async () => {
    const [exact, comma, repeated, sessions] = await Promise.all([
      list(['--type', 'mcp.request']),
      list(['--type', 'mcp.request,upstream.error']),
      list(['--type', 'mcp.request', '--type', 'gateway.stopped']),
      list(['--type', 'session.*']),
    ]);
    assert.equal(exact.length, 5);
    assert.equal(comma.length, 6);
    assert.equal(repeated.length, 6);
    assert.deepEqual(sessions.map((e) => e.type), ['session.opened', 'session.closed']);
  });

  it('--type nope → exit 2 listing the known types', async () => {
    const types = ['nope', 'mcp.*,nope', 'nosuch.*', 'MCP.REQUEST'];
    const outs = await Promise.all(types.map((type) => mandate(['audit', 'list', '--data', data, '--type', type])));
    for (const [i, type] of types.entries()) {
      const out = outs[i] as CliResult;
      assert.equal(out.code, 2, `--type ${type}: exit ${out.code}`);
      assert.match(out.stderr, /--type: unknown event type/);
      assert.match(out.stderr, /mcp\.request/);
      assert.equal(out.stdout, '');
    }
  });

  it('--since 2h keeps only the recent events; 4h keeps all; an ISO time works', async () => {
    const iso = new Date(Date.now() - 2 * HOUR).toISOString();
    const future = new Date(Date.now() + HOUR).toISOString();
    const counts = await Promise.all(['2h', '120m', '4h', '1d', iso, future].map(async (since) => (await list(['--since', since])).length));
    assert.deepEqual(counts, [9, 9, 12, 12, 9, 0]);
  });

  it('--since yesterday (and other non-times) → exit 2', async () => {
    const values = ['yesterday', '2h ago', '-2h', '2w', '2026-13-45T00:00:00Z', 'T12:00'];
    const outs = await Promise.all(values.map((since) => mandate(['audit', 'list', '--data', data, '--since', since])));
    for (const [i, since] of values.entries()) {
      const out = outs[i] as CliResult;
      assert.equal(out.code, 2, `--since "${since}": exit ${out.code} ${out.stdout.slice(0, 200)}`);
      assert.match(out.stderr, /--since/);
    }
  });

  it('--since "" → exit 2 (an empty filter is not "no filter")', async () => {
    const out = await mandate(['audit', 'list', '--data', data, '--since', '']);
    // An explicit empty --since is bad usage, not "no filter".
    assert.equal(out.code, 2, `exit ${out.code}; listed:\n${out.stdout.slice(0, 300)}`);
    assert.match(out.stderr, /--since/);
  });

  it('--limit and --after page through the log', async () => {
    const out = await mandate(['audit', 'list', '--data', data, '--json', '--limit', '5']);
    assert.equal(out.code, 0, out.stderr);
    assert.equal((JSON.parse(out.stdout) as unknown[]).length, 5);
    const text = await mandate(['audit', 'list', '--data', data, '--limit', '5']);
    assert.match(text.stderr, /continue with --after 5/);
    const rest = await list(['--after', '5', '--limit', '100']);
    assert.deepEqual(rest.map((e) => e.seq), [6, 7, 8, 9, 10, 11, 12]);
    const bads = [['--limit', '0'], ['--limit', 'abc'], ['--limit', '10001'], ['--after', 'abc'], ['--after', '-1']];
    const results = await Promise.all(bads.map((bad) => mandate(['audit', 'list', '--data', data, ...bad])));
    for (const [i, bad] of bads.entries()) assert.equal(results[i]?.code, 2, `${bad.join(' ')}: exit ${results[i]?.code}`);
  });

  it('no store in --data → exit 2 with a hint, and nothing is created there', async () => {
    const empty = path.join(dir, 'nothing-here');
    const out = await mandate(['audit', 'list', '--data', empty]);
    assert.equal(out.code, 2);
    assert.match(out.stderr, /no Mandate store in/);
    assert.equal(existsSync(empty), false);
  });

  it('MANDATE_DATA is honoured by the audit commands', async () => {
    const out = await mandate(['audit', 'list', '--json'], { env: { MANDATE_DATA: data } });
    assert.equal(out.code, 0, out.stderr);
    assert.equal((JSON.parse(out.stdout) as unknown[]).length, 12);
  });
});

describe('mandate audit verify', { timeout: 60_000, concurrency: 3 }, () => {
  let data = '';
  let head = '';
  /** Only ever copied (no CLI opens it), so copies are never taken mid-transaction. */
  let source = '';
  before(async () => {
    data = await seededStore('verify');
    source = await seededStore('verify-source');
    const store = await openStore({ dataDir: data });
    head = (await store.audit.head())?.hash ?? '';
    await store.close();
  });

  it('an intact log: exit 0 with the count and head', async () => {
    const out = await mandate(['audit', 'verify', '--data', data]);
    assert.equal(out.code, 0, out.stdout + out.stderr);
    assert.equal(out.stdout, `audit log intact: 12 events; head is event 12 with hash ${head}\n`);
    const json = await mandate(['audit', 'verify', '--data', data, '--json']);
    assert.deepEqual(JSON.parse(json.stdout), { ok: true, count: 12, head: { seq: 12, hash: head } });
  });

  const cases: { name: string; sql: string; seq: number; reason: RegExp }[] = [
    {
      name: 'a body edited in place',
      sql: `UPDATE audit_events SET body = replace(body, '"read-2"', '"read-X"') WHERE seq = 6`,
      seq: 6,
      reason: /hash does not match the event body/,
    },
    {
      name: 'a body edited and its own hash recomputed (the next link breaks)',
      sql: '', // filled in below: needs the recomputed hash
      seq: 7,
      reason: /previous-hash link does not match/,
    },
    {
      name: 'a middle event deleted',
      sql: 'DELETE FROM audit_events WHERE seq = 5',
      seq: 5,
      reason: /event 5 is missing \(next stored event is 6\)/,
    },
    {
      name: 'two events swapped (contents exchanged between seq 4 and 5)',
      sql: `
        CREATE TEMP TABLE a AS SELECT * FROM audit_events WHERE seq IN (4, 5);
        UPDATE audit_events SET (time, type, server, outcome, body, prev_hash, hash) =
          (SELECT time, type, server, outcome, body, prev_hash, hash FROM a WHERE a.seq = 9 - audit_events.seq)
        WHERE seq IN (4, 5);`,
      seq: 4,
      reason: /./,
    },
    {
      name: 'an indexed column changed without the body',
      sql: `UPDATE audit_events SET outcome = 'success' WHERE seq = 7`,
      seq: 7,
      reason: /indexed columns differ from the event body/,
    },
    {
      name: 'the first event edited',
      sql: `UPDATE audit_events SET body = replace(body, '"0.1.0"', '"9.9.9"') WHERE seq = 1`,
      seq: 1,
      reason: /hash does not match/,
    },
  ];

  for (const testCase of cases) {
    it(`${testCase.name} → exit 1 naming event ${testCase.seq}`, async () => {
      let sql = testCase.sql;
      if (sql === '') {
        // Rewrite event 6's body and fix its hash, as a careless forger would.
        const db = new DatabaseSync(path.join(source, 'mandate.db'), { readOnly: true });
        const row = db.prepare('SELECT body, prev_hash FROM audit_events WHERE seq = 6').get() as { body: string; prev_hash: string };
        db.close();
        const body = row.body.replace('"read-2"', '"read-X"');
        const hash = createHash('sha256').update(`${row.prev_hash}\n${body}`).digest('hex');
        sql = `UPDATE audit_events SET body = '${body.replace(/'/g, "''")}', hash = '${hash}' WHERE seq = 6`;
      }
      const copy = tampered(source, `tampered-${testCase.seq}-${testCase.name.length}`, sql);
      const out = await mandate(['audit', 'verify', '--data', copy]);
      assert.equal(out.code, 1, out.stdout + out.stderr);
      assert.match(out.stdout, new RegExp(`^audit log BROKEN at event ${testCase.seq}: `));
      assert.match(out.stdout, testCase.reason);
      assert.match(out.stdout, new RegExp(`\\(${testCase.seq - 1} events before it verified\\)`));
      const json = await mandate(['audit', 'verify', '--data', copy, '--json']);
      assert.equal(json.code, 1);
      const result = JSON.parse(json.stdout) as { ok: boolean; seq: number; count: number };
      assert.equal(result.ok, false);
      assert.equal(result.seq, testCase.seq);
      assert.equal(result.count, testCase.seq - 1);
    });
  }
});

describe('mandate audit export', { timeout: 60_000, concurrency: 3 }, () => {
  let data = '';
  before(async () => {
    data = await seededStore('export');
  });

  function checkLines(text: string, expectedCount: number, firstSeq: number): void {
    const lines = text.split('\n');
    assert.equal(lines.pop(), '', 'output ends with a newline');
    assert.equal(lines.length, expectedCount);
    let previous: string | null = null;
    lines.forEach((line, i) => {
      const entry = JSON.parse(line) as { seq: number; prevHash: string; hash: string; event: Record<string, unknown> };
      assert.deepEqual(Object.keys(entry).sort(), ['event', 'hash', 'prevHash', 'seq']);
      assert.equal(entry.seq, firstSeq + i);
      assert.equal(entry.event.seq, entry.seq);
      if (entry.seq === 1) assert.equal(entry.prevHash, GENESIS);
      if (previous !== null) assert.equal(entry.prevHash, previous, `line ${i + 1}: prevHash links to the line before`);
      const body = canonicalize(entry.event);
      assert.ok(body);
      const hash = createHash('sha256').update(`${entry.prevHash}\n${body}`).digest('hex');
      assert.equal(hash, entry.hash, `line ${i + 1}: sha256(prevHash + "\\n" + canonical event) is the hash`);
      previous = entry.hash;
    });
  }

  it('--format jsonl: every line parses and re-verifies', async () => {
    const out = await mandate(['audit', 'export', '--format', 'jsonl', '--data', data]);
    assert.equal(out.code, 0, out.stderr);
    checkLines(out.stdout, 12, 1);
    const byDefault = await mandate(['audit', 'export', '--data', data]);
    assert.equal(byDefault.stdout, out.stdout, 'jsonl is the default');
  });

  it('--since 2h exports the recent part; each line still verifies on its own', async () => {
    const out = await mandate(['audit', 'export', '--data', data, '--since', '2h']);
    assert.equal(out.code, 0, out.stderr);
    checkLines(out.stdout, 9, 4);
    const bad = await mandate(['audit', 'export', '--data', data, '--since', 'yesterday']);
    assert.equal(bad.code, 2);
  });

  it('--output writes a new owner-only file and refuses to overwrite one', async () => {
    const target = path.join(dir, 'export.jsonl');
    const out = await mandate(['audit', 'export', '--data', data, '--output', target]);
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stdout, '');
    checkLines(readFileSync(target, 'utf8'), 12, 1);
    assert.equal(statSync(target).mode & 0o777, 0o600);
    writeFileSync(target, 'keep me\n');
    const again = await mandate(['audit', 'export', '--data', data, '--output', target]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /EEXIST|exists/);
    assert.equal(readFileSync(target, 'utf8'), 'keep me\n');
  });

  it('--format csv → exit 2', async () => {
    const out = await mandate(['audit', 'export', '--data', data, '--format', 'csv']);
    assert.equal(out.code, 2);
    assert.match(out.stderr, /csv/);
    assert.equal(out.stdout, '');
  });
});

describe('mandate up: flags and process behaviour', { timeout: 120_000, concurrency: 3 }, () => {
  const config = (extra = '') => {
    const file = path.join(dir, `up-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(file, `servers:\n  - name: one\n    command: x\nlog:\n  level: warn\n${extra}`);
    return file;
  };
  const data = path.join(dir, 'up-data');

  it('--port abc → exit 2 with a clear message', async () => {
    const ports = ['abc', '70000', '-1', '8080.5', '0x50', ' 80'];
    const outs = await Promise.all(ports.map((port) => mandate(['up', '--config', config(), '--data', data, '--port', port], { timeoutMs: 10_000 })));
    for (const [i, port] of ports.entries()) {
      const out = outs[i];
      assert.ok(out);
      assert.equal(out.killed, false, `--port "${port}" started the gateway`);
      assert.equal(out.code, 2, `--port "${port}": exit ${out.code}`);
      assert.match(out.stderr, new RegExp(`--port: port must be a whole number from 0 to 65535 \\(got "${port.replace('.', '\\.')}"\\)`));
      assert.doesNotMatch(out.stderr, /\n\s+at /);
    }
  });

  it('--port "" → exit 2 (an empty value is not "no value")', async () => {
    // If the empty flag is ignored the gateway starts on the config's port: use a free one so nothing collides.
    const port = await freePort();
    const out = await mandate(['up', '--config', config(`listen:\n  port: ${port}\n`), '--data', data, '--port', ''], { timeoutMs: 10_000, killWhen: /Mandate is listening/ });
    // An empty --port is refused; it neither falls back to the file nor hides MANDATE_PORT.
    assert.equal(out.killed, false, `the gateway started anyway:\n${out.stdout}`);
    assert.equal(out.code, 2);
  });

  it('a port already in use → exit 1 promptly with a clear message', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const address = blocker.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    try {
      const started = Date.now();
      const out = await mandate(['up', '--config', config(), '--data', path.join(dir, 'up-in-use'), '--port', String(port)], { timeoutMs: 15_000 });
      assert.equal(out.killed, false, 'mandate up hung after failing to listen');
      assert.equal(out.code, 1);
      assert.match(out.stderr, /EADDRINUSE/);
      assert.ok(Date.now() - started < 10_000);
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });

  it('unknown commands and options → exit 2', async () => {
    const commands = [['frobnicate'], ['up', '--no-such-flag'], ['audit', 'list', '--bogus'], ['audit', 'erase']];
    const outs = await Promise.all(commands.map((args) => mandate(args, { timeoutMs: 10_000, killWhen: /Mandate is listening/ })));
    for (const [i, args] of commands.entries()) {
      assert.equal(outs[i]?.killed, false, `${args.join(' ')} started the gateway`);
      assert.equal(outs[i]?.code, 2, `${args.join(' ')}: exit ${outs[i]?.code}`);
    }
    const version = await mandate(['--version']);
    assert.equal(version.code, 0);
    assert.equal(version.stdout.trim(), '0.1.0');
  });

  async function startAndStop(afterReady: (proc: ReturnType<typeof startProcess>, port: number) => Promise<void>, dataDir: string) {
    const port = await freePort();
    const proc = startProcess(NODE, [MANDATE, 'up', '--config', config(), '--data', dataDir, '--port', String(port)]);
    try {
      await afterReady(proc, port);
      const code = await Promise.race([proc.exited, new Promise((resolve) => setTimeout(() => resolve('still running'), 15_000))]);
      return { code, output: proc.output() };
    } finally {
      await proc.stop('SIGKILL');
    }
  }

  const stoppedEvents = async (dataDir: string) => {
    const out = await mandate(['audit', 'list', '--json', '--type', 'gateway.*', '--data', dataDir]);
    assert.equal(out.code, 0, out.stderr);
    return (JSON.parse(out.stdout) as ListedEvent[]).map((e) => e.type);
  };

  it('SIGTERM in normal operation: exit 0 and gateway.stopped recorded', async () => {
    const dataDir = path.join(dir, 'sigterm-normal');
    const { code, output } = await startAndStop(async (proc, port) => {
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 'readyz');
      await waitFor(async () => proc.output().includes('Mandate is listening'), 'banner');
      proc.child.kill('SIGTERM');
    }, dataDir);
    assert.equal(code, 0, output);
    assert.deepEqual(await stoppedEvents(dataDir), ['gateway.started', 'gateway.stopped']);
  });

  it('no request is handled before gateway.started is in the log', async () => {
    const dataDir = path.join(dir, 'startup-order');
    const port = await freePort();
    const downPort = await freePort();
    const file = path.join(dir, 'startup-order.yaml');
    writeFileSync(file, `servers:\n  - name: down\n    url: http://127.0.0.1:${downPort}/mcp\nidentity:\n  requireToken: false\nlog:\n  level: warn\n`);
    const proc = startProcess(NODE, [MANDATE, 'up', '--config', file, '--data', dataDir, '--port', String(port)]);
    try {
      await pollReady(port, proc);
      const res = await fetch(`http://127.0.0.1:${port}/mcp/down`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'early', version: '1' } } }),
      });
      await res.text();
      await waitFor(async () => proc.output().includes('Mandate is listening'), 'banner');
    } finally {
      await proc.stop('SIGTERM');
    }
    const out = await mandate(['audit', 'list', '--json', '--data', dataDir]);
    const events = JSON.parse(out.stdout) as ListedEvent[];
    const started = events.findIndex((e) => e.type === 'gateway.started');
    const firstRequest = events.findIndex((e) => e.type === 'session.opened' || e.type === 'upstream.error' || e.type === 'mcp.request');
    assert.ok(started >= 0 && firstRequest >= 0, JSON.stringify(events.map((e) => e.type)));
    // Requests wait until start-up is recorded, so nothing is logged before gateway.started.
    assert.ok(started < firstRequest, `log order: ${events.map((e) => e.type).join(', ')}`);
  });

  it('SIGTERM as soon as /readyz says ready: still an orderly stop', async () => {
    const dataDir = path.join(dir, 'sigterm-early');
    const { code, output } = await startAndStop(async (proc, port) => {
      await pollReady(port, proc);
      proc.child.kill('SIGTERM');
    }, dataDir);
    // A SIGTERM during start-up still ends in an orderly stop (exit 0, gateway.stopped recorded).
    assert.equal(code, 0, `exit ${code}\n${output}`);
    assert.ok((await stoppedEvents(dataDir)).includes('gateway.stopped'));
  });
});

describe('audit commands on PostgreSQL, schema chosen with the URL options parameter', { skip: skipPg, timeout: 60_000 }, () => {
  const schema = `mandate_cli_${Math.random().toString(16).slice(2, 12)}`;
  const url = `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${schema}`)}`;
  const admin = (sql: string) => pgAdmin(sql);

  before(async () => {
    const store = await openStore({ databaseUrl: PG_URL, dataDir: '/nonexistent', schema });
    try {
      await store.migrate();
      await store.audit.append([
        { time: new Date().toISOString(), type: 'gateway.started', outcome: 'success' },
        { time: new Date().toISOString(), type: 'mcp.request', server: 'files', tool: 'read', outcome: 'success', data: { method: 'tools/call' } },
        { time: new Date().toISOString(), type: 'gateway.stopped', outcome: 'success' },
      ]);
    } finally {
      await store.close();
    }
  });

  after(async () => {
    await admin(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  });

  it('list, verify and export read that schema', async () => {
    const listed = await mandate(['audit', 'list', '--json', '--database-url', url]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual((JSON.parse(listed.stdout) as ListedEvent[]).map((e) => e.type), ['gateway.started', 'mcp.request', 'gateway.stopped']);
    const verify = await mandate(['audit', 'verify', '--database-url', url]);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    assert.match(verify.stdout, /intact: 3 events/);
    const exported = await mandate(['audit', 'export'], { env: { MANDATE_DATABASE_URL: url } });
    assert.equal(exported.code, 0, exported.stderr);
    assert.equal(exported.stdout.trim().split('\n').length, 3);
  });

  it('an unreachable database: exit 1 with a message naming host:port/db and no password', async () => {
    const port = await freePort();
    const out = await mandate(['audit', 'verify', '--database-url', `postgres://mandate:hunter2@127.0.0.1:${port}/auditdb`], { timeoutMs: 20_000 });
    assert.equal(out.killed, false);
    assert.equal(out.code, 1);
    assert.match(out.stderr, new RegExp(`127\\.0\\.0\\.1:${port}/auditdb`));
    assert.doesNotMatch(out.stderr + out.stdout, /hunter2/);
    assert.doesNotMatch(out.stderr, /\n\s+at /);
  });
});
