/**
 * The IdentityStore contract (src/store/identity-types.ts), run against
 * SQLite and PostgreSQL with the same harness as the audit contract
 * (contract.ts): a fresh database per test and raw SQL access to it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ClientRecord, KeyRecord, RegistrationTokenRecord, UserRecord } from '../../src/store/identity-types.ts';
import { MIGRATIONS } from '../../src/store/migrations.ts';
import { StoreUnavailableError, type Store } from '../../src/store/types.ts';
import { freshStores, type StoreHarness } from './contract.ts';

const T = Date.parse('2025-06-01T00:00:00.000Z');
const MIN = 60_000;
const HOUR = 60 * MIN;

function client(id: string, extra: Partial<ClientRecord> = {}): ClientRecord {
  return {
    id,
    status: 'pending',
    class: 'interactive',
    source: 'dcr',
    owner: null,
    metadata: { client_name: id, redirect_uris: [`https://${id}.example/cb`] },
    secretHash: null,
    registeredFrom: '198.51.100.7',
    createdAt: T,
    updatedAt: T,
    lastUsedAt: null,
    decidedBy: null,
    ...extra,
  };
}

function user(name: string, extra: Partial<UserRecord> = {}): UserRecord {
  return { name, passwordHash: `scrypt$${name}`, groups: ['staff'], disabled: false, createdAt: T, updatedAt: T, ...extra };
}

function token(hash: string, extra: Partial<RegistrationTokenRecord> = {}): RegistrationTokenRecord {
  return { hash, label: 'ci', createdBy: 'admin', createdAt: T, expiresAt: T + HOUR, usesLeft: 1, ...extra };
}

function key(kid: string, extra: Partial<KeyRecord> = {}): KeyRecord {
  return { kid, purpose: 'signing', alg: 'ES256', sealed: `sealed:${kid}`, createdAt: T, retiredAt: null, expiresAt: null, ...extra };
}

/** A payload whose exact text matters: key order, escapes, numbers, nesting. */
const PAYLOAD = {
  zeta: 1,
  alpha: [1, 0.1, -2.5e-7, 1e21, true, false, null, 'x'],
  nested: { b: { c: [] as unknown[] }, a: {} },
  text: 'quote " backslash \\ nul \u0000 tab \t emoji 😀 accents é',
  kind: 'AuthorizationCode',
};

