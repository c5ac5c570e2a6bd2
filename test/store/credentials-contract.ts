/**
 * The CredentialsStore contract (src/store/credentials.ts), on SQLite and
 * PostgreSQL: versions per scope, a rotation's grace period, deletion, and
 * the change counter. Values arrive sealed; the store never sees one.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SecretVersion } from '../../src/store/credentials.ts';
import { freshStores, type StoreHarness } from './contract.ts';

const T = Date.parse('2026-12-03T12:00:00Z');
const version = (n: number, extra: Partial<SecretVersion> = {}): SecretVersion => ({
  name: 'weather-key',
  environment: '',
  tenant: '',
  version: n,
  sealedKey: `k${n}`,
  sealedValue: `v${n}`,
  createdAt: T + n,
  createdBy: 'admin',
  retiresAt: null,
  lastUsedAt: null,
  ...extra,
});

export function runCredentialsContract(label: string, harness: StoreHarness): void {
  describe(`Credentials store contract: ${label}`, () => {
    const { ready } = freshStores(harness);

    it('versions, a rotation with its grace period, scopes, use, deletion and the change counter', async () => {
      const store = await ready();
      const scope = { name: 'weather-key', environment: '', tenant: '' };
      assert.equal(await store.credentials.lastChange(), 0);
      assert.equal(await store.credentials.nextVersion(scope), 1);
      await store.credentials.addVersion(version(1), T + 1);
      await store.credentials.addVersion(version(2), T + 1000);
      // Version 1 keeps its grace period; the current one has none.
      assert.deepEqual((await store.credentials.usable(T + 10)).map((v) => [v.version, v.retiresAt]), [[1, T + 1000], [2, null]]);
      await store.credentials.addVersion(version(3), T + 5000);
      // A rotation during a grace period retires the older version at once.
      assert.deepEqual((await store.credentials.usable(T + 10)).map((v) => v.version), [2, 3]);
      await assert.rejects(store.credentials.addVersion(version(3), T + 9000), /changed meanwhile/);
      assert.deepEqual((await store.credentials.usable(T + 6000)).map((v) => v.version), [3], 'past its grace period');
      await store.credentials.addVersion(version(1, { environment: 'prod' }), T);
      await store.credentials.markUsed({ ...scope, environment: 'prod' }, 1, T + 7);
      assert.equal((await store.credentials.usable(T, 'weather-key')).find((v) => v.environment === 'prod')?.lastUsedAt, T + 7);
      const changes = await store.credentials.lastChange();
      assert.equal(await store.credentials.purgeRetired(T + 6000), 2);
      assert.equal(await store.credentials.delete('weather-key', { environment: 'prod', tenant: '' }), 1);
      assert.ok((await store.credentials.lastChange()) > changes);
      assert.deepEqual((await store.credentials.all()).map((v) => [v.environment, v.version]), [['', 3]]);
      assert.equal(await store.credentials.delete('weather-key'), 1);
      assert.equal(await store.credentials.delete('weather-key'), 0);
    });

    it('connections: one per user, server and tenant; a refresh is compare-and-set; every change moves the counter', async () => {
      const store = await ready();
      const alice = { user: 'alice', server: 'notes', tenant: '' };
      const sealed = (n: number) => ({ sealedKey: `k${n}`, sealedTokens: `t${n}`, scope: 'notes', expiresAt: T + n * 1000 });
      assert.equal(await store.connections.get(alice), null);
      const before = await store.credentials.lastChange();
      assert.equal(await store.connections.put({ ...alice, ...sealed(1), createdAt: T }), 1);
      assert.ok((await store.credentials.lastChange()) > before, 'a connection moves the credentials change counter');
      await store.connections.put({ ...alice, tenant: 'acme', ...sealed(1), createdAt: T });
      await store.connections.put({ user: 'bob', server: 'notes', tenant: '', ...sealed(1), createdAt: T });
      assert.deepEqual((await store.connections.list()).map((c) => `${c.user}/${c.server}/${c.tenant}`), ['alice/notes/', 'alice/notes/acme', 'bob/notes/']);
      assert.deepEqual((await store.connections.list('bob')).map((c) => c.user), ['bob']);
      // Two refreshes from revision 1: the first wins, the second is told so.
      assert.equal(await store.connections.refreshed(alice, 1, sealed(2), T + 5), true);
      assert.equal(await store.connections.refreshed(alice, 1, sealed(3), T + 6), false);
      const now = await store.connections.get(alice);
      assert.deepEqual([now?.revision, now?.sealedTokens, now?.refreshedAt, now?.expiresAt], [2, 't2', T + 5, T + 2000]);
      // Connecting again replaces the connection whole, at the next revision.
      assert.equal(await store.connections.put({ ...alice, ...sealed(4), createdAt: T + 9 }), 3);
      await store.connections.markUsed(alice, T + 10);
      assert.equal((await store.connections.get(alice))?.lastUsedAt, T + 10);
      const counted = await store.credentials.lastChange();
      assert.equal((await store.connections.delete(alice, T + 11))?.revision, 3);
      assert.ok((await store.credentials.lastChange()) > counted);
      assert.equal(await store.connections.delete(alice, T + 12), null);
      assert.equal(await store.connections.refreshed(alice, 3, sealed(5), T + 13), false, 'a disconnected connection is not brought back by a refresh');
      assert.equal((await store.connections.get({ ...alice, tenant: 'acme' }))?.revision, 1, 'another tenant\'s connection is its own');
    });
  });
}
