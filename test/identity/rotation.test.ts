/**
 * Signing-key rotation while the gateway runs: a key that reaches
 * identity.keyRotationDays is replaced without a restart, tokens signed
 * before stay valid, and another node on the same store follows the new key.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeProtectedHeader } from 'jose';
import { AuditLog } from '../../src/audit/log.ts';
import { loadConfig, type Config } from '../../src/config/load.ts';
import { Identity } from '../../src/identity/service.ts';
import { createLogger } from '../../src/observability/log.ts';
import { openStore } from '../../src/store/open.ts';
import type { Store } from '../../src/store/types.ts';
import { hashPassword } from '../../src/identity/users.ts';
import { authorizeUrl, loginAndConsent, pkcePair, REDIRECT_URI, register, token as tokenRequest } from '../helpers/oauth.ts';
import { tempDir } from '../helpers/process.ts';

const DAY = 86_400_000;
const PASSWORD = 'correct horse battery staple';

describe('signing-key rotation while running', () => {
  let server: Server;
  let base: string;
  let config: Config;
  let store: Store;
  let audit: AuditLog;
  let node: Identity;
  let other: Identity;
  let credentials: string;

  before(async () => {
    server = createServer((req, res) => void node.handle(req, res).catch(() => res.destroy()));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const dir = tempDir();
    const file = path.join(dir, 'mandate.yaml');
    writeFileSync(file, [`issuer: ${base}`, 'servers:', '  - name: alpha', '    url: http://127.0.0.1:9/mcp', 'identity:', '  registration:', '    mode: open', 'log:', '  level: silent', ''].join('\n'));
    config = loadConfig({ config: file, data: path.join(dir, 'data') });
    store = await openStore({ dataDir: config.dataDir });
    await store.migrate();
    audit = new AuditLog(store);
    const log = createLogger('silent');
    node = await Identity.start({ config, store, audit, log });
    // A second node on the same store, started at the same time.
    other = await Identity.start({ config, store, audit, log });
    const registered = await fetch(`${base}/oauth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'machine', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' }),
    });
    assert.equal(registered.status, 201);
    const { client_id: id, client_secret: secret } = (await registered.json()) as { client_id: string; client_secret: string };
    credentials = Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64');
    const now = Date.now();
    await store.identity.createUser({ name: 'alice', passwordHash: await hashPassword(PASSWORD), groups: [], disabled: false, createdAt: now, updatedAt: now });
  });

  /** Signs alice in through an interactive client: the code's token request (not yet sent). */
  async function codeRequest(clientId: string): Promise<Record<string, string>> {
    const { verifier, challenge } = pkcePair();
    const resource = `${base}/mcp/alpha`;
    const result = await loginAndConsent(base, authorizeUrl(base, { client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'mcp:alpha', resource, code_challenge: challenge, code_challenge_method: 'S256', state: 's' }), 'alice', PASSWORD);
    return { grant_type: 'authorization_code', code: result.code, redirect_uri: REDIRECT_URI, code_verifier: verifier, client_id: clientId, resource };
  }

  after(async () => {
    node.stop();
    other.stop();
    server.close();
    await audit.flush();
    await store.close();
  });

  async function token(): Promise<string> {
    const response = await fetch(`${base}/oauth/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${credentials}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: `${base}/mcp/alpha`, scope: 'mcp:alpha' }),
    });
    assert.equal(response.status, 200);
    return ((await response.json()) as { access_token: string }).access_token;
  }

  async function rotations(): Promise<{ reason: string; data: { kid: string; retired: string[] } }[]> {
    await audit.flush();
    return (await store.audit.list({ types: ['keys.rotated'] })).map((r) => JSON.parse(r.body));
  }

  it('a young key is kept; at its rotation age a new key signs, the old one still verifies, and the other node follows', async () => {
    const first = node.signingKid;
    assert.equal(other.signingKid, first, 'both nodes start on the one key');
    const before = await token();
    assert.equal(decodeProtectedHeader(before).kid, first);
    // An interactive client: one code left unused and one refresh token, both from before the rotation.
    const interactive = await register(base, { client_name: 'interactive', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] });
    assert.equal(interactive.status, 201);
    const clientId = String(interactive.body.client_id);
    const pendingCode = await codeRequest(clientId);
    const granted = await tokenRequest(base, await codeRequest(clientId));
    assert.equal(granted.status, 200, JSON.stringify(granted.body));
    assert.equal(typeof granted.body.refresh_token, 'string');

    assert.equal(await node.checkKeys(), false, 'a young key is not rotated');
    assert.equal((await rotations()).length, 1, 'only the first key is on record');

    const later = Date.now() + (config.identity.keyRotationDays * DAY) + 1_000;
    assert.equal(await node.checkKeys(later), true);
    const second = node.signingKid;
    assert.notEqual(second, first);
    const events = await rotations();
    assert.equal(events.length, 2);
    assert.equal(events[1]?.reason, 'the signing key reached its rotation age');
    assert.deepEqual(events[1]?.data, { kid: second, retired: [first] });

    const afterRotation = await token();
    assert.equal(decodeProtectedHeader(afterRotation).kid, second, 'new tokens are signed with the new key, no restart');
    const jwks = (await (await fetch(`${base}/oauth/jwks`)).json()) as { keys: { kid: string }[] };
    assert.deepEqual(jwks.keys.map((k) => k.kid).sort(), [first, second].sort(), 'the retired key stays published');
    const exchanged = await tokenRequest(base, pendingCode);
    assert.equal(exchanged.status, 200, `a code from before the rotation: ${JSON.stringify(exchanged.body)}`);
    assert.equal(decodeProtectedHeader(String(exchanged.body.access_token)).kid, second);
    const refreshed = await tokenRequest(base, { grant_type: 'refresh_token', refresh_token: String(granted.body.refresh_token), client_id: clientId, resource: `${base}/mcp/alpha` });
    assert.equal(refreshed.status, 200, `a refresh token from before the rotation: ${JSON.stringify(refreshed.body)}`);
    assert.equal(decodeProtectedHeader(String(refreshed.body.access_token)).kid, second);
    const alpha = config.servers.find((s) => s.name === 'alpha')!;
    assert.equal((await node.verifier.verify(`Bearer ${before}`, alpha)).clientId, (await node.verifier.verify(`Bearer ${afterRotation}`, alpha)).clientId);

    // The other node has not checked yet: it still signs with the retired key. Its check follows
    // the stored key set and creates nothing.
    assert.equal(other.signingKid, first);
    assert.equal(await other.checkKeys(), true);
    assert.equal(other.signingKid, second);
    assert.equal((await rotations()).length, 2, 'the following node created no key');
    assert.equal(await other.checkKeys(), false, 'nothing changes on the next check');
    await other.verifier.verify(`Bearer ${afterRotation}`, alpha);
  });
});
