/**
 * server.json files in and out of a running gateway: each fixture (modelled
 * on the registry's example shapes: remotes, npm, pypi, oci, nuget, mcpb,
 * `_meta` from the publisher) is imported, approved and exported unchanged;
 * `/v0.1/servers` answers in the registry's shape with pagination; and
 * provenance holds: unsigned or wrongly signed entries are refused where
 * signatures are required, and a row edited in the database after approval
 * is refused at routing.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, before, describe, it } from 'node:test';
import { exportJWK, generateKeyPair } from 'jose';
import { CatalogError } from '../../src/catalog/service.ts';
import { stripGovernance } from '../../src/catalog/server-json.ts';
import { signEntry } from '../../src/catalog/signature.ts';
import type { ServerJson } from '../../src/catalog/types.ts';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { createUsers } from '../helpers/users.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { ROOT, tempDir } from '../helpers/process.ts';
import { errorOf, eventually, initializeMessage, post } from '../gateway/raw.ts';

const FIXTURES = path.join(ROOT, 'test/fixtures/server-json');
const DAY = 86_400_000;
const ROLES = { roles: { publisher: ['user:alice'], approver: ['user:bob'] } };

/** Every single-server fixture, as its text. */
const fixtures = readdirSync(FIXTURES)
  .filter((file) => file.endsWith('.json') && file !== 'registry-list.json')
  .sort()
  .map((file) => ({ file, text: readFileSync(path.join(FIXTURES, file), 'utf8') }));

