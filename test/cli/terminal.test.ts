/**
 * What `mandate` prints cannot drive a terminal, whatever was stored or typed:
 * text output shows control and format characters escaped (C0 with CR and LF,
 * DEL, C1, bidi overrides and other format characters, U+2028/U+2029), while
 * JSON output gives back the exact strings. And `audit list` says exactly
 * when more events follow, in text and in JSON (a cursor on stderr).
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AuditLog } from '../../src/audit/log.ts';
import { openStore } from '../../src/store/open.ts';
import { tempDir } from '../helpers/process.ts';
import { mandate } from './run.ts';

const dir = tempDir('mandate-terminal-');
after(() => rmSync(dir, { recursive: true, force: true }));

/** A tool name an MCP client chose: colours, a fake line of its own, a C1 CSI that clears the screen, DEL, an astral format character. */
const TOOL = 'read\u001b[31mRED\r\n    99  2026-01-01T00:00:00.000Z  gateway.stopped \u009b2J\u007f\u{e0041}';
/** A reason with a right-to-left override, a line separator and a zero-width joiner. */
const REASON = 'policy \u202eevil\u202c\u2028next\u200d';
/** Characters that must never reach a terminal raw. */
const RAW = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\u{e0000}-\u{e007f}\ufeff\u00ad]/u;
const EVENTS = 12;

let data = '';

before(async () => {
  data = path.join(dir, 'data');
  const store = await openStore({ dataDir: data });
  try {
    await store.migrate();
    const audit = new AuditLog(store);
    await audit.record({ type: 'mcp.request', server: 'files', tool: TOOL, outcome: 'denied', reason: REASON, data: { method: 'tools/call' } });
    for (let i = 1; i < EVENTS; i += 1) await audit.record({ type: 'mcp.request', server: 'files', tool: `tool-${i}`, outcome: 'success', data: { method: 'tools/call' } });
    await audit.flush();
  } finally {
    await store.close();
  }
});

function assertNoRaw(text: string, what: string): void {
  const found = RAW.exec(text);
  assert.equal(found, null, `${what} holds U+${found?.[0].codePointAt(0)?.toString(16)} raw`);
}

