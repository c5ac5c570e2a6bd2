/**
 * The deployment secret and what it protects. Private keys are sealed with
 * AES-256-GCM under a 32-byte secret that never enters the store: it comes
 * from MANDATE_SECRET_KEY (base64url, shared by every node on one PostgreSQL)
 * or, for a single node, from `${dataDir}/secret.key` (created 0600).
 * Bearer values (tokens, codes, session ids, client secrets) are stored only
 * as SHA-256 hashes: they are long random strings, so a fast hash suffices.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export const SECRET_KEY_FILE = 'secret.key';
export const SECRET_KEY_ENV = 'MANDATE_SECRET_KEY';

export class SecretKeyError extends Error {
  override readonly name = 'SecretKeyError';
}

function decodeKey(text: string, origin: string): Buffer {
  const key = Buffer.from(text.trim(), 'base64url');
  if (key.length !== 32) throw new SecretKeyError(`${origin} must hold 32 bytes in base64url (43 characters); generate one with: openssl rand 32 | basenc --base64url`);
  return key;
}

/** The deployment secret as `loadSecretKey` finds it, but never created: null when there is none yet. */
export function existingSecretKey(dataDir: string, env: NodeJS.ProcessEnv = process.env): Buffer | null {
  const fromEnv = env[SECRET_KEY_ENV];
  if (fromEnv !== undefined && fromEnv !== '') return decodeKey(fromEnv, SECRET_KEY_ENV);
  const file = join(dataDir, SECRET_KEY_FILE);
  try {
    return decodeKey(readFileSync(file, 'utf8'), file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

/** The deployment secret: the environment wins, else the data directory's file, created on first use. */
export function loadSecretKey(dataDir: string, env: NodeJS.ProcessEnv = process.env): Buffer {
  const existing = existingSecretKey(dataDir, env);
  if (existing !== null) return existing;
  const file = join(dataDir, SECRET_KEY_FILE);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const key = randomBytes(32);
  let fd: number;
  try {
    fd = openSync(file, 'wx', 0o600);
  } catch (error) {
    // Another process created it first: use theirs.
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return decodeKey(readFileSync(file, 'utf8'), file);
    throw error;
  }
  try {
    writeSync(fd, `${key.toString('base64url')}\n`);
  } finally {
    closeSync(fd);
  }
  return key;
}

const SEALED_PREFIX = 'v1.';

/** Encrypts with AES-256-GCM; `context` is bound as additional data (a sealed value cannot be moved to another row). */
export function seal(key: Buffer, plaintext: string, context: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(context));
  const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return SEALED_PREFIX + Buffer.concat([iv, body, cipher.getAuthTag()]).toString('base64url');
}

export function unseal(key: Buffer, sealed: string, context: string): string {
  if (!sealed.startsWith(SEALED_PREFIX)) throw new SecretKeyError('sealed value has an unknown format');
  const raw = Buffer.from(sealed.slice(SEALED_PREFIX.length), 'base64url');
  if (raw.length < 12 + 16) throw new SecretKeyError('sealed value is truncated');
  const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
  decipher.setAAD(Buffer.from(context));
  decipher.setAuthTag(raw.subarray(raw.length - 16));
  try {
    return Buffer.concat([decipher.update(raw.subarray(12, raw.length - 16)), decipher.final()]).toString('utf8');
  } catch {
    throw new SecretKeyError(`cannot open a sealed key: it was sealed with a different secret (every node must share the same ${SECRET_KEY_ENV})`);
  }
}

/** `sha256:<hex>` of a bearer value: how tokens, codes and secrets are kept. */
export function hashSecret(value: string): string {
  return `sha256:${createHash('sha256').update(value).digest('hex')}`;
}

/** Compares in time independent of where the strings differ. */
export function constantEquals(a: string, b: string): boolean {
  const left = createHash('sha256').update(a).digest();
  const right = createHash('sha256').update(b).digest();
  return timingSafeEqual(left, right) && a.length === b.length;
}

/** A random bearer value with 256 bits of entropy. */
export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}
