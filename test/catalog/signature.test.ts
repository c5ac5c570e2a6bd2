/** Publishers (JWK Sets, name prefixes, domain proofs) and publisher-signed catalog entries (detached JWS over RFC 8785). */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { base64url, CompactSign, exportJWK, FlattenedSign, generateKeyPair, generateSecret, type CryptoKey, type JWK } from 'jose';
import {
  domainPublisher,
  type GuardedFetch,
  loadPublishers,
  MAX_DOMAIN_PROOF_BYTES,
  parseDomainProof,
  prefixMatches,
  PublisherError,
  PublisherSet,
} from '../../src/catalog/publishers.ts';
import { canonicalServerJson, SignatureError, type SignatureFailure, signEntry, verifyEntry } from '../../src/catalog/signature.ts';
import { GOVERNANCE_META_KEY, PUBLISHER_META_KEY, type ServerJson } from '../../src/catalog/types.ts';
import { tempDir } from '../helpers/process.ts';

const dir = tempDir('mandate-signature-');
after(() => rmSync(dir, { recursive: true, force: true }));

let counter = 0;
function jwksFile(keys: unknown[]): string {
  const name = `publisher-${++counter}.jwks.json`;
  writeFileSync(path.join(dir, name), JSON.stringify({ keys }));
  return name;
}

function entry(): ServerJson {
  return {
    name: 'io.example/weather',
    version: '1.2.0',
    description: 'Weather forecasts',
    remotes: [{ type: 'streamable-http', url: 'https://weather.example.io/mcp' }],
    _meta: { [PUBLISHER_META_KEY]: { build: { commit: 'abc123', steps: [1, 2, 3] } } },
  };
}

async function refusal(promise: Promise<unknown>, reason: SignatureFailure, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof SignatureError, `a SignatureError, got ${String(error)}`);
    assert.equal(error.reason, reason, error.message);
    if (message) assert.match(error.message, message);
    return true;
  });
}

const publicJwk = async (key: CryptoKey, extra: Partial<JWK> = {}): Promise<JWK> => ({ ...(await exportJWK(key)), ...extra });
const textFetch = (status: number, body: string, seen: string[] = []): GuardedFetch => async (input) => {
  seen.push(String(input instanceof Request ? input.url : input));
  return new Response(body, { status });
};

describe('the signed bytes: RFC 8785, without Mandate governance', () => {
  it('ignores member order and whitespace, and drops the governance key and an empty _meta', () => {
    const a = canonicalServerJson({ version: '1', name: 'io.example/a', _meta: { [GOVERNANCE_META_KEY]: { route: 'a' } } });
    const b = canonicalServerJson({ name: 'io.example/a', version: '1' });
    const c = canonicalServerJson({ name: 'io.example/a', version: '1', _meta: {} });
    assert.deepEqual(a, b);
    assert.deepEqual(b, c);
    assert.equal(new TextDecoder().decode(b), '{"name":"io.example/a","version":"1"}');
    const kept = canonicalServerJson({ name: 'io.example/a', version: '1', _meta: { other: 1, [GOVERNANCE_META_KEY]: {} } });
    assert.equal(new TextDecoder().decode(kept), '{"_meta":{"other":1},"name":"io.example/a","version":"1"}');
  });
});

describe('name prefixes', () => {
  it('match whole namespaces and names, never a longer namespace', () => {
    const cases: [string, string, boolean][] = [
      ['io.example/', 'io.example/weather', true],
      ['io.example/', 'io.examples/x', false],
      ['io.example/', 'io.example.api/x', false],
      ['io.example/', 'io.example', false],
      ['io.example', 'io.example/weather', true],
      ['io.example', 'io.example.api/weather', true],
      ['io.example', 'io.examples/x', false],
      ['io.example', 'io.exampleevil/x', false],
      ['io.example/weather', 'io.example/weather', true],
      ['io.example/weather', 'io.example/weather-2', false],
      ['io.example/', 'IO.EXAMPLE/weather', false],
      ['io.example/', 'io.example/a/b', false],
    ];
    for (const [prefix, name, expected] of cases) assert.equal(prefixMatches(prefix, name), expected, `${prefix} vs ${name}`);
  });

  it('an unknown publisher may publish nothing; wildcard prefixes are refused with a hint', async () => {
    const { publicKey } = await generateKeyPair('EdDSA', { extractable: true });
    const set = await loadPublishers([{ name: 'example', jwks: jwksFile([await publicJwk(publicKey)]), prefixes: ['io.example/'] }], { baseDir: dir });
    assert.equal(set.mayPublish('example', 'io.example/weather'), true);
    assert.equal(set.mayPublish('example', 'io.examples/weather'), false);
    assert.equal(set.mayPublish('nobody', 'io.example/weather'), false);
    await assert.rejects(
      loadPublishers([{ name: 'example', jwks: jwksFile([await publicJwk(publicKey)]), prefixes: ['io.example/*'] }], { baseDir: dir }),
      /publisher "example": prefix "io\.example\/\*": write "io\.example\/"/,
    );
  });
});