export function runIdentityContract(label: string, harness: StoreHarness): void {
  describe(`Identity store contract: ${label}`, () => {
    const { open, ready } = freshStores(harness);
    /** Opens each store's connections up front, so concurrent calls really overlap (PostgreSQL pools connect lazily). */
    async function warm(...stores: Store[]): Promise<void> {
      await Promise.all(stores.flatMap((s) => Array.from({ length: 5 }, () => s.ping())));
    }
    async function count(table: string): Promise<number> {
      const rows = await harness.rows(`SELECT CAST(count(*) AS integer) AS n FROM ${table}`);
      return Number(rows[0]?.n);
    }

    describe('schema', () => {
      it('migration 2 is "identity"; a database at version 1 with audit events upgrades and keeps them', async () => {
        assert.deepEqual(
          MIGRATIONS.map((m) => [m.version, m.name]).slice(0, 2),
          [[1, 'audit_events'], [2, 'identity']],
        );
        const store = await ready();
        await store.audit.append([{ time: new Date(T).toISOString(), type: 'gateway.started', outcome: 'success' }]);
        // Back to version 1: migration 2 must then apply cleanly on top of it.
        await harness.exec(
          'DROP TABLE oidc_artifacts; DROP TABLE clients; DROP TABLE registration_tokens; DROP TABLE users; ' +
            'DROP TABLE consents; DROP TABLE secret_keys; DROP TABLE revocations; DELETE FROM schema_migrations WHERE version = 2',
        );
        const again = await open();
        const applied = await again.migrate();
        assert.deepEqual(applied.map((m) => m.name).slice(0, 2), ['audit_events', 'identity']);
        assert.equal((await again.audit.list()).length, 1);
        await again.identity.createUser(user('alice'));
        assert.equal((await again.identity.getUser('alice'))?.name, 'alice');
      });

      it('the database itself refuses bad statuses, negative uses, and non-integer times', async () => {
        await ready();
        const insertClient = (status: string, cls = 'machine', source = 'admin'): Promise<void> =>
          harness.exec(
            `INSERT INTO clients (id, status, class, source, metadata, created_at, updated_at)
             VALUES ('c-${status}-${cls}-${source}', '${status}', '${cls}', '${source}', '{}', 1, 1)`,
          );
        await insertClient('active');
        await assert.rejects(insertClient('approved'));
        await assert.rejects(insertClient('active', 'robot'));
        await assert.rejects(insertClient('active', 'machine', 'web'));
        await assert.rejects(
          harness.exec(`INSERT INTO registration_tokens (hash, created_by, created_at, expires_at, uses_left) VALUES ('h', 'a', 1, 2, -1)`),
        );
        await assert.rejects(
          harness.exec(`INSERT INTO users (name, groups, disabled, created_at, updated_at) VALUES ('u', '[]', '0', 'soon', 1)`),
        );
        await assert.rejects(
          harness.exec(`INSERT INTO revocations (kind, value, revoked_at, expires_at) VALUES ('token', 'v', 1, 2)`),
        );
        await assert.rejects(
          harness.exec(`INSERT INTO secret_keys (kid, purpose, alg, sealed, created_at) VALUES ('k', 'encryption', 'A', 's', 1)`),
        );
      });
    });

    describe('oidc artifacts', () => {
      it('round-trips the payload exactly; absent, other-model and expired artifacts are null even before a purge', async () => {
        const store = await ready();
        const now = Date.now();
        await store.identity.oidcUpsert('AuthorizationCode', 'k1', PAYLOAD, now + HOUR, { grantId: 'g1' });
        await store.identity.oidcUpsert('Grant', 'k2', { forever: true }, null, {});
        await store.identity.oidcUpsert('AuthorizationCode', 'old', { a: 1 }, now - 1, {});
        await store.identity.oidcUpsert('AuthorizationCode', 'older', { a: 1 }, now - HOUR, {});

        const found = await store.identity.oidcFind('AuthorizationCode', 'k1');
        assert.deepEqual(found, { payload: PAYLOAD, consumedAt: null, expiresAt: now + HOUR });
        assert.equal(JSON.stringify(found?.payload), JSON.stringify(PAYLOAD), 'key order or text changed');
        assert.deepEqual(await store.identity.oidcFind('Grant', 'k2'), { payload: { forever: true }, consumedAt: null, expiresAt: null });

        assert.equal(await store.identity.oidcFind('AuthorizationCode', 'missing'), null);
        assert.equal(await store.identity.oidcFind('AccessToken', 'k1'), null, 'the model is part of the key');
        assert.equal(await store.identity.oidcFind('AuthorizationCode', 'old'), null);
        assert.equal(await store.identity.oidcFind('AuthorizationCode', 'older'), null);
        assert.equal(await count('oidc_artifacts'), 4, 'expired rows are still there until purged');
      });

      it('an artifact expiring at this very millisecond is already gone', async () => {
        const store = await ready();
        const expiresAt = Date.now() + 20;
        await store.identity.oidcUpsert('Session', 's', {}, expiresAt, { uid: 'u' });
        while (Date.now() < expiresAt) await new Promise((r) => setTimeout(r, 1));
        assert.equal(await store.identity.oidcFind('Session', 's'), null);
        assert.equal(await store.identity.oidcFindByUid('Session', 'u'), null);
      });

      it('finds by uid and by user code, per model, with the key; expired ones are null', async () => {
        const store = await ready();
        const now = Date.now();
        await store.identity.oidcUpsert('Session', 'sess-key', { accountId: 'alice' }, now + HOUR, { uid: 'uid-1' });
        await store.identity.oidcUpsert('Interaction', 'int-key', { prompt: 'login' }, now + HOUR, { uid: 'uid-1' });
        await store.identity.oidcUpsert('DeviceCode', 'dev-key', { params: { scope: 'openid' } }, now + HOUR, { userCode: 'code-1', grantId: 'g' });
        await store.identity.oidcUpsert('DeviceCode', 'dev-old', { old: true }, now - 1, { userCode: 'code-2' });
        await store.identity.oidcUpsert('Session', 'sess-old', { old: true }, now - 1, { uid: 'uid-2' });

        assert.deepEqual(await store.identity.oidcFindByUid('Session', 'uid-1'), {
          key: 'sess-key',
          payload: { accountId: 'alice' },
          consumedAt: null,
          expiresAt: now + HOUR,
        });
        assert.equal((await store.identity.oidcFindByUid('Interaction', 'uid-1'))?.key, 'int-key');
        assert.equal(await store.identity.oidcFindByUid('Grant', 'uid-1'), null);
        assert.equal(await store.identity.oidcFindByUid('Session', 'uid-2'), null);
        assert.equal(await store.identity.oidcFindByUid('Session', 'code-1'), null, 'a user code is not a uid');
        assert.deepEqual(await store.identity.oidcFindByUserCode('DeviceCode', 'code-1'), {
          key: 'dev-key',
          payload: { params: { scope: 'openid' } },
          consumedAt: null,
          expiresAt: now + HOUR,
        });
        assert.equal(await store.identity.oidcFindByUserCode('DeviceCode', 'code-2'), null);
        assert.equal(await store.identity.oidcFindByUserCode('Session', 'code-1'), null);
      });

      it('upsert replaces payload, expiry and refs, but a consumed artifact stays consumed', async () => {
        const store = await ready();
        const now = Date.now();
        await store.identity.oidcUpsert('Session', 'k', { v: 1 }, now + MIN, { uid: 'uid-a', grantId: 'g-a' });
        await store.identity.oidcUpsert('Session', 'k', { v: 2 }, null, { uid: 'uid-b' });
        assert.deepEqual(await store.identity.oidcFind('Session', 'k'), { payload: { v: 2 }, consumedAt: null, expiresAt: null });
        assert.equal(await store.identity.oidcFindByUid('Session', 'uid-a'), null, 'the old uid still finds it');
        assert.equal((await store.identity.oidcFindByUid('Session', 'uid-b'))?.key, 'k');
        await store.identity.oidcRevokeByGrant('Session', 'g-a');
        assert.notEqual(await store.identity.oidcFind('Session', 'k'), null, 'the old grant id was kept');

        await store.identity.oidcConsume('Session', 'k', now);
        await store.identity.oidcUpsert('Session', 'k', { v: 3 }, null, {});
        assert.deepEqual(await store.identity.oidcFind('Session', 'k'), { payload: { v: 3 }, consumedAt: now, expiresAt: null });
        assert.equal(await count('oidc_artifacts'), 1);
      });

      it('consume keeps the first consumption time and says who consumed; consuming a missing artifact is harmless', async () => {
        const store = await ready();
        await store.identity.oidcUpsert('AuthorizationCode', 'code', { a: 1 }, null, {});
        assert.equal(await store.identity.oidcConsume('AuthorizationCode', 'code', T + 5), true);
        assert.equal(await store.identity.oidcConsume('AuthorizationCode', 'code', T + 9), false);
        assert.equal((await store.identity.oidcFind('AuthorizationCode', 'code'))?.consumedAt, T + 5);
        assert.equal(await store.identity.oidcConsume('AuthorizationCode', 'missing', T), false);
        assert.equal(await store.identity.oidcConsume('RefreshToken', 'code', T), false);
        assert.equal(await store.identity.oidcFind('RefreshToken', 'code'), null);
      });

      it('concurrent consumption of one artifact: exactly one caller consumes it', async () => {
        const store = await ready();
        await store.identity.oidcUpsert('RefreshToken', 'rt', { a: 1 }, null, {});
        const results = await Promise.all(Array.from({ length: 6 }, (_, i) => store.identity.oidcConsume('RefreshToken', 'rt', T + i)));
        assert.equal(results.filter(Boolean).length, 1);
      });

      it('destroy removes one artifact; revokeByGrant removes that model\'s artifacts of that grant only', async () => {
        const store = await ready();
        const refs = (grantId: string) => ({ grantId });
        await store.identity.oidcUpsert('AccessToken', 'a1', {}, null, refs('g1'));
        await store.identity.oidcUpsert('AccessToken', 'a2', {}, null, refs('g1'));
        await store.identity.oidcUpsert('AccessToken', 'a3', {}, null, refs('g2'));
        await store.identity.oidcUpsert('RefreshToken', 'r1', {}, null, refs('g1'));
        await store.identity.oidcUpsert('AccessToken', 'a4', {}, null, {});

        await store.identity.oidcDestroy('AccessToken', 'a4');
        await store.identity.oidcDestroy('RefreshToken', 'a1');
        assert.equal(await store.identity.oidcFind('AccessToken', 'a4'), null);
        assert.notEqual(await store.identity.oidcFind('AccessToken', 'a1'), null, 'destroy crossed models');

        await store.identity.oidcRevokeByGrant('AccessToken', 'g1');
        assert.equal(await store.identity.oidcFind('AccessToken', 'a1'), null);
        assert.equal(await store.identity.oidcFind('AccessToken', 'a2'), null);
        assert.notEqual(await store.identity.oidcFind('AccessToken', 'a3'), null, 'another grant was revoked');
        assert.notEqual(await store.identity.oidcFind('RefreshToken', 'r1'), null, 'another model was revoked');
        assert.equal(await count('oidc_artifacts'), 2);
      });
    });

    describe('clients', () => {
      it('round-trips a client exactly; a duplicate id is a plain Error and changes nothing', async () => {
        const store = await ready();
        const full = client('c1', {
          status: 'active',
          class: 'machine',
          source: 'admin',
          owner: 'bob',
          metadata: { ...PAYLOAD, grant_types: ['client_credentials'] },
          secretHash: 'sha256:' + 'ab'.repeat(32),
          lastUsedAt: T + 7,
          decidedBy: 'root',
          updatedAt: T + 3,
        });
        await store.identity.createClient(full);
        const bare = client('c2', { registeredFrom: null });
        await store.identity.createClient(bare);
        const got = await store.identity.getClient('c1');
        assert.deepEqual(got, full);
        assert.equal(JSON.stringify(got?.metadata), JSON.stringify(full.metadata));
        assert.deepEqual(await store.identity.getClient('c2'), bare);
        assert.equal(await store.identity.getClient('nope'), null);

        await assert.rejects(store.identity.createClient(client('c1', { owner: 'mallory' })), (error: unknown) => {
          assert.ok(error instanceof Error);
          assert.ok(!(error instanceof StoreUnavailableError), 'a duplicate is not an outage');
          assert.match(error.message, /already exists/);
          return true;
        });
        assert.equal(store.healthy, true);
        assert.deepEqual(await store.identity.getClient('c1'), full);
      });

      it('updateClientMetadata replaces metadata and secret, and leaves the status alone', async () => {
        const store = await ready();
        await store.identity.createClient(client('c', { status: 'active', secretHash: 'sha256:old' }));
        await store.identity.updateClientMetadata('c', { client_name: 'renamed', tags: ['x'] }, null, T + 50);
        await store.identity.updateClientMetadata('missing', {}, null, T);
        assert.deepEqual(await store.identity.getClient('c'), {
          ...client('c', { status: 'active' }),
          metadata: { client_name: 'renamed', tags: ['x'] },
          secretHash: null,
          updatedAt: T + 50,
        });
        await store.identity.updateClientMetadata('c', { client_name: 'again' }, 'sha256:new', T + 60);
        assert.equal((await store.identity.getClient('c'))?.secretHash, 'sha256:new');
      });

      it('lists clients oldest first, optionally by status', async () => {
        const store = await ready();
        await store.identity.createClient(client('b', { createdAt: T + 2, status: 'active' }));
        await store.identity.createClient(client('a', { createdAt: T + 3 }));
        await store.identity.createClient(client('c', { createdAt: T + 1 }));
        await store.identity.createClient(client('d', { createdAt: T + 1, status: 'revoked' }));
        assert.deepEqual((await store.identity.listClients()).map((c) => c.id), ['c', 'd', 'b', 'a']);
        assert.deepEqual((await store.identity.listClients({})).map((c) => c.id), ['c', 'd', 'b', 'a']);
        assert.deepEqual((await store.identity.listClients({ status: 'pending' })).map((c) => c.id), ['c', 'a']);
        assert.deepEqual((await store.identity.listClients({ status: 'revoked' })).map((c) => c.id), ['d']);
        assert.deepEqual(await store.identity.listClients({ status: 'rejected' }), []);
      });

      it('transitionClient moves only from the given statuses, records who and when, and sets a missing owner', async () => {
        const store = await ready();
        await store.identity.createClient(client('p'));
        await store.identity.createClient(client('o', { owner: 'alice' }));

        assert.equal(await store.identity.transitionClient('p', ['active'], 'revoked', 'root', T + 1), false);
        assert.deepEqual(await store.identity.getClient('p'), client('p'), 'a refused transition changed something');
        assert.equal(await store.identity.transitionClient('p', [], 'active', 'root', T + 1), false);
        assert.equal(await store.identity.transitionClient('missing', ['pending'], 'active', 'root', T + 1), false);

        assert.equal(await store.identity.transitionClient('p', ['pending', 'rejected'], 'active', 'root', T + 2), true);
        assert.deepEqual(await store.identity.getClient('p'), client('p', { status: 'active', decidedBy: 'root', updatedAt: T + 2 }));
        assert.equal(await store.identity.transitionClient('p', ['pending'], 'rejected', 'root', T + 3), false);

        assert.equal(await store.identity.transitionClient('p', ['active'], 'revoked', 'sec', T + 4, 'carol'), true);
        assert.deepEqual(await store.identity.getClient('p'), client('p', { status: 'revoked', decidedBy: 'sec', updatedAt: T + 4, owner: 'carol' }));

        assert.equal(await store.identity.transitionClient('o', ['pending'], 'active', 'root', T + 5, 'mallory'), true);
        assert.equal((await store.identity.getClient('o'))?.owner, 'alice', 'an existing owner was overwritten');
      });

      it('concurrent approve and reject of the same pending client: exactly one wins', async () => {
        const [a, b] = [await ready(), await open()];
        await warm(a, b);
        const ids = Array.from({ length: 8 }, (_, i) => `race-${i}`);
        for (const id of ids) await a.identity.createClient(client(id));
        const outcomes = await Promise.all(
          ids.map(async (id, i) => {
            const [first, second] = i % 2 ? [a, b] : [b, a];
            const [approved, rejected] = await Promise.all([
              first.identity.transitionClient(id, ['pending'], 'active', 'approver', T + 1, 'approver'),
              second.identity.transitionClient(id, ['pending'], 'rejected', 'rejecter', T + 2),
            ]);
            return { id, approved, rejected };
          }),
        );
        for (const { id, approved, rejected } of outcomes) {
          assert.equal(Number(approved) + Number(rejected), 1, `${id}: approved=${approved} rejected=${rejected}`);
          const stored = await a.identity.getClient(id);
          assert.equal(stored?.status, approved ? 'active' : 'rejected');
          assert.equal(stored?.decidedBy, approved ? 'approver' : 'rejecter');
          assert.equal(stored?.owner, approved ? 'approver' : null);
        }
      });

      it('countClientsFrom counts one address from `since` on (inclusive)', async () => {
        const store = await ready();
        await store.identity.createClient(client('a', { registeredFrom: '10.0.0.1', createdAt: T }));
        await store.identity.createClient(client('b', { registeredFrom: '10.0.0.1', createdAt: T + 10 }));
        await store.identity.createClient(client('c', { registeredFrom: '10.0.0.1', createdAt: T + 20 }));
        await store.identity.createClient(client('d', { registeredFrom: '10.0.0.2', createdAt: T + 20 }));
        await store.identity.createClient(client('e', { registeredFrom: null, createdAt: T + 20 }));
        assert.equal(await store.identity.countClientsFrom('10.0.0.1', T), 3);
        assert.equal(await store.identity.countClientsFrom('10.0.0.1', T + 10), 2);
        assert.equal(await store.identity.countClientsFrom('10.0.0.1', T + 21), 0);
        assert.equal(await store.identity.countClientsFrom('10.0.0.2', 0), 1);
        assert.equal(await store.identity.countClientsFrom('10.0.0.9', 0), 0);
      });

      it('touchClient records the last use, never moving it back', async () => {
        const store = await ready();
        await store.identity.createClient(client('c'));
        await store.identity.touchClient('c', T + 100);
        assert.equal((await store.identity.getClient('c'))?.lastUsedAt, T + 100);
        await store.identity.touchClient('c', T + 50);
        assert.equal((await store.identity.getClient('c'))?.lastUsedAt, T + 100);
        await store.identity.touchClient('c', T + 200);
        assert.equal((await store.identity.getClient('c'))?.lastUsedAt, T + 200);
        await store.identity.touchClient('missing', T);
        assert.equal((await store.identity.getClient('c'))?.updatedAt, T, 'a touch is not an update');
      });

      it('expireUnusedClients deletes only never-used pending or active clients created before the cut', async () => {
        const store = await ready();
        const cut = T + HOUR;
        const cases: [string, Partial<ClientRecord>, boolean][] = [
          ['old-pending', { status: 'pending', createdAt: T }, true],
          ['old-active', { status: 'active', createdAt: cut - 1 }, true],
          ['old-rejected', { status: 'rejected', createdAt: T }, false],
          ['old-revoked', { status: 'revoked', createdAt: T }, false],
          ['old-used', { status: 'active', createdAt: T, lastUsedAt: T + 1 }, false],
          ['at-cut', { status: 'pending', createdAt: cut }, false],
          ['new', { status: 'pending', createdAt: cut + 1 }, false],
        ];
        for (const [id, extra] of cases) await store.identity.createClient(client(id, extra));
        const expired = await store.identity.expireUnusedClients(cut);
        assert.deepEqual(expired, ['old-active', 'old-pending']);
        const left = (await store.identity.listClients()).map((c) => c.id).sort();
        assert.deepEqual(left, cases.filter(([, , gone]) => !gone).map(([id]) => id).sort());
        assert.deepEqual(await store.identity.expireUnusedClients(cut), []);
      });
    });

    describe('registration tokens', () => {
      it('each use takes one of usesLeft; unknown, used-up and expired tokens are refused', async () => {
        const store = await ready();
        await store.identity.createRegistrationToken(token('two', { usesLeft: 2 }));
        await store.identity.createRegistrationToken(token('expiring', { expiresAt: T + 10, usesLeft: 5 }));
        await store.identity.createRegistrationToken(token('none', { usesLeft: 0, label: null }));
        assert.equal(await store.identity.useRegistrationToken('two', T), true);
        assert.equal(await store.identity.useRegistrationToken('two', T), true);
        assert.equal(await store.identity.useRegistrationToken('two', T), false);
        assert.equal(await store.identity.useRegistrationToken('none', T), false);
        assert.equal(await store.identity.useRegistrationToken('unknown', T), false);
        assert.equal(await store.identity.useRegistrationToken('expiring', T + 9), true);
        assert.equal(await store.identity.useRegistrationToken('expiring', T + 10), false, 'used at its expiry');
        assert.equal(await store.identity.useRegistrationToken('expiring', T + 11), false);
        const rows = await harness.rows('SELECT hash, uses_left FROM registration_tokens ORDER BY hash');
        assert.deepEqual(rows.map((r) => [r.hash, Number(r.uses_left)]), [['expiring', 4], ['none', 0], ['two', 0]]);
        await assert.rejects(store.identity.createRegistrationToken(token('two')), (e: unknown) => e instanceof Error && !(e instanceof StoreUnavailableError) && /already exists/.test(e.message));
      });

      it('a single-use token used five times at once succeeds exactly once', async () => {
        const [a, b] = [await ready(), await open()];
        await warm(a, b);
        await a.identity.createRegistrationToken(token('once', { usesLeft: 1 }));
        const results = await Promise.all(Array.from({ length: 5 }, (_, i) => (i % 2 ? a : b).identity.useRegistrationToken('once', T)));
        assert.equal(results.filter(Boolean).length, 1, JSON.stringify(results));
        const rows = await harness.rows("SELECT uses_left FROM registration_tokens WHERE hash = 'once'");
        assert.equal(Number(rows[0]?.uses_left), 0);
      });
    });

    describe('users', () => {
      it('round-trips users, lists them by name, refuses a duplicate name with a plain Error', async () => {
        const store = await ready();
        const carol = user('carol', { groups: ['b-team', 'a-team', 'émigrés'], passwordHash: null, disabled: true, updatedAt: T + 9 });
        await store.identity.createUser(user('bob', { groups: [] }));
        await store.identity.createUser(carol);
        await store.identity.createUser(user('alice'));
        assert.deepEqual(await store.identity.getUser('carol'), carol);
        assert.deepEqual((await store.identity.getUser('bob'))?.groups, []);
        assert.equal(await store.identity.getUser('dave'), null);
        assert.equal(await store.identity.getUser('Alice'), null, 'names are case-sensitive');
        assert.deepEqual((await store.identity.listUsers()).map((u) => u.name), ['alice', 'bob', 'carol']);
        await assert.rejects(store.identity.createUser(user('alice', { groups: ['admin'] })), (error: unknown) => {
          assert.ok(error instanceof Error && !(error instanceof StoreUnavailableError));
          assert.match(error.message, /already exists/);
          return true;
        });
        assert.deepEqual((await store.identity.getUser('alice'))?.groups, ['staff']);
      });

      it('setUserDisabled flips the flag and the update time; false for an unknown user', async () => {
        const store = await ready();
        await store.identity.createUser(user('alice'));
        assert.equal(await store.identity.setUserDisabled('alice', true, T + 1), true);
        assert.deepEqual(await store.identity.getUser('alice'), user('alice', { disabled: true, updatedAt: T + 1 }));
        assert.equal(await store.identity.setUserDisabled('alice', false, T + 2), true);
        assert.deepEqual(await store.identity.getUser('alice'), user('alice', { disabled: false, updatedAt: T + 2 }));
        assert.equal(await store.identity.setUserDisabled('nobody', true, T), false);
        assert.equal(await store.identity.getUser('nobody'), null);
      });

      it('setUserGroups replaces the groups and the update time, nothing else; false for an unknown user', async () => {
        const store = await ready();
        await store.identity.createUser(user('alice'));
        assert.equal(await store.identity.setUserGroups('alice', ['eng', 'ops'], T + 3), true);
        assert.deepEqual(await store.identity.getUser('alice'), user('alice', { groups: ['eng', 'ops'], updatedAt: T + 3 }));
        assert.equal(await store.identity.setUserGroups('alice', [], T + 4), true);
        assert.deepEqual((await store.identity.getUser('alice'))?.groups, []);
        assert.equal(await store.identity.setUserGroups('nobody', ['x'], T), false);
      });
    });

    describe('consents', () => {
      it('putConsent merges scopes (union, sorted) and updates grantedAt; resources are separate', async () => {
        const store = await ready();
        const base = { user: 'alice', clientId: 'c1', resource: 'https://mcp.example/files' };
        await store.identity.putConsent({ ...base, scopes: ['write', 'read', 'read'], grantedAt: T });
        assert.deepEqual(await store.identity.getConsent('alice', 'c1', base.resource), { ...base, scopes: ['read', 'write'], grantedAt: T });
        await store.identity.putConsent({ ...base, scopes: ['admin', 'read'], grantedAt: T + 5 });
        assert.deepEqual(await store.identity.getConsent('alice', 'c1', base.resource), {
          ...base,
          scopes: ['admin', 'read', 'write'],
          grantedAt: T + 5,
        });
        await store.identity.putConsent({ ...base, scopes: [], grantedAt: T + 6 });
        assert.deepEqual((await store.identity.getConsent('alice', 'c1', base.resource))?.scopes, ['admin', 'read', 'write'], 'consent narrowed');
        await store.identity.putConsent({ ...base, resource: 'https://mcp.example/mail', scopes: ['send'], grantedAt: T + 7 });
        assert.deepEqual((await store.identity.getConsent('alice', 'c1', 'https://mcp.example/mail'))?.scopes, ['send']);
        assert.equal(await store.identity.getConsent('alice', 'c2', base.resource), null);
        assert.equal(await store.identity.getConsent('bob', 'c1', base.resource), null);
      });

      it('concurrent first consents from two stores both land, merged', async () => {
        const [a, b] = [await ready(), await open()];
        await warm(a, b);
        const resources = ['r0', 'r1', 'r2', 'r3'];
        await Promise.all(
          resources.flatMap((resource) =>
            Array.from({ length: 6 }, (_, i) =>
              (i % 2 ? a : b).identity.putConsent({ user: 'alice', clientId: 'c', resource, scopes: [`s${i}`], grantedAt: T + i }),
            ),
          ),
        );
        for (const resource of resources) {
          const consent = await a.identity.getConsent('alice', 'c', resource);
          assert.deepEqual(consent?.scopes, ['s0', 's1', 's2', 's3', 's4', 's5'], `${resource}: a concurrent grant was lost`);
        }
      });

      it('lists and deletes by user, client or both; an empty filter is refused', async () => {
        const store = await ready();
        const put = (u: string, c: string, r: string): Promise<void> =>
          store.identity.putConsent({ user: u, clientId: c, resource: r, scopes: ['s'], grantedAt: T });
        await put('bob', 'c2', 'r1');
        await put('alice', 'c2', 'r1');
        await put('alice', 'c1', 'r2');
        await put('alice', 'c1', 'r1');
        await put('bob', 'c1', 'r1');
        const keys = (list: { user: string; clientId: string; resource: string }[]): string[] =>
          list.map((c) => `${c.user}/${c.clientId}/${c.resource}`);

        assert.deepEqual(keys(await store.identity.listConsents()), ['alice/c1/r1', 'alice/c1/r2', 'alice/c2/r1', 'bob/c1/r1', 'bob/c2/r1']);
        assert.deepEqual(keys(await store.identity.listConsents({ user: 'alice' })), ['alice/c1/r1', 'alice/c1/r2', 'alice/c2/r1']);
        assert.deepEqual(keys(await store.identity.listConsents({ clientId: 'c1' })), ['alice/c1/r1', 'alice/c1/r2', 'bob/c1/r1']);
        assert.deepEqual(keys(await store.identity.listConsents({ user: 'bob', clientId: 'c2' })), ['bob/c2/r1']);
        assert.deepEqual(await store.identity.listConsents({ user: 'nobody' }), []);

        await assert.rejects(store.identity.deleteConsents({}), (e: unknown) => e instanceof Error && !(e instanceof StoreUnavailableError));
        await assert.rejects(store.identity.deleteConsents({ user: undefined, clientId: undefined }), Error);
        assert.equal(await count('consents'), 5, 'an empty filter deleted something');

        const gone = await store.identity.deleteConsents({ clientId: 'c1' });
        assert.deepEqual(keys(gone), ['alice/c1/r1', 'alice/c1/r2', 'bob/c1/r1']);
        assert.deepEqual(gone[0], { user: 'alice', clientId: 'c1', resource: 'r1', scopes: ['s'], grantedAt: T });
        assert.deepEqual(keys(await store.identity.deleteConsents({ user: 'alice', clientId: 'c2' })), ['alice/c2/r1']);
        assert.deepEqual(await store.identity.deleteConsents({ user: 'alice' }), []);
        assert.deepEqual(keys(await store.identity.listConsents()), ['bob/c2/r1']);
      });
    });

    describe('keys', () => {
      it('listKeys: one purpose, unexpired (expiresAt > now), newest first; retireKey sets both times', async () => {
        const store = await ready();
        const k1 = key('k1', { createdAt: T });
        const k2 = key('k2', { createdAt: T + 2 });
        const k3 = key('k3', { createdAt: T + 1, retiredAt: T + 2, expiresAt: T + 100 });
        const gone = key('gone', { createdAt: T + 3, retiredAt: T + 4, expiresAt: T + 50 });
        const cookie = key('cookie', { purpose: 'cookie', alg: 'HS256', createdAt: T + 5 });
        for (const k of [k1, k2, k3, gone, cookie]) await store.identity.putKey(k);

        assert.deepEqual(await store.identity.listKeys('signing', T + 10), [gone, k2, k3, k1]);
        assert.deepEqual(await store.identity.listKeys('signing', T + 50), [k2, k3, k1], 'a key expiring now is still listed');
        assert.deepEqual(await store.identity.listKeys('cookie', T + 50), [cookie]);
        assert.deepEqual(await store.identity.listKeys('signing', T + 100), [k2, k1]);

        await store.identity.retireKey('k2', T + 200, T + 300);
        const retired = { ...k2, retiredAt: T + 200, expiresAt: T + 300 };
        assert.deepEqual(await store.identity.listKeys('signing', T + 299), [retired, k1]);
        assert.deepEqual(await store.identity.listKeys('signing', T + 300), [k1]);

        const replaced = key('k1', { createdAt: T + 400, sealed: 'sealed:again' });
        await store.identity.putKey(replaced);
        assert.deepEqual(await store.identity.listKeys('signing', T + 400), [replaced]);
        assert.equal(await count('secret_keys'), 5);
      });
    });

    describe('revocations', () => {
      it('seqs increase; listRevocations returns unexpired ones after a seq, in seq order', async () => {
        const store = await ready();
        const r1 = await store.identity.addRevocation({ kind: 'jti', value: 'j1', revokedAt: T, expiresAt: T + 100 });
        const r2 = await store.identity.addRevocation({ kind: 'grant', value: 'g1', revokedAt: T + 1, expiresAt: T + 10 });
        const r3 = await store.identity.addRevocation({ kind: 'user', value: 'alice', revokedAt: T + 2, expiresAt: T + 100 });
        const r4 = await store.identity.addRevocation({ kind: 'client', value: 'c1', revokedAt: T + 3, expiresAt: T + 100 });
        assert.deepEqual(r1, { seq: r1.seq, kind: 'jti', value: 'j1', revokedAt: T, expiresAt: T + 100 });
        assert.ok(Number.isInteger(r1.seq) && r1.seq > 0);
        assert.ok(r1.seq < r2.seq && r2.seq < r3.seq && r3.seq < r4.seq, JSON.stringify([r1, r2, r3, r4]));

        assert.deepEqual(await store.identity.listRevocations(0, T + 5), [r1, r2, r3, r4]);
        assert.deepEqual(await store.identity.listRevocations(r1.seq, T + 5), [r2, r3, r4]);
        assert.deepEqual(await store.identity.listRevocations(0, T + 10), [r1, r3, r4], 'one expiring now is still listed');
        assert.deepEqual(await store.identity.listRevocations(r3.seq, T + 10), [r4]);
        assert.deepEqual(await store.identity.listRevocations(r4.seq, T), []);
        assert.deepEqual(await store.identity.listRevocations(0, T + 100), []);
      });

      it('a purged seq is never handed out again', async () => {
        const store = await ready();
        const first = await store.identity.addRevocation({ kind: 'jti', value: 'a', revokedAt: T, expiresAt: T + 1 });
        const last = await store.identity.addRevocation({ kind: 'jti', value: 'b', revokedAt: T, expiresAt: T + 1 });
        assert.equal(await store.identity.purgeExpired(T + 1), 2);
        const next = await store.identity.addRevocation({ kind: 'jti', value: 'c', revokedAt: T, expiresAt: T + 10 });
        assert.ok(next.seq > last.seq && last.seq > first.seq, `seq ${next.seq} reused (last was ${last.seq})`);
        assert.deepEqual(await store.identity.listRevocations(last.seq, T), [next]);
      });

      it('concurrent adds from two stores get distinct seqs, all listed in order', async () => {
        const [a, b] = [await ready(), await open()];
        await warm(a, b);
        const added = await Promise.all(
          Array.from({ length: 20 }, (_, i) =>
            (i % 2 ? a : b).identity.addRevocation({ kind: 'jti', value: `j${i}`, revokedAt: T, expiresAt: T + HOUR }),
          ),
        );
        const seqs = added.map((r) => r.seq);
        assert.equal(new Set(seqs).size, 20);
        const listed = await b.identity.listRevocations(0, T);
        assert.deepEqual(listed.map((r) => r.seq), [...seqs].sort((x, y) => x - y));
        assert.deepEqual(new Set(listed.map((r) => r.value)), new Set(added.map((r) => r.value)));
      });
    });

    describe('purgeExpired', () => {
      it('deletes expired artifacts, revocations, registration tokens and keys (expiresAt <= now) and counts them', async () => {
        const store = await ready();
        const now = Date.now() + HOUR; // in the future, so oidcFind (which uses the clock) sees the live ones
        await store.identity.oidcUpsert('AccessToken', 'expired', {}, now - 1, { grantId: 'g' });
        await store.identity.oidcUpsert('AccessToken', 'at-now', {}, now, {});
        await store.identity.oidcUpsert('AccessToken', 'live', {}, now + 1, {});
        await store.identity.oidcUpsert('Grant', 'forever', {}, null, {});
        await store.identity.addRevocation({ kind: 'jti', value: 'old', revokedAt: T, expiresAt: now });
        await store.identity.addRevocation({ kind: 'jti', value: 'new', revokedAt: T, expiresAt: now + 1 });
        await store.identity.createRegistrationToken(token('old', { expiresAt: now - 5 }));
        await store.identity.createRegistrationToken(token('new', { expiresAt: now + 5 }));
        await store.identity.putKey(key('old', { retiredAt: T, expiresAt: now }));
        await store.identity.putKey(key('retired', { retiredAt: T, expiresAt: now + 1 }));
        await store.identity.putKey(key('active'));
        // Rows that have no expiry of their own are never purged.
        await store.identity.createClient(client('c', { createdAt: 0 }));
        await store.identity.createUser(user('alice', { createdAt: 0 }));
        await store.identity.putConsent({ user: 'alice', clientId: 'c', resource: 'r', scopes: ['s'], grantedAt: 0 });

        assert.equal(await store.identity.purgeExpired(now), 5);
        assert.equal(await count('oidc_artifacts'), 2);
        assert.notEqual(await store.identity.oidcFind('AccessToken', 'live'), null);
        assert.notEqual(await store.identity.oidcFind('Grant', 'forever'), null);
        assert.deepEqual((await store.identity.listRevocations(0, 0)).map((r) => r.value), ['new']);
        assert.deepEqual((await harness.rows('SELECT hash FROM registration_tokens')).map((r) => r.hash), ['new']);
        assert.deepEqual((await store.identity.listKeys('signing', 0)).map((k) => k.kid).sort(), ['active', 'retired']);
        assert.equal(await count('clients'), 1);
        assert.equal(await count('users'), 1);
        assert.equal(await count('consents'), 1);
        assert.equal(await store.identity.purgeExpired(now), 0);
      });
    });

    describe('failures', () => {
      it('a closed store rejects identity calls with StoreUnavailableError, even a would-be duplicate', async () => {
        const store = await ready();
        await store.identity.createClient(client('c'));
        await store.close();
        await assert.rejects(store.identity.getClient('c'), StoreUnavailableError);
        await assert.rejects(store.identity.createClient(client('c')), StoreUnavailableError);
        await assert.rejects(store.identity.oidcFind('Session', 'k'), StoreUnavailableError);
        await assert.rejects(store.identity.putConsent({ user: 'u', clientId: 'c', resource: 'r', scopes: [], grantedAt: T }), StoreUnavailableError);
        await assert.rejects(store.identity.purgeExpired(T), StoreUnavailableError);
      });

      it('a payload that is not JSON is a caller error (TypeError), and nothing is written', async () => {
        const store = await ready();
        await assert.rejects(store.identity.oidcUpsert('Session', 'k', { big: 1n }, null, {}), TypeError);
        await assert.rejects(store.identity.createClient(client('c', { metadata: { big: 1n } })), TypeError);
        assert.equal(await count('oidc_artifacts'), 0);
        assert.equal(await count('clients'), 0);
        assert.equal(store.healthy, true);
      });
    });
  });
}
