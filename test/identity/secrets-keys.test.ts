/**
 * The deployment secret and the key ring: sealing (AES-256-GCM bound to a
 * context), the secret's origin (environment over a 0600 file created on
 * first use), bearer hashing, and signing/cookie keys created, reused,
 * rotated and retired, never stored in the clear.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { loadKeys, publicSigningKeys } from '../../src/identity/keys.ts';
import { constantEquals, hashSecret, loadSecretKey, seal, SECRET_KEY_ENV, SECRET_KEY_FILE, SecretKeyError, unseal } from '../../src/identity/secrets.ts';
import { openStore } from '../../src/store/open.ts';
import type { Store } from '../../src/store/types.ts';
import { tempDir } from '../helpers/process.ts';

const dirs: string[] = [];
function freshDir(prefix: string): string {
  const dir = tempDir(prefix);
  dirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('seal / unseal', () => {
  const key = randomBytes(32);

  it('round-trips, including non-ASCII text', () => {
    for (const text of ['', 'hello', '{"d":"secret"}', 'ünïcödé ✓ 🔑', 'x'.repeat(10_000)]) {
      const sealed = seal(key, text, 'ctx');
      assert.match(sealed, /^v1\.[A-Za-z0-9_-]+$/);
      assert.equal(unseal(key, sealed, 'ctx'), text);
    }
  });

  it('does not leak the plaintext and uses a fresh IV each time', () => {
    const a = seal(key, 'plain secret text', 'ctx');
    const b = seal(key, 'plain secret text', 'ctx');
    assert.notEqual(a, b);
    assert.ok(!a.includes('plain'));
    assert.ok(!Buffer.from(a.slice(3), 'base64url').toString('latin1').includes('plain secret'));
  });

  it('another key cannot open it', () => {
    const sealed = seal(key, 'text', 'ctx');
    assert.throws(() => unseal(randomBytes(32), sealed, 'ctx'), SecretKeyError);
  });

  it('another context cannot open it (a sealed value cannot move to another row)', () => {
    const sealed = seal(key, 'text', 'mandate-key:signing:a');
    assert.throws(() => unseal(key, sealed, 'mandate-key:signing:b'), SecretKeyError);
  });

  it('tampering is detected', () => {
    const sealed = seal(key, 'some text to protect', 'ctx');
    const raw = Buffer.from(sealed.slice(3), 'base64url');
    for (const index of [0, 12, raw.length - 17, raw.length - 1]) {
      const copy = Buffer.from(raw);
      copy[index] = copy[index]! ^ 0x01;
      assert.throws(() => unseal(key, `v1.${copy.toString('base64url')}`, 'ctx'), SecretKeyError, `byte ${index}`);
    }
  });

  it('an unknown format or a truncated value is refused', () => {
    const sealed = seal(key, 'text', 'ctx');
    assert.throws(() => unseal(key, sealed.replace(/^v1\./, 'v2.'), 'ctx'), /unknown format/);
    assert.throws(() => unseal(key, 'v1.AAAA', 'ctx'), /truncated/);
  });
});

describe('loadSecretKey', () => {
  it('creates secret.key (0600) on first use and returns the same key next time', () => {
    const dir = path.join(freshDir('mandate-secret-'), 'nested', 'data');
    const first = loadSecretKey(dir, {});
    assert.equal(first.length, 32);
    const file = path.join(dir, SECRET_KEY_FILE);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(statSync(dir).mode & 0o077, 0, 'the data directory is not open to others');
    assert.equal(readFileSync(file, 'utf8').trim(), first.toString('base64url'));
    const second = loadSecretKey(dir, {});
    assert.deepEqual(second, first);
  });

  it('two data directories get different keys', () => {
    assert.notDeepEqual(loadSecretKey(freshDir('mandate-secret-'), {}), loadSecretKey(freshDir('mandate-secret-'), {}));
  });

  it('MANDATE_SECRET_KEY wins over the file', () => {
    const dir = freshDir('mandate-secret-');
    const fromFile = loadSecretKey(dir, {});
    const wanted = randomBytes(32);
    const got = loadSecretKey(dir, { [SECRET_KEY_ENV]: `${wanted.toString('base64url')}\n` });
    assert.deepEqual(got, wanted);
    assert.notDeepEqual(got, fromFile);
    // The file is untouched.
    assert.deepEqual(loadSecretKey(dir, {}), fromFile);
  });

  it('the environment alone suffices (no file is created)', () => {
    const dir = freshDir('mandate-secret-');
    const wanted = randomBytes(32);
    assert.deepEqual(loadSecretKey(dir, { MANDATE_SECRET_KEY: wanted.toString('base64url') }), wanted);
    assert.throws(() => statSync(path.join(dir, SECRET_KEY_FILE)), /ENOENT/);
  });

  it('an empty MANDATE_SECRET_KEY counts as unset', () => {
    const dir = freshDir('mandate-secret-');
    const fromFile = loadSecretKey(dir, {});
    assert.deepEqual(loadSecretKey(dir, { MANDATE_SECRET_KEY: '' }), fromFile);
  });

  it('a wrong-length MANDATE_SECRET_KEY is refused, naming the variable', () => {
    const dir = freshDir('mandate-secret-');
    for (const value of [randomBytes(16).toString('base64url'), randomBytes(33).toString('base64url'), 'short']) {
      assert.throws(
        () => loadSecretKey(dir, { MANDATE_SECRET_KEY: value }),
        (error: unknown) => error instanceof SecretKeyError && /MANDATE_SECRET_KEY/.test(error.message) && /32 bytes/.test(error.message),
      );
    }
  });

  it('a damaged secret.key is refused, naming the file (not silently replaced)', () => {
    const dir = freshDir('mandate-secret-');
    const file = path.join(dir, SECRET_KEY_FILE);
    writeFileSync(file, 'too-short\n', { mode: 0o600 });
    assert.throws(() => loadSecretKey(dir, {}), (error: unknown) => error instanceof SecretKeyError && error.message.includes(file));
    assert.equal(readFileSync(file, 'utf8'), 'too-short\n');
  });
});

describe('hashSecret / constantEquals', () => {
  it('hashSecret is sha256:<64 hex> of the value', () => {
    const hashed = hashSecret('token-value');
    assert.match(hashed, /^sha256:[0-9a-f]{64}$/);
    assert.equal(hashed, `sha256:${createHash('sha256').update('token-value').digest('hex')}`);
    assert.notEqual(hashSecret('token-value'), hashSecret('token-valuf'));
    assert.equal(hashSecret('x'), hashSecret('x'));
  });

  it('constantEquals compares exactly', () => {
    assert.equal(constantEquals('abc', 'abc'), true);
    assert.equal(constantEquals('', ''), true);
    assert.equal(constantEquals('abc', 'abd'), false);
    assert.equal(constantEquals('abc', 'abcd'), false);
    assert.equal(constantEquals('abc', ''), false);
    assert.equal(constantEquals('ABC', 'abc'), false);
  });
});

describe('loadKeys', () => {
  const DAY = 86_400_000;
  let store: Store;
  const secret = randomBytes(32);

  after(async () => {
    await store?.close();
  });

  it('creates, reuses, rotates and retires keys; never stores a private key in the clear', async () => {
    const dir = freshDir('mandate-keys-');
    store = await openStore({ dataDir: dir });
    await store.migrate();
    const t0 = Date.now();

    // First start: one signing key, one cookie key.
    const first = await loadKeys(store, secret, { rotateAfterMs: 30 * DAY, retainMs: DAY }, t0);
    assert.ok(first.created, 'the first start creates a signing key');
    assert.deepEqual(first.created.retired, []);
    assert.equal(first.signing.length, 1);
    assert.equal(first.publicKeys.length, 1);
    assert.equal(first.cookie.length, 1);
    const firstKey = first.signing[0]!;
    assert.equal(first.created.kid, firstKey.kid);
    assert.equal(firstKey.kty, 'EC');
    assert.equal(firstKey.crv, 'P-256');
    assert.equal(firstKey.alg, 'ES256');
    assert.equal(firstKey.use, 'sig');
    assert.equal(typeof firstKey.d, 'string', 'the signing set holds the private key');
    assert.equal(first.publicKeys[0]!.d, undefined, 'the public set has no private part');
    assert.equal(first.publicKeys[0]!.kid, firstKey.kid);
    assert.ok(first.cookie[0]!.length >= 43);

    // Raw rows: sealed, and the private scalar does not appear in the clear.
    const rows = await store.identity.listKeys('signing', t0);
    assert.equal(rows.length, 1);
    assert.match(rows[0]!.sealed, /^v1\./);
    assert.ok(!rows[0]!.sealed.includes(firstKey.d!), 'the private key is stored in the clear');
    assert.ok(!rows[0]!.sealed.includes('"d"'));
    assert.ok(!Buffer.from(rows[0]!.sealed.slice(3), 'base64url').toString('latin1').includes(firstKey.d!));
    const cookieRows = await store.identity.listKeys('cookie', t0);
    assert.equal(cookieRows.length, 1);
    assert.ok(!cookieRows[0]!.sealed.includes(first.cookie[0]!), 'the cookie key is stored in the clear');

    // Second start, within the rotation age: the same keys, nothing created.
    const second = await loadKeys(store, secret, { rotateAfterMs: 30 * DAY, retainMs: DAY }, t0 + 1000);
    assert.equal(second.created, null);
    assert.deepEqual(second.signing, first.signing);
    assert.deepEqual(second.cookie, first.cookie);

    // Another secret cannot open them.
    await assert.rejects(loadKeys(store, randomBytes(32), { rotateAfterMs: 30 * DAY, retainMs: DAY }, t0 + 1000), SecretKeyError);

    // Rotation: a new active key first, the old one retired but still published.
    const t1 = t0 + 2000;
    const rotated = await loadKeys(store, secret, { rotateAfterMs: 0, retainMs: DAY }, t1);
    assert.ok(rotated.created);
    assert.notEqual(rotated.created.kid, firstKey.kid);
    assert.deepEqual(rotated.created.retired, [firstKey.kid]);
    assert.equal(rotated.signing[0]!.kid, rotated.created.kid, 'the active key comes first');
    assert.deepEqual(rotated.signing.map((k) => k.kid), [rotated.created.kid, firstKey.kid]);
    assert.deepEqual(new Set(rotated.publicKeys.map((k) => k.kid)), new Set([rotated.created.kid, firstKey.kid]));
    assert.ok(rotated.publicKeys.every((k) => k.d === undefined));
    assert.deepEqual(rotated.cookie, first.cookie, 'the cookie key is not rotated with the signing key');
    const retiredRow = (await store.identity.listKeys('signing', t1)).find((k) => k.kid === firstKey.kid);
    assert.equal(retiredRow?.retiredAt, t1);
    assert.equal(retiredRow?.expiresAt, t1 + DAY);

    // What the verifier reloads: the same public keys.
    const published = await publicSigningKeys(store, secret, t1);
    assert.deepEqual(new Set(published.map((k) => k.kid)), new Set([rotated.created.kid, firstKey.kid]));
    assert.ok(published.every((k) => k.d === undefined));

    // Within retainMs the old key is still there; after it, gone.
    const later = await loadKeys(store, secret, { rotateAfterMs: 30 * DAY, retainMs: DAY }, t1 + DAY - 1);
    assert.equal(later.created, null);
    assert.ok(later.publicKeys.some((k) => k.kid === firstKey.kid));
    const afterRetain = await loadKeys(store, secret, { rotateAfterMs: 30 * DAY, retainMs: DAY }, t1 + DAY + 1);
    assert.equal(afterRetain.created, null);
    assert.deepEqual(afterRetain.publicKeys.map((k) => k.kid), [rotated.created.kid]);
    assert.deepEqual((await publicSigningKeys(store, secret, t1 + DAY + 1)).map((k) => k.kid), [rotated.created.kid]);

    // Rotation by age, without rotateAfterMs: 0.
    const aged = await loadKeys(store, secret, { rotateAfterMs: 30 * DAY, retainMs: DAY }, t1 + 30 * DAY);
    assert.ok(aged.created);
    assert.deepEqual(aged.created.retired, [rotated.created.kid]);
    assert.equal(aged.signing[0]!.kid, aged.created.kid);
  });
});
