/**
 * The catalog's rules, in-process on a real SQLite store: admission (owner,
 * lifetime, environments, signatures), roles, the two-person rule, the
 * proposal life cycle, renewal and expiry, pin approval by hash; each change
 * in the history and the audit log with its actor.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AuditLog } from '../../src/audit/log.ts';
import { Catalog, CatalogError, type ProposalInput } from '../../src/catalog/service.ts';
import { pinOf } from '../../src/catalog/pins.ts';
import type { ServerJson } from '../../src/catalog/types.ts';
import { adminSchema, catalogSchema, type AdminConfig, type CatalogConfig } from '../../src/config/catalog-schema.ts';
import { openStore } from '../../src/store/open.ts';
import type { Store } from '../../src/store/types.ts';
import { auditEntries, auditRecords } from '../helpers/audit.ts';
import { tempDir } from '../helpers/process.ts';

const DAY = 86_400_000;

const WEATHER: ServerJson = {
  $schema: 'https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json',
  name: 'io.example/weather',
  description: 'Weather forecasts',
  version: '1.0.0',
  remotes: [{ type: 'streamable-http', url: 'https://weather.example.com/mcp' }],
};

describe('catalog rules', () => {
  let store: Store;
  let audit: AuditLog;
  let clock = Date.parse('2026-12-03T12:00:00Z');
  let settings: { catalog: CatalogConfig; admin: AdminConfig };
  let catalog: Catalog;
  const dir = tempDir('mandate-catalog-');

  before(async () => {
    store = await openStore({ dataDir: dir, durability: 'process' });
    await store.migrate();
    audit = new AuditLog(store);
    for (const [name, groups, disabled] of [
      ['alice', ['publishers', 'approvers'], false],
      ['bob', ['approvers'], false],
      ['carol', [], false],
      ['dave', ['publishers'], true],
    ] as const) {
      await store.identity.createUser({ name, passwordHash: null, groups: [...groups], disabled, createdAt: 0, updatedAt: 0 });
    }
    settings = {
      catalog: catalogSchema.parse({ admission: { requireSignatures: [] } }),
      admin: adminSchema.parse({ roles: { publisher: ['group:publishers'], approver: ['group:approvers'], auditor: ['user:carol'] } }),
    };
    catalog = new Catalog({ store, audit, settings: () => settings, now: () => new Date(clock) });
  });
  after(async () => {
    await audit.flush();
    await store.close();
  });

  function input(route: string, extra: Partial<ProposalInput> = {}): ProposalInput {
    return { serverJson: { ...WEATHER, name: `io.example/${route}` }, route, owner: 'alice', risk: 'low', environment: 'dev', expiresAt: new Date(clock + 30 * DAY), ...extra };
  }

  async function refused(work: Promise<unknown>, rule: string, text: RegExp): Promise<void> {
    await assert.rejects(work, (error: unknown) => {
      assert.ok(error instanceof CatalogError, String(error));
      assert.equal(error.rule, rule);
      assert.match(error.message, text);
      return true;
    });
  }

  async function events(type: string) {
    await audit.flush();
    return auditEntries(await auditRecords(store, { types: [type] }));
  }

  it('refuses an entry without an owner, naming the rule', async () => {
    const { owner: _owner, ...withoutOwner } = input('no-owner');
    await refused(catalog.propose(withoutOwner, 'alice', 'new'), 'admission.requireOwner', /catalog\.admission\.requireOwner: an entry must name an owner/);
    await refused(catalog.propose(input('ghost-owner', { owner: 'nobody' }), 'alice', 'new'), 'admission.requireOwner', /owner "nobody" is not an active Mandate user/);
    assert.equal(await store.catalog.getEntry('no-owner'), null);
  });

  it('refuses an expiry beyond the maximum lifetime, or in the past, naming the rule', async () => {
    await refused(catalog.propose(input('too-long', { expiresAt: new Date(clock + 91 * DAY) }), 'alice', 'new'), 'admission.maxLifetimeDays', /catalog\.admission\.maxLifetimeDays: .* more than 90 days/);
    await refused(catalog.propose(input('past', { expiresAt: new Date(clock - 1000) }), 'alice', 'new'), 'admission.maxLifetimeDays', /not in the future/);
    // Exactly the maximum is allowed.
    const proposal = await catalog.propose(input('ninety', { expiresAt: new Date(clock + 90 * DAY) }), 'alice', 'new');
    assert.equal(proposal.status, 'open');
  });

  it('refuses an environment that is not configured, and an unsigned entry where signatures are required', async () => {
    await refused(catalog.propose(input('qa', { environment: 'qa' }), 'alice', 'new'), 'admission.environments', /"qa" is not an allowed environment/);
    settings = { ...settings, catalog: catalogSchema.parse({ admission: { requireSignatures: ['prod'] } }) };
    try {
      await refused(catalog.propose(input('unsigned', { environment: 'prod' }), 'alice', 'new'), 'admission.requireSignatures', /entries for "prod" must be signed/);
      await refused(catalog.propose(input('signed', { environment: 'prod', signature: 'e30..c2ln' }), 'alice', 'new'), 'signature', /no publishers are configured/);
    } finally {
      settings = { ...settings, catalog: catalogSchema.parse({}) };
    }
  });

  it('acts only as a known, enabled user holding a role for the action', async () => {
    await refused(catalog.propose(input('roles'), 'mallory', 'new'), 'roles', /no Mandate user "mallory"/);
    await refused(catalog.propose(input('roles'), 'dave', 'new'), 'roles', /user "dave" is disabled/);
    await refused(catalog.propose(input('roles'), 'carol', 'new'), 'roles', /may not propose: that needs the role publisher or admin/);
    await catalog.propose(input('roles'), 'alice', 'new');
    await refused(catalog.approve('roles', 'carol', 'ok'), 'roles', /may not approve/);
    assert.deepEqual(await catalog.authorize('carol', 'read'), ['auditor']);
  });

  it('a high-risk entry: its proposer cannot approve it, a second person can, and both are in the audit log', async () => {
    const proposal = await catalog.propose(input('payments', { risk: 'high' }), 'alice', 'needed for invoicing');
    assert.equal((await catalog.get('payments')).governance.status, 'pending');
    await refused(catalog.approve('payments', 'alice', 'looks fine'), 'twoPersonRisk', /high risk; its approver must be someone other than its proposer \(alice\)/);
    assert.equal((await catalog.get('payments')).governance.status, 'pending');
    const entry = await catalog.approve('payments', 'bob', 'reviewed the tools and the vendor');
    assert.equal(entry.governance.status, 'approved');
    assert.equal(entry.approvedBy, 'bob');
    const proposed = (await events('server.proposed')).find((e) => e.server === 'payments');
    const approved = (await events('server.approved')).find((e) => e.server === 'payments');
    assert.equal(proposed?.actor, 'alice');
    assert.equal(proposed?.reason, 'needed for invoicing');
    assert.equal(approved?.actor, 'bob');
    assert.equal(approved?.data?.proposedBy, 'alice');
    assert.equal(approved?.data?.proposal, proposal.id);
    const history = await catalog.history('payments');
    assert.deepEqual(history.map((h) => [h.action, h.actor]), [['proposed', 'alice'], ['approved', 'bob']]);
    assert.equal((await store.catalog.listVersions()).filter((v) => v.route === 'payments').length, 1);
  });

  it('a low-risk entry may be approved by its proposer; a change is a new proposal listing what changed', async () => {
    await catalog.propose(input('notes'), 'alice', 'new');
    await catalog.approve('notes', 'alice', 'low risk');
    await refused(catalog.propose(input('notes'), 'alice', 'same again'), 'unchanged', /changes nothing/);
    const change = await catalog.propose(input('notes', { serverJson: { ...WEATHER, name: 'io.example/notes', version: '1.1.0', remotes: [{ type: 'streamable-http', url: 'https://notes2.example.com/mcp' }] }, risk: 'medium' }), 'alice', 'new version');
    assert.equal(change.kind, 'change');
    assert.deepEqual(change.content.changes, ['version 1.0.0 → 1.1.0', 'remotes (URL)', 'risk']);
    // Still the approved version until the change is approved.
    assert.equal((await catalog.get('notes')).serverJson.version, '1.0.0');
    await refused(catalog.propose(input('notes', { team: 'x' }), 'alice', 'another'), 'proposal', /still open: approve or reject it first/);
    await catalog.approve('notes', 'bob', 'ok');
    const entry = await catalog.get('notes');
    assert.equal(entry.serverJson.version, '1.1.0');
    assert.equal(entry.governance.risk, 'medium');
    assert.deepEqual((await store.catalog.listVersions()).filter((v) => v.route === 'notes').map((v) => v.version), ['1.0.0', '1.1.0']);
  });

  it('a rejected new entry leaves service (retired) with its history; reject and approve need an open proposal', async () => {
    await catalog.propose(input('dubious'), 'alice', 'new');
    await catalog.reject('dubious', 'bob', 'unknown vendor');
    assert.equal((await catalog.get('dubious')).governance.status, 'retired');
    await refused(catalog.approve('dubious', 'bob', 'changed my mind'), 'proposal', /no open proposal/);
    await refused(catalog.reject('dubious', 'bob', 'again'), 'proposal', /no open proposal to reject/);
    assert.equal((await events('server.rejected')).find((e) => e.server === 'dubious')?.actor, 'bob');
  });

  it('suspend, reinstate, expire and renew (within the maximum lifetime)', async () => {
    await catalog.propose(input('calendar', { expiresAt: new Date(clock + DAY) }), 'alice', 'new');
    await catalog.approve('calendar', 'bob', 'ok');
    await catalog.suspend('calendar', 'bob', 'incident 42');
    assert.equal((await catalog.get('calendar')).governance.status, 'suspended');
    await catalog.approve('calendar', 'bob', 'incident closed');
    assert.equal((await catalog.get('calendar')).governance.status, 'approved');
    assert.equal(await catalog.expire('calendar'), false, 'not yet expired');
    clock += DAY;
    assert.equal(await catalog.expire('calendar'), true);
    assert.equal(await catalog.expire('calendar'), false, 'only once');
    assert.equal((await catalog.get('calendar')).governance.status, 'expired');
    await refused(catalog.renew('calendar', new Date(clock + 100 * DAY), 'bob', 'another quarter'), 'admission.maxLifetimeDays', /more than 90 days/);
    const renewed = await catalog.renew('calendar', new Date(clock + 30 * DAY), 'bob', 'another month');
    assert.equal(renewed.governance.status, 'approved');
    const types = (await audit.flush(), auditEntries(await auditRecords(store, { types: ['server.*'] }))).filter((e) => e.server === 'calendar').map((e) => e.type);
    assert.deepEqual(types, ['server.proposed', 'server.approved', 'server.suspended', 'server.approved', 'server.expired', 'server.renewed']);
    await catalog.retire('calendar', 'bob', 'replaced');
    await refused(catalog.renew('calendar', new Date(clock + DAY), 'bob', 'oops'), 'status', /retired; only an approved or expired entry can be renewed/);
  });

  it('approves a quarantined tool only by the hash of its live definition', async () => {
    await catalog.propose(input('pinned'), 'alice', 'new');
    await catalog.approve('pinned', 'bob', 'ok');
    const live = { name: 'forecast', description: 'Get the forecast', inputSchema: { type: 'object' } };
    const pin = pinOf(live);
    await store.catalog.noteDrift({ route: 'pinned', tool: 'forecast', hash: pin.hash, kind: 'new', definition: pin.definition, diff: '+ forecast', detectedAt: new Date(clock).toISOString() });
    await refused(catalog.approvePin('pinned', 'forecast', 'f'.repeat(64), 'bob', 'reviewed'), 'pins', /changed since the review/);
    await refused(catalog.approvePin('pinned', 'missing', pin.hash, 'bob', 'reviewed'), 'pins', /no quarantined tool "missing"/);
    await refused(catalog.approvePin('pinned', 'forecast', pin.hash, 'carol', 'reviewed'), 'roles', /may not pins/);
    const entry = await catalog.approvePin('pinned', 'forecast', pin.hash, 'bob', 'reviewed');
    assert.deepEqual(entry.pins.map((p) => [p.name, p.hash]), [['forecast', pin.hash]]);
    assert.deepEqual(await store.catalog.listDrift('pinned'), []);
    const approved = (await events('server.drift_approved')).find((e) => e.server === 'pinned');
    assert.equal(approved?.data?.hash, pin.hash);
  });
});
