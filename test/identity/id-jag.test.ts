/**
 * Enterprise-managed authorization (src/identity/id-jag-grant.ts): an
 * Identity Assertion JWT Authorization Grant (ID-JAG) signed by a configured
 * enterprise IdP, presented with `grant_type=…:jwt-bearer`, yields an access
 * token for one server behind Mandate that works at the gateway; a replayed,
 * expired, wrong-audience, unknown-issuer, wrong-typ, other-client,
 * unknown-user, foreign-resource or foreign-scope one is refused, each saying
 * why, and every outcome is on record as `token.issued` with the IdP's
 * issuer, the assertion's jti and the IdP's subject.
 *
 * The test IdPs are jose key pairs: one's JWK Set served by a local HTTP
 * server, the other's in a file next to mandate.yaml.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { identitySchema } from '../../src/config/identity-schema.ts';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { adminClient, jwtClaims, refusedWith, register, token, type Answer } from '../helpers/oauth.ts';

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const PROFILE = 'urn:ietf:params:oauth:grant-profile:id-jag';
const SECRET = 'a-client-secret-for-the-enterprise-agent';
const AGENT = 'mc_enterprise_agent';
const OTHER = 'mc_other_agent';
const PLAIN = 'mc_plain_machine';
const IDP = 'https://idp.example.test';
const FILE_IDP = 'https://file-idp.example.test';
const STRANGER_IDP = 'https://stranger.example.test';

interface Signer {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

async function signer(kid: string): Promise<Signer> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' } };
}

const basic = (id: string) => ({ basic: { id, secret: SECRET } });

/** A confidential machine client made by an administrator, with these grant types and SECRET. */
async function machineClient(gateway: InProcessMandate, id: string, grants: string[]): Promise<void> {
  await adminClient(gateway.store, id, grants, SECRET);
}

