/**
 * Upstream secrets, sealed (docs/credentials.md). Envelope encryption: each
 * version's value is sealed (AES-256-GCM) under a data key of its own, and
 * the data key under the deployment secret (secret.key or
 * MANDATE_SECRET_KEY), each bound to the secret's name, scope and version so
 * a sealed value cannot be moved to another row. Values are only ever opened
 * in memory, to be handed to an upstream; they are never printed, logged,
 * recorded or exported.
 */
import { randomBytes } from 'node:crypto';
import { seal, unseal } from '../identity/secrets.ts';
import type { SecretScope, SecretVersion } from '../store/credentials.ts';
import type { Store } from '../store/types.ts';

/** The longest accepted secret value, bytes. */
export const MAX_SECRET_BYTES = 16 * 1024;

const context = (scope: SecretScope, version: number, part: 'key' | 'value'): string =>
  `mandate-secret:${part}:${scope.name}\u0000${scope.environment}\u0000${scope.tenant}\u0000${version}`;

export function sealVersion(secret: Buffer, scope: SecretScope, version: number, value: string): { sealedKey: string; sealedValue: string } {
  const dataKey = randomBytes(32);
  return { sealedKey: seal(secret, dataKey.toString('base64url'), context(scope, version, 'key')), sealedValue: seal(dataKey, value, context(scope, version, 'value')) };
}

export function openVersion(secret: Buffer, version: SecretVersion): string {
  const dataKey = Buffer.from(unseal(secret, version.sealedKey, context(version, version.version, 'key')), 'base64url');
  return unseal(dataKey, version.sealedValue, context(version, version.version, 'value'));
}

/** A value as `mandate secrets set` accepts it: not empty, bounded, one line (a trailing newline from stdin already removed). */
export function checkValue(value: string): string | null {
  if (value.length === 0) return 'the value is empty';
  if (Buffer.byteLength(value) > MAX_SECRET_BYTES) return `the value is longer than ${MAX_SECRET_BYTES} bytes`;
  if (/[\r\n\0]/.test(value)) return 'the value has a line break or NUL: a header or environment variable cannot carry it';
  return null;
}

/** Sets (or rotates to) a new version; the version it replaces stays usable for `graceMs`. Returns the new version's number. */
export async function setSecret(store: Store, secret: Buffer, scope: SecretScope, value: string, actor: string, graceMs: number, now = Date.now()): Promise<number> {
  const problem = checkValue(value);
  if (problem !== null) throw new Error(problem);
  const version = await store.credentials.nextVersion(scope);
  const sealed = sealVersion(secret, scope, version, value);
  await store.credentials.addVersion({ ...scope, version, ...sealed, createdAt: now, createdBy: actor, retiresAt: null, lastUsedAt: null }, now + graceMs);
  return version;
}
