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
import type { ConnectionKey } from '../store/connections.ts';
import type { SecretScope, SecretVersion } from '../store/credentials.ts';
import type { Store } from '../store/types.ts';

/** The longest accepted secret value, bytes. */
export const MAX_SECRET_BYTES = 16 * 1024;

const context = (scope: SecretScope, version: number, part: 'key' | 'value'): string =>
  `mandate-secret:${part}:${scope.name}\u0000${scope.environment}\u0000${scope.tenant}\u0000${version}`;

/** Envelope: `value` under a new data key, the data key under the deployment secret, each bound to its context. */
function sealEnvelope(secret: Buffer, keyContext: string, valueContext: string, value: string): { sealedKey: string; sealedValue: string } {
  const dataKey = randomBytes(32);
  return { sealedKey: seal(secret, dataKey.toString('base64url'), keyContext), sealedValue: seal(dataKey, value, valueContext) };
}

function openEnvelope(secret: Buffer, keyContext: string, valueContext: string, sealed: { sealedKey: string; sealedValue: string }): string {
  const dataKey = Buffer.from(unseal(secret, sealed.sealedKey, keyContext), 'base64url');
  return unseal(dataKey, sealed.sealedValue, valueContext);
}

export function sealVersion(secret: Buffer, scope: SecretScope, version: number, value: string): { sealedKey: string; sealedValue: string } {
  return sealEnvelope(secret, context(scope, version, 'key'), context(scope, version, 'value'), value);
}

export function openVersion(secret: Buffer, version: SecretVersion): string {
  return openEnvelope(secret, context(version, version.version, 'key'), context(version, version.version, 'value'), version);
}

const connectionContext = (key: ConnectionKey, part: 'key' | 'value'): string => `mandate-connection:${part}:${key.user}\u0000${key.server}\u0000${key.tenant}`;

/** A user's upstream tokens (JSON), sealed for their connection's row only. */
export function sealConnection(secret: Buffer, key: ConnectionKey, tokens: string): { sealedKey: string; sealedTokens: string } {
  const { sealedKey, sealedValue } = sealEnvelope(secret, connectionContext(key, 'key'), connectionContext(key, 'value'), tokens);
  return { sealedKey, sealedTokens: sealedValue };
}

export function openConnection(secret: Buffer, record: ConnectionKey & { sealedKey: string; sealedTokens: string }): string {
  return openEnvelope(secret, connectionContext(record, 'key'), connectionContext(record, 'value'), { sealedKey: record.sealedKey, sealedValue: record.sealedTokens });
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
