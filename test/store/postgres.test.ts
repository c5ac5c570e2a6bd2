/**
 * Runs against a real PostgreSQL: MANDATE_TEST_DATABASE_URL, default
 * postgres://postgres@127.0.0.1:5432/test. Each test gets its own random
 * schema, dropped afterwards. MANDATE_TEST_PG=0 skips the suite.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { before, describe, it } from 'node:test';
import pg from 'pg';
import { openStore } from '../../src/store/open.ts';
import { StoreUnavailableError } from '../../src/store/types.ts';
import { runStoreContract, type StoreHarness } from './contract.ts';
import { runApprovalsContract } from './approvals-contract.ts';
import { runBreakglassContract } from './breakglass-contract.ts';
import { runCatalogContract } from './catalog-contract.ts';
import { runCredentialsContract } from './credentials-contract.ts';
import { runIdentityContract } from './identity-contract.ts';
import { runTasksContract } from './tasks-contract.ts';

const URL_ = process.env.MANDATE_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const skip = process.env.MANDATE_TEST_PG === '0' ? 'MANDATE_TEST_PG=0' : false;

let schema = '';

/** A short-lived raw connection into the test's schema, as an attacker with database access would use. */
async function raw<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: URL_, options: `-c search_path=${schema}` });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

if (!skip) {
  const harness: StoreHarness = {
    async fresh() {
      schema = `mandate_test_${randomBytes(6).toString('hex')}`;
      return { databaseUrl: URL_, dataDir: '/nonexistent', schema, poolSize: 5 };
    },
    async exec(sql) {
      await raw((c) => c.query(sql));
    },
    async rows(sql) {
      return raw(async (c) => (await c.query(sql)).rows);
    },
    dropTriggersSql: 'DROP TRIGGER audit_events_no_change ON audit_events; DROP TRIGGER audit_events_no_truncate ON audit_events;',
    refuseUpstreamErrorSql: `
      CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'refused by test'; END $$;
      CREATE TRIGGER test_refuse BEFORE INSERT ON audit_events FOR EACH ROW
        WHEN (NEW.type = 'upstream.error') EXECUTE FUNCTION test_refuse();`,
    async cleanup() {
      await raw((c) => c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
    },
  };
  runStoreContract('postgres', harness);
  runIdentityContract('postgres', harness);
  runCatalogContract('postgres', harness);
  runCredentialsContract('postgres', harness);
  runBreakglassContract('postgres', harness);
  runApprovalsContract('postgres', harness);
  runTasksContract('postgres', harness);
}

/** A local port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.ok(address && typeof address === 'object');
  return address.port;
}

describe('PostgresStore specifics', { skip }, () => {
  let port = 0;
  before(async () => {
    port = await closedPort();
  });

  it('a closed port: ping and audit.append reject promptly with StoreUnavailableError, no password shown', async () => {
    const store = await openStore({ databaseUrl: `postgresql://mandate:hunter2@127.0.0.1:${port}/audit`, dataDir: '/x' });
    try {
      assert.equal(store.kind, 'postgres');
      assert.equal(store.description, `postgres 127.0.0.1:${port}/audit`);
      const started = Date.now();
      const attempts = [
        () => store.ping(),
        () => store.audit.append([{ time: new Date().toISOString(), type: 'gateway.started', outcome: 'success' }]),
        () => store.migrate(),
      ];
      for (const attempt of attempts) {
        await assert.rejects(attempt(), (error: unknown) => {
          assert.ok(error instanceof StoreUnavailableError, String(error));
          assert.ok(error.message.includes(`127.0.0.1:${port}/audit`), error.message);
          assert.doesNotMatch(error.message, /hunter2/);
          return true;
        });
      }
      assert.ok(Date.now() - started < 6000, `took ${Date.now() - started} ms`);
    } finally {
      await store.close();
    }
  });

  it('identity calls on a closed port reject with StoreUnavailableError and mark the store unhealthy', async () => {
    const store = await openStore({ databaseUrl: `postgresql://mandate:hunter2@127.0.0.1:${port}/audit`, dataDir: '/x' });
    try {
      assert.equal(store.healthy, true);
      const attempts = [
        () => store.identity.getClient('c'),
        () => store.identity.useRegistrationToken('h', Date.now()),
        () => store.identity.putConsent({ user: 'u', clientId: 'c', resource: 'r', scopes: ['s'], grantedAt: 1 }),
        () => store.identity.addRevocation({ kind: 'jti', value: 'j', revokedAt: 1, expiresAt: 2 }),
      ];
      for (const attempt of attempts) {
        await assert.rejects(attempt(), (error: unknown) => {
          assert.ok(error instanceof StoreUnavailableError, String(error));
          assert.doesNotMatch(error.message, /hunter2/);
          return true;
        });
        assert.equal(store.healthy, false);
      }
    } finally {
      await store.close();
    }
  });

  it('a failed identity query marks the store unhealthy until a query succeeds', async () => {
    schema = `mandate_test_${randomBytes(6).toString('hex')}`;
    const store = await openStore({ databaseUrl: URL_, dataDir: '/x', schema });
    try {
      await store.migrate();
      await store.identity.createUser({ name: 'alice', passwordHash: null, groups: [], disabled: false, createdAt: 1, updatedAt: 1 });
      await assert.rejects(
        store.identity.createUser({ name: 'alice', passwordHash: null, groups: [], disabled: false, createdAt: 1, updatedAt: 1 }),
        (error: unknown) => error instanceof Error && !(error instanceof StoreUnavailableError),
      );
      assert.equal(store.healthy, true, 'a duplicate name is not a sign of trouble');
      await raw((c) => c.query('DROP TABLE users'));
      await assert.rejects(store.identity.getUser('alice'), StoreUnavailableError);
      assert.equal(store.healthy, false);
      assert.equal(await store.identity.getClient('nope'), null);
      assert.equal(store.healthy, true);
    } finally {
      await store.close();
      await raw((c) => c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
    }
  });

  it('description and errors never carry credentials', async () => {
    const store = await openStore({ databaseUrl: `postgres://mandate:p%40ss@127.0.0.1:${port}/db?sslmode=disable`, dataDir: '/x', schema: 'tenant_a' });
    try {
      assert.equal(store.description, `postgres 127.0.0.1:${port}/db schema tenant_a`);
      await assert.rejects(store.ping(), (error: unknown) => error instanceof StoreUnavailableError && !/p@ss|p%40ss/.test(error.message));
    } finally {
      await store.close();
    }
  });

  it('TRUNCATE on audit_events is refused too', async () => {
    schema = `mandate_test_${randomBytes(6).toString('hex')}`;
    const store = await openStore({ databaseUrl: URL_, dataDir: '/x', schema });
    try {
      await store.migrate();
      await store.audit.append([{ time: new Date().toISOString(), type: 'gateway.started', outcome: 'success' }]);
      await assert.rejects(raw((c) => c.query('TRUNCATE audit_events')), /append-only/);
      assert.equal((await store.audit.head())?.seq, 1);
    } finally {
      await store.close();
      await raw((c) => c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
    }
  });

  it('a schema that is not a plain identifier is refused', async () => {
    await assert.rejects(openStore({ databaseUrl: URL_, dataDir: '/x', schema: 'x; DROP TABLE y' }), /schema/);
  });

  it('openStore accepts both postgres:// and postgresql://', async () => {
    for (const databaseUrl of [URL_, URL_.replace(/^postgres:/, 'postgresql:')]) {
      const store = await openStore({ databaseUrl, dataDir: '/x' });
      try {
        assert.equal(store.kind, 'postgres');
        await store.ping();
      } finally {
        await store.close();
      }
    }
  });
});
