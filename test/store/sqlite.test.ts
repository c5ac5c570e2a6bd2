import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, describe, it } from 'node:test';
import { openStore } from '../../src/store/open.ts';
import { SqliteStore } from '../../src/store/sqlite/store.ts';
import { StoreUnavailableError } from '../../src/store/types.ts';
import { runStoreContract, type StoreHarness } from './contract.ts';
import { runApprovalsContract } from './approvals-contract.ts';
import { runBreakglassContract } from './breakglass-contract.ts';
import { runCatalogContract } from './catalog-contract.ts';
import { runCredentialsContract } from './credentials-contract.ts';
import { runIdentityContract } from './identity-contract.ts';
import { runTasksContract } from './tasks-contract.ts';

const root = mkdtempSync(join(tmpdir(), 'mandate-store-'));
after(() => rmSync(root, { recursive: true, force: true }));

let current = '';
let counter = 0;

/** A short-lived raw connection, as an attacker with file access would open. */
function raw<T>(work: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(join(current, 'mandate.db'), { timeout: 5000 });
  try {
    return work(db);
  } finally {
    db.close();
  }
}

const harness: StoreHarness = {
  async fresh() {
    counter += 1;
    current = join(root, `t${counter}`, 'data');
    return { dataDir: current };
  },
  async exec(sql) {
    raw((db) => db.exec(sql));
  },
  async rows(sql) {
    return raw((db) => db.prepare(sql).all());
  },
  dropTriggersSql: 'DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;',
  refuseUpstreamErrorSql: `CREATE TRIGGER test_refuse BEFORE INSERT ON audit_events WHEN NEW.type = 'upstream.error'
    BEGIN SELECT RAISE(ABORT, 'refused by test'); END;`,
  async cleanup() {
    rmSync(join(current, '..'), { recursive: true, force: true });
  },
};

runStoreContract('sqlite', harness);
runIdentityContract('sqlite', harness);
runCatalogContract('sqlite', harness);
runCredentialsContract('sqlite', harness);
runBreakglassContract('sqlite', harness);
runApprovalsContract('sqlite', harness);
runTasksContract('sqlite', harness);

describe('SqliteStore specifics', () => {
  it('openStore without a URL opens SQLite in the data dir, created owner-only', async () => {
    const dataDir = join(root, 'specific', 'nested', 'data');
    const store = await openStore({ dataDir });
    try {
      assert.equal(store.kind, 'sqlite');
      assert.equal(store.description, `sqlite ${join(dataDir, 'mandate.db')}`);
      assert.equal(statSync(dataDir).mode & 0o777, 0o700);
      assert.equal(statSync(join(dataDir, 'mandate.db')).mode & 0o777, 0o600);
      await store.migrate();
      await store.ping();
      assert.equal(statSync(join(dataDir, 'mandate.db-wal')).mode & 0o777, 0o600);
    } finally {
      await store.close();
    }
    const db = new DatabaseSync(join(dataDir, 'mandate.db'));
    try {
      assert.deepEqual({ ...db.prepare('PRAGMA journal_mode').get() }, { journal_mode: 'wal' });
    } finally {
      db.close();
    }
  });

  it('a data dir that cannot be created is a clear StoreUnavailableError', async () => {
    const file = join(root, 'not-a-dir');
    writeFileSync(file, '');
    const dataDir = join(file, 'data');
    await assert.rejects(openStore({ dataDir }), (error: unknown) => {
      assert.ok(error instanceof StoreUnavailableError);
      assert.match(error.message, /cannot create data directory/);
      assert.ok(error.message.includes(dataDir), error.message);
      return true;
    });
    assert.throws(() => new SqliteStore(dataDir), StoreUnavailableError);
  });

  it('a file that is not a database is a StoreUnavailableError naming the file', async () => {
    const dataDir = join(root, 'garbage');
    const store = await openStore({ dataDir });
    await store.close();
    writeFileSync(join(dataDir, 'mandate.db'), 'x'.repeat(4096));
    rmSync(join(dataDir, 'mandate.db-wal'), { force: true });
    rmSync(join(dataDir, 'mandate.db-shm'), { force: true });
    await assert.rejects(
      (async () => {
        const broken = await openStore({ dataDir });
        try {
          await broken.migrate();
        } finally {
          await broken.close();
        }
      })(),
      (error: unknown) => error instanceof StoreUnavailableError && error.message.includes(join(dataDir, 'mandate.db')),
    );
  });

  it('openStore rejects other URL schemes, naming the accepted forms but not the URL', async () => {
    await assert.rejects(openStore({ dataDir: root, databaseUrl: 'mysql://root:s3cret@db/x' }), (error: unknown) => {
      assert.ok(error instanceof Error);
      assert.match(error.message, /postgres:\/\/.*postgresql:\/\//);
      assert.match(error.message, /"mysql:"/);
      assert.doesNotMatch(error.message, /s3cret/);
      return true;
    });
  });
});
