/**
 * TokenVerifier with real keys on a real SQLite store: the reason for each
 * refusal (missing, malformed, invalid, expired, wrong audience, revoked),
 * that the cache never bypasses audience or revocation checks, that
 * revocations written straight to the store are seen after a refresh, and
 * that a key created after start is picked up through `reloadKeys`.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { importJWK, SignJWT, type JWK } from 'jose';
import type { ResolvedServer } from '../../src/config/load.ts';
import { loadKeys, publicSigningKeys, type KeyMaterial } from '../../src/identity/keys.ts';
import { KEEP_MS, RevocationList } from '../../src/identity/revocations.ts';
import { AuthError, TokenVerifier, type AuthReason } from '../../src/identity/verify.ts';
import { openStore } from '../../src/store/open.ts';
import type { Store } from '../../src/store/types.ts';
import { tempDir } from '../helpers/process.ts';

const ISSUER = 'https://gw.example.com';
const DAY = 86_400_000;

function server(name: string): ResolvedServer {
  return { name, endpoint: `${ISSUER}/mcp/${name}`, transport: 'http', url: 'http://127.0.0.1:1/mcp', args: [], env: {} } as unknown as ResolvedServer;
}
const FILES = server('files');
const DB = server('db');

const dir = tempDir('mandate-verify-');
const secret = randomBytes(32);
let store: Store;
let keys: KeyMaterial;
let revocations: RevocationList;
let verifier: TokenVerifier;

interface Claims {
  sub?: string;
  aud?: string | string[];
  client_id?: string;
  scope?: string;
  jti?: string;
  gid?: string;
  iss?: string;
  /** Epoch seconds. */
  iat?: number;
  /** The precise issue time, epoch ms (left out unless given). */
  iat_ms?: number;
  exp?: number;
}

const nowS = (): number => Math.floor(Date.now() / 1000);

/** A token with unique sub/client/jti/gid unless given. */
async function sign(claims: Claims = {}, options: { key?: JWK; typ?: string; kid?: string } = {}): Promise<{ token: string; claims: Required<Omit<Claims, 'iat_ms'>> }> {
  const jwk = options.key ?? keys.signing[0]!;
  const iat = claims.iat ?? nowS();
  const full: Required<Omit<Claims, 'iat_ms'>> = {
    iss: claims.iss ?? ISSUER,
    sub: claims.sub ?? `user-${randomUUID()}`,
    aud: claims.aud ?? FILES.endpoint,
    client_id: claims.client_id ?? `client-${randomUUID()}`,
    scope: claims.scope ?? 'mcp:files',
    jti: claims.jti ?? randomUUID(),
    gid: claims.gid ?? `grant-${randomUUID()}`,
    iat,
    exp: claims.exp ?? iat + 600,
  };
  const key = await importJWK(jwk, 'ES256');
  const { iss, sub, aud, jti, iat: issued, exp, ...rest } = full;
  const token = await new SignJWT(claims.iat_ms === undefined ? rest : { ...rest, iat_ms: claims.iat_ms })
    .setProtectedHeader({ alg: 'ES256', typ: options.typ ?? 'at+jwt', kid: options.kid ?? jwk.kid! })
    .setIssuer(iss)
    .setSubject(sub)
    .setAudience(aud)
    .setJti(jti)
    .setIssuedAt(issued)
    .setExpirationTime(exp)
    .sign(key);
  return { token, claims: full };
}

async function refused(promise: Promise<unknown>, reason: AuthReason): Promise<AuthError> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof AuthError, `expected AuthError(${reason}), got ${caught === undefined ? 'success' : String(caught)}`);
  assert.equal(caught.reason, reason, caught.message);
  return caught;
}

before(async () => {
  store = await openStore({ dataDir: dir });
  await store.migrate();
  keys = await loadKeys(store, secret, { rotateAfterMs: 30 * DAY, retainMs: DAY });
  revocations = new RevocationList(store);
  await revocations.refresh();
  verifier = new TokenVerifier(ISSUER, keys.publicKeys, revocations);
});

