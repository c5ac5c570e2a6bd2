/**
 * The admin commands (clients, users, tokens, consents) through the real
 * `mandate` binary on a SQLite store (and one PostgreSQL smoke test): happy
 * paths, refusals with exit 2, the audit event each change leaves (and an
 * intact chain), and no password or token anywhere but the one-time output
 * of `clients token create` — not in other output, the audit log or the
 * database files.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, before, describe, it } from 'node:test';
import { hashSecret } from '../../src/identity/secrets.ts';
import { verifyPassword } from '../../src/identity/users.ts';
import { openStore } from '../../src/store/open.ts';
import type { ClientRecord, Store } from '../../src/store/types.ts';
import { auditEntries, auditRecords, verifyChain } from '../helpers/audit.ts';
import { PG_URL, pgAdmin } from '../helpers/pg.ts';
import { MANDATE, NODE, ROOT, tempDir } from '../helpers/process.ts';
import { mandate, type CliResult } from './run.ts';

const dir = tempDir('mandate-cli-identity-');
const skipPg = process.env.MANDATE_TEST_PG === '0' ? 'MANDATE_TEST_PG=0' : false;
const DAY = 86_400_000;
after(() => rmSync(dir, { recursive: true, force: true }));

/** Every command run here, to search for leaked secrets at the end. */
const transcript: { args: string[]; out: string }[] = [];
/** Passwords given and tokens created: none may appear anywhere but its own creation output. */
const secrets: { value: string; allowedIn: CliResult | null }[] = [];

/** The test's environment without MANDATE_* (no variable may pick a store), plus `extra`. */
function childEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) if (value !== undefined && !name.startsWith('MANDATE_')) env[name] = value;
  return Object.assign(env, extra);
}

/** The child's exit, once its output is read; it is killed after 20 s (then `killed`). */
function exited(child: ChildProcess): Promise<{ code: number | string; killed: boolean }> {
  return new Promise((resolve) => {
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, 20_000);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? -1, killed });
    });
  });
}