describe('loading publishers', () => {
  it('loads Ed25519 and ECDSA public keys from a file relative to the configuration', async () => {
    const ed = await generateKeyPair('EdDSA', { extractable: true });
    const p256 = await generateKeyPair('ES256', { extractable: true });
    const p521 = await generateKeyPair('ES512', { extractable: true });
    const file = jwksFile([await publicJwk(ed.publicKey, { kid: 'ed' }), await publicJwk(p256.publicKey, { kid: 'p256', alg: 'ES256', use: 'sig' }), await publicJwk(p521.publicKey)]);
    const set = await loadPublishers([{ name: 'example', jwks: file, prefixes: ['io.example/', 'com.example'] }], { baseDir: dir });
    assert.deepEqual(set.publishers, [{ name: 'example', prefixes: ['io.example/', 'com.example'], keyCount: 3, source: path.join(dir, file) }]);
  });

  it('refuses a private key, naming the publisher, the file and the key', async () => {
    const ed = await generateKeyPair('EdDSA', { extractable: true });
    const file = jwksFile([await exportJWK(ed.privateKey)].map((jwk) => ({ ...jwk, kid: 'oops' })));
    await assert.rejects(loadPublishers([{ name: 'example', jwks: file, prefixes: ['io.example/'] }], { baseDir: dir }), (error: unknown) => {
      assert.ok(error instanceof PublisherError);
      assert.match(error.message, /publisher "example"/);
      assert.ok(error.message.includes(file), error.message);
      assert.match(error.message, /key 0 \(kid "oops"\) is a private key/);
      return true;
    });
  });

  it('refuses other key types with the key index and kid', async () => {
    const ed = await generateKeyPair('EdDSA', { extractable: true });
    const good = await publicJwk(ed.publicKey, { kid: 'good' });
    const refusals: [unknown, RegExp][] = [
      [{ kty: 'RSA', kid: 'rsa-1', n: 'AQAB', e: 'AQAB' }, /key 1 \(kid "rsa-1"\): kty "RSA" is not supported/],
      [{ kty: 'OKP', crv: 'X25519', x: good.x }, /key 1 \(no kid\): kty "OKP" with crv "X25519" is not supported/],
      [{ kty: 'EC', crv: 'secp256k1', kid: 'k1', x: 'AA', y: 'AA' }, /key 1 \(kid "k1"\): kty "EC" with crv "secp256k1" is not supported/],
      [{ kty: 'oct', k: 'c2VjcmV0', kid: 'hmac' }, /key 1 \(kid "hmac"\) is a shared secret/],
      [{ ...good, kid: 'alg', alg: 'ES256' }, /"alg" is "ES256", which does not fit a OKP\/Ed25519 key/],
      [{ ...good, kid: 'use', use: 'enc' }, /"use" is "enc"/],
      [{ kty: 'OKP', crv: 'Ed25519', x: 'AAAA', kid: 'short' }, /"x" is not a base64url Ed25519 public key/],
    ];
    for (const [bad, message] of refusals) {
      await assert.rejects(loadPublishers([{ name: 'example', jwks: jwksFile([good, bad]), prefixes: ['io.example/'] }], { baseDir: dir }), message);
    }
  });

  it('refuses duplicate kids, an empty set, a missing file and a file that is not a JWK Set', async () => {
    const a = await generateKeyPair('EdDSA', { extractable: true });
    const b = await generateKeyPair('ES256', { extractable: true });
    const load = (jwks: string) => loadPublishers([{ name: 'example', jwks, prefixes: ['io.example/'] }], { baseDir: dir });
    await assert.rejects(load(jwksFile([await publicJwk(a.publicKey, { kid: 'same' }), await publicJwk(b.publicKey, { kid: 'same' })])), /key 1: kid "same" is used by another key/);
    await assert.rejects(load(jwksFile([])), /publisher "example" \(.*\): the JWK Set has no keys/);
    await assert.rejects(load('missing.jwks.json'), /publisher "example": jwks file .*missing\.jwks\.json could not be read/);
    writeFileSync(path.join(dir, 'not-a-set.json'), '{"kty":"OKP"}');
    await assert.rejects(load('not-a-set.json'), /not a JWK Set/);
  });

  it('loads a JWK Set from an https URL only through the given fetch', async () => {
    const ed = await generateKeyPair('EdDSA', { extractable: true });
    const body = JSON.stringify({ keys: [await publicJwk(ed.publicKey, { kid: 'remote' })] });
    const config = { name: 'remote', jwks: 'https://keys.example.io/jwks.json', prefixes: ['io.example/'] };
    await assert.rejects(loadPublishers([config], { baseDir: dir }), /publisher "remote": jwks https:\/\/keys\.example\.io\/jwks\.json is a URL, but no fetch/);
    const seen: string[] = [];
    const set = await loadPublishers([config], { baseDir: dir, fetch: textFetch(200, body, seen) });
    assert.deepEqual(seen, ['https://keys.example.io/jwks.json']);
    assert.equal(set.publishers[0]?.keyCount, 1);
    await assert.rejects(loadPublishers([config], { baseDir: dir, fetch: textFetch(404, 'no') }), /answered HTTP 404/);
    await assert.rejects(loadPublishers([{ ...config, jwks: 'http://keys.example.io/jwks.json' }], { baseDir: dir, fetch: textFetch(200, body) }), /only https URLs/);
  });
});

