/**
 * Software statements (RFC 7591 §2.3) against the gateway (in this process) in approval
 * mode: a statement from a trusted publisher makes the client active at once;
 * anything else is refused and registers nothing, and whoever presents a
 * statement cannot add redirect URIs or credentials the publisher did not sign.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';

/** The MCP server's address: these cases never reach it. */
const NEVER_REACHED = 'http://127.0.0.1:9/mcp';

const PUBLISHER = 'https://publisher.example';

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

describe('software statements', { timeout: 60_000 }, () => {
  let mandate: InProcessMandate;
  let trustedKey: CryptoKey;
  let otherKey: CryptoKey;

  before(async () => {
    const trusted = await generateKeyPair('ES256');
    trustedKey = trusted.privateKey;
    otherKey = (await generateKeyPair('ES256')).privateKey;
    const jwk = { ...(await exportJWK(trusted.publicKey)), alg: 'ES256', use: 'sig' };
    mandate = await startInProcess({
      servers: [{ name: 'everything', url: NEVER_REACHED }],
      identity: { registration: { mode: 'approval', softwareStatementIssuers: [{ issuer: PUBLISHER, jwks: { keys: [jwk] } }] } },
    });
  });
  after(async () => {
    await mandate?.stop();
  });

  const statement = (claims: Record<string, unknown>, key: CryptoKey = trustedKey, issuer = PUBLISHER, expires = '5m'): Promise<string> =>
    new SignJWT(claims).setProtectedHeader({ alg: 'ES256' }).setIssuer(issuer).setIssuedAt().setExpirationTime(expires).sign(key);

  async function register(metadata: Record<string, unknown>): Promise<Answer> {
    const res = await fetch(`${mandate.base}/oauth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(metadata) });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  async function clientCount(): Promise<number> {
    const out = await mandate.cli(['clients', 'list', '--json']);
    return (JSON.parse(out.stdout) as unknown[]).length;
  }

  it('a trusted statement skips approval, and its claims win over those sent in the clear', async () => {
    const signed = await statement({ client_name: 'Vouched Agent', redirect_uris: ['http://127.0.0.1:7777/callback'], token_endpoint_auth_method: 'none' });
    const answer = await register({ software_statement: signed, client_name: 'Claimed Name', redirect_uris: ['http://127.0.0.1:9999/other'], token_endpoint_auth_method: 'none' });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    assert.equal(answer.body.client_status, 'active');
    assert.equal(answer.body.client_name, 'Vouched Agent');
    assert.deepEqual(answer.body.redirect_uris, ['http://127.0.0.1:7777/callback']);
    const shown = await mandate.cli(['clients', 'show', String(answer.body.client_id), '--json']);
    const client = JSON.parse(shown.stdout) as { status: string; owner: string };
    assert.equal(client.status, 'active');
    assert.equal(client.owner, `software:${PUBLISHER}`);
  });

  it('without a statement the client waits for approval', async () => {
    const answer = await register({ client_name: 'Plain', redirect_uris: ['http://127.0.0.1:7777/callback'], token_endpoint_auth_method: 'none' });
    assert.equal(answer.status, 201);
    assert.equal(answer.body.client_status, 'pending');
  });

  it('refuses statements from unknown publishers, with bad signatures, expired, or not JWTs; nothing is registered', async () => {
    const before = await clientCount();
    const base = { client_name: 'X', redirect_uris: ['http://127.0.0.1:7777/callback'], token_endpoint_auth_method: 'none' };
    const cases: [string, Promise<string> | string, string][] = [
      ['unknown publisher', statement(base, trustedKey, 'https://stranger.example'), 'unapproved_software_statement'],
      ['signed with another key', statement(base, otherKey), 'invalid_software_statement'],
      ['expired', statement(base, trustedKey, PUBLISHER, Math.floor(Date.now() / 1000) - 60 as unknown as string), 'invalid_software_statement'],
      ['not a JWT', 'not-a-jwt', 'invalid_software_statement'],
    ];
    for (const [name, signed, error] of cases) {
      const answer = await register({ ...base, software_statement: await signed });
      assert.equal(answer.status, 400, name);
      assert.equal(answer.body.error, error, name);
    }
    assert.equal(await clientCount(), before);
  });

  it('fields that decide where codes go or how the client authenticates come only from the statement', async () => {
    const before = await clientCount();
    const signed = await statement({ client_name: 'Vouched Agent' });
    const added = await register({ software_statement: signed, redirect_uris: ['http://127.0.0.1:6666/steal'], token_endpoint_auth_method: 'none' });
    assert.equal(added.status, 400);
    assert.equal(added.body.error, 'invalid_software_statement');
    assert.match(String(added.body.error_description), /redirect_uris, token_endpoint_auth_method/);
    const bare = await register({ software_statement: signed });
    assert.equal(bare.status, 400, 'a statement naming no redirect URIs vouches for no interactive client');
    assert.equal(bare.body.error, 'invalid_software_statement');
    assert.equal(await clientCount(), before);
  });

  it('the registration rules still apply to what a statement vouches for', async () => {
    const signed = await statement({ redirect_uris: ['https://attacker.example/callback'], token_endpoint_auth_method: 'none' });
    const answer = await register({ software_statement: signed });
    assert.equal(answer.status, 400);
    assert.equal(answer.body.error, 'invalid_redirect_uri');
  });
});
