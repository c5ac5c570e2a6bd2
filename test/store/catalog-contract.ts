/**
 * The CatalogStore contract (src/store/catalog.ts), run against SQLite and
 * PostgreSQL: entries keep their server.json exactly (key order, escapes),
 * a change applies whole or not at all, revisions and open proposals are
 * compare-and-set, drift is kept once per definition, and the change counter
 * moves with every change.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CatalogConflictError, type CatalogChange, type ProposalRecord } from '../../src/store/catalog.ts';
import type { CatalogEntry } from '../../src/catalog/types.ts';
import { freshStores, type StoreHarness } from './contract.ts';

const AT = '2026-12-03T12:00:00.000Z';

function entry(route: string, extra: Partial<CatalogEntry> = {}): CatalogEntry {
  return {
    // Key order and characters as a publisher wrote them: kept exactly.
    serverJson: { version: '1.0.0', name: `io.example/${route}`, description: 'quote " backslash \\ emoji 😀 é', _meta: { z: 1, a: [0.1, null] } },
    governance: { route, owner: 'alice', environment: 'dev', risk: 'high', expiresAt: '2027-01-01T00:00:00.000Z', status: 'pending', source: 'catalog' },
    signature: null,
    pins: [],
    revision: 1,
    createdAt: AT,
    updatedAt: AT,
    approvedBy: null,
    approvedAt: null,
    seal: 'v1.kept-as-given',
    ...extra,
  };
}

function proposal(id: string, route: string): ProposalRecord {
  const e = entry(route);
  return {
    id,
    route,
    kind: 'new',
    status: 'open',
    content: { serverJson: e.serverJson, governance: e.governance, signature: null, changes: [] },
    proposedBy: 'alice',
    proposedAt: AT,
    reason: 'needed',
    decidedBy: null,
    decidedAt: null,
    decisionReason: null,
  };
}

const history = (route: string, action: string): CatalogChange['history'] => [{ route, at: AT, actor: 'alice', action, reason: 'why', data: { n: 1 } }];

export function runCatalogContract(label: string, harness: StoreHarness): void {
  describe(`Catalog store contract: ${label}`, () => {
    const { ready } = freshStores(harness);

    it('keeps an entry exactly, and a proposal with it; the change counter moves', async () => {
      const store = await ready();
      assert.equal(await store.catalog.lastChange(), 0);
      await store.catalog.apply({ entry: entry('weather'), expectRevision: null, propose: proposal('p-1', 'weather'), history: history('weather', 'proposed') });
      const kept = await store.catalog.getEntry('weather');
      assert.deepEqual(kept, entry('weather'));
      assert.equal(JSON.stringify(kept?.serverJson), JSON.stringify(entry('weather').serverJson));
      assert.equal((await store.catalog.openProposal('weather'))?.id, 'p-1');
      assert.equal(await store.catalog.lastChange(), 1);
      assert.deepEqual((await store.catalog.history('weather')).map((h) => [h.action, h.actor, h.data]), [['proposed', 'alice', { n: 1 }]]);
      assert.deepEqual((await store.catalog.listEntries()).map((e) => e.governance.route), ['weather']);
    });

    it('refuses a second entry of a route, a stale revision, a second open proposal and a decided proposal: nothing of the change is written', async () => {
      const store = await ready();
      await store.catalog.apply({ entry: entry('a'), expectRevision: null, propose: proposal('p-1', 'a'), history: history('a', 'proposed') });
      await assert.rejects(store.catalog.apply({ entry: entry('a'), expectRevision: null, history: history('a', 'again') }), CatalogConflictError);
      await assert.rejects(store.catalog.apply({ entry: { ...entry('a'), revision: 3 }, expectRevision: 2, history: history('a', 'stale') }), CatalogConflictError);
      await assert.rejects(store.catalog.apply({ entry: null, expectRevision: null, propose: proposal('p-2', 'a'), history: history('a', 'second') }), /still open/);
      const approve: CatalogChange = {
        entry: { ...entry('a'), governance: { ...entry('a').governance, status: 'approved' }, revision: 2 },
        expectRevision: 1,
        decide: { id: 'p-1', status: 'approved', by: 'bob', at: AT, reason: 'ok' },
        version: { route: 'a', name: 'io.example/a', version: '1.0.0', serverJson: entry('a').serverJson, approvedBy: 'bob', approvedAt: AT },
        history: history('a', 'approved'),
      };
      await store.catalog.apply(approve);
      // The same decision again: the proposal is no longer open, and the entry write in it is rolled back too.
      await assert.rejects(store.catalog.apply({ ...approve, entry: { ...approve.entry!, revision: 3 }, expectRevision: 2 }), /no longer open/);
      assert.equal((await store.catalog.getEntry('a'))?.revision, 2);
      assert.equal((await store.catalog.getProposal('p-1'))?.decidedBy, 'bob');
      assert.deepEqual((await store.catalog.history('a')).map((h) => h.action), ['proposed', 'approved']);
      assert.deepEqual((await store.catalog.listVersions()).map((v) => [v.route, v.version, v.approvedBy]), [['a', '1.0.0', 'bob']]);
      // A new proposal may follow once the first is decided.
      await store.catalog.apply({ entry: null, expectRevision: null, propose: proposal('p-2', 'a'), history: history('a', 'proposed') });
      assert.deepEqual((await store.catalog.listProposals('a')).map((p) => p.id).sort(), ['p-1', 'p-2']);
    });

    it('keeps drift once per live definition and settles it with a pin approval', async () => {
      const store = await ready();
      await store.catalog.apply({ entry: entry('d'), expectRevision: null, history: history('d', 'proposed') });
      const drift = { route: 'd', tool: 't', hash: 'a'.repeat(64), kind: 'new' as const, definition: { name: 't' }, diff: '+ t', detectedAt: AT };
      assert.equal(await store.catalog.noteDrift(drift), true);
      assert.equal(await store.catalog.noteDrift(drift), false, 'the same definition again is not news');
      assert.equal(await store.catalog.noteDrift({ ...drift, hash: 'b'.repeat(64), kind: 'changed' }), true);
      assert.deepEqual((await store.catalog.listDrift('d')).map((d) => [d.tool, d.hash, d.kind]), [['t', 'b'.repeat(64), 'changed']]);
      await store.catalog.apply({ entry: { ...entry('d'), revision: 2 }, expectRevision: 1, settleDrift: ['t'], history: history('d', 'pin_approved') });
      assert.deepEqual(await store.catalog.listDrift('d'), []);
      await store.catalog.noteDrift({ ...drift, tool: 'u' });
      await store.catalog.clearDrift('d', 'u');
      assert.deepEqual(await store.catalog.listDrift('d'), []);
    });
  });
}
