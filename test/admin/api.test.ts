/**
 * The admin API at {issuer}/admin/v1, end to end on a gateway in this
 * process: admin tokens come from the real authorization server (sign-in,
 * the consent page, the code exchange), for users only; an MCP server's
 * token is refused there and an admin token is refused at /mcp/NAME; every
 * action is taken as the token's user under admin.roles, with the catalog's
 * rules (two-person rule) and its audit events; refusals answer JSON and are
 * on record; bad input is refused at the edge.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { pinDefinition, toolHash } from '../../src/catalog/pins.ts';
import { hashPassword } from '../../src/identity/users.ts';
import { AuthError } from '../../src/identity/verify.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { pageAfter, CookieJar, authorizeUrl, get, jwtClaims, location, loginAndConsent, parseForm, pkcePair, postForm, register, registerMachine, REDIRECT_URI, revoke, token, userToken } from '../helpers/oauth.ts';

const PASSWORD = 'correct horse battery staple';
const ROLES = { roles: { publisher: ['group:publishers'], approver: ['group:approvers'], auditor: ['group:security'] } };

interface Reply {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

describe('the admin API', { timeout: 120_000 }, () => {
  let mandate: InProcessMandate;
  let admin: string;
  /** Admin tokens of alice (publisher and approver), bob (approver), carol (no role). */
  const tokens: Record<string, string> = {};

  const serverJson = (version = '1.0.0') => ({ name: 'io.example/weather', description: 'Weather', version, remotes: [{ type: 'streamable-http', url: 'https://weather.example/mcp' }] });
  const proposal = (extra: Record<string, unknown> = {}) => ({ serverJson: serverJson(), route: 'weather', owner: 'alice', risk: 'high', environment: 'dev', ttl: '30d', reason: 'forecasts for the travel agent', ...extra });

  async function call(method: string, path: string, options: { token?: string | null; body?: unknown; raw?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
    const headers: Record<string, string> = { ...options.headers };
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    let body: string | undefined = options.raw;
    if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers['content-type'] ??= 'application/json';
    }
    const response = await fetch(`${admin}${path}`, { method, headers, body });
    const text = await response.text();
    assert.equal(response.headers.get('cache-control'), 'no-store', `${method} ${path}: every answer is no-store`);
    assert.match(response.headers.get('content-type') ?? '', /^application\/json/, `${method} ${path}: every answer is JSON`);
    return { status: response.status, headers: response.headers, body: JSON.parse(text) as Record<string, unknown> };
  }

  /** An admin token for `user` through the authorization code flow (scope mandate:admin unless `scope` says otherwise; null: none). */
  async function adminToken(user: string, scope: string | null = 'mandate:admin'): Promise<string> {
    return (await adminGrant(user, scope)).access;
  }

  async function adminGrant(user: string, scope: string | null = 'mandate:admin'): Promise<{ access: string; refresh: string; clientId: string }> {
    const client = await register(mandate.base, { client_name: `admin-console-of-${user}`, redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] });
    assert.equal(client.status, 201, JSON.stringify(client.body));
    const clientId = String(client.body.client_id);
    const { verifier, challenge } = pkcePair();
    const start = authorizeUrl(mandate.base, {
      client_id: clientId,
      response_type: 'code',
      redirect_uri: REDIRECT_URI,
      resource: admin,
      scope: scope ?? undefined,
      code_challenge: challenge,
      code_challenge_method: 'S256',
      state: 's',
    });
    const { code } = await loginAndConsent(mandate.base, start, user, PASSWORD);
    const answer = await token(mandate.base, { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier, client_id: clientId, resource: admin });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return { access: String(answer.body.access_token), refresh: String(answer.body.refresh_token), clientId };
  }

  before(async () => {
    mandate = await startInProcess({
      servers: [{ name: 'main', url: 'http://127.0.0.1:9/mcp' }],
      identity: { registration: { mode: 'open', maxPerAddressPerHour: 200 } },
      extra: { admin: ROLES },
    });
    admin = `${mandate.base}/admin/v1`;
    const hash = await hashPassword(PASSWORD);
    for (const [name, groups] of [
      ['alice', ['publishers', 'approvers']],
      ['bob', ['approvers']],
      ['carol', []],
      ['sam', ['security']],
    ] as const) {
      await mandate.store.identity.createUser({ name, passwordHash: hash, groups: [...groups], disabled: false, createdAt: 0, updatedAt: 0 });
    }
    for (const user of ['alice', 'bob', 'carol', 'sam']) tokens[user] = await adminToken(user);
  });
  after(async () => {
    await mandate?.stop();
  });

  describe('tokens', () => {
    it('an admin token: audience exactly {issuer}/admin/v1, scope mandate:admin, short-lived, for the user', () => {
      const claims = jwtClaims(tokens.alice!);
      assert.equal(claims.aud, admin);
      assert.equal(claims.scope, 'mandate:admin');
      assert.equal(claims.sub, 'alice');
      assert.equal(typeof claims.gid, 'string', 'issued from a user grant');
      assert.equal(Number(claims.exp) - Number(claims.iat), mandate.app.config.identity.accessTokenTtl);
    });

    it('the metadata advertises mandate:admin; the admin API has its protected resource metadata', async () => {
      const metadata = (await (await fetch(`${mandate.base}/.well-known/oauth-authorization-server`)).json()) as { scopes_supported: string[] };
      assert.ok(metadata.scopes_supported.includes('mandate:admin'), metadata.scopes_supported.join(' '));
      assert.ok(metadata.scopes_supported.includes('mcp:main'));
      const resource = await fetch(`${mandate.base}/.well-known/oauth-protected-resource/admin/v1`);
      assert.equal(resource.status, 200);
      assert.deepEqual(((await resource.json()) as { resource: string; scopes_supported: string[] }).scopes_supported, ['mandate:admin']);
    });

    it('without a scope the request gets mandate:admin, and the consent page says plainly what it allows', async () => {
      const client = await register(mandate.base, { client_name: 'console', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'] });
      const clientId = String(client.body.client_id);
      const { verifier, challenge } = pkcePair();
      const jar = new CookieJar();
      const start = authorizeUrl(mandate.base, { client_id: clientId, response_type: 'code', redirect_uri: REDIRECT_URI, resource: admin, code_challenge: challenge, code_challenge_method: 'S256', state: 's' });
      // authorize → sign-in page → consent page, through redirects within the gateway
      const page = (first: Response, from: string) => pageAfter(mandate.base, jar, first, from);
      const signIn = await page(await get(start, jar), start);
      const login = parseForm(signIn.html);
      const loginAction = new URL(login.action, signIn.url).href;
      const consent = await page(await postForm(loginAction, { ...login.hidden, username: 'sam', password: PASSWORD }, jar), loginAction);
      assert.match(consent.html, /administer the server catalog as you/);
      assert.match(consent.html, /<code class="muted">mandate:admin<\/code>/);
      assert.ok(consent.html.includes(admin), 'the page names the admin API');
      const form = parseForm(consent.html);
      const consentAction = new URL(form.action, consent.url).href;
      let response = await postForm(consentAction, { ...form.hidden, decision: 'allow' }, jar);
      let url = consentAction;
      while (response.status >= 300 && response.status < 400) {
        url = location(response, url)!;
        if (!url.startsWith(mandate.base)) break;
        response = await get(url, jar);
      }
      const code = new URL(url).searchParams.get('code');
      assert.ok(code, `no code in ${url}`);
      const answer = await token(mandate.base, { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier, client_id: clientId, resource: admin });
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(jwtClaims(String(answer.body.access_token)).scope, 'mandate:admin');
      const granted = await mandate.audit({ types: ['consent.granted'] });
      assert.ok(granted.some((event) => event.actor === 'sam' && event.data.resource === admin && (event.data.scopes as string[]).includes('mandate:admin')));
    });

    it('a refresh keeps the admin audience and scope; naming an MCP server instead is refused', async () => {
      const grant = await adminGrant('bob');
      const refreshed = await token(mandate.base, { grant_type: 'refresh_token', refresh_token: grant.refresh, client_id: grant.clientId, resource: admin });
      assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
      const claims = jwtClaims(String(refreshed.body.access_token));
      assert.equal(claims.aud, admin);
      assert.equal(claims.scope, 'mandate:admin');
      assert.equal((await call('GET', '/servers', { token: String(refreshed.body.access_token) })).status, 200);
      const elsewhere = await token(mandate.base, { grant_type: 'refresh_token', refresh_token: String(refreshed.body.refresh_token), client_id: grant.clientId, resource: mandate.endpoint('main') });
      assert.equal(elsewhere.status, 400, JSON.stringify(elsewhere.body));
    });

    it('a machine client cannot get an admin token (client credentials): invalid_target, saying why', async () => {
      const machine = await registerMachine(mandate.base, 'robot');
      for (const scope of ['mandate:admin', undefined]) {
        const answer = await token(mandate.base, { grant_type: 'client_credentials', resource: admin, scope }, { basic: machine });
        assert.equal(answer.status, 400, JSON.stringify(answer.body));
        assert.equal(answer.body.error, 'invalid_target');
        assert.match(String(answer.body.error_description), /admin API.*users only.*machine client holds no admin role/);
      }
    });

    it('an MCP server token is refused by the admin API (401), an admin token is refused at /mcp/NAME (401)', async () => {
      const mcpToken = await userToken(mandate.base, 'alice', PASSWORD, 'main');
      assert.equal(jwtClaims(mcpToken).aud, mandate.endpoint('main'));
      const refused = await call('GET', '/servers', { token: mcpToken });
      assert.equal(refused.status, 401);
      assert.equal(refused.body.error, 'invalid_token');
      assert.match(String(refused.body.message), /issued for another resource/);
      assert.match(refused.headers.get('www-authenticate') ?? '', /^Bearer error="invalid_token".*scope="mandate:admin"/);

      const atMcp = await fetch(mandate.endpoint('main'), {
        method: 'POST',
        headers: { authorization: `Bearer ${tokens.alice}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
      });
      assert.equal(atMcp.status, 401);
      assert.match(atMcp.headers.get('www-authenticate') ?? '', /invalid_token/);
      // Nor at the sub-registry, which takes tokens of the gateway's servers only.
      assert.equal((await fetch(`${mandate.base}/v0.1/servers`, { headers: { authorization: `Bearer ${tokens.alice}` } })).status, 401);
    });

    it('no token, a malformed header, a garbage token: 401 with a Bearer challenge, and on record (auth.rejected)', async () => {
      const none = await call('GET', '/servers');
      assert.equal(none.status, 401);
      assert.equal(none.body.error, 'unauthorized');
      assert.match(none.headers.get('www-authenticate') ?? '', /^Bearer resource_metadata=".*\/\.well-known\/oauth-protected-resource\/admin\/v1", scope="mandate:admin"$/);
      const malformed = await call('GET', '/servers', { headers: { authorization: 'Basic abc' } });
      assert.equal(malformed.status, 401);
      assert.equal(malformed.body.error, 'invalid_request');
      const garbage = await call('POST', '/servers', { token: 'not.a.token', body: proposal() });
      assert.equal(garbage.status, 401);
      const rejected = await mandate.audit({ types: ['auth.rejected'] });
      assert.ok(rejected.some((event) => event.reason === 'missing' && event.data.resource === admin), JSON.stringify(rejected));
    });

    it('an expired admin token is refused, and a revoked one at once', async () => {
      const header = `Bearer ${tokens.sam}`;
      const verifier = mandate.app.identity.verifier;
      assert.equal((await verifier.verifyResource(header, admin)).user, 'sam');
      await assert.rejects(verifier.verifyResource(header, admin, Date.now() + 3_600_000), (error: AuthError) => error.reason === 'expired');
      // Through HTTP: a token revoked by its client stops working at the next request.
      const own = await adminToken('sam');
      assert.equal((await call('GET', '/servers', { token: own })).status, 200);
      const clientId = String(jwtClaims(own).client_id);
      assert.equal((await revoke(mandate.base, { token: own, client_id: clientId })).status, 200);
      const after = await call('GET', '/servers', { token: own });
      assert.equal(after.status, 401);
      assert.match(String(after.body.message), /revoked/);
    });
  });

  describe('the catalog through the API', () => {
    it('alice proposes a high-risk entry: 201 with the proposal', async () => {
      const answer = await call('POST', '/servers', { token: tokens.alice, body: proposal() });
      assert.equal(answer.status, 201, JSON.stringify(answer.body));
      assert.equal(answer.body.kind, 'new');
      assert.equal(answer.body.proposedBy, 'alice');
      assert.equal(answer.body.route, 'weather');
      assert.equal(answer.headers.get('location'), `${admin}/servers/weather`);
      const shown = await call('GET', '/servers/weather', { token: tokens.sam });
      assert.equal(shown.status, 200);
      assert.equal(shown.body.status, 'pending');
      assert.equal((shown.body.openProposal as { proposedBy: string }).proposedBy, 'alice');
    });

    it('a second proposal while one is open: 409', async () => {
      const answer = await call('POST', '/servers', { token: tokens.alice, body: proposal({ serverJson: serverJson('1.0.1') }) });
      assert.equal(answer.status, 409, JSON.stringify(answer.body));
      assert.equal(answer.body.error, 'conflict');
    });

    it("alice may approve (she holds the approver role) but not her own high-risk proposal: 403, rule twoPersonRisk, on record", async () => {
      const answer = await call('POST', '/servers/weather/approve', { token: tokens.alice, body: { reason: 'looks fine to me' } });
      assert.equal(answer.status, 403, JSON.stringify(answer.body));
      assert.equal(answer.body.error, 'refused');
      assert.equal(answer.body.rule, 'twoPersonRisk');
      const denied = await mandate.audit({ types: ['authorization.denied'] });
      assert.ok(denied.some((event) => event.actor === 'alice' && event.reason === 'twoPersonRisk' && event.server === 'weather' && event.data.action === 'approve'), JSON.stringify(denied));
    });

    it('carol, who holds no role, is refused every change and every read: 403, rule roles, on record', async () => {
      const changes: [string, string, unknown][] = [
        ['POST', '/servers', proposal({ route: 'other' })],
        ['POST', '/servers/weather/approve', { reason: 'x' }],
        ['POST', '/servers/weather/reject', { reason: 'x' }],
        ['POST', '/servers/weather/suspend', { reason: 'x' }],
        ['POST', '/servers/weather/retire', { reason: 'x' }],
        ['POST', '/servers/weather/renew', { ttl: '10d', reason: 'x' }],
        ['POST', '/servers/weather/pins/echo/approve', { hash: 'a'.repeat(64), reason: 'x' }],
        ['GET', '/servers', undefined],
        ['GET', '/servers/weather', undefined],
        ['GET', '/servers/weather/export', undefined],
      ];
      for (const [method, path, body] of changes) {
        const answer = await call(method, path, { token: tokens.carol, body });
        assert.equal(answer.status, 403, `${method} ${path}: ${JSON.stringify(answer.body)}`);
        assert.equal(answer.body.error, 'forbidden');
        assert.equal(answer.body.rule, 'roles');
      }
      const denied = await mandate.audit({ types: ['authorization.denied'] });
      assert.ok(denied.some((event) => event.actor === 'carol' && event.reason === 'roles' && event.data.action === 'propose'));
      assert.ok(denied.some((event) => event.actor === 'carol' && event.reason === 'roles' && event.data.action === 'approve'));
      // Nothing changed.
      assert.equal((await mandate.app.catalog.get('weather')).governance.status, 'pending');
      assert.equal(await mandate.store.catalog.getEntry('other'), null);
    });

    it('a publisher without the approver role may not approve; an auditor may read but not propose', async () => {
      const read = await call('GET', '/servers?status=pending', { token: tokens.sam });
      assert.equal(read.status, 200);
      assert.deepEqual((read.body.servers as { route: string }[]).map((s) => s.route), ['weather']);
      const propose = await call('POST', '/servers', { token: tokens.sam, body: proposal({ route: 'other' }) });
      assert.equal(propose.status, 403);
      assert.equal(propose.body.rule, 'roles');
    });

    it('bob approves: 200; server.proposed and server.approved carry alice and bob', async () => {
      const answer = await call('POST', '/servers/weather/approve', { token: tokens.bob, body: { reason: 'reviewed the remote' } });
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(answer.body.status, 'approved');
      assert.equal(answer.body.approvedBy, 'bob');
      const proposed = await mandate.audit({ types: ['server.proposed'] });
      const approved = await mandate.audit({ types: ['server.approved'] });
      assert.equal(proposed.at(-1)?.actor, 'alice');
      assert.equal(proposed.at(-1)?.server, 'weather');
      assert.equal(approved.at(-1)?.actor, 'bob');
      assert.equal(approved.at(-1)?.data.proposedBy, 'alice');
      assert.equal(approved.at(-1)?.reason, 'reviewed the remote');
      // This node serves it at once (the API re-reads the catalog after a change).
      assert.ok(mandate.app.registry.has('weather'));
    });

    it('list, show, export, pins and drift', async () => {
      const list = await call('GET', '/servers?status=approved', { token: tokens.bob });
      assert.equal(list.status, 200);
      // mandate.yaml's server is in the catalog too, as config-managed.
      assert.deepEqual((list.body.servers as { route: string; status: string; source: string }[]).map((s) => [s.route, s.status, s.source]), [['main', 'approved', 'config-managed'], ['weather', 'approved', 'catalog']]);
      const shown = await call('GET', '/servers/weather', { token: tokens.bob });
      assert.deepEqual((shown.body.history as { action: string; actor: string }[]).map((h) => [h.action, h.actor]), [['proposed', 'alice'], ['approved', 'bob']]);
      assert.equal(shown.body.openProposal, null);
      const exported = await call('GET', '/servers/weather/export', { token: tokens.sam });
      assert.equal(exported.status, 200);
      assert.equal(exported.body.name, 'io.example/weather');
      const record = (exported.body._meta as Record<string, Record<string, unknown>>)['dev.mandate/governance'];
      assert.equal(record?.owner, 'alice');
      assert.equal(record?.risk, 'high');
      assert.deepEqual((await call('GET', '/servers/weather/pins', { token: tokens.sam })).body, { route: 'weather', pins: [] });
      assert.deepEqual((await call('GET', '/servers/weather/drift', { token: tokens.sam })).body, { route: 'weather', drift: [] });
      const missing = await call('GET', '/servers/nothing-here', { token: tokens.sam });
      assert.equal(missing.status, 404);
      assert.equal(missing.body.rule, 'unknown');
    });

    it('a quarantined tool is pinned by the hash reviewed: a wrong hash is refused (rule pins), the right one pinned', async () => {
      const tool = { name: 'echo/v2', description: 'Echoes', inputSchema: { type: 'object' } };
      const hash = toolHash(tool);
      await mandate.store.catalog.noteDrift({ route: 'weather', tool: tool.name, hash, kind: 'new', definition: pinDefinition(tool), diff: '+ name: "echo/v2"', detectedAt: new Date().toISOString() });
      const drift = await call('GET', '/servers/weather/drift', { token: tokens.sam });
      assert.deepEqual((drift.body.drift as { name: string; hash: string }[]).map((d) => [d.name, d.hash]), [[tool.name, hash]]);
      const path = `/servers/weather/pins/${encodeURIComponent(tool.name)}/approve`;
      const wrong = await call('POST', path, { token: tokens.bob, body: { hash: 'b'.repeat(64), reason: 'reviewed' } });
      assert.equal(wrong.status, 403);
      assert.equal(wrong.body.rule, 'pins');
      const right = await call('POST', path, { token: tokens.bob, body: { hash, reason: 'reviewed echo' } });
      assert.equal(right.status, 200, JSON.stringify(right.body));
      assert.deepEqual(right.body, { route: 'weather', tool: tool.name, hash, pinnedTools: 1 });
      assert.deepEqual((await call('GET', '/servers/weather/pins', { token: tokens.sam })).body, { route: 'weather', pins: [{ name: tool.name, hash }] });
      const approved = await mandate.audit({ types: ['server.drift_approved'] });
      assert.equal(approved.at(-1)?.actor, 'bob');
    });

    it('renew, suspend, reinstate and retire as bob; a state that does not allow it is 409', async () => {
      const renewed = await call('POST', '/servers/weather/renew', { token: tokens.bob, body: { expiresAt: new Date(Date.now() + 20 * 86_400_000).toISOString(), reason: 'another quarter' } });
      assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
      const tooLong = await call('POST', '/servers/weather/renew', { token: tokens.bob, body: { ttl: '365d', reason: 'forever' } });
      assert.equal(tooLong.status, 403);
      assert.equal(tooLong.body.rule, 'admission.maxLifetimeDays');
      assert.equal((await call('POST', '/servers/weather/suspend', { token: tokens.bob, body: { reason: 'incident 42' } })).body.status, 'suspended');
      const again = await call('POST', '/servers/weather/suspend', { token: tokens.bob, body: { reason: 'twice' } });
      assert.equal(again.status, 409);
      assert.equal(again.body.rule, 'status');
      assert.equal((await call('POST', '/servers/weather/approve', { token: tokens.bob, body: { reason: 'incident closed' } })).body.status, 'approved');
      assert.equal((await call('POST', '/servers/weather/retire', { token: tokens.bob, body: { reason: 'replaced' } })).body.status, 'retired');
      const noProposal = await call('POST', '/servers/weather/reject', { token: tokens.bob, body: { reason: 'nothing open' } });
      assert.equal(noProposal.status, 409);
      assert.equal(noProposal.body.rule, 'proposal');
      const events = await mandate.audit({ types: ['server.renewed', 'server.suspended', 'server.retired'] });
      assert.deepEqual(events.map((e) => [e.type, e.actor]), [['server.renewed', 'bob'], ['server.suspended', 'bob'], ['server.retired', 'bob']]);
    });
  });

  describe('the edge', () => {
    it('bad JSON, a body that is not an object, unknown fields, missing or ill-typed fields: 400', async () => {
      const cases: [string, string | undefined, unknown, RegExp][] = [
        ['/servers', '{"route": ', undefined, /not valid JSON/],
        ['/servers', '[1, 2]', undefined, /must be a JSON object/],
        ['/servers', undefined, proposal({ admin: true }), /unknown field "admin"/],
        ['/servers', undefined, proposal({ route: 'Bad_Route' }), /route/],
        ['/servers', undefined, proposal({ risk: 'extreme' }), /risk/],
        ['/servers', undefined, proposal({ ttl: undefined }), /exactly one of expiresAt .* or ttl/],
        ['/servers', undefined, proposal({ expiresAt: '2027-01-01' }), /exactly one of/],
        ['/servers', undefined, { ...proposal({ ttl: undefined }), expiresAt: '2027-02-30' }, /expiresAt takes/],
        ['/servers', undefined, proposal({ reason: undefined }), /reason is required/],
        ['/servers', undefined, proposal({ reason: 'a\u202ebidi' }), /printable/],
        ['/servers', undefined, proposal({ serverJson: { name: 'x', version: '^1' } }), /serverJson: /],
        ['/servers', undefined, proposal({ serverJson: undefined }), /serverJson is required/],
        ['/servers', undefined, proposal({ expectedIdentity: { spkiSha256: ['short'] } }), /spkiSha256/],
        ['/servers', undefined, proposal({ expectedIdentity: { package: {} } }), /unknown field "package"/],
        ['/servers/weather/approve', undefined, { reason: 'ok', force: true }, /unknown field "force"/],
        ['/servers/weather/approve', undefined, {}, /reason is required/],
        ['/servers/weather/pins/echo/approve', undefined, { hash: 'ABC', reason: 'x' }, /hash is required/],
      ];
      for (const [path, raw, body, message] of cases) {
        const answer = await call('POST', path, raw === undefined ? { token: tokens.alice, body } : { token: tokens.alice, raw, headers: { 'content-type': 'application/json' } });
        assert.equal(answer.status, 400, `${path} ${raw ?? JSON.stringify(body)}: ${JSON.stringify(answer.body)}`);
        assert.equal(answer.body.error, 'invalid_request');
        assert.match(String(answer.body.message), message);
      }
    });

    it('a route or tool name out of bounds, an unknown query parameter: 400; an unknown path: 404; a wrong method: 405 with Allow', async () => {
      assert.equal((await call('GET', `/servers/${'a'.repeat(64)}`, { token: tokens.sam })).status, 400);
      assert.equal((await call('GET', '/servers/UPPER', { token: tokens.sam })).status, 400);
      assert.equal((await call('GET', '/servers/%zz', { token: tokens.sam })).status, 400);
      assert.equal((await call('POST', `/servers/weather/pins/${'t'.repeat(257)}/approve`, { token: tokens.bob, body: { hash: 'a'.repeat(64), reason: 'x' } })).status, 400);
      assert.equal((await call('GET', '/servers?status=gone', { token: tokens.sam })).status, 400);
      assert.equal((await call('GET', '/servers?limit=3', { token: tokens.sam })).status, 400);
      for (const path of ['', '/', '/users', '/servers/weather/frobnicate', '/servers//approve', '/servers/weather/']) {
        const answer = await call('GET', path, { token: tokens.sam });
        assert.equal(answer.status, 404, path);
        assert.equal(answer.body.error, 'not_found');
      }
      const wrong = await call('DELETE', '/servers/weather', { token: tokens.sam });
      assert.equal(wrong.status, 405);
      assert.equal(wrong.headers.get('allow'), 'GET');
      assert.equal((await call('GET', '/servers/weather/approve', { token: tokens.sam })).headers.get('allow'), 'POST');
      assert.equal((await call('PUT', '/servers', { token: tokens.sam })).headers.get('allow'), 'GET, POST');
    });

    it('a body that is not application/json: 415; over 256 KiB: 413, declared or streamed', async () => {
      const form = await call('POST', '/servers', { token: tokens.alice, raw: 'route=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
      assert.equal(form.status, 415);
      const none = await call('POST', '/servers/weather/approve', { token: tokens.bob, raw: '{"reason":"x"}' });
      assert.equal(none.status, 415);
      const latin = await call('POST', '/servers/weather/approve', { token: tokens.bob, raw: '{"reason":"x"}', headers: { 'content-type': 'application/json; charset=iso-8859-1' } });
      assert.equal(latin.status, 415);
      const huge = await call('POST', '/servers', { token: tokens.alice, body: proposal({ reason: 'x'.repeat(300 * 1024) }) });
      assert.equal(huge.status, 413);
      assert.equal(huge.body.error, 'payload_too_large');
      // Streamed without a length: refused once it passes the limit, without waiting for its end.
      const target = new URL(`${admin}/servers`);
      const streamed = await new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = http.request({ host: target.hostname, port: target.port, path: target.pathname, method: 'POST', headers: { authorization: `Bearer ${tokens.alice}`, 'content-type': 'application/json' } }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (text += chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
          res.on('error', reject);
        });
        req.on('error', () => undefined);
        req.write('{"reason":"');
        let sent = 0;
        const timer = setInterval(() => {
          if (sent >= 80 || req.destroyed) return clearInterval(timer);
          sent += 1;
          req.write('x'.repeat(8192));
        }, 5);
        setTimeout(() => reject(new Error('no answer within 10 s')), 10_000).unref();
      });
      assert.equal(streamed.status, 413);
      assert.equal((JSON.parse(streamed.text) as { error: string }).error, 'payload_too_large');
    });

    it('a browser request from another origin is refused (403) before the token is looked at; the issuer\'s own origin passes', async () => {
      const foreign = await call('GET', '/servers', { token: tokens.sam, headers: { origin: 'https://evil.example' } });
      assert.equal(foreign.status, 403);
      assert.equal(foreign.body.error, 'forbidden');
      assert.match(String(foreign.body.message), /origin .* is not allowed/);
      const own = await call('GET', '/servers', { token: tokens.sam, headers: { origin: new URL(mandate.base).origin } });
      assert.equal(own.status, 200);
      const denied = await mandate.audit({ types: ['authorization.denied'] });
      assert.ok(denied.some((event) => event.reason === 'origin'));
    });

    it('repeated refusals are counted, not recorded one by one', async () => {
      const before = (await mandate.audit({ types: ['authorization.denied'] })).filter((e) => e.actor === 'carol' && e.data.action === 'retire' && e.data.summary !== true).length;
      for (let i = 0; i < 5; i += 1) assert.equal((await call('POST', '/servers/weather/retire', { token: tokens.carol, body: { reason: 'x' } })).status, 403);
      const afterwards = (await mandate.audit({ types: ['authorization.denied'] })).filter((e) => e.actor === 'carol' && e.data.action === 'retire' && e.data.summary !== true).length;
      // The first of the kind was recorded earlier in this interval and the rest are counted (one more
      // record at most, should an interval have ended in between).
      assert.ok(afterwards - before <= 1, `${afterwards - before} records for 5 refusals of one kind`);
    });

    it('no token or a secret ends up in the audit log', async () => {
      const all = JSON.stringify(await mandate.audit());
      for (const [user, value] of Object.entries(tokens)) {
        assert.ok(!all.includes(value), `${user}'s token is in the audit log`);
        assert.ok(!all.includes(value.split('.')[2]!), `${user}'s token signature is in the audit log`);
      }
    });
  });
});