after(async () => {
  revocations.stop();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('TokenVerifier: good tokens', () => {
  it('accepts a good token and describes the caller', async () => {
    const { token, claims } = await sign({ scope: 'mcp:files mcp:files:write' });
    const principal = await verifier.verify(`Bearer ${token}`, FILES);
    assert.equal(principal.sub, claims.sub);
    assert.equal(principal.clientId, claims.client_id);
    assert.deepEqual(principal.scopes, ['mcp:files', 'mcp:files:write']);
    assert.equal(principal.jti, claims.jti);
    assert.equal(principal.grantId, claims.gid);
    assert.equal(principal.iat, claims.iat);
    assert.equal(principal.exp, claims.exp);
    assert.equal(principal.audience, FILES.endpoint);
    assert.match(principal.tokenRef, /^[0-9a-f]{12}$/);
    assert.equal(principal.tokenRef, createHash('sha256').update(token).digest('hex').slice(0, 12));
    // Cached: the same answer again.
    assert.deepEqual(await verifier.verify(`Bearer ${token}`, FILES), principal);
  });
});

describe('TokenVerifier: the Authorization header', () => {
  it('the scheme in any case, and one or more spaces before the token (RFC 7235 §2.1, RFC 6750 §2.1)', async () => {
    const { token, claims } = await sign();
    for (const header of [`bearer ${token}`, `BEARER ${token}`, `BeArEr ${token}`, `Bearer  ${token}`, `bearer   ${token}`]) {
      assert.equal((await verifier.verify(header, FILES)).jti, claims.jti, header.slice(0, 12));
    }
    const fresh = await sign();
    assert.equal((await verifier.verify(`bEARER ${fresh.token}`, FILES)).jti, fresh.claims.jti, 'not only once cached');
  });
});

describe('TokenVerifier: refusals', () => {
  it('no Authorization header → missing', async () => {
    await refused(verifier.verify(undefined, FILES), 'missing');
    await refused(verifier.verify('', FILES), 'missing');
  });

  it('a scheme other than Bearer, or junk → malformed', async () => {
    await refused(verifier.verify('Basic x', FILES), 'malformed');
    await refused(verifier.verify('Bearer', FILES), 'malformed');
    await refused(verifier.verify('Bearer a b', FILES), 'malformed');
    const { token } = await sign();
    for (const header of [`Bearer\t${token}`, `Bearer${token}`, ` Bearer ${token}`, `Bearer ${token} `, `Bearers ${token}`]) {
      await refused(verifier.verify(header, FILES), 'malformed');
    }
  });

  it('not a JWT at all → invalid', async () => {
    await refused(verifier.verify('Bearer abc.def.ghi', FILES), 'invalid');
    await refused(verifier.verify('Bearer opaque-token', FILES), 'invalid');
  });

  it('a tampered signature → invalid', async () => {
    const { token } = await sign();
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const flipped = (signature[5] === 'A' ? 'B' : 'A');
    const bad = `${header}.${payload}.${signature.slice(0, 5)}${flipped}${signature.slice(6)}`;
    await refused(verifier.verify(`Bearer ${bad}`, FILES), 'invalid');
  });

  it('a tampered payload (signature of another body) → invalid', async () => {
    const { token } = await sign({ scope: 'mcp:files' });
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const body = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
    body.scope = 'mcp:files mcp:admin';
    const forged = `${header}.${Buffer.from(JSON.stringify(body)).toString('base64url')}.${signature}`;
    await refused(verifier.verify(`Bearer ${forged}`, FILES), 'invalid');
  });

  it('signed by another key, even one that claims our kid → invalid', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const foreign = privateKey.export({ format: 'jwk' }) as JWK;
    const sameKid = await sign({}, { key: foreign, kid: keys.signing[0]!.kid! });
    await refused(verifier.verify(`Bearer ${sameKid.token}`, FILES), 'invalid');
    const otherKid = await sign({}, { key: foreign, kid: 'someone-else' });
    await refused(verifier.verify(`Bearer ${otherKid.token}`, FILES), 'invalid');
  });

  it('typ JWT (an ID token or other JWT) → invalid', async () => {
    const { token } = await sign({}, { typ: 'JWT' });
    await refused(verifier.verify(`Bearer ${token}`, FILES), 'invalid');
  });

  it('another issuer → invalid', async () => {
    const { token } = await sign({ iss: 'https://evil.example.com' });
    await refused(verifier.verify(`Bearer ${token}`, FILES), 'invalid');
  });

  it('two audiences → invalid (an access token is for one server)', async () => {
    const { token } = await sign({ aud: [FILES.endpoint, DB.endpoint] });
    await refused(verifier.verify(`Bearer ${token}`, FILES), 'invalid');
  });

  it('expired → expired', async () => {
    const iat = nowS() - 3600;
    const { token } = await sign({ iat, exp: iat + 600 });
    await refused(verifier.verify(`Bearer ${token}`, FILES), 'expired');
  });

  it('a cached token past its expiry → expired', async () => {
    const { token, claims } = await sign();
    await verifier.verify(`Bearer ${token}`, FILES);
    await refused(verifier.verify(`Bearer ${token}`, FILES, claims.exp * 1000 + 1), 'expired');
  });

  it('a token for another server → wrong_audience, cached or not', async () => {
    const fresh = await sign({ aud: DB.endpoint });
    const error = await refused(verifier.verify(`Bearer ${fresh.token}`, FILES), 'wrong_audience');
    assert.equal(error.principal?.audience, DB.endpoint, 'the refusal says who the caller was, for the audit record');

    const { token } = await sign({ aud: FILES.endpoint });
    await verifier.verify(`Bearer ${token}`, FILES); // now cached
    await refused(verifier.verify(`Bearer ${token}`, DB), 'wrong_audience');
    // Still good at its own server.
    assert.equal((await verifier.verify(`Bearer ${token}`, FILES)).audience, FILES.endpoint);
  });
});

describe('TokenVerifier: revocation', () => {
  const keep = (kind: keyof typeof KEEP_MS): number => Date.now() + KEEP_MS[kind];

  it('by jti: that token only', async () => {
    const gone = await sign();
    const sibling = await sign({ sub: gone.claims.sub, client_id: gone.claims.client_id, gid: gone.claims.gid });
    await revocations.revoke('jti', gone.claims.jti, keep('jti'));
    const error = await refused(verifier.verify(`Bearer ${gone.token}`, FILES), 'revoked');
    assert.match(error.message, /jti/);
    assert.equal(error.principal?.jti, gone.claims.jti);
    assert.equal((await verifier.verify(`Bearer ${sibling.token}`, FILES)).jti, sibling.claims.jti);
  });

  it('by grant: every token carrying that gid', async () => {
    const gid = `grant-${randomUUID()}`;
    const a = await sign({ gid });
    const b = await sign({ gid });
    const other = await sign();
    await revocations.revoke('grant', gid, keep('grant'));
    await refused(verifier.verify(`Bearer ${a.token}`, FILES), 'revoked');
    await refused(verifier.verify(`Bearer ${b.token}`, FILES), 'revoked');
    await verifier.verify(`Bearer ${other.token}`, FILES);
  });

  it('by client: tokens issued at or before the revocation are refused, later ones accepted', async () => {
    const clientId = `client-${randomUUID()}`;
    const revokedAtS = nowS() - 60;
    const before = await sign({ client_id: clientId, iat: revokedAtS - 30 });
    const atTheSameSecond = await sign({ client_id: clientId, iat: revokedAtS });
    const afterwards = await sign({ client_id: clientId, iat: revokedAtS + 1 });
    await revocations.revoke('client', clientId, keep('client'), revokedAtS * 1000);
    await refused(verifier.verify(`Bearer ${before.token}`, FILES), 'revoked');
    await refused(verifier.verify(`Bearer ${atTheSameSecond.token}`, FILES), 'revoked');
    const principal = await verifier.verify(`Bearer ${afterwards.token}`, FILES);
    assert.equal(principal.clientId, clientId);
  });

  it('by client within one second: iat_ms tells a token issued before the revocation from one issued after it', async () => {
    const clientId = `client-${randomUUID()}`;
    const iat = nowS() - 60;
    const revokedAt = iat * 1000 + 400;
    const before = await sign({ client_id: clientId, iat, iat_ms: revokedAt - 1 });
    const atTheSameMs = await sign({ client_id: clientId, iat, iat_ms: revokedAt });
    const after = await sign({ client_id: clientId, iat, iat_ms: revokedAt + 1 });
    // Without iat_ms, or with one outside its iat second, a token counts as issued at the start of that second.
    const unknown = await sign({ client_id: clientId, iat });
    const inconsistent = await sign({ client_id: clientId, iat, iat_ms: iat * 1000 + 1000 });
    await revocations.revoke('client', clientId, keep('client'), revokedAt);
    await refused(verifier.verify(`Bearer ${before.token}`, FILES), 'revoked');
    await refused(verifier.verify(`Bearer ${atTheSameMs.token}`, FILES), 'revoked');
    await refused(verifier.verify(`Bearer ${unknown.token}`, FILES), 'revoked');
    await refused(verifier.verify(`Bearer ${inconsistent.token}`, FILES), 'revoked');
    const principal = await verifier.verify(`Bearer ${after.token}`, FILES);
    assert.equal(principal.issuedAtMs, revokedAt + 1);
  });

  it('by user: tokens issued at or before the revocation are refused, later ones accepted', async () => {
    const sub = `user-${randomUUID()}`;
    const revokedAtS = nowS() - 60;
    const old = await sign({ sub, iat: revokedAtS - 10 });
    const fresh = await sign({ sub, iat: revokedAtS + 5 });
    await revocations.revoke('user', sub, keep('user'), revokedAtS * 1000);
    const error = await refused(verifier.verify(`Bearer ${old.token}`, FILES), 'revoked');
    assert.match(error.message, /user/);
    assert.equal((await verifier.verify(`Bearer ${fresh.token}`, FILES)).sub, sub);
  });

  it('a cached token is refused immediately after revoke() (the cache does not bypass revocation)', async () => {
    for (const kind of ['jti', 'grant', 'client', 'user'] as const) {
      const { token, claims } = await sign();
      await verifier.verify(`Bearer ${token}`, FILES);
      await verifier.verify(`Bearer ${token}`, FILES); // served from the cache
      const value = { jti: claims.jti, grant: claims.gid, client: claims.client_id, user: claims.sub }[kind];
      await revocations.revoke(kind, value, keep(kind));
      await refused(verifier.verify(`Bearer ${token}`, FILES), 'revoked');
    }
  });

  it('a revocation written straight to the store (as the CLI does) applies after refresh()', async () => {
    const { token, claims } = await sign();
    await verifier.verify(`Bearer ${token}`, FILES);
    await store.identity.addRevocation({ kind: 'user', value: claims.sub, revokedAt: Date.now(), expiresAt: keep('user') });
    // Not yet known to this node: the poll has not run.
    await verifier.verify(`Bearer ${token}`, FILES);
    await revocations.refresh();
    await refused(verifier.verify(`Bearer ${token}`, FILES), 'revoked');
  });

  it('a token never seen before is checked against revocations too (not only cached ones)', async () => {
    const { token, claims } = await sign();
    await store.identity.addRevocation({ kind: 'jti', value: claims.jti, revokedAt: Date.now(), expiresAt: keep('jti') });
    await revocations.refresh();
    await refused(verifier.verify(`Bearer ${token}`, FILES), 'revoked');
    // And a refused token was not cached as good: still refused.
    await refused(verifier.verify(`Bearer ${token}`, FILES), 'revoked');
  });
});

describe('TokenVerifier: keys created after start', () => {
  it('a token signed with a newer key is accepted with reloadKeys, invalid without', async () => {
    const withReload = new TokenVerifier(ISSUER, keys.publicKeys, revocations, { reloadKeys: () => publicSigningKeys(store, secret) });
    const withoutReload = new TokenVerifier(ISSUER, keys.publicKeys, revocations);
    // Another node rotates: a new key lands in the store.
    const rotated = await loadKeys(store, secret, { rotateAfterMs: 0, retainMs: DAY });
    assert.ok(rotated.created, 'rotation created a key');
    const newKey = rotated.signing[0]!;
    assert.notEqual(newKey.kid, keys.signing[0]!.kid);
    assert.equal(newKey.kid, rotated.created.kid);

    const { token, claims } = await sign({}, { key: newKey });
    await refused(withoutReload.verify(`Bearer ${token}`, FILES), 'invalid');
    const principal = await withReload.verify(`Bearer ${token}`, FILES);
    assert.equal(principal.jti, claims.jti);

    // Tokens signed with the now-retired key still verify on the reloaded set.
    const old = await sign({}, { key: keys.signing[0]! });
    assert.equal((await withReload.verify(`Bearer ${old.token}`, FILES)).jti, old.claims.jti);
  });
});
