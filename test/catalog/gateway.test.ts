/**
 * The catalog at the gateway: `servers: []` is a valid configuration and
 * every server comes from the catalog; a pending entry is refused, an
 * approved one is routable without a restart, an expired one is refused (403,
 * naming the server and the reason) until renewed, a suspended one ends its
 * sessions; the CLI enforces the two-person rule as named users.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse, stringify } from 'yaml';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { ServerJson } from '../../src/catalog/types.ts';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { createUsers } from '../helpers/users.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { errorOf, eventually, initializeMessage, post } from '../gateway/raw.ts';

const ROLES = { roles: { publisher: ['group:publishers'], approver: ['group:approvers'], auditor: ['group:security'] } };

describe('the catalog at the gateway', { timeout: 120_000 }, () => {
  let upstream: FakeUpstream;
  let mandate: InProcessMandate;
  let serverJson: ServerJson;
  let file: string;

  before(async () => {
    upstream = await startFakeUpstream();
    mandate = await startInProcess({ servers: [], extra: { admin: ROLES } });
    await createUsers(mandate.store, { alice: ['publishers'], bob: ['approvers'], sam: ['security'] });
    serverJson = { name: 'io.example/weather', description: 'Weather', version: '1.0.0', remotes: [{ type: 'streamable-http', url: upstream.url }] };
    file = path.join(path.dirname(mandate.configPath), 'weather.server.json');
    writeFileSync(file, JSON.stringify(serverJson, null, 2));
  });
  after(async () => {
    await mandate?.stop();
    await upstream?.close();
  });

  const cli = (args: string[]) => mandate.cli([...args, '--config', mandate.configPath]);
  const initialize = (route: string) => post(mandate.endpoint(route), initializeMessage(1));

  async function connect(route: string): Promise<Client> {
    const client = new Client({ name: 'catalog-test', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(mandate.endpoint(route))));
    return client;
  }

  it('serves nothing but what the catalog approved: pending is refused with 403, approved is routable without a restart', async () => {
    assert.equal((await initialize('weather')).status, 404);
    await mandate.app.catalog.propose(
      { serverJson, route: 'weather', owner: 'alice', risk: 'low', environment: 'dev', expiresAt: new Date(Date.now() + 86_400_000) },
      'alice',
      'forecasts for the travel agent',
    );
    await mandate.app.catalogRuntime.refresh();
    const pending = await errorOf(await initialize('weather'));
    assert.equal(pending.status, 403);
    assert.match(String(pending.body.error?.message), /MCP server "weather" is not available: it is awaiting approval/);
    await mandate.app.catalog.approve('weather', 'bob', 'reviewed');
    // The gateway learns of the change by itself (the change counter is polled).
    await eventually(async () => (await initialize('weather')).status, (status) => status === 200, 'the approved server to be routable');
    // No tool was reviewed yet: the first list quarantines every tool as new, and calls are refused.
    const client = await connect('weather');
    assert.deepEqual((await client.listTools()).tools, []);
    await assert.rejects(client.callTool({ name: 'echo', arguments: { text: 'hi' } }), /tool \\"echo\\" is quarantined/);
    const [drift] = await eventually(() => mandate.store.catalog.listDrift('weather'), (rows) => rows.length === 1, 'the quarantined tool to be kept for review');
    assert.equal(drift?.kind, 'new');
    const detected = await eventually(() => mandate.audit({ types: ['server.drift_detected'] }), (list) => list.length === 1, 'server.drift_detected');
    assert.equal(detected[0]?.tool, 'echo');
    await mandate.app.catalog.approvePin('weather', 'echo', drift!.hash, 'bob', 'reviewed echo');
    await mandate.app.catalogRuntime.refresh();
    assert.deepEqual((await client.listTools()).tools.map((t) => t.name), ['echo']);
    const result = await client.callTool({ name: 'echo', arguments: { text: 'hi' } });
    assert.equal((result.content as { text: string }[])[0]?.text, 'echo: hi');
    await client.close();
  });

  it('an expired entry is refused at the gateway (403, naming the server and why) and renewing it restores service without a restart', async () => {
    await mandate.app.catalog.propose(
      { serverJson: { ...serverJson, name: 'io.example/short' }, route: 'short', owner: 'alice', risk: 'low', environment: 'dev', expiresAt: new Date(Date.now() + 3000) },
      'alice',
      'a short trial',
    );
    await mandate.app.catalog.approve('short', 'bob', 'trial');
    await mandate.app.catalogRuntime.refresh();
    assert.equal((await initialize('short')).status, 200);
    const expired = await eventually(async () => initialize('short'), (res) => res.status !== 200, 'the entry to expire', 10_000);
    const { status, body } = await errorOf(expired);
    assert.equal(status, 403);
    assert.match(String(body.error?.message), /MCP server "short" is not available: its catalog approval expired at .*; it must be renewed/);
    const events = await eventually(() => mandate.audit({ types: ['server.expired'] }), (list) => list.some((e) => e.server === 'short'), 'server.expired');
    assert.equal(events.find((e) => e.server === 'short')?.actor, 'mandate');
    assert.equal((await mandate.app.catalog.get('short')).governance.status, 'expired');
    await mandate.app.catalog.renew('short', new Date(Date.now() + 86_400_000), 'bob', 'trial extended');
    await eventually(async () => (await initialize('short')).status, (s) => s === 200, 'the renewed server to be routable');
    // Each approval was for less than catalog.admission.expiringLeadDays: one warning per expiry, the first before it expired.
    const expiring = await eventually(async () => (await mandate.audit({ types: ['server.expiring'] })).filter((e) => e.server === 'short'), (list) => list.length === 2, 'a warning per expiry');
    assert.notEqual(expiring[0]?.data?.expiresAt, expiring[1]?.data?.expiresAt);
    assert.equal(expiring[0]?.data?.daysLeft, 1);
    const metrics = await (await fetch(`${mandate.base}/metrics`)).text();
    assert.match(metrics, /mandate_catalog_days_to_expiry\{server="short"\} 0\.99|mandate_catalog_days_to_expiry\{server="short"\} 1/);
  });

  it('suspending an entry ends its open sessions and refuses new ones', async () => {
    const client = await connect('weather');
    await client.listTools();
    await mandate.app.catalog.suspend('weather', 'bob', 'incident 7');
    await mandate.app.catalogRuntime.refresh();
    await assert.rejects(client.callTool({ name: 'echo', arguments: { text: 'still there?' } }));
    const { status, body } = await errorOf(await initialize('weather'));
    assert.equal(status, 403);
    assert.match(String(body.error?.message), /suspended/);
    await client.close().catch(() => undefined);
    await mandate.app.catalog.approve('weather', 'bob', 'incident closed');
    await mandate.app.catalogRuntime.refresh();
    assert.equal((await initialize('weather')).status, 200);
  });

  it('mandate servers: the same person cannot propose and approve a high-risk entry; a second person can; both are in the audit log', async () => {
    const imported = await cli(['servers', 'import', file, '--route', 'payments', '--owner', 'alice', '--risk', 'high', '--environment', 'dev', '--ttl', '30d', '--as', 'alice', '--reason', 'invoicing']);
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout, /proposal p-[0-9a-f]{12}: new server for "payments" \(io\.example\/weather 1\.0\.0\), awaiting approval/);
    const self = await cli(['servers', 'approve', 'payments', '--as', 'alice', '--reason', 'mine']);
    assert.equal(self.code, 1);
    assert.match(self.stderr, /may not approve: that needs the role approver or admin/);
    const unprivileged = await cli(['servers', 'approve', 'payments', '--as', 'sam', '--reason', 'mine']);
    assert.equal(unprivileged.code, 1);
    const noReason = await cli(['servers', 'approve', 'payments', '--as', 'bob']);
    assert.equal(noReason.code, 2);
    assert.match(noReason.stderr, /--reason TEXT is required/);
    const approved = await cli(['servers', 'approve', 'payments', '--as', 'bob', '--reason', 'vendor reviewed', '--json']);
    assert.equal(approved.code, 0, approved.stderr);
    assert.equal(JSON.parse(approved.stdout).status, 'approved');
    const listed = JSON.parse((await cli(['servers', 'list', '--json'])).stdout) as { route: string; status: string; source: string }[];
    assert.deepEqual(listed.filter((e) => e.route === 'payments').map((e) => e.status), ['approved']);
    const exported = JSON.parse((await cli(['servers', 'export', 'payments'])).stdout) as ServerJson & { _meta: Record<string, { owner: string; status: string }> };
    assert.equal(exported._meta['dev.mandate/governance']?.owner, 'alice');
    const { _meta: _ignored, ...plain } = exported;
    assert.deepEqual(plain, serverJson);
    const events = await mandate.audit({ types: ['server.proposed', 'server.approved'] });
    const payments = events.filter((e) => e.server === 'payments').map((e) => [e.type, e.actor]);
    assert.deepEqual(payments, [['server.proposed', 'alice'], ['server.approved', 'bob']]);
  });

  it('mandate servers drift --json, reviewed, then pins approve --from: every tool pinned by its reviewed hash', async () => {
    await mandate.app.catalogRuntime.refresh();
    const client = await connect('payments');
    assert.deepEqual((await client.listTools()).tools, [], 'nothing reviewed yet');
    const drift = await eventually(async () => (await cli(['servers', 'drift', 'payments', '--json'])).stdout, (out) => out.includes('"echo"'), 'the quarantined tool');
    const reviewed = path.join(path.dirname(mandate.configPath), 'reviewed.json');
    writeFileSync(reviewed, drift);
    const approved = await cli(['servers', 'pins', 'approve', 'payments', '--from', reviewed, '--as', 'bob', '--reason', 'reviewed all', '--json']);
    assert.equal(approved.code, 0, approved.stderr);
    assert.deepEqual((JSON.parse(approved.stdout) as { approved: { name: string }[] }).approved.map((a) => a.name), ['echo']);
    const pins = JSON.parse((await cli(['servers', 'pins', 'payments', '--json'])).stdout) as { name: string; hash: string }[];
    assert.deepEqual(pins.map((p) => p.name), ['echo']);
    await mandate.app.catalogRuntime.refresh();
    assert.deepEqual((await client.listTools()).tools.map((t) => t.name), ['echo']);
    // The same file again: nothing is quarantined any more, so nothing to approve.
    const again = await cli(['servers', 'pins', 'approve', 'payments', '--from', reviewed, '--as', 'bob', '--reason', 'again']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no quarantined tool "echo"/);
    await client.close();
  });

  it('mandate servers propose: a change to the governance record is a proposal listing what changes, in force once approved', async () => {
    const proposed = await cli(['servers', 'propose', 'payments', '--team', 'billing', '--classification', 'confidential', '--as', 'alice', '--reason', 'billing owns it now', '--json']);
    assert.equal(proposed.code, 0, proposed.stderr);
    const proposal = JSON.parse(proposed.stdout) as { kind: string; content: { changes: string[] } };
    assert.equal(proposal.kind, 'change');
    assert.deepEqual(proposal.content.changes, ['team', 'classification']);
    const before = JSON.parse((await cli(['servers', 'show', 'payments', '--json'])).stdout) as { team: string | null; openProposal: { id: string } | null };
    assert.equal(before.team, null, 'not in force before approval');
    assert.ok(before.openProposal);
    const noReason = await cli(['servers', 'propose', 'payments', '--team', 'x', '--as', 'alice']);
    assert.equal(noReason.code, 2);
    const approved = await cli(['servers', 'approve', 'payments', '--as', 'bob', '--reason', 'agreed']);
    assert.equal(approved.code, 0, approved.stderr);
    const after = JSON.parse((await cli(['servers', 'show', 'payments', '--json'])).stdout) as { team: string; classification: string; history: { action: string }[] };
    assert.equal(after.team, 'billing');
    assert.equal(after.classification, 'confidential');
    assert.deepEqual(after.history.map((h) => h.action).slice(-2), ['proposed', 'approved']);
  });

  it('the two-person rule holds even when the proposer also holds the approver role', async () => {
    // Tried with the role in hand: alice as approver too.
    const config = parse(readFileSync(mandate.configPath, 'utf8')) as { admin: { roles: { approver: string[] } } };
    config.admin.roles.approver.push('user:alice');
    writeFileSync(mandate.configPath, stringify(config));
    const imported = await cli(['servers', 'import', file, '--route', 'ledger', '--owner', 'alice', '--risk', 'high', '--environment', 'dev', '--ttl', '7d', '--as', 'alice']);
    assert.equal(imported.code, 0, imported.stderr);
    const self = await cli(['servers', 'approve', 'ledger', '--as', 'alice', '--reason', 'mine']);
    assert.equal(self.code, 1);
    assert.match(self.stderr, /catalog\.admission\.twoPersonRisk: "ledger" is high risk; its approver must be someone other than its proposer \(alice\)/);
  });
});
