/**
 * Under an https issuer (Mandate behind a TLS proxy), the authorization
 * server's cookies are __Host- prefixed, Secure, HttpOnly, SameSite=Lax,
 * Path=/ and without Domain (the path-scoped resume cookie is __Secure-);
 * pages forbid framing. Under a loopback http
 * issuer (development) the prefix, which browsers refuse without TLS, is
 * dropped.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { AuditLog } from '../../src/audit/log.ts';
import { loadConfig } from '../../src/config/load.ts';
import { Identity } from '../../src/identity/service.ts';
import { createLogger } from '../../src/observability/log.ts';
import { openStore } from '../../src/store/open.ts';
import type { Store } from '../../src/store/types.ts';
import { tempDir } from '../helpers/process.ts';

interface Running {
  base: string;
  issuer: string;
  stop(): Promise<void>;
}

async function start(issuer: string): Promise<Running> {
  const dir = tempDir();
  const file = path.join(dir, 'mandate.yaml');
  writeFileSync(file, `issuer: ${issuer}\nservers:\n  - name: files\n    url: http://127.0.0.1:9/mcp\nidentity:\n  registration:\n    mode: open\nlog:\n  level: silent\n`);
  const config = loadConfig({ config: file, data: path.join(dir, 'data') });
  const store: Store = await openStore({ dataDir: config.dataDir });
  await store.migrate();
  const audit = new AuditLog(store);
  const identity = await Identity.start({ config, store, audit, log: createLogger('silent') });
  const server = http.createServer((req, res) => void identity.handle(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    base,
    issuer: config.issuer,
    stop: async () => {
      server.close();
      server.closeAllConnections();
      identity.stop();
      await audit.flush();
      await store.close();
    },
  };
}

/** Registers a client and starts an authorization; returns the response that sets the interaction cookies. */
async function authorize(running: Running): Promise<Response> {
  const redirect = 'http://127.0.0.1:7777/callback';
  const registered = await fetch(`${running.base}/oauth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: [redirect], token_endpoint_auth_method: 'none', client_name: 'cookie test' }),
  });
  assert.equal(registered.status, 201);
  const { client_id: clientId } = (await registered.json()) as { client_id: string };
  const verifier = randomBytes(32).toString('base64url');
  const query = new URLSearchParams({
    client_id: clientId,
    response_type: 'code',
    redirect_uri: redirect,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    resource: `${running.issuer}/mcp/files`,
    scope: 'mcp:files',
    state: 'xyz',
  });
  return fetch(`${running.base}/oauth/authorize?${query}`, { redirect: 'manual' });
}

describe('authorization server cookies', () => {
  const running: Running[] = [];
  after(async () => {
    for (const r of running) await r.stop();
  });

  it('https issuer: __Host- (resume: __Secure-), Secure, HttpOnly, SameSite=Lax, Path=/, no Domain, signed', async () => {
    const r = await start('https://mandate.example');
    running.push(r);
    const res = await authorize(r);
    assert.equal(res.status, 303, await res.text());
    const cookies = res.headers.getSetCookie();
    assert.ok(cookies.length >= 2, cookies.join('\n'));
    for (const cookie of cookies) {
      const [pair, ...attributes] = cookie.split(';').map((part) => part.trim());
      const lower = attributes.map((a) => a.toLowerCase());
      assert.ok(lower.includes('secure'), cookie);
      assert.ok(lower.includes('httponly'), cookie);
      assert.ok(lower.includes('samesite=lax'), cookie);
      assert.ok(!lower.some((a) => a.startsWith('domain=')), cookie);
      if (pair!.startsWith('__Secure-mandate-resume')) {
        // The library scopes the resume cookie to its resume path, which __Host- does not allow.
        assert.ok(lower.some((a) => a.startsWith('path=/oauth/authorize/')), cookie);
      } else {
        assert.match(pair!, /^__Host-mandate-/, cookie);
        assert.ok(lower.includes('path=/'), cookie);
      }
    }
    // Signed: each value has its signature cookie.
    assert.ok(cookies.some((c) => /^__Host-mandate-interaction\.sig=/.test(c)), cookies.join('\n'));
  });

  it('loopback http issuer: no __Host- prefix (browsers refuse it without TLS), still HttpOnly and signed', async () => {
    const r = await start('http://127.0.0.1:1');
    running.push(r);
    const res = await authorize(r);
    assert.equal(res.status, 303, await res.text());
    const cookies = res.headers.getSetCookie();
    assert.ok(cookies.every((c) => c.startsWith('mandate-') && /httponly/i.test(c) && !/;\s*secure/i.test(c)), cookies.join('\n'));
    assert.ok(cookies.some((c) => /^mandate-interaction\.sig=/.test(c)), cookies.join('\n'));
  });

  it('the login page cannot be framed', async () => {
    const r = running[0]!;
    const res = await authorize(r);
    const location = res.headers.get('location')!;
    const jar = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
    // The redirect names the issuer (https://mandate.example, a TLS proxy in front); the test reaches the gateway directly.
    assert.ok(location.startsWith(`${r.issuer}/interaction/`), location);
    const page = await fetch(new URL(new URL(location).pathname, r.base), { headers: { cookie: jar } });
    assert.equal(page.status, 200, await page.clone().text());
    assert.match(page.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
    assert.equal(page.headers.get('x-frame-options'), 'DENY');
    assert.match(await page.text(), /Sign in/);
  });
});