/** `mandate …` with standard input (run.ts leaves it closed). */
async function mandateWith(args: string[], input: string | null, env: Record<string, string> = {}): Promise<CliResult> {
  const child = spawn(NODE, [MANDATE, ...args], { cwd: ROOT, env: childEnv(env), stdio: [input === null ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  if (input !== null) child.stdin?.end(input);
  const { code, killed } = await exited(child);
  return { code, stdout, stderr, killed };
}

const SCRIPT = ['/usr/bin/script', '/bin/script'].find((file) => existsSync(file));

/**
 * `mandate …` on a pseudo-terminal (util-linux `script`), typing each answer
 * (then Enter) once the prompt before it has appeared.
 */
async function mandateOnTerminal(args: string[], prompts: [RegExp, string][]): Promise<CliResult> {
  const quote = (value: string) => `'${value.replace(/'/g, `'\\''`)}'`;
  const child = spawn(SCRIPT ?? 'script', ['-qfec', [NODE, MANDATE, ...args].map(quote).join(' '), '/dev/null'], { cwd: ROOT, env: childEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let answered = 0;
  const onOutput = (chunk: Buffer) => {
    stdout += chunk.toString();
    const next = prompts[answered];
    if (next && next[0].test(stdout)) {
      answered += 1;
      child.stdin.write(`${next[1]}\r`);
    }
  };
  child.stdout.on('data', onOutput);
  child.stderr.on('data', onOutput);
  const { code, killed } = await exited(child);
  transcript.push({ args, out: stdout });
  return { code, stdout, stderr: '', killed };
}

/** Runs a command against a store and keeps its output for the leak check. */
async function cli(data: string, args: string[], options: { input?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  const full = [...args, ...(data.startsWith('postgres') ? ['--database-url', data] : ['--data', data])];
  const out = options.input === undefined && !options.env ? await mandate(full) : await mandateWith(full, options.input ?? null, options.env);
  transcript.push({ args: full, out: out.stdout + out.stderr });
  return out;
}

async function ok(data: string, args: string[], options: { input?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  const out = await cli(data, args, options);
  assert.equal(out.code, 0, `${args.join(' ')}: exit ${out.code}\n${out.stderr}${out.stdout}`);
  assert.equal(out.killed, false);
  return out;
}

/** Expects exit 2, one line on stderr matching `message`, nothing on stdout. */
async function refused(data: string, args: string[], message: RegExp, options: { input?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  const out = await cli(data, args, options);
  assert.equal(out.code, 2, `${args.join(' ')}: expected exit 2, got ${out.code}\n${out.stderr}${out.stdout}`);
  assert.match(out.stderr, message);
  assert.doesNotMatch(out.stderr, /\n\s+at /, 'no stack trace');
  assert.equal(out.stdout, '');
  return out;
}

interface AuditEntry {
  seq: number;
  type: string;
  actor?: string | null;
  outcome: string;
  data?: Record<string, unknown>;
}

async function auditEvents(data: string): Promise<AuditEntry[]> {
  const out = await ok(data, ['audit', 'list', '--json']);
  return JSON.parse(out.stdout) as AuditEntry[];
}

async function withStore<T>(data: string, body: (store: Store) => Promise<T>): Promise<T> {
  const store = await openStore({ dataDir: data });
  try {
    return await body(store);
  } finally {
    await store.close();
  }
}

/**
 * Runs `body` (commands under test), then returns the audit events it added,
 * and checks the chain still verifies. The log is read here, not through
 * `mandate audit list` and `audit verify` (tested in cli.test.ts): a process
 * each would cost more than the command under test.
 */
async function newEvents(data: string, body: () => Promise<unknown>): Promise<AuditEntry[]> {
  const before = (await withStore(data, (store) => auditRecords(store))).length;
  await body();
  const records = await withStore(data, (store) => auditRecords(store));
  const verified = verifyChain(records);
  assert.ok(verified.ok, `the audit chain no longer verifies: ${JSON.stringify(verified)}`);
  return auditEntries(records.slice(before));
}

function client(id: string, overrides: Partial<ClientRecord> = {}): ClientRecord {
  const now = Date.now();
  return {
    id,
    status: 'pending',
    class: 'interactive',
    source: 'dcr',
    owner: null,
    metadata: { client_name: `App ${id}`, redirect_uris: ['http://127.0.0.1:9999/callback'], token_endpoint_auth_method: 'none' },
    secretHash: null,
    registeredFrom: '127.0.0.1',
    createdAt: now,
    updatedAt: now,
    lastUsedAt: null,
    decidedBy: null,
    ...overrides,
  };
}

/** A migrated SQLite store holding `clients`. */
async function newStore(name: string, clients: ClientRecord[] = []): Promise<string> {
  const data = path.join(dir, name);
  await withStore(data, async (store) => {
    await store.migrate();
    for (const c of clients) await store.identity.createClient(c);
  });
  return data;
}

const CLIENT_KEYS = ['class', 'createdAt', 'decidedBy', 'hasSecret', 'id', 'lastUsedAt', 'metadata', 'name', 'owner', 'registeredFrom', 'source', 'status', 'updatedAt'];
const USER_KEYS = ['createdAt', 'disabled', 'groups', 'hasPassword', 'name', 'updatedAt'];
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

describe('mandate clients', { timeout: 240_000 }, () => {
  let data = '';
  const SECRET_HASH = hashSecret('the-client-secret-value');
  before(async () => {
    data = await newStore('clients', [
      client('pending-a'),
      client('pending-b'),
      client('pending-c'),
      client('owned', { owner: 'carol' }),
      client('confidential', { status: 'active', secretHash: SECRET_HASH, metadata: { client_name: 'Backend', client_secret: 'leaked-into-metadata', token_endpoint_auth_method: 'client_secret_basic' } }),
      client('hostile', { metadata: { client_name: 'Evil\u001b]0;pwned\u0007\u001b[31mRed\u009b2J\u202eReversed', redirect_uris: ['http://127.0.0.1/\u001b[2J'] } }),
    ]);
  });

  it('list: a table, --json with the client shape, --status filters; never a secret or its hash', async () => {
    const text = await ok(data, ['clients', 'list']);
    const lines = text.stdout.trim().split('\n');
    assert.match(lines[0] ?? '', /^ID\s+STATUS\s+CLASS\s+SOURCE\s+OWNER\s+NAME\s+CREATED\s+LAST USED$/);
    assert.equal(lines.length, 7);
    assert.match(text.stdout, /pending-a\s+pending\s+interactive\s+dcr\s+-\s+App pending-a\s+\S+Z\s+never/);
    const json = JSON.parse((await ok(data, ['clients', 'list', '--json'])).stdout) as Record<string, unknown>[];
    assert.equal(json.length, 6);
    for (const entry of json) assert.deepEqual(Object.keys(entry).sort(), CLIENT_KEYS);
    const confidential = json.find((c) => c.id === 'confidential');
    assert.equal(confidential?.hasSecret, true);
    assert.equal(json.find((c) => c.id === 'pending-a')?.hasSecret, false);
    assert.match(String(confidential?.createdAt), ISO);
    const pending = JSON.parse((await ok(data, ['clients', 'list', '--status', 'pending', '--json'])).stdout) as { id: string }[];
    assert.deepEqual(pending.map((c) => c.id).sort(), ['hostile', 'owned', 'pending-a', 'pending-b', 'pending-c']);
    const none = await ok(data, ['clients', 'list', '--status', 'revoked']);
    assert.equal(none.stdout, 'no revoked clients\n');
    assert.deepEqual(JSON.parse((await ok(data, ['clients', 'list', '--status', 'revoked', '--json'])).stdout), []);
    await refused(data, ['clients', 'list', '--status', 'gone'], /--status|gone/);
    for (const out of [text.stdout, JSON.stringify(json)]) {
      assert.doesNotMatch(out, /sha256:|leaked-into-metadata|client_secret"/);
    }
  });

  it('show: key: value lines and --json; says whether there is a secret, never which', async () => {
    const text = await ok(data, ['clients', 'show', 'confidential']);
    assert.match(text.stdout, /^id:\s+confidential$/m);
    assert.match(text.stdout, /^status:\s+active$/m);
    assert.match(text.stdout, /^secret:\s+yes/m);
    assert.match(text.stdout, /^last_used:\s+never$/m);
    const json = JSON.parse((await ok(data, ['clients', 'show', 'confidential', '--json'])).stdout) as Record<string, unknown>;
    assert.deepEqual(Object.keys(json).sort(), CLIENT_KEYS);
    assert.deepEqual(json.metadata, { client_name: 'Backend', token_endpoint_auth_method: 'client_secret_basic' });
    const pub = await ok(data, ['clients', 'show', 'pending-a']);
    assert.match(pub.stdout, /^secret:\s+no \(public client\)$/m);
    for (const out of [text.stdout, JSON.stringify(json)]) assert.doesNotMatch(out, /sha256:|leaked-into-metadata/);
    await Promise.all([
      refused(data, ['clients', 'show', 'no-such-client'], /^mandate: no client with id "no-such-client"/),
      refused(data, ['clients', 'show'], /missing required argument/),
    ]);
  });

  it('what a registrant wrote cannot drive the terminal: control and bidi characters are escaped', async () => {
    const outs = [await ok(data, ['clients', 'list']), await ok(data, ['clients', 'show', 'hostile']), await ok(data, ['clients', 'show', 'hostile', '--json'])];
    for (const out of outs) {
      assert.doesNotMatch(out.stdout, /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202e]/, 'no raw control character reaches the terminal');
    }
    assert.match(outs[1]?.stdout ?? '', /Evil\\u\{1b\}\]0;pwned/);
    const parsed = JSON.parse(outs[2]?.stdout ?? '') as { name: string };
    assert.equal(parsed.name, 'Evil\u001b]0;pwned\u0007\u001b[31mRed\u009b2J\u202eReversed', 'JSON still carries the exact value');
  });

  it('approve: pending → active, the admin becomes owner, client.approved is recorded; refusals exit 2', async () => {
    const events = await newEvents(data, async () => {
      const out = await ok(data, ['clients', 'approve', 'pending-a', '--actor', 'alice-admin']);
      assert.match(out.stdout, /^approved client pending-a \(App pending-a\): now active, owner alice-admin\n$/);
    });
    assert.equal(events.length, 1);
    assert.deepEqual(
      { type: events[0]?.type, actor: events[0]?.actor, outcome: events[0]?.outcome, data: events[0]?.data },
      { type: 'client.approved', actor: 'alice-admin', outcome: 'success', data: { client_id: 'pending-a' } },
    );
    const shown = JSON.parse((await ok(data, ['clients', 'show', 'pending-a', '--json'])).stdout) as Record<string, unknown>;
    assert.equal(shown.status, 'active');
    assert.equal(shown.owner, 'alice-admin');
    assert.equal(shown.decidedBy, 'alice-admin');

    // An owner already set is kept; --json prints the client; the actor defaults to $USER.
    const owned = await ok(data, ['clients', 'approve', 'owned', '--json'], { env: { USER: 'dave' } });
    const view = JSON.parse(owned.stdout) as Record<string, unknown>;
    assert.deepEqual(Object.keys(view).sort(), CLIENT_KEYS);
    assert.deepEqual([view.status, view.owner, view.decidedBy], ['active', 'carol', 'dave']);
    assert.equal((await auditEvents(data)).at(-1)?.actor, 'dave');

    const unchanged = await newEvents(data, async () => {
      await Promise.all([
        refused(data, ['clients', 'approve', 'pending-a'], /^mandate: client "pending-a" is active: only a pending client can be approved\n$/),
        refused(data, ['clients', 'approve', 'nope'], /no client with id "nope"/),
        refused(data, ['clients', 'approve', 'pending-b', '--actor', ''], /--actor/),
      ]);
    });
    assert.deepEqual(unchanged, [], 'a refusal records nothing');
  });

  it('reject: pending → rejected with client.rejected; a rejected or active client cannot be rejected', async () => {
    const events = await newEvents(data, async () => {
      const out = await ok(data, ['clients', 'reject', 'pending-b', '--actor', 'alice-admin']);
      assert.match(out.stdout, /^rejected client pending-b \(App pending-b\): now rejected\n$/);
    });
    assert.deepEqual(events.map((e) => [e.type, e.actor, e.data]), [['client.rejected', 'alice-admin', { client_id: 'pending-b' }]]);
    await Promise.all([
      refused(data, ['clients', 'reject', 'pending-b'], /is rejected: only a pending client can be rejected/),
      refused(data, ['clients', 'reject', 'confidential'], /is active: only a pending client can be rejected/),
      refused(data, ['clients', 'approve', 'pending-b'], /is rejected: only a pending client can be approved/),
      refused(data, ['clients', 'reject', 'nope'], /no client with id "nope"/),
    ]);
  });

  it('revoke: active or pending → revoked, with a client revocation and client.revoked', async () => {
    const before = Date.now();
    const events = await newEvents(data, async () => {
      const out = await ok(data, ['clients', 'revoke', 'confidential', '--actor', 'alice-admin', '--json']);
      const view = JSON.parse(out.stdout) as Record<string, unknown> & { revocation: Record<string, unknown> };
      assert.deepEqual(Object.keys(view).sort(), [...CLIENT_KEYS, 'revocation'].sort());
      assert.equal(view.status, 'revoked');
      assert.deepEqual(Object.keys(view.revocation).sort(), ['expiresAt', 'kind', 'revokedAt', 'value']);
      assert.equal(view.revocation.kind, 'client');
      const text = await ok(data, ['clients', 'revoke', 'pending-c']);
      assert.match(text.stdout, /^revoked client pending-c \(App pending-c\): it can obtain no more tokens/);
    });
    assert.deepEqual(events.map((e) => [e.type, e.data]), [
      ['client.revoked', { client_id: 'confidential' }],
      ['client.revoked', { client_id: 'pending-c' }],
    ]);
    const revocations = await withStore(data, (store) => store.identity.listRevocations(0, Date.now()));
    const mine = revocations.filter((r) => r.kind === 'client');
    assert.deepEqual(mine.map((r) => r.value), ['confidential', 'pending-c']);
    for (const r of mine) {
      assert.ok(r.revokedAt >= before && r.revokedAt <= Date.now());
      assert.ok(Math.abs(r.expiresAt - r.revokedAt - 366 * DAY) < 1000, 'kept for KEEP_MS.client');
    }
    await Promise.all([
      refused(data, ['clients', 'revoke', 'confidential'], /is revoked: only a pending or active client can be revoked/),
      refused(data, ['clients', 'revoke', 'pending-b'], /is rejected: only a pending or active client can be revoked/),
      refused(data, ['clients', 'revoke', 'nope'], /no client with id "nope"/),
    ]);
    assert.equal((await withStore(data, (store) => store.identity.listRevocations(0, Date.now()))).length, revocations.length, 'a refused revoke adds no revocation');
  });

  it('token create: printed once, only its hash kept (it registers --uses times), token.issued without the token', async () => {
    let token = '';
    let created: CliResult | null = null;
    const events = await newEvents(data, async () => {
      created = await ok(data, ['clients', 'token', 'create', '--uses', '2', '--expires-in', '2h', '--label', 'ci runner', '--actor', 'alice-admin', '--json']);
      const json = JSON.parse(created.stdout) as Record<string, unknown>;
      assert.deepEqual(Object.keys(json).sort(), ['createdBy', 'expiresAt', 'label', 'token', 'uses']);
      token = String(json.token);
      assert.match(token, /^[A-Za-z0-9_-]{43}$/, '32 random bytes, base64url');
      assert.deepEqual([json.uses, json.label, json.createdBy], [2, 'ci runner', 'alice-admin']);
      assert.ok(Math.abs(Date.parse(String(json.expiresAt)) - Date.now() - 2 * 3_600_000) < 60_000);
    });
    secrets.push({ value: token, allowedIn: created });
    assert.equal(events.length, 1);
    assert.equal(events[0]?.type, 'token.issued');
    assert.equal(events[0]?.actor, 'alice-admin');
    assert.deepEqual(Object.keys(events[0]?.data ?? {}).sort(), ['expiresAt', 'kind', 'label', 'uses']);
    assert.deepEqual([events[0]?.data?.kind, events[0]?.data?.uses, events[0]?.data?.label], ['registration', 2, 'ci runner']);
    // The store knows the token by its hash, for exactly two registrations.
    const uses = await withStore(data, async (store) => [
      await store.identity.useRegistrationToken(hashSecret(token), Date.now()),
      await store.identity.useRegistrationToken(hashSecret(token), Date.now()),
      await store.identity.useRegistrationToken(hashSecret(token), Date.now()),
    ]);
    assert.deepEqual(uses, [true, true, false]);

    // Human output: key: value lines, the token on its own line, a warning on stderr; defaults 1 use, 24 h.
    const text = await ok(data, ['clients', 'token', 'create']);
    const second = /^token:\s+([A-Za-z0-9_-]{43})$/m.exec(text.stdout)?.[1];
    assert.ok(second, text.stdout);
    assert.notEqual(second, token);
    secrets.push({ value: second, allowedIn: text });
    assert.match(text.stdout, /^uses:\s+1$/m);
    assert.match(text.stdout, /^label:\s+-$/m);
    assert.match(text.stderr, /shown once/);
    const expires = Date.parse(/^expires:\s+(\S+)$/m.exec(text.stdout)?.[1] ?? '');
    assert.ok(Math.abs(expires - Date.now() - DAY) < 60_000, 'expires in 24h by default');
    const issued = (await auditEvents(data)).at(-1);
    assert.deepEqual([issued?.type, issued?.data?.uses, issued?.data?.label], ['token.issued', 1, null]);
    const late = await withStore(data, (store) => store.identity.useRegistrationToken(hashSecret(second), Date.now() + DAY + 60_000));
    assert.equal(late, false, 'expired after 24h');
  });

  it('token create refuses bad --uses, --expires-in (max 30d) and --label, creating nothing', async () => {
    const unchanged = await newEvents(data, async () => {
      await Promise.all([
        ...['0', '-1', 'abc', '1.5', '1001', ''].map((uses) => refused(data, ['clients', 'token', 'create', '--uses', uses], /--uses takes a whole number/)),
        ...['31d', '721h', '0m', '30s', '10x', 'tomorrow', ''].map((expiresIn) =>
          refused(data, ['clients', 'token', 'create', '--expires-in', expiresIn], /--expires-in takes a duration from 1m to 30d/),
        ),
      ]);
      await Promise.all([
        refused(data, ['clients', 'token', 'create', '--label', 'bad\u001b[2Jlabel'], /--label/),
        refused(data, ['clients', 'token', 'create', '--label', 'x'.repeat(201)], /--label/),
      ]);
    });
    assert.deepEqual(unchanged, []);
    await ok(data, ['clients', 'token', 'create', '--expires-in', '30d', '--uses', '1000']).then((out) => {
      const token = /^token:\s+(\S+)$/m.exec(out.stdout)?.[1] ?? '';
      secrets.push({ value: token, allowedIn: out });
    });
  });

  it('the audit log and the database hold no token, secret or client_secret in the clear', async () => {
    const exported = await ok(data, ['audit', 'export']);
    for (const { value } of secrets) assert.ok(!exported.stdout.includes(value), 'token absent from the audit log');
    const files = readdirSync(data).filter((f) => f.startsWith('mandate.db'));
    const raw = Buffer.concat(files.map((f) => readFileSync(path.join(data, f))));
    for (const { value } of secrets) assert.equal(raw.includes(value), false, 'token absent from the database files');
  });
});

describe('mandate users', { timeout: 240_000 }, () => {
  let data = '';
  const PASSWORD = 'correct horse battery staple';
  const CRLF_PASSWORD = 'another-long-password!';
  before(async () => {
    data = await newStore('users');
    secrets.push({ value: PASSWORD, allowedIn: null }, { value: CRLF_PASSWORD, allowedIn: null });
  });

  it('add --password-stdin: stores a scrypt hash of the password without its newline; user.added with groups', async () => {
    const events = await newEvents(data, async () => {
      const out = await ok(data, ['users', 'add', 'alice', '--password-stdin', '--group', 'dev', '--group', 'ops,dev', '--actor', 'root-admin'], { input: `${PASSWORD}\n` });
      assert.equal(out.stdout, 'added user alice (groups: dev, ops)\n');
    });
    assert.deepEqual(events.map((e) => [e.type, e.actor, e.outcome, e.data]), [['user.added', 'root-admin', 'success', { user: 'alice', groups: ['dev', 'ops'] }]]);
    const stored = await withStore(data, (store) => store.identity.getUser('alice'));
    const hash = stored?.passwordHash ?? '';
    assert.ok(hash.startsWith('scrypt$'));
    assert.equal(await verifyPassword(hash, PASSWORD), true);
    assert.equal(await verifyPassword(hash, `${PASSWORD}\n`), false);
    assert.deepEqual(stored?.groups, ['dev', 'ops']);

    // --json, CRLF stripped, no groups.
    const json = await ok(data, ['users', 'add', 'bob.smith@example', '--password-stdin', '--json'], { input: `${CRLF_PASSWORD}\r\n` });
    const view = JSON.parse(json.stdout) as Record<string, unknown>;
    assert.deepEqual(Object.keys(view).sort(), USER_KEYS);
    assert.deepEqual([view.name, view.groups, view.disabled, view.hasPassword], ['bob.smith@example', [], false, true]);
    const bob = await withStore(data, (store) => store.identity.getUser('bob.smith@example'));
    assert.equal(await verifyPassword(bob?.passwordHash ?? '', CRLF_PASSWORD), true);
  });

  it('add refuses: a taken name, a short or multi-line password, no --password-stdin without a terminal, bad names and groups', async () => {
    const unchanged = await newEvents(data, async () => {
      await Promise.all([
        refused(data, ['users', 'add', 'alice', '--password-stdin'], /^mandate: user "alice" already exists\n$/, { input: 'yet another password\n' }),
        refused(data, ['users', 'add', 'carol', '--password-stdin'], /at least 12 characters/, { input: 'short\n' }),
        refused(data, ['users', 'add', 'carol', '--password-stdin'], /at least 12 characters/, { input: '' }),
        refused(data, ['users', 'add', 'carol', '--password-stdin'], /at most 1024 characters|more than a password/, { input: 'x'.repeat(1100) }),
        refused(data, ['users', 'add', 'carol', '--password-stdin'], /one line/, { input: 'first line is long\nsecond line too\n' }),
        refused(data, ['users', 'add', 'carol'], /--password-stdin/),
        refused(data, ['users', 'add', 'Carol', '--password-stdin'], /not a user name/, { input: `${PASSWORD}\n` }),
        refused(data, ['users', 'add', '-carol', '--password-stdin'], /./, { input: `${PASSWORD}\n` }),
        refused(data, ['users', 'add', 'carol', '--password-stdin', '--group', 'has space'], /--group: "has space" is not a group name/, { input: `${PASSWORD}\n` }),
        refused(data, ['users', 'add', '--password-stdin'], /missing required argument/),
      ]);
    });
    assert.deepEqual(unchanged, []);
    assert.equal(await withStore(data, (store) => store.identity.getUser('carol')), null);
  });

  it('add on a terminal: asks twice without echo; a mismatch or a short password exits 2', { skip: SCRIPT ? false : 'no util-linux script' }, async () => {
    const TTY_PASSWORD = 'typed-on-a-terminal-1';
    secrets.push({ value: TTY_PASSWORD, allowedIn: null });
    const events = await newEvents(data, async () => {
      const [added, mismatch, short] = await Promise.all([
        // A typo erased with backspace: the stored password is what is left.
        mandateOnTerminal(['users', 'add', 'tty-user', '--group', 'ops', '--data', data], [[/Password: /, `${TTY_PASSWORD}x\u007f`], [/Password again: /, TTY_PASSWORD]]),
        mandateOnTerminal(['users', 'add', 'tty-mismatch', '--data', data], [[/Password: /, TTY_PASSWORD], [/Password again: /, `${TTY_PASSWORD}2`]]),
        mandateOnTerminal(['users', 'add', 'tty-short', '--data', data], [[/Password: /, 'short']]),
      ]);
      assert.equal(added.code, 0, added.stdout);
      assert.match(added.stdout, /^Password: \r\nPassword again: \r\nadded user tty-user \(groups: ops\)\r\n$/);
      assert.equal(mismatch.code, 2, mismatch.stdout);
      assert.match(mismatch.stdout, /mandate: the passwords do not match/);
      assert.equal(short.code, 2, short.stdout);
      assert.match(short.stdout, /^Password: \r\nmandate: a password needs at least 12 characters/, 'refused before asking again');
      for (const out of [added, mismatch, short]) assert.ok(!out.stdout.includes('typed-on'), 'nothing typed is echoed');
    });
    assert.deepEqual(events.map((e) => [e.type, e.data]), [['user.added', { user: 'tty-user', groups: ['ops'] }]]);
    const stored = await withStore(data, (store) => store.identity.getUser('tty-user'));
    assert.equal(await verifyPassword(stored?.passwordHash ?? '', TTY_PASSWORD), true);
    assert.equal(await withStore(data, (store) => store.identity.getUser('tty-mismatch')), null);
  });

  it('list: a table and --json, with whether a password is set but never the hash', async () => {
    const text = await ok(data, ['users', 'list']);
    const lines = text.stdout.trim().split('\n');
    assert.match(lines[0] ?? '', /^NAME\s+STATUS\s+PASSWORD\s+GROUPS\s+CREATED$/);
    assert.match(text.stdout, /^alice\s+active\s+yes\s+dev,ops\s+\S+Z$/m);
    assert.match(text.stdout, /^bob\.smith@example\s+active\s+yes\s+-\s+\S+Z$/m);
    const json = JSON.parse((await ok(data, ['users', 'list', '--json'])).stdout) as Record<string, unknown>[];
    assert.deepEqual(json.map((u) => u.name), ['alice', 'bob.smith@example', 'tty-user']);
    for (const user of json) assert.deepEqual(Object.keys(user).sort(), USER_KEYS);
    assert.doesNotMatch(text.stdout + JSON.stringify(json), /scrypt/);
  });

  it('disable: user.disabled and a user revocation; enable: user.enabled; repeats and unknown users exit 2', async () => {
    const events = await newEvents(data, async () => {
      const out = await ok(data, ['users', 'disable', 'alice', '--actor', 'root-admin']);
      assert.match(out.stdout, /^disabled user alice: they cannot log in, and every token issued for them is refused\n$/);
      await refused(data, ['users', 'disable', 'alice'], /^mandate: user "alice" is already disabled\n$/);
      const listed = JSON.parse((await ok(data, ['users', 'list', '--json'])).stdout) as { name: string; disabled: boolean }[];
      assert.equal(listed.find((u) => u.name === 'alice')?.disabled, true);
      const enabled = await ok(data, ['users', 'enable', 'alice', '--actor', 'root-admin', '--json']);
      const view = JSON.parse(enabled.stdout) as Record<string, unknown>;
      assert.deepEqual(Object.keys(view).sort(), USER_KEYS);
      assert.equal(view.disabled, false);
      await refused(data, ['users', 'enable', 'alice'], /already enabled/);
      const again = await ok(data, ['users', 'disable', 'bob.smith@example', '--json']);
      const disabled = JSON.parse(again.stdout) as { disabled: boolean; revocation: { kind: string; value: string } };
      assert.deepEqual([disabled.disabled, disabled.revocation.kind, disabled.revocation.value], [true, 'user', 'bob.smith@example']);
    });
    assert.deepEqual(events.map((e) => [e.type, e.data]), [
      ['user.disabled', { user: 'alice' }],
      ['user.enabled', { user: 'alice' }],
      ['user.disabled', { user: 'bob.smith@example' }],
    ]);
    assert.equal(events[0]?.actor, 'root-admin');
    const revocations = await withStore(data, (store) => store.identity.listRevocations(0, Date.now()));
    assert.deepEqual(revocations.map((r) => [r.kind, r.value]), [['user', 'alice'], ['user', 'bob.smith@example']]);
    assert.ok(Math.abs((revocations[0]?.expiresAt ?? 0) - (revocations[0]?.revokedAt ?? 0) - 366 * DAY) < 1000);
    await Promise.all([
      refused(data, ['users', 'disable', 'nobody'], /no user "nobody"/),
      refused(data, ['users', 'enable', 'nobody'], /no user "nobody"/),
      refused(data, ['users', 'disable', 'NOT VALID'], /not a user name/),
    ]);
  });

  it('no password appears in any output, the audit log or the database', async () => {
    const exported = await ok(data, ['audit', 'export']);
    const files = readdirSync(data).filter((f) => f.startsWith('mandate.db'));
    const raw = Buffer.concat(files.map((f) => readFileSync(path.join(data, f))));
    for (const password of [PASSWORD, CRLF_PASSWORD]) {
      assert.ok(!exported.stdout.includes(password));
      assert.equal(raw.includes(password), false);
    }
  });
});

describe('mandate tokens revoke', { timeout: 240_000 }, () => {
  let data = '';
  before(async () => {
    data = await newStore('tokens', [client('app', { status: 'active' })]);
    await withStore(data, async (store) => {
      const now = Date.now();
      await store.identity.createUser({ name: 'erin', passwordHash: null, groups: [], disabled: false, createdAt: now, updatedAt: now });
    });
  });

  it('--jti, --client, --user: a revocation of that kind kept for KEEP_MS, and token.revoked', async () => {
    const events = await newEvents(data, async () => {
      const jti = await ok(data, ['tokens', 'revoke', '--jti', 'abc-123', '--json', '--actor', 'sec-team']);
      const json = JSON.parse(jti.stdout) as Record<string, unknown>;
      assert.deepEqual(Object.keys(json).sort(), ['expiresAt', 'kind', 'revokedAt', 'seq', 'value']);
      assert.deepEqual([json.kind, json.value], ['jti', 'abc-123']);
      assert.ok(Math.abs(Date.parse(String(json.expiresAt)) - Date.parse(String(json.revokedAt)) - 2 * DAY) < 1000, 'jti kept 2 days');
      const byClient = await ok(data, ['tokens', 'revoke', '--client', 'app']);
      assert.match(byClient.stdout, /^revoked every token issued to client app until \S+Z\n$/);
      const byUser = await ok(data, ['tokens', 'revoke', '--user', 'erin']);
      assert.match(byUser.stdout, /^revoked every token issued to user erin until/);
      assert.match((await ok(data, ['tokens', 'revoke', '--jti', 'def'])).stdout, /^revoked the token with jti def\n$/);
    });
    assert.deepEqual(events.map((e) => [e.type, e.data]), [
      ['token.revoked', { kind: 'jti', value: 'abc-123' }],
      ['token.revoked', { kind: 'client', value: 'app' }],
      ['token.revoked', { kind: 'user', value: 'erin' }],
      ['token.revoked', { kind: 'jti', value: 'def' }],
    ]);
    assert.equal(events[0]?.actor, 'sec-team');
    const revocations = await withStore(data, (store) => store.identity.listRevocations(0, Date.now()));
    assert.deepEqual(revocations.map((r) => [r.kind, r.value]), [['jti', 'abc-123'], ['client', 'app'], ['user', 'erin'], ['jti', 'def']]);
    assert.ok(Math.abs((revocations[1]?.expiresAt ?? 0) - (revocations[1]?.revokedAt ?? 0) - 366 * DAY) < 1000);
  });

  it('exactly one of --client, --user, --jti; unknown clients and users exit 2; nothing is revoked', async () => {
    const count = async () => (await withStore(data, (store) => store.identity.listRevocations(0, Date.now()))).length;
    const before = await count();
    const unchanged = await newEvents(data, async () => {
      await Promise.all([
        refused(data, ['tokens', 'revoke'], /^mandate: give exactly one of --client ID, --user NAME or --jti ID\n$/),
        refused(data, ['tokens', 'revoke', '--client', 'app', '--user', 'erin'], /exactly one/),
        refused(data, ['tokens', 'revoke', '--client', 'app', '--user', 'erin', '--jti', 'x'], /exactly one/),
        refused(data, ['tokens', 'revoke', '--client', 'ghost'], /no client with id "ghost"/),
        refused(data, ['tokens', 'revoke', '--user', 'ghost'], /no user "ghost"/),
        refused(data, ['tokens', 'revoke', '--jti', ''], /--jti takes 1 to 512 printable characters/),
      ]);
    });
    assert.deepEqual(unchanged, []);
    assert.equal(await count(), before);
  });
});

describe('mandate consents', { timeout: 240_000 }, () => {
  let data = '';
  before(async () => {
    data = await newStore('consents', [client('app-1', { status: 'active' }), client('app-2', { status: 'active' })]);
    await withStore(data, async (store) => {
      const at = Date.now();
      await store.identity.putConsent({ user: 'alice', clientId: 'app-1', resource: 'http://127.0.0.1:8080/mcp/files', scopes: ['mcp:files'], grantedAt: at });
      await store.identity.putConsent({ user: 'alice', clientId: 'app-1', resource: 'http://127.0.0.1:8080/mcp/git', scopes: ['mcp:git:read'], grantedAt: at });
      await store.identity.putConsent({ user: 'alice', clientId: 'app-2', resource: 'http://127.0.0.1:8080/mcp/files', scopes: ['mcp:files:tool:read'], grantedAt: at });
      await store.identity.putConsent({ user: 'bob', clientId: 'app-1', resource: 'http://127.0.0.1:8080/mcp/files', scopes: ['mcp:files'], grantedAt: at });
    });
  });

  it('list: every consent, or filtered by --user and --client; a table or --json', async () => {
    const text = await ok(data, ['consents', 'list']);
    const lines = text.stdout.trim().split('\n');
    assert.match(lines[0] ?? '', /^USER\s+CLIENT\s+RESOURCE\s+SCOPES\s+GRANTED$/);
    assert.equal(lines.length, 5);
    assert.match(text.stdout, /^alice\s+app-1\s+http:\/\/127\.0\.0\.1:8080\/mcp\/git\s+mcp:git:read\s+\S+Z$/m);
    const json = JSON.parse((await ok(data, ['consents', 'list', '--json', '--user', 'alice'])).stdout) as Record<string, unknown>[];
    assert.equal(json.length, 3);
    for (const c of json) assert.deepEqual(Object.keys(c).sort(), ['clientId', 'grantedAt', 'resource', 'scopes', 'user']);
    const app1 = JSON.parse((await ok(data, ['consents', 'list', '--json', '--client', 'app-1'])).stdout) as { user: string }[];
    assert.deepEqual(app1.map((c) => c.user), ['alice', 'alice', 'bob']);
    const both = JSON.parse((await ok(data, ['consents', 'list', '--json', '--client', 'app-2', '--user', 'alice'])).stdout) as unknown[];
    assert.equal(both.length, 1);
    assert.equal((await ok(data, ['consents', 'list', '--user', 'nobody'])).stdout, 'no consents for user nobody\n');
  });

  it('revoke --user and --client: deletes the matching ones, one consent.revoked each', async () => {
    const events = await newEvents(data, async () => {
      const out = await ok(data, ['consents', 'revoke', '--user', 'alice', '--client', 'app-1', '--actor', 'root-admin']);
      assert.match(out.stdout, /^revoked 2 consents for user alice and client app-1; the user's tokens through the client are refused and the user is asked again/);
      const revocations = await withStore(data, (store) => store.identity.listRevocations(0, Date.now()));
      assert.deepEqual(revocations.filter((r) => r.kind === 'consent').map((r) => r.value), ['alice\napp-1'], 'one consent revocation for the pair');
    });
    assert.deepEqual(events.map((e) => [e.type, e.actor, e.data]), [
      ['consent.revoked', 'root-admin', { user: 'alice', client_id: 'app-1', resource: 'http://127.0.0.1:8080/mcp/files', scopes: ['mcp:files'] }],
      ['consent.revoked', 'root-admin', { user: 'alice', client_id: 'app-1', resource: 'http://127.0.0.1:8080/mcp/git', scopes: ['mcp:git:read'] }],
    ]);
    const left = JSON.parse((await ok(data, ['consents', 'list', '--json'])).stdout) as { user: string; clientId: string }[];
    assert.deepEqual(left.map((c) => `${c.user}/${c.clientId}`), ['alice/app-2', 'bob/app-1']);

    const json = await newEvents(data, async () => {
      const out = await ok(data, ['consents', 'revoke', '--client', 'app-1', '--json']);
      const removed = JSON.parse(out.stdout) as Record<string, unknown>[];
      assert.deepEqual(removed.map((c) => c.user), ['bob']);
      assert.deepEqual(Object.keys(removed[0] ?? {}).sort(), ['clientId', 'grantedAt', 'resource', 'scopes', 'user']);
    });
    assert.deepEqual(json.map((e) => [e.type, e.data?.user, e.data?.client_id]), [['consent.revoked', 'bob', 'app-1']]);
  });

  it('revoke needs --user or --client, and something to revoke', async () => {
    const unchanged = await newEvents(data, async () => {
      await Promise.all([
        refused(data, ['consents', 'revoke'], /^mandate: give --user NAME, --client ID, or both/),
        refused(data, ['consents', 'revoke', '--client', 'app-1'], /no consents for client app-1/),
        refused(data, ['consents', 'revoke', '--user', 'Not Valid'], /not a user name/),
      ]);
    });
    assert.deepEqual(unchanged, []);
    const left = JSON.parse((await ok(data, ['consents', 'list', '--json'])).stdout) as unknown[];
    assert.equal(left.length, 1);
  });
});

describe('admin commands: store and flags', { timeout: 60_000 }, () => {
  it('no store in --data → exit 2 with the hint, for every command', async () => {
    const empty = path.join(dir, 'nothing-here');
    const commands = [
      ['clients', 'list'],
      ['clients', 'approve', 'x'],
      ['clients', 'token', 'create'],
      ['users', 'list'],
      ['users', 'disable', 'x'],
      ['tokens', 'revoke', '--jti', 'x'],
      ['consents', 'list'],
      ['consents', 'revoke', '--user', 'x'],
    ];
    const outs = await Promise.all(commands.map((args) => mandate([...args, '--data', empty])));
    for (const [i, args] of commands.entries()) {
      assert.equal(outs[i]?.code, 2, `${args.join(' ')}: exit ${outs[i]?.code} ${outs[i]?.stderr}`);
      assert.match(outs[i]?.stderr ?? '', /no Mandate store in/);
    }
  });

  it('an audit event that cannot be written: exit 1, saying the change was made but not recorded', async () => {
    const data = await newStore('audit-refused', [client('app')]);
    const db = new DatabaseSync(path.join(data, 'mandate.db'));
    db.exec("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit refused by the test'); END;");
    db.close();
    const out = await cli(data, ['clients', 'approve', 'app']);
    assert.equal(out.code, 1, out.stderr);
    assert.match(out.stderr, /^mandate: client "app" was approved, but its audit event could not be written: .+\n$/);
    assert.equal(out.stdout, '');
    const users = await cli(data, ['users', 'add', 'frank', '--password-stdin'], { input: 'frank-password-123\n' });
    assert.equal(users.code, 1, users.stderr);
    assert.match(users.stderr, /user "frank" was added, but its audit event could not be written/);
    secrets.push({ value: 'frank-password-123', allowedIn: null });
  });

  it('an unreachable PostgreSQL: exit 1, one line, no password', async () => {
    const out = await mandate(['clients', 'list', '--database-url', 'postgres://mandate:hunter2@127.0.0.1:1/nodb']);
    assert.equal(out.code, 1, out.stderr);
    assert.doesNotMatch(out.stderr + out.stdout, /hunter2/);
    assert.doesNotMatch(out.stderr, /\n\s+at /);
  });
});

describe('admin commands on PostgreSQL', { skip: skipPg, timeout: 120_000 }, () => {
  const schema = `mandate_cli_id_${Math.random().toString(16).slice(2, 12)}`;
  const url = `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${schema}`)}`;
  const PASSWORD = 'postgres-user-password';

  before(async () => {
    secrets.push({ value: PASSWORD, allowedIn: null });
    const store = await openStore({ databaseUrl: PG_URL, dataDir: '/nonexistent', schema });
    try {
      await store.migrate();
      await store.identity.createClient(client('pg-app'));
    } finally {
      await store.close();
    }
  });
  after(() => pgAdmin(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));

  it('approve, token create, users add/disable, tokens revoke, consents; the audit chain verifies', async () => {
    await ok(url, ['clients', 'approve', 'pg-app', '--actor', 'pg-admin']);
    await refused(url, ['clients', 'approve', 'pg-app'], /is active/);
    const created = await ok(url, ['clients', 'token', 'create', '--json']);
    secrets.push({ value: (JSON.parse(created.stdout) as { token: string }).token, allowedIn: created });
    await ok(url, ['users', 'add', 'pat', '--password-stdin', '--group', 'ops'], { input: `${PASSWORD}\n` });
    await refused(url, ['users', 'add', 'pat', '--password-stdin'], /already exists/, { input: `${PASSWORD}\n` });
    await ok(url, ['users', 'disable', 'pat']);
    await ok(url, ['tokens', 'revoke', '--client', 'pg-app']);
    await refused(url, ['consents', 'revoke', '--user', 'pat'], /no consents/);
    await ok(url, ['clients', 'revoke', 'pg-app']);
    const events = await auditEvents(url);
    assert.deepEqual(events.map((e) => e.type), ['client.approved', 'token.issued', 'user.added', 'user.disabled', 'token.revoked', 'client.revoked']);
    assert.equal(events[0]?.actor, 'pg-admin');
    const verify = await cli(url, ['audit', 'verify']);
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    const users = JSON.parse((await ok(url, ['users', 'list', '--json'])).stdout) as { name: string; disabled: boolean; groups: string[] }[];
    assert.deepEqual(users.map((u) => [u.name, u.disabled, u.groups]), [['pat', true, ['ops']]]);
  });
});

describe('no secret leaks', () => {
  it('no password or token appears in any command output except the one-time output of `clients token create`', () => {
    assert.ok(secrets.length >= 5 && transcript.length > 50, `checked ${secrets.length} secrets over ${transcript.length} commands`);
    for (const { value, allowedIn } of secrets) {
      assert.ok(value.length >= 12);
      const allowed = allowedIn ? allowedIn.stdout + allowedIn.stderr : null;
      const leaks = transcript.filter((entry) => entry.out.includes(value) && entry.out !== allowed);
      assert.deepEqual(leaks.map((entry) => entry.args.join(' ')), [], 'secret found in the output of other commands');
    }
  });
});