describe('server.json in and out, the sub-registry API, and provenance', { timeout: 120_000 }, () => {
  let mandate: InProcessMandate;
  let upstream: FakeUpstream;
  type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
  let privateKey: PrivateKey;
  let strangerKey: PrivateKey;
  const keys = tempDir('mandate-publisher-');

  before(async () => {
    upstream = await startFakeUpstream();
    const pair = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
    privateKey = pair.privateKey;
    strangerKey = (await generateKeyPair('EdDSA', { crv: 'Ed25519' })).privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'example-1', alg: 'EdDSA', use: 'sig' };
    writeFileSync(path.join(keys, 'example.jwks.json'), JSON.stringify({ keys: [jwk] }));
    mandate = await startInProcess({
      servers: [],
      extra: {
        admin: ROLES,
        catalog: {
          admission: { requireSignatures: ['prod'] },
          publishers: [{ name: 'example', jwks: path.join(keys, 'example.jwks.json'), prefixes: ['io.example/'] }],
        },
      },
    });
    await createUsers(mandate.store, { alice: [], bob: [] });
  });
  after(async () => {
    await mandate?.stop();
    await upstream?.close();
  });

  const cli = (args: string[]) => mandate.cli([...args, '--config', mandate.configPath]);

  async function admit(route: string, serverJson: ServerJson, extra: { environment?: string; signature?: string } = {}): Promise<void> {
    await mandate.app.catalog.propose({ serverJson, route, owner: 'alice', risk: 'low', environment: extra.environment ?? 'dev', expiresAt: new Date(Date.now() + 30 * DAY), ...(extra.signature ? { signature: extra.signature } : {}) }, 'alice', 'import');
    await mandate.app.catalog.approve(route, 'bob', 'reviewed');
  }

  it('every fixture is admitted as submitted and exported unchanged (the governance record aside)', async () => {
    for (const [index, { file, text }] of fixtures.entries()) {
      await admit(`fixture-${index}`, JSON.parse(text) as ServerJson);
      const exported = (await mandate.app.catalog.get(`fixture-${index}`)).serverJson;
      assert.equal(JSON.stringify(exported), JSON.stringify(JSON.parse(text)), file);
    }
    // Through the CLI, as an operator would: the exported JSON carries Mandate's record and otherwise equals the file.
    const weather = fixtures.findIndex((f) => f.file === 'weather-remote.json');
    const printed = await cli(['servers', 'export', `fixture-${weather}`]);
    assert.equal(printed.code, 0, printed.stderr);
    const exported = JSON.parse(printed.stdout) as ServerJson & { _meta: Record<string, Record<string, unknown>> };
    assert.equal(exported._meta['dev.mandate/governance']?.route, `fixture-${weather}`);
    assert.equal(JSON.stringify(stripGovernance(exported)), JSON.stringify(JSON.parse(fixtures[weather]!.text)));
    const forecast = fixtures.findIndex((f) => f.file === 'forecast-pypi.json');
    const withMeta = JSON.parse((await cli(['servers', 'export', `fixture-${forecast}`])).stdout) as ServerJson & { _meta: Record<string, unknown> };
    assert.ok(withMeta._meta['io.modelcontextprotocol.registry/publisher-provided'], 'publisher-provided _meta survives');
    assert.equal(JSON.stringify(stripGovernance(withMeta)), JSON.stringify(JSON.parse(fixtures[forecast]!.text)));
  });

  it('a registry list answer is imported one server at a time (--name picks one)', async () => {
    const list = path.join(FIXTURES, 'registry-list.json');
    const several = await cli(['servers', 'import', list, '--route', 'from-list', '--owner', 'alice', '--risk', 'low', '--environment', 'dev', '--ttl', '7d', '--as', 'alice']);
    assert.equal(several.code, 2);
    assert.match(several.stderr, /holds 3 servers: pick one with --name/);
    const one = await cli(['servers', 'import', list, '--name', 'io.example/alpha', '--route', 'from-list', '--owner', 'alice', '--risk', 'low', '--environment', 'dev', '--ttl', '7d', '--as', 'alice']);
    assert.equal(one.code, 0, one.stderr);
    assert.equal((await mandate.app.catalog.get('from-list')).serverJson.name, 'io.example/alpha');
    await mandate.app.catalog.approve('from-list', 'bob', 'ok');
  });

  it('/v0.1/servers answers in the registry shape, in pages, with only approved unexpired entries', async () => {
    await mandate.app.catalogRuntime.refresh();
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const res = await fetch(`${mandate.base}/v0.1/servers?limit=4${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('cache-control'), 'no-store');
      const body = (await res.json()) as { servers: { server: ServerJson; _meta: Record<string, { status: string; isLatest: boolean; route: string }> }[]; metadata: { nextCursor?: string; count: number } };
      assert.equal(body.metadata.count, body.servers.length);
      assert.ok(body.servers.length <= 4);
      for (const item of body.servers) {
        assert.equal(item._meta['dev.mandate/registry']?.status, 'approved');
        assert.equal((item.server._meta as Record<string, unknown> | undefined)?.['dev.mandate/governance'], undefined);
        seen.push(item.server.name);
      }
      cursor = body.metadata.nextCursor;
      pages += 1;
    } while (cursor !== undefined && pages < 10);
    assert.ok(pages >= 3, `paged (${pages} pages)`);
    const expected = fixtures.map((f) => (JSON.parse(f.text) as ServerJson).name);
    for (const name of expected) assert.ok(seen.includes(name), `${name} is listed`);
    assert.equal(new Set(seen).size, seen.length, 'each once');
    const one = await fetch(`${mandate.base}/v0.1/servers/${encodeURIComponent('io.example/weather')}/versions/latest`);
    assert.equal(one.status, 200);
    const item = (await one.json()) as { server: ServerJson };
    assert.equal(JSON.stringify(item.server), JSON.stringify(JSON.parse(fixtures.find((f) => f.file === 'weather-remote.json')!.text)));
    // A suspended entry leaves the list.
    await mandate.app.catalog.suspend('from-list', 'bob', 'paused');
    await mandate.app.catalogRuntime.refresh();
    const missing = await fetch(`${mandate.base}/v0.1/servers/${encodeURIComponent('io.example/alpha')}/versions`);
    assert.equal(missing.status, 404);
  });

  it('where signatures are required, an unsigned or wrongly signed entry is refused; a signed one is served', async () => {
    const serverJson: ServerJson = { name: 'io.example/signed', description: 'Signed', version: '1.0.0', remotes: [{ type: 'streamable-http', url: upstream.url }] };
    const propose = (signature?: string) =>
      mandate.app.catalog.propose({ serverJson, route: 'signed', owner: 'alice', risk: 'low', environment: 'prod', expiresAt: new Date(Date.now() + DAY), ...(signature ? { signature } : {}) }, 'alice', 'prod');
    await assert.rejects(propose(), (e: unknown) => e instanceof CatalogError && e.rule === 'admission.requireSignatures');
    const other = await signEntry({ ...serverJson, version: '1.0.1' }, privateKey, { alg: 'EdDSA', kid: 'example-1' });
    await assert.rejects(propose(other), (e: unknown) => e instanceof CatalogError && e.rule === 'signature' && /does not verify/.test(e.message));
    const stranger = await signEntry(serverJson, strangerKey, { alg: 'EdDSA' });
    await assert.rejects(propose(stranger), (e: unknown) => e instanceof CatalogError && e.rule === 'signature');
    const good = await signEntry(serverJson, privateKey, { alg: 'EdDSA', kid: 'example-1' });
    await propose(good);
    const entry = await mandate.app.catalog.approve('signed', 'bob', 'signed by example');
    assert.equal(entry.signature?.publisher, 'example');
    await mandate.app.catalogRuntime.refresh();
    assert.equal((await post(mandate.endpoint('signed'), initializeMessage(1))).status, 200);
  });

  it('an entry edited in the database after approval is refused at routing', async () => {
    const serverJson: ServerJson = { name: 'io.example/edited', description: 'Edited', version: '1.0.0', remotes: [{ type: 'streamable-http', url: upstream.url }] };
    await admit('edited', serverJson);
    await mandate.app.catalogRuntime.refresh();
    assert.equal((await post(mandate.endpoint('edited'), initializeMessage(1))).status, 200);
    const db = new DatabaseSync(path.join(mandate.dataDir, 'mandate.db'), { timeout: 5000 });
    try {
      // Someone with database access points the entry at their own server.
      const row = db.prepare("SELECT server_json FROM catalog_entries WHERE route = 'edited'").get() as { server_json: string };
      const changed = JSON.parse(row.server_json) as { remotes: { url: string }[] };
      changed.remotes[0]!.url = 'http://127.0.0.1:9/mcp';
      db.prepare("UPDATE catalog_entries SET server_json = ? WHERE route = 'edited'").run(JSON.stringify(changed));
      db.prepare("INSERT INTO catalog_history (route, at, actor, action, reason, data) VALUES ('edited', '2026-01-01T00:00:00Z', 'x', 'x', NULL, '{}')").run();
    } finally {
      db.close();
    }
    const refused = await eventually(() => post(mandate.endpoint('edited'), initializeMessage(1)), (res) => res.status === 403, 'the edited entry to be refused');
    const { body } = await errorOf(refused);
    assert.match(String(body.error?.message), /MCP server "edited" is not available: its catalog record was changed outside Mandate/);
    // A signed entry whose server.json is edited (and resealed by nobody) is refused as well.
    const db2 = new DatabaseSync(path.join(mandate.dataDir, 'mandate.db'), { timeout: 5000 });
    try {
      db2.prepare("UPDATE catalog_entries SET server_json = replace(server_json, 'Signed', 'Signed!') WHERE route = 'signed'").run();
      db2.prepare("INSERT INTO catalog_history (route, at, actor, action, reason, data) VALUES ('signed', '2026-01-01T00:00:00Z', 'x', 'x', NULL, '{}')").run();
    } finally {
      db2.close();
    }
    const signed = await eventually(() => post(mandate.endpoint('signed'), initializeMessage(1)), (res) => res.status === 403, 'the edited signed entry to be refused');
    assert.match(String((await errorOf(signed)).body.error?.message), /changed outside Mandate|signature no longer verifies/);
  });
});
