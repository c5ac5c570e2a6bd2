/**
 * Signing and cookie keys: generated here, stored sealed, rotated by age.
 * A retired signing key stays published until every token it signed has
 * expired, so rotation never breaks a live token.
 */
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import type { JWK } from 'jose';
import type { KeyRecord, Store } from '../store/types.ts';
import { seal, unseal } from './secrets.ts';

export const SIGNING_ALG = 'ES256';

export interface KeyRingOptions {
  /** A signing key older than this is replaced (at start, or on a check while running), ms. */
  rotateAfterMs: number;
  /** How long a retired signing key stays published: the longest token lifetime plus clock tolerance, ms. */
  retainMs: number;
}

export interface KeyMaterial {
  /** Private JWKs for the authorization server, the active one first. */
  signing: JWK[];
  /** Public JWKs (what /jwks publishes, what the gateway verifies with). */
  publicKeys: JWK[];
  /** Cookie signing secrets, the active one first. */
  cookie: string[];
  /** Set when this start created a signing key (first start or rotation). */
  created: { kid: string; retired: string[] } | null;
}

const context = (record: Pick<KeyRecord, 'kid' | 'purpose'>): string => `mandate-key:${record.purpose}:${record.kid}`;

function newSigningKey(secret: Buffer, now: number): KeyRecord {
  const kid = randomUUID();
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg: SIGNING_ALG, use: 'sig' };
  return { kid, purpose: 'signing', alg: SIGNING_ALG, sealed: seal(secret, JSON.stringify(jwk), context({ kid, purpose: 'signing' })), createdAt: now, retiredAt: null, expiresAt: null };
}

function newCookieKey(secret: Buffer, now: number): KeyRecord {
  const kid = randomUUID();
  return { kid, purpose: 'cookie', alg: 'HS256', sealed: seal(secret, randomBytes(32).toString('base64url'), context({ kid, purpose: 'cookie' })), createdAt: now, retiredAt: null, expiresAt: null };
}

function publicOf(jwk: JWK): JWK {
  const { d: _d, ...rest } = jwk;
  return rest;
}

/** The published (public) signing keys as stored now, for verification. */
export async function publicSigningKeys(store: Store, secret: Buffer, now = Date.now()): Promise<JWK[]> {
  const records = await store.identity.listKeys('signing', now);
  return records.map((k) => publicOf(JSON.parse(unseal(secret, k.sealed, context(k))) as JWK));
}

/** Loads keys, creating or rotating as needed. Safe for several nodes: each only adds keys; all read all. */
export async function loadKeys(store: Store, secret: Buffer, options: KeyRingOptions, now = Date.now()): Promise<KeyMaterial> {
  let signing = await store.identity.listKeys('signing', now);
  const active = signing.find((k) => k.retiredAt === null);
  let created: KeyMaterial['created'] = null;
  if (!active || now - active.createdAt >= options.rotateAfterMs) {
    const fresh = newSigningKey(secret, now);
    await store.identity.putKey(fresh);
    const retired: string[] = [];
    for (const old of signing) {
      if (old.retiredAt === null) {
        await store.identity.retireKey(old.kid, now, now + options.retainMs);
        retired.push(old.kid);
      }
    }
    created = { kid: fresh.kid, retired };
    signing = await store.identity.listKeys('signing', now);
  }
  let cookies = await store.identity.listKeys('cookie', now);
  if (cookies.length === 0) {
    await store.identity.putKey(newCookieKey(secret, now));
    cookies = await store.identity.listKeys('cookie', now);
  }
  // Newest active first, then retired keys (verification only).
  const ordered = [...signing.filter((k) => k.retiredAt === null), ...signing.filter((k) => k.retiredAt !== null)];
  const privateKeys = ordered.map((k) => JSON.parse(unseal(secret, k.sealed, context(k))) as JWK);
  return {
    signing: privateKeys,
    publicKeys: privateKeys.map(publicOf),
    cookie: cookies.map((k) => unseal(secret, k.sealed, context(k))),
    created,
  };
}