describe('signing and verifying entries', () => {
  let set: PublisherSet;
  let ed: { privateKey: CryptoKey; publicKey: CryptoKey };
  let ec: { privateKey: CryptoKey; publicKey: CryptoKey };
  let other: { privateKey: CryptoKey; publicKey: CryptoKey };

  before(async () => {
    ed = await generateKeyPair('EdDSA', { extractable: true });
    ec = await generateKeyPair('ES256', { extractable: true });
    other = await generateKeyPair('EdDSA', { extractable: true });
    set = await loadPublishers(
      [
        { name: 'example', jwks: jwksFile([await publicJwk(ed.publicKey, { kid: 'ed-1' }), await publicJwk(ec.publicKey, { kid: 'ec-1' })]), prefixes: ['io.example/'] },
        { name: 'other', jwks: jwksFile([await publicJwk(other.publicKey, { kid: 'other-1' })]), prefixes: ['com.other/'] },
      ],
      { baseDir: dir },
    );
  });

  it('verifies an Ed25519 signature and says by whom', async () => {
    const jws = await signEntry(entry(), ed.privateKey, { alg: 'EdDSA', kid: 'ed-1' });
    assert.match(jws, /^[\w-]+\.\.[\w-]+$/);
    assert.deepEqual(await verifyEntry(entry(), jws, set), { publisher: 'example', kid: 'ed-1', alg: 'EdDSA' });
  });

  it('verifies an ECDSA signature, and one without a kid by trying the keys', async () => {
    assert.deepEqual(await verifyEntry(entry(), await signEntry(entry(), ec.privateKey, { alg: 'ES256', kid: 'ec-1' }), set), { publisher: 'example', kid: 'ec-1', alg: 'ES256' });
    assert.deepEqual(await verifyEntry(entry(), await signEntry(entry(), ed.privateKey, { alg: 'EdDSA' }), set), { publisher: 'example', kid: 'ed-1', alg: 'EdDSA' });
  });

  it('refuses the signature once any signed field changed', async () => {
    const jws = await signEntry(entry(), ed.privateKey, { alg: 'EdDSA', kid: 'ed-1' });
    const changes: ((s: ServerJson) => void)[] = [
      (s) => (s.description = 'Weather forecasts, now with extras'),
      (s) => ((s.remotes as { url: string }[])[0]!.url = 'https://attacker.example.net/mcp'),
      (s) => (((s._meta as Record<string, { build: { steps: number[] } }>)[PUBLISHER_META_KEY]!.build.steps[2] = 4)),
      (s) => (s.version = '1.2.1'),
      (s) => (s.websiteUrl = 'https://example.io'),
    ];
    for (const change of changes) {
      const changed = entry();
      change(changed);
      await refusal(verifyEntry(changed, jws, set), 'invalid', /signature invalid: no key of "example" verifies it/);
    }
  });

  it("still verifies with Mandate's governance record added to _meta", async () => {
    const jws = await signEntry(entry(), ed.privateKey, { alg: 'EdDSA', kid: 'ed-1' });
    const exported = entry();
    (exported._meta as Record<string, unknown>)[GOVERNANCE_META_KEY] = { route: 'weather', owner: 'alice', risk: 'low' };
    assert.equal((await verifyEntry(exported, jws, set)).publisher, 'example');
    // An entry submitted without _meta, exported with one.
    const bare: ServerJson = { name: 'io.example/bare', version: '1.0.0' };
    const bareJws = await signEntry(bare, ec.privateKey, { alg: 'ES256' });
    assert.equal((await verifyEntry({ ...bare, _meta: { [GOVERNANCE_META_KEY]: { route: 'bare' } } }, bareJws, set)).kid, 'ec-1');
  });

  it('refuses a valid signature by a publisher not allowed the name, and a name nobody may publish', async () => {
    const jws = await signEntry(entry(), other.privateKey, { alg: 'EdDSA', kid: 'other-1' });
    await refusal(verifyEntry(entry(), jws, set), 'not-allowed', /signed by publisher "other" \(key "other-1"\), which may not publish "io\.example\/weather"/);
    const unkeyed = await signEntry(entry(), other.privateKey, { alg: 'EdDSA' });
    await refusal(verifyEntry(entry(), unkeyed, set), 'not-allowed', /publisher "other"/);
    const stray = { ...entry(), name: 'org.nobody/weather' };
    await refusal(verifyEntry(stray, await signEntry(stray, ed.privateKey, { alg: 'EdDSA' }), set), 'no-publisher', /no publisher may publish "org\.nobody\/weather": no configured prefix covers it \(signed by publisher "example"/);
    await refusal(verifyEntry({ ...entry(), name: 'not a name' }, jws, set), 'no-publisher', /not a registry name/);
  });

  it('lets a kid select the key: an unknown kid, or a key of another type, matches nothing', async () => {
    await refusal(verifyEntry(entry(), await signEntry(entry(), ed.privateKey, { alg: 'EdDSA', kid: 'ed-2' }), set), 'no-key', /have no key with kid "ed-2" for alg EdDSA/);
    // Signed by the Ed25519 key but labelled with the ECDSA key's kid.
    await refusal(verifyEntry(entry(), await signEntry(entry(), ed.privateKey, { alg: 'EdDSA', kid: 'ec-1' }), set), 'no-key', /kid "ec-1" for alg EdDSA/);
    // Right kid, wrong key: the key named is tried, and fails.
    const stranger = await generateKeyPair('EdDSA');
    await refusal(verifyEntry(entry(), await signEntry(entry(), stranger.privateKey, { alg: 'EdDSA', kid: 'ed-1' }), set), 'invalid');
  });

  it('refuses alg none, HS256, crit/b64, an attached payload and malformed input', async () => {
    const header = (h: object) => base64url.encode(JSON.stringify(h));
    const signature = base64url.encode(new Uint8Array(64));
    await refusal(verifyEntry(entry(), `${header({ alg: 'none' })}..`, set), 'malformed');
    await refusal(verifyEntry(entry(), `${header({ alg: 'none' })}..${signature}`, set), 'header', /alg "none"/);
    await refusal(verifyEntry(entry(), `${header({ alg: 'RS256' })}..${signature}`, set), 'header', /alg "RS256" is not accepted/);

    const secret = await generateSecret('HS256');
    const hs = await new CompactSign(canonicalServerJson(entry())).setProtectedHeader({ alg: 'HS256', kid: 'ed-1' }).sign(secret);
    const [hsHeader, , hsSignature] = hs.split('.');
    await refusal(verifyEntry(entry(), `${hsHeader}..${hsSignature}`, set), 'header', /alg "HS256" is a shared-secret MAC/);
    await assert.rejects(signEntry(entry(), secret, { alg: 'HS256' as never }), SignatureError);

    const unencoded = await new FlattenedSign(canonicalServerJson(entry())).setProtectedHeader({ alg: 'EdDSA', b64: false, crit: ['b64'] }).sign(ed.privateKey);
    await refusal(verifyEntry(entry(), `${unencoded.protected}..${unencoded.signature}`, set), 'header', /"crit" or "b64"/);

    const attached = await new CompactSign(canonicalServerJson(entry())).setProtectedHeader({ alg: 'EdDSA', kid: 'ed-1' }).sign(ed.privateKey);
    await refusal(verifyEntry(entry(), attached, set), 'attached', /detached signature/);

    for (const bad of ['', 'abc', 'a.b', 'a..b..c', '!!..!!', `${base64url.encode('not json')}..${signature}`, `${header({ alg: 'EdDSA' })}..${signature}`.repeat(300)]) {
      await refusal(verifyEntry(entry(), bad, set), 'malformed');
    }
  });
});

describe('domain proof: the key at https://DOMAIN/.well-known/mcp-registry-auth', () => {
  async function ed25519Proof() {
    const pair = await generateKeyPair('EdDSA', { extractable: true });
    const raw = base64url.decode((await exportJWK(pair.publicKey)).x!);
    return { pair, raw, record: `v=MCPv1; k=ed25519; p=${Buffer.from(raw).toString('base64')}` };
  }

  async function p384Proof() {
    const pair = await generateKeyPair('ES384', { extractable: true });
    const jwk = await exportJWK(pair.publicKey);
    const x = base64url.decode(jwk.x!);
    const y = base64url.decode(jwk.y!);
    const compressed = new Uint8Array([0x02 | (y[y.length - 1]! & 1), ...x]);
    return { pair, compressed, record: `v=MCPv1; k=ecdsap384; p=${Buffer.from(compressed).toString('base64')}` };
  }

  it('parses the registry record format: ed25519 and ecdsap384, one per line', async () => {
    const { raw, record } = await ed25519Proof();
    assert.deepEqual(parseDomainProof(`${record}\n`), [{ algorithm: 'ed25519', publicKey: new Uint8Array(raw) }]);
    assert.deepEqual(parseDomainProof(record.replaceAll('; ', ';')), [{ algorithm: 'ed25519', publicKey: new Uint8Array(raw) }]);
    const p384 = await p384Proof();
    const both = parseDomainProof(`${record}\r\n\r\n  ${p384.record}  \n`);
    assert.deepEqual(both.map((k) => k.algorithm), ['ed25519', 'ecdsap384']);
    assert.deepEqual(both[1]!.publicKey, p384.compressed);
  });

  it('refuses another version, another key type, garbage, bad keys and an overlong proof', async () => {
    const { record } = await ed25519Proof();
    const key = record.slice(record.indexOf('p=') + 2);
    const refusals: [string, RegExp][] = [
      [record.replace('MCPv1', 'MCPv2'), /version "MCPv2" is not supported/],
      [record.replace('ed25519', 'rsa'), /key type "rsa" is not supported/],
      [record.replace('ed25519', 'ED25519'), /key type "ED25519" is not supported/],
      ['<html>hello</html>', /not a proof record/],
      ['', /empty/],
      [`${record}; extra=1`, /not a proof record/],
      [`k=ed25519; v=MCPv1; p=${key}`, /not a proof record/],
      [`v=MCPv1; k=ed25519; p=${key.slice(0, -4)}`, /an ed25519 key has 32 bytes, this one 30/],
      [`v=MCPv1; k=ed25519; p=${key.replace(/=$/, '')}`, /not standard base64/],
      [`v=MCPv1; k=ed25519; p=${base64url.encode(base64url.decode(key.replace(/=$/, '').replaceAll('+', '-').replaceAll('/', '_')))}-_`, /not standard base64/],
      [`v=MCPv1; k=ecdsap384; p=${key}`, /compressed P-384 point/],
      [`${record}\n`.repeat(9), /9 records, at most 8/],
      [`${record}\n${' '.repeat(MAX_DOMAIN_PROOF_BYTES)}`, /longer than 4096 bytes/],
    ];
    for (const [text, message] of refusals) assert.throws(() => parseDomainProof(text), message, JSON.stringify(text.slice(0, 80)));
  });

  it('binds the domain namespace only, and verifies an entry signed with the proven key', async () => {
    const { pair, record } = await ed25519Proof();
    const seen: string[] = [];
    const publisher = await domainPublisher('Example.COM', textFetch(200, `${record}\n`, seen));
    assert.deepEqual(seen, ['https://example.com/.well-known/mcp-registry-auth']);
    assert.equal(publisher.name, 'domain:example.com');
    assert.deepEqual(publisher.prefixes, ['com.example/']);
    assert.equal(publisher.keys.length, 1);

    const set = new PublisherSet().add(publisher);
    assert.equal(set.mayPublish('domain:example.com', 'com.example/tools'), true);
    assert.equal(set.mayPublish('domain:example.com', 'com.example.api/tools'), false);
    assert.equal(set.mayPublish('domain:example.com', 'com.examples/tools'), false);
    const server: ServerJson = { name: 'com.example/tools', version: '0.1.0' };
    assert.deepEqual(await verifyEntry(server, await signEntry(server, pair.privateKey, { alg: 'EdDSA' }), set), {
      publisher: 'domain:example.com',
      kid: publisher.keys[0]!.kid,
      alg: 'EdDSA',
    });
    const sub: ServerJson = { name: 'com.example.api/tools', version: '0.1.0' };
    await refusal(verifyEntry(sub, await signEntry(sub, pair.privateKey, { alg: 'EdDSA' }), set), 'no-publisher', /no publisher may publish "com\.example\.api\/tools".*signed by publisher "domain:example\.com"/);
  });

  it('a P-384 proof verifies ES384 signatures', async () => {
    const { pair, record } = await p384Proof();
    const publisher = await domainPublisher('api.example.com', textFetch(200, record));
    assert.deepEqual(publisher.prefixes, ['com.example.api/']);
    const set = new PublisherSet([publisher]);
    const server: ServerJson = { name: 'com.example.api/tools', version: '0.1.0' };
    const jws = await signEntry(server, pair.privateKey, { alg: 'ES384', kid: publisher.keys[0]!.kid! });
    assert.equal((await verifyEntry(server, jws, set)).alg, 'ES384');
  });

  it('refuses a non-200 answer, an oversized one, a bad proof and a name that is not a domain', async () => {
    const { record } = await ed25519Proof();
    await assert.rejects(domainPublisher('example.com', textFetch(404, record)), /mcp-registry-auth answered HTTP 404, not 200/);
    await assert.rejects(domainPublisher('example.com', textFetch(302, '')), /answered HTTP 302/);
    await assert.rejects(domainPublisher('example.com', textFetch(200, 'x'.repeat(MAX_DOMAIN_PROOF_BYTES + 1))), /larger than 4096 bytes/);
    await assert.rejects(domainPublisher('example.com', textFetch(200, 'v=MCPv2; k=ed25519; p=AAAA')), /https:\/\/example\.com\/\.well-known\/mcp-registry-auth: domain proof, line 1: version/);
    await assert.rejects(
      domainPublisher('example.com', async () => {
        throw new Error('example.com resolves to a non-public address');
      }),
      /could not be fetched \(example\.com resolves to a non-public address\)/,
    );
    for (const bad of ['127.0.0.1', 'localhost', 'example.com/path', 'example.com:8443', 'exa_mple.com', '-example.com', '']) {
      const seen: string[] = [];
      await assert.rejects(domainPublisher(bad, textFetch(200, record, seen)), /is not a domain name/, bad);
      assert.deepEqual(seen, [], `no fetch for ${bad}`);
    }
    // Two publishers of one name cannot be in one set.
    const publisher = await domainPublisher('example.com', textFetch(200, record));
    assert.throws(() => new PublisherSet([publisher, publisher]), /already defined/);
  });
});