describe('enterprise-managed authorization (ID-JAG)', { timeout: 120_000 }, () => {
  let upstream: FakeUpstream;
  let gateway: InProcessMandate;
  let jwksServer: http.Server;
  let idpKey: Signer;
  let fileKey: Signer;
  let strangerKey: Signer;
  /** Every assertion and token value sent or received, to prove none reached the audit log. */
  const values: string[] = [];

  const resource = (server: string): string => `${gateway.base}/mcp/${server}`;
  const now = (): number => Math.floor(Date.now() / 1000);

  /** An ID-JAG for alice, client AGENT, server a, valid for 120 s, from IDP; `claims` and `header` override. */
  async function assertion(claims: Record<string, unknown> = {}, options: { key?: Signer; typ?: string } = {}): Promise<string> {
    const key = options.key ?? idpKey;
    const issued = now();
    const payload = { iss: IDP, sub: 'alice', aud: gateway.base, client_id: AGENT, jti: randomUUID(), iat: issued, exp: issued + 120, resource: resource('a'), scope: 'mcp:a', ...claims };
    const jwt = await new SignJWT(payload as Record<string, unknown>).setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: options.typ ?? 'oauth-id-jag+jwt' }).sign(key.privateKey);
    values.push(jwt);
    return jwt;
  }

  async function present(jwt: string, params: Record<string, string> = {}, client = AGENT): Promise<Answer> {
    const answer = await token(gateway.base, { grant_type: JWT_BEARER, assertion: jwt, ...params }, basic(client));
    if (typeof answer.body.access_token === 'string') values.push(answer.body.access_token);
    return answer;
  }

  before(async () => {
    [idpKey, fileKey, strangerKey] = await Promise.all([signer('idp-1'), signer('file-1'), signer('stranger-1')]);
    jwksServer = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [idpKey.jwk] }));
    });
    await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
    const jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks`;
    upstream = await startFakeUpstream();
    gateway = await startInProcess({
      servers: ['a', 'b'].map((name) => ({ name, url: upstream.url })),
      identity: {
        requireToken: true,
        registration: { mode: 'open' },
        enterprise: {
          idps: [
            { issuer: IDP, jwks: jwksUrl },
            // Keys in a file next to mandate.yaml (read at first use); the user named by email.
            { issuer: FILE_IDP, jwks: 'file-idp.jwks.json', userClaim: 'email', maxLifetimeSeconds: 600 },
          ],
        },
      },
    });
    writeFileSync(path.join(path.dirname(gateway.configPath), 'file-idp.jwks.json'), JSON.stringify({ keys: [fileKey.jwk] }));
    const at = Date.now();
    await gateway.store.identity.createUser({ name: 'alice', passwordHash: 'scrypt$1$1$1$x$y', groups: ['eng'], disabled: false, createdAt: at, updatedAt: at });
    await gateway.store.identity.createUser({ name: 'carol', passwordHash: 'scrypt$1$1$1$x$y', groups: [], disabled: true, createdAt: at, updatedAt: at });
    await machineClient(gateway, AGENT, ['client_credentials', JWT_BEARER]);
    await machineClient(gateway, OTHER, ['client_credentials', JWT_BEARER]);
    await machineClient(gateway, PLAIN, ['client_credentials']);
  });

  after(async () => {
    await gateway?.stop();
    await upstream?.close();
    await new Promise((resolve) => jwksServer?.close(resolve));
  });

  it('is advertised in the metadata: the grant type and the ID-JAG profile', async () => {
    const metadata = (await (await fetch(`${gateway.base}/.well-known/oauth-authorization-server`)).json()) as Record<string, string[]>;
    assert.ok(metadata.grant_types_supported?.includes(JWT_BEARER), JSON.stringify(metadata.grant_types_supported));
    assert.deepEqual(metadata.authorization_grant_profiles_supported, [PROFILE]);
  });

  it('a valid assertion yields a token for the server: sub the Mandate user, client_id the client, gid, no refresh token, never past the assertion', async () => {
    const jwt = await assertion();
    const answer = await present(jwt);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.token_type, 'Bearer');
    assert.equal(answer.body.scope, 'mcp:a');
    assert.equal(answer.body.refresh_token, undefined);
    const claims = jwtClaims(String(answer.body.access_token));
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.aud, resource('a'));
    assert.equal(claims.client_id, AGENT);
    assert.equal(claims.scope, 'mcp:a');
    assert.equal(typeof claims.gid, 'string', 'a user\'s token: it comes from a grant');
    assert.ok((claims.exp as number) <= (jwtClaims(jwt).exp as number), 'never outlives the assertion');

    const events = await gateway.audit({ types: ['token.issued'] });
    const record = events.find((event) => event.outcome === 'success' && event.data?.jti === claims.jti);
    assert.ok(record, 'the issuance is on record');
    assert.equal(record.actor, 'alice');
    assert.equal(record.server, 'a');
    assert.equal(record.data?.grant_type, JWT_BEARER);
    assert.equal(record.data?.client_id, AGENT);
    assert.equal(record.data?.idp, IDP);
    assert.equal(record.data?.assertion_jti, jwtClaims(jwt).jti);
    assert.equal(record.data?.idp_subject, 'alice');
    assert.equal(record.data?.grant, claims.gid);

    // The token works at the gateway, as alice's.
    const client = new Client({ name: 'enterprise-agent', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(gateway.endpoint('a')), { requestInit: { headers: { authorization: `Bearer ${String(answer.body.access_token)}` } } }));
    const result = await client.callTool({ name: 'echo', arguments: { text: 'enterprise' } });
    assert.equal((result.content as { text: string }[])[0]?.text, 'echo: enterprise');
    await client.close();
    const call = (await gateway.audit({ types: ['mcp.request'] })).find((event) => event.data?.method === 'tools/call');
    assert.equal(call?.actor, 'alice', 'the call is the user\'s');

    // The same assertion again: a replay.
    refusedWith(await present(jwt), 'invalid_grant', /already used \(replay\)/);
    const replay = (await gateway.audit({ types: ['token.issued'] })).find((event) => event.outcome === 'denied' && /replay/.test(String(event.reason)));
    assert.ok(replay, 'the refusal is on record');
    assert.equal(replay.data?.assertion_jti, jwtClaims(jwt).jti);
    assert.equal(replay.data?.idp, IDP);
    assert.equal(replay.data?.error, 'invalid_grant');
  });

  it('the resource and scope may come from the request: a tool scope within the assertion\'s', async () => {
    const answer = await present(await assertion({ resource: undefined, scope: 'mcp:b' }), { resource: resource('b'), scope: 'mcp:b:tool:echo' });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    const claims = jwtClaims(String(answer.body.access_token));
    assert.equal(claims.aud, resource('b'));
    assert.equal(claims.scope, 'mcp:b:tool:echo');
    // Without a scope anywhere: the server's scope.
    const plain = await present(await assertion({ scope: undefined }));
    assert.equal(plain.status, 200, JSON.stringify(plain.body));
    assert.equal(plain.body.scope, 'mcp:a');
  });

  it('an expired assertion, or one valid for longer than maxLifetimeSeconds, or issued in the future, is refused', async () => {
    refusedWith(await present(await assertion({ iat: now() - 200, exp: now() - 100 })), 'invalid_grant', /expired/);
    refusedWith(await present(await assertion({ iat: now(), exp: now() + 301 })), 'invalid_grant', /valid for 301 s.*at most 300 s/);
    refusedWith(await present(await assertion({ iat: now() + 120, exp: now() + 200 })), 'invalid_grant', /future/);
  });

  it('an assertion for another audience is refused', async () => {
    refusedWith(await present(await assertion({ aud: 'https://other-as.example.test' })), 'invalid_grant', /aud is not this authorization server/);
  });

  it('an assertion from an unknown issuer is refused, even when well signed', async () => {
    refusedWith(await present(await assertion({ iss: STRANGER_IDP }, { key: strangerKey })), 'invalid_grant', /unknown issuer/);
    // A configured issuer, another key: the signature does not verify.
    refusedWith(await present(await assertion({}, { key: strangerKey })), 'invalid_grant', /signature/);
  });

  it('a JWT that is not an ID-JAG (typ) is refused', async () => {
    refusedWith(await present(await assertion({}, { typ: 'JWT' })), 'invalid_grant', /typ header must be oauth-id-jag\+jwt/);
    refusedWith(await present('not-a-jwt'), 'invalid_grant', /not a signed JWT/);
  });

  it('an assertion for another client, or without a jti, is refused', async () => {
    refusedWith(await present(await assertion({ client_id: OTHER })), 'invalid_grant', new RegExp(`issued for client ${OTHER}, not for ${AGENT}`));
    refusedWith(await present(await assertion({ client_id: AGENT }), {}, OTHER), 'invalid_grant', new RegExp(`issued for client ${AGENT}, not for ${OTHER}`));
    refusedWith(await present(await assertion({ jti: undefined })), 'invalid_grant', /jti/);
  });

  it('a user Mandate does not know, or has disabled, is refused: nobody is provisioned', async () => {
    refusedWith(await present(await assertion({ sub: 'mallory' })), 'invalid_grant', /user mallory .* is not a Mandate user/);
    refusedWith(await present(await assertion({ sub: 'carol' })), 'invalid_grant', /user carol is disabled/);
    refusedWith(await present(await assertion({ sub: 'Not A User!' })), 'invalid_grant', /not a Mandate user name/);
    assert.equal(await gateway.store.identity.getUser('mallory'), null);
    const record = (await gateway.audit({ types: ['token.issued'] })).find((event) => /mallory/.test(String(event.reason)));
    assert.equal(record?.data?.idp_subject, 'mallory', 'the IdP\'s subject is on record with the refusal');
  });

  it('a resource outside Mandate is invalid_target; so is a request naming another server than the assertion', async () => {
    refusedWith(await present(await assertion({ resource: 'https://elsewhere.example/mcp' })), 'invalid_target', /not an MCP server behind this gateway/);
    refusedWith(await present(await assertion({ resource: undefined }), { resource: 'https://elsewhere.example/mcp' }), 'invalid_target', /not an MCP server/);
    refusedWith(await present(await assertion(), { resource: resource('b') }), 'invalid_target', /not the assertion's resource/);
    refusedWith(await present(await assertion({ resource: undefined })), 'invalid_target', /resource is required/);
  });

  it('a scope of another server is invalid_scope; so is one wider than the assertion grants', async () => {
    refusedWith(await present(await assertion(), { scope: 'mcp:b' }), 'invalid_scope', /mcp:b is not a scope of server a/);
    refusedWith(await present(await assertion({ scope: 'mcp:a mcp:b' })), 'invalid_scope', /mcp:b is not a scope of server a/);
    refusedWith(await present(await assertion({ scope: 'mcp:a:tool:echo' }), { scope: 'mcp:a' }), 'invalid_scope', /mcp:a is wider than the assertion grants/);
  });

  it('a client without the grant among its grant_types is refused', async () => {
    const answer = await present(await assertion({ client_id: PLAIN }), {}, PLAIN);
    assert.equal(answer.status, 400, JSON.stringify(answer.body));
    assert.match(String(answer.body.error_description), /grant type is not allowed/);
  });

  it('registration accepts the grant for a confidential client and refuses it for a public one', async () => {
    const machine = await register(gateway.base, { client_name: 'enterprise machine', grant_types: ['client_credentials', JWT_BEARER], token_endpoint_auth_method: 'client_secret_basic' });
    assert.equal(machine.status, 201, JSON.stringify(machine.body));
    assert.deepEqual(machine.body.grant_types, ['client_credentials', JWT_BEARER]);
    const open = await register(gateway.base, { client_name: 'public', grant_types: ['authorization_code', JWT_BEARER], redirect_uris: ['http://127.0.0.1:9/callback'], token_endpoint_auth_method: 'none' });
    assert.equal(open.status, 400, JSON.stringify(open.body));
    assert.match(String(open.body.error_description), /jwt-bearer needs a confidential client/);
  });

  it('an IdP whose keys are a file next to mandate.yaml: its assertions work, the user named by its userClaim', async () => {
    const answer = await present(await assertion({ iss: FILE_IDP, sub: 'u-00042', email: 'Alice' }, { key: fileKey }));
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(jwtClaims(String(answer.body.access_token)).sub, 'alice');
    // The other IdP's key does not sign for it.
    refusedWith(await present(await assertion({ iss: FILE_IDP, email: 'alice' }, { key: idpKey })), 'invalid_grant', /signature/);
  });

  it('no assertion or token value is ever on record', async () => {
    const all = JSON.stringify(await gateway.audit());
    for (const value of values) assert.ok(!all.includes(value), 'an assertion or token reached the audit log');
  });
});

describe('enterprise-managed authorization, not configured', { timeout: 60_000 }, () => {
  let gateway: InProcessMandate;

  before(async () => {
    gateway = await startInProcess({ servers: [{ name: 'a', url: 'http://127.0.0.1:9/mcp' }], identity: { requireToken: true } });
    await machineClient(gateway, AGENT, ['client_credentials', JWT_BEARER]);
  });

  after(async () => {
    await gateway?.stop();
  });

  it('refuses every assertion, saying so, and does not advertise the profile', async () => {
    const answer = await token(gateway.base, { grant_type: JWT_BEARER, assertion: 'a.b.c' }, basic(AGENT));
    assert.equal(answer.status, 400, JSON.stringify(answer.body));
    assert.equal(answer.body.error, 'unauthorized_client');
    assert.match(String(answer.body.error_description), /no enterprise identity provider is configured/);
    const metadata = (await (await fetch(`${gateway.base}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    assert.equal(metadata.authorization_grant_profiles_supported, undefined);
  });
});