describe('text output escapes control and format characters; JSON keeps the exact value', { timeout: 60_000, concurrency: 3 }, () => {
  it('audit list: one line per event, the tool name and reason escaped', async () => {
    const out = await mandate(['audit', 'list', '--data', data]);
    assert.equal(out.code, 0, out.stderr);
    assertNoRaw(out.stdout, 'audit list');
    const lines = out.stdout.trimEnd().split('\n');
    assert.equal(lines.length, EVENTS, 'the tool name did not add a line');
    assert.ok(lines[0]!.includes('read\\u{1b}[31mRED\\u{d}\\u{a}    99'), lines[0]);
    assert.ok(lines[0]!.includes('\\u{9b}2J\\u{7f}\\u{e0041}'), lines[0]);
    assert.ok(lines[0]!.includes('(policy \\u{202e}evil\\u{202c}\\u{2028}next\\u{200d})'), lines[0]);
  });

  it('audit list --json and audit export: the exact strings back, nothing raw', async () => {
    const listed = await mandate(['audit', 'list', '--json', '--data', data]);
    assert.equal(listed.code, 0, listed.stderr);
    assertNoRaw(listed.stdout, 'audit list --json');
    const events = JSON.parse(listed.stdout) as { tool: string; reason: string }[];
    assert.equal(events[0]?.tool, TOOL);
    assert.equal(events[0]?.reason, REASON);

    const exported = await mandate(['audit', 'export', '--data', data]);
    assert.equal(exported.code, 0, exported.stderr);
    assertNoRaw(exported.stdout, 'audit export');
    const first = JSON.parse(exported.stdout.split('\n')[0]!) as { event: { tool: string; reason: string } };
    assert.equal(first.event.tool, TOOL);
    assert.equal(first.event.reason, REASON);
    const verified = await mandate(['audit', 'verify', '--data', data]);
    assert.equal(verified.code, 0, verified.stdout);
  });

  it('mandate config: the text escapes what the file holds, --json keeps it', async () => {
    const file = path.join(dir, 'hostile.yaml');
    writeFileSync(file, 'issuer: "http://localhost:1/\\e[2J"\nservers:\n  - name: one\n    command: node\n    args: ["x\\e]0;title\\a", "\\r\\ny", "\\u202e"]\n');
    const text = await mandate(['config', '--config', file]);
    assert.equal(text.code, 0, text.stderr);
    assertNoRaw(text.stdout, 'config');
    assert.ok(text.stdout.includes('x\\u{1b}]0;title\\u{7} \\u{d}\\u{a}y \\u{202e}'), text.stdout);
    const lines = text.stdout.trimEnd().split('\n');
    assert.ok(lines[1]!.startsWith('issuer http://localhost:1/\\u{1b}[2J'), lines[1]);
    const json = await mandate(['config', '--config', file, '--json']);
    assert.equal(json.code, 0, json.stderr);
    assertNoRaw(json.stdout, 'config --json');
    const shown = JSON.parse(json.stdout) as { servers: { args: string[] }[] };
    assert.deepEqual(shown.servers[0]?.args, ['x\u001b]0;title\u0007', '\r\ny', '\u202e']);
  });

  it('mandate up: the start-up lines escape the issuer', async () => {
    const file = path.join(dir, 'up.yaml');
    writeFileSync(file, 'issuer: "http://localhost:1/\\e[2J\\u202e"\nservers:\n  - name: one\n    command: node\nlog:\n  level: silent\n');
    const out = await mandate(['up', '--config', file, '--data', path.join(dir, 'up-data'), '--port', '0'], { killWhen: /\(stdio\)/, timeoutMs: 30_000 });
    assert.match(out.stdout, /Mandate is listening/, out.stderr);
    assertNoRaw(out.stdout, 'up');
    assert.ok(out.stdout.includes('http://localhost:1/\\u{1b}[2J\\u{202e}/mcp/one'), out.stdout);
  });

  it('errors that echo what was typed: escaped', async () => {
    const cases = [
      ['audit', 'list', '--data', data, '--since', '\u001b[2J\r\nyesterday'],
      ['audit', 'list', '--data', data, '--type', 'mcp.\u001b[2J'],
      ['audit', 'list', '--data', data, '--\u001b[2J'],
      ['frob\u009b2Jnicate'],
      ['up', '--data', path.join(dir, 'never'), '--port', '8\u001b[2J'],
      ['users', 'add', '\u202eeve', '--data', data],
    ];
    for (const args of cases) {
      const out = await mandate(args, { timeoutMs: 15_000 });
      assert.equal(out.code, 2, `${JSON.stringify(args)}: ${out.stderr}`);
      assertNoRaw(out.stderr, JSON.stringify(args));
      assert.match(out.stderr, /\\u\{(1b|9b|202e)\}/, `${JSON.stringify(args)}: ${out.stderr}`);
    }
  });
});

describe('audit list says exactly when more events follow', { timeout: 60_000, concurrency: 3 }, () => {
  const list = (args: string[]) => mandate(['audit', 'list', '--data', data, ...args]);

  it('--json: the array on stdout, {"more":true,"after":SEQ} on stderr while more follow, nothing once the last one is shown', async () => {
    const page = await list(['--json', '--limit', '5']);
    assert.equal(page.code, 0, page.stderr);
    assert.deepEqual((JSON.parse(page.stdout) as { seq: number }[]).map((e) => e.seq), [1, 2, 3, 4, 5]);
    assert.equal(page.stderr, '{"more":true,"after":5}\n');

    // Exactly the rest: no cursor, although the page is full.
    const rest = await list(['--json', '--limit', String(EVENTS - 5), '--after', '5']);
    assert.equal(rest.code, 0, rest.stderr);
    assert.equal((JSON.parse(rest.stdout) as unknown[]).length, EVENTS - 5);
    assert.equal(rest.stderr, '');

    // Paging with the cursor visits every event once.
    const seen: number[] = [];
    let after = 0;
    for (let pages = 0; pages < 10; pages += 1) {
      const out = await list(['--json', '--limit', '4', '--after', String(after)]);
      seen.push(...(JSON.parse(out.stdout) as { seq: number }[]).map((e) => e.seq));
      if (out.stderr === '') break;
      after = (JSON.parse(out.stderr) as { more: boolean; after: number }).after;
    }
    assert.deepEqual(seen, Array.from({ length: EVENTS }, (_, i) => i + 1));
  });

  it('text: the continuation note only while more follow', async () => {
    const page = await list(['--limit', '5']);
    assert.equal(page.code, 0, page.stderr);
    assert.equal(page.stdout.trimEnd().split('\n').length, 5);
    assert.equal(page.stderr, '(showing 5; continue with --after 5)\n');
    const all = await list(['--limit', String(EVENTS)]);
    assert.equal(all.stdout.trimEnd().split('\n').length, EVENTS);
    assert.equal(all.stderr, '', 'all events shown: nothing to continue with');
  });
});
