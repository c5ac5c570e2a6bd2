/**
 * A least-privilege PostgreSQL role runs the gateway and the admin commands:
 * the schema is migrated by its owner, and the role has exactly the grants
 * docs/storage.md lists (the test runs that SQL block), so any DDL (even a
 * CREATE TABLE IF NOT EXISTS) would fail with "permission denied". Real parts:
 * `mandate up` and the CLI as that role, the everything server over stdio,
 * the official MCP SDK client.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { openStore } from '../../src/store/open.ts';
import { PG_URL, pgAdmin } from '../helpers/pg.ts';
import { EVERYTHING, NODE, ROOT, runCli, startMandate, stopBounded, tempDir, type Mandate } from '../helpers/process.ts';

const skip = process.env.MANDATE_TEST_PG === '0' ? 'MANDATE_TEST_PG=0' : false;

/** The documented grants: the ```sql block after the marker in docs/storage.md, for this schema and role. */
function documentedGrants(schema: string, role: string): string {
  const doc = readFileSync(path.join(ROOT, 'docs/storage.md'), 'utf8');
  const block = /<!-- least-privilege grants[^>]*-->\s*```sql\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(block, 'docs/storage.md has no least-privilege grants block');
  return block.replaceAll('mandate_gateway', '\u0000').replace(/\bmandate\b/g, schema).replaceAll('\u0000', role);
}

describe('a least-privilege role (the documented grants) runs the gateway and the admin commands', { skip, timeout: 180_000 }, () => {
  const suffix = randomBytes(5).toString('hex');
  const schema = `mandate_lp_${suffix}`;
  const role = `mandate_lp_${suffix}`;
  const roleUrl = (() => {
    const url = new URL(PG_URL);
    url.username = role;
    url.password = '';
    return url.toString();
  })();
  const dataDir = path.join(tempDir('mandate-lp-'), 'data');
  let mandate: Mandate | undefined;
  let roleCreated = false;
  const asRole = (args: string[]) => runCli([...args, '--database-url', roleUrl, '--data', dataDir]);

  before(async () => {
    await pgAdmin(`CREATE SCHEMA ${schema}`);
    // The owner migrates.
    const owner = await openStore({ databaseUrl: PG_URL, schema, dataDir: '/nonexistent' });
    try {
      await owner.migrate();
    } finally {
      await owner.close();
    }
    roleCreated = true;
    await pgAdmin(documentedGrants(schema, role));
  });

  after(async () => {
    if (mandate) await stopBounded(mandate);
    await pgAdmin(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    if (roleCreated) await pgAdmin(`DROP ROLE IF EXISTS ${role}`);
  });

  it('the role cannot change the schema (so nothing below ran DDL)', async () => {
    const url = new URL(roleUrl);
    await assert.rejects(pgAdmin('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY)', url.toString()), /permission denied/);
  });

  it('mandate up starts as the role; an MCP request is served and its audit event written', async () => {
    mandate = await startMandate({ servers: [{ name: 'everything', command: NODE, args: [EVERYTHING, 'stdio'] }], databaseUrl: roleUrl, dataDir });
    const client = new Client({ name: 'least-privilege', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(mandate.endpoint('everything'))));
    try {
      const result = await client.callTool({ name: 'echo', arguments: { message: 'as a plain role' } });
      assert.deepEqual(result.content, [{ type: 'text', text: 'Echo: as a plain role' }]);
    } finally {
      await client.close();
    }
    assert.doesNotMatch(mandate.output(), /permission denied/);
  });

  it('audit list and audit verify run as the role', async () => {
    const listed = await asRole(['audit', 'list', '--json', '--type', 'mcp.request']);
    assert.equal(listed.code, 0, listed.stderr);
    const events = JSON.parse(listed.stdout) as { tool?: string; outcome?: string; server?: string }[];
    assert.ok(events.some((e) => e.tool === 'echo' && e.outcome === 'success' && e.server === 'everything'), listed.stdout);
    const verified = await asRole(['audit', 'verify']);
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
    assert.match(verified.stdout, /intact/);
  });

  it('clients list and tokens revoke --user run as the role', async () => {
    const clients = await asRole(['clients', 'list', '--json']);
    assert.equal(clients.code, 0, clients.stderr);
    assert.deepEqual(JSON.parse(clients.stdout), []);

    const store = await openStore({ databaseUrl: roleUrl, dataDir });
    try {
      await store.identity.createUser({ name: 'alice', passwordHash: null, groups: [], disabled: false, createdAt: Date.now(), updatedAt: Date.now() });
    } finally {
      await store.close();
    }
    const revoked = await asRole(['tokens', 'revoke', '--user', 'alice', '--json']);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal((JSON.parse(revoked.stdout) as { kind: string; value: string }).value, 'alice');
    const events = await asRole(['audit', 'list', '--json', '--type', 'token.revoked']);
    assert.equal((JSON.parse(events.stdout) as unknown[]).length, 1);
  });

  it('approvals list and approve run as the role (the request made as the role too, as the gateway makes it)', async () => {
    const now = Date.now();
    const id = `ap-${randomBytes(6).toString('hex')}`;
    const store = await openStore({ databaseUrl: roleUrl, dataDir });
    try {
      await store.identity.createUser({ name: 'bob', passwordHash: null, groups: ['finance'], disabled: false, createdAt: now, updatedAt: now });
      await store.approvals.create({
        id,
        binding: 'b'.repeat(64),
        requester: 'alice',
        clientId: 'client-1',
        server: 'everything',
        tool: 'echo',
        argsHash: 'a'.repeat(64),
        args: '{"message":"hi"}',
        groups: ['finance'],
        policies: ['echo-needs-approval'],
        policySet: 'c'.repeat(64),
        pin: '',
        status: 'pending',
        requestedAt: now,
        expiresAt: now + 900_000,
        decidedBy: null,
        decidedAt: null,
        reason: null,
        usedAt: null,
      });
    } finally {
      await store.close();
    }
    const listed = await asRole(['approvals', 'list', '--status', 'pending', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual((JSON.parse(listed.stdout) as { id: string }[]).map((r) => r.id), [id]);
    const approved = await asRole(['approvals', 'approve', id, '--reason', 'fine', '--as', 'bob', '--json']);
    assert.equal(approved.code, 0, approved.stderr);
    assert.equal((JSON.parse(approved.stdout) as { status: string }).status, 'approved');
  });

  it('tasks open, close and list run as the role (closing writes its task revocation)', async () => {
    const opened = await asRole(['tasks', 'open', '--purpose', 'as a plain role', '--server', 'everything', '--ttl', '10m', '--as', 'bob', '--json']);
    assert.equal(opened.code, 0, opened.stderr);
    const { id } = JSON.parse(opened.stdout) as { id: string };
    const closed = await asRole(['tasks', 'close', id, '--as', 'bob', '--json']);
    assert.equal(closed.code, 0, closed.stderr);
    const listed = await asRole(['tasks', 'list', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual((JSON.parse(listed.stdout) as { id: string; status: string }[]).map((t) => [t.id, t.status]), [[id, 'closed']]);
  });

  it('the running gateway never needed more: no permission error in its output', () => {
    assert.ok(mandate);
    assert.doesNotMatch(mandate.output(), /permission denied|must be owner/);
  });
});
