/**
 * `mandate migrate` is the command that changes the schema (besides `up` when
 * migrations are pending). Every other command refuses a schema that is
 * behind (naming `mandate migrate`) and changes nothing; every command
 * refuses a schema newer than this build. Real processes, real SQLite files,
 * and a PostgreSQL schema selected with the URL's options parameter.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';
import { MIGRATIONS } from '../../src/store/migrations.ts';
import { PG_URL, pgAdmin } from '../helpers/pg.ts';
import { tempDir } from '../helpers/process.ts';
import { mandate } from './run.ts';

const dir = tempDir('mandate-migrate-');
const skipPg = process.env.MANDATE_TEST_PG === '0' ? 'MANDATE_TEST_PG=0' : false;
const ALL = MIGRATIONS.map((m) => ({ version: m.version, name: m.name }));
let counter = 0;

after(() => rmSync(dir, { recursive: true, force: true }));

const fresh = (): string => path.join(dir, `store-${++counter}`);

function sqlite<T>(dataDir: string, work: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(path.join(dataDir, 'mandate.db'));
  try {
    return work(db);
  } finally {
    db.close();
  }
}

const versions = (dataDir: string): number[] =>
  sqlite(dataDir, (db) => (db.prepare('SELECT version FROM schema_migrations ORDER BY version').all() as { version: number }[]).map((r) => r.version));

/** A migrated store taken back to version 1 (the identity tables dropped, as before migration 2 existed). */
async function atVersionOne(): Promise<string> {
  const dataDir = fresh();
  const out = await mandate(['migrate', '--data', dataDir]);
  assert.equal(out.code, 0, out.stderr);
  sqlite(dataDir, (db) =>
    db.exec(
      'DROP TABLE oidc_artifacts; DROP TABLE clients; DROP TABLE registration_tokens; DROP TABLE users; ' +
        'DROP TABLE consents; DROP TABLE secret_keys; DROP TABLE revocations; ' +
        'DROP TABLE catalog_entries; DROP TABLE catalog_versions; DROP TABLE catalog_proposals; DROP TABLE catalog_drift; DROP TABLE catalog_history; ' +
        'DROP TABLE secrets; DROP TABLE secret_changes; DROP TABLE connections; DROP TABLE breakglass; DROP TABLE breakglass_changes; DROP TABLE approvals; ' +
        'DROP TABLE tasks; DROP TABLE task_changes; ' +
        'DELETE FROM schema_migrations WHERE version > 1',
    ),
  );
  return dataDir;
}