describe('identity.enterprise configuration', () => {
  it('defaults to no IdP; an IdP gets userClaim sub and maxLifetimeSeconds 300', () => {
    assert.deepEqual(identitySchema.parse({}).enterprise, { idps: [] });
    const parsed = identitySchema.parse({ enterprise: { idps: [{ issuer: IDP, jwks: 'https://idp.example.test/jwks' }] } });
    assert.deepEqual(parsed.enterprise.idps, [{ issuer: IDP, jwks: 'https://idp.example.test/jwks', userClaim: 'sub', maxLifetimeSeconds: 300 }]);
    assert.ok(identitySchema.safeParse({ enterprise: { idps: [{ issuer: IDP, jwks: 'keys/idp.json' }] } }).success, 'a file path');
    assert.ok(identitySchema.safeParse({ enterprise: { idps: [{ issuer: IDP, jwks: 'http://127.0.0.1:8080/jwks' }] } }).success, 'http on loopback');
  });

  it('refuses http JWKS URLs off loopback, duplicate issuers and unknown keys', () => {
    const refused = (enterprise: unknown, pattern: RegExp) => {
      const result = identitySchema.safeParse({ enterprise });
      assert.equal(result.success, false);
      assert.match(JSON.stringify(result.error?.issues), pattern);
    };
    refused({ idps: [{ issuer: IDP, jwks: 'http://idp.example.test/jwks' }] }, /https URL/);
    refused({ idps: [{ issuer: IDP, jwks: 'a.json' }, { issuer: IDP, jwks: 'b.json' }] }, /duplicate issuer/);
    refused({ idps: [{ issuer: IDP, jwks: 'a.json', audience: 'x' }] }, /audience/);
    refused({ idps: [{ issuer: IDP, jwks: 'a.json', maxLifetimeSeconds: 86_400 }] }, /maxLifetimeSeconds|too_big|3600/);
  });
});