describe('mandate migrate', { timeout: 120_000 }, () => {
  it('applies every migration to a new store and prints them (--json: the list); a second run applies none', async () => {
    const dataDir = fresh();
    const first = await mandate(['migrate', '--data', dataDir, '--json']);
    assert.equal(first.code, 0, first.stderr);
    const applied = JSON.parse(first.stdout) as { version: number; name: string; appliedAt: string }[];
    assert.deepEqual(applied.map(({ version, name }) => ({ version, name })), ALL);
    assert.ok(applied.every((m) => !Number.isNaN(Date.parse(m.appliedAt))));
    assert.deepEqual(versions(dataDir), ALL.map((m) => m.version));

    const again = await mandate(['migrate', '--data', dataDir, '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(JSON.parse(again.stdout), []);
    const text = await mandate(['migrate', '--data', dataDir]);
    assert.equal(text.code, 0);
    assert.match(text.stdout, new RegExp(`schema is current \\(version ${ALL.at(-1)?.version}\\); nothing to apply`));
  });

  it('text output names each migration it applied', async () => {
    const dataDir = await atVersionOne();
    const out = await mandate(['migrate', '--data', dataDir]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /applied 7 migrations, now at version 8/);
    assert.match(out.stdout, /^\s+2 {2}identity\s+\d{4}-\d\d-\d\dT/m);
    assert.match(out.stdout, /^\s+3 {2}catalog\s+\d{4}-\d\d-\d\dT/m);
    assert.match(out.stdout, /^\s+4 {2}credentials\s+\d{4}-\d\d-\d\dT/m);
    assert.match(out.stdout, /^\s+5 {2}connections\s+\d{4}-\d\d-\d\dT/m);
    assert.match(out.stdout, /^\s+6 {2}breakglass\s+\d{4}-\d\d-\d\dT/m);
    assert.match(out.stdout, /^\s+7 {2}approvals\s+\d{4}-\d\d-\d\dT/m);
    assert.match(out.stdout, /^\s+8 {2}tasks\s+\d{4}-\d\d-\d\dT/m);
  });

  it('other commands refuse a schema that is behind, naming mandate migrate, and change nothing; after migrate they work', async () => {
    const dataDir = await atVersionOne();
    for (const args of [['clients', 'list'], ['audit', 'list'], ['audit', 'verify'], ['users', 'list'], ['tokens', 'revoke', '--jti', 'j1']]) {
      const out = await mandate([...args, '--data', dataDir]);
      assert.equal(out.code, 1, `${args.join(' ')}: exit ${out.code}\n${out.stderr}`);
      assert.match(out.stderr, /^mandate: .*schema is at version 1 and this build needs 8 \(pending: 2 identity, 3 catalog, 4 credentials, 5 connections, 6 breakglass, 7 approvals, 8 tasks\); run `mandate migrate` first/);
      assert.doesNotMatch(out.stderr, /\n\s+at /);
    }
    assert.deepEqual(versions(dataDir), [1], 'a command changed the schema');

    const migrated = await mandate(['migrate', '--data', dataDir, '--json']);
    assert.deepEqual((JSON.parse(migrated.stdout) as { version: number }[]).map((m) => m.version), [2, 3, 4, 5, 6, 7, 8]);
    const listed = await mandate(['clients', 'list', '--data', dataDir, '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(JSON.parse(listed.stdout), []);
  });

  it('every command, up and migrate included, refuses a schema newer than this build and changes nothing', async () => {
    const dataDir = fresh();
    await mandate(['migrate', '--data', dataDir]);
    sqlite(dataDir, (db) => db.exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'from_the_future', '2030-01-01T00:00:00.000Z')"));
    const config = path.join(dir, `config-${counter}.yaml`);
    writeFileSync(config, 'servers: []\n');
    const commands = [['migrate'], ['clients', 'list'], ['audit', 'verify'], ['up', '--config', config, '--port', '0']];
    for (const args of commands) {
      const out = await mandate([...args, '--data', dataDir], { timeoutMs: 15_000, killWhen: /Mandate is listening/ });
      assert.equal(out.killed, false, `${args[0]} went on with a newer schema:\n${out.stdout}`);
      assert.equal(out.code, 1, `${args.join(' ')}: exit ${out.code}\n${out.stderr}`);
      assert.match(out.stderr, /schema is at version 999, newer than this build of Mandate knows \(up to 8: unknown 999 from_the_future\)/);
    }
    assert.deepEqual(versions(dataDir), [1, 2, 3, 4, 5, 6, 7, 8, 999]);
  });
});

describe('mandate migrate on PostgreSQL (schema chosen with the URL options parameter)', { skip: skipPg, timeout: 60_000 }, () => {
  const schema = `mandate_migrate_${randomBytes(5).toString('hex')}`;
  const url = new URL(PG_URL);
  url.searchParams.set('options', `-c search_path=${schema}`);

  after(async () => {
    await pgAdmin(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  });

  it('refuses an unmigrated schema for admin commands, then migrates it', async () => {
    await pgAdmin(`CREATE SCHEMA ${schema}`);
    const refused = await mandate(['audit', 'list', '--database-url', url.toString()]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /schema is at version 0 .*run `mandate migrate` first/);
    const out = await mandate(['migrate', '--database-url', url.toString(), '--json']);
    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual((JSON.parse(out.stdout) as { version: number; name: string }[]).map(({ version, name }) => ({ version, name })), ALL);
    const listed = await mandate(['audit', 'list', '--database-url', url.toString(), '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(JSON.parse(listed.stdout), []);
  });
});
