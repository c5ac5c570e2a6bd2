/**
 * Publishers: who may sign catalog entries, with which public keys, for
 * which server names (docs/catalog.md, "publishers and signed entries").
 *
 * A publisher comes from the configuration (`catalog.publishers`: a JWK Set
 * in a file or at an https URL, and the name prefixes it may sign), or from a
 * domain proof: the key a domain serves at `/.well-known/mcp-registry-auth`,
 * the official registry's HTTP method, which binds the domain's reverse-DNS
 * namespace (`example.com` → `com.example/`).
 *
 * Only public signature keys are accepted: Ed25519 and ECDSA on P-256, P-384
 * and P-521. A private key in a JWK Set is refused (its `d` is never read
 * into a key), as is any other key type; errors name the publisher and file.
 */
import { readLimited } from '../http/bounded.ts';
import { ECDH } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { base64url, calculateJwkThumbprint, importJWK, type CryptoKey, type JWK } from 'jose';
import type { guardedFetch } from '../identity/ssrf.ts';

/** A fetch that applies the SSRF guard (src/identity/ssrf.ts): the only way publisher material is fetched. */
export type GuardedFetch = ReturnType<typeof guardedFetch>;

/** The JWS algorithms a catalog signature may use; never `none`, never a shared-secret (HS*) or RSA algorithm. */
export const SIGNATURE_ALGORITHMS = ['EdDSA', 'Ed25519', 'ES256', 'ES384', 'ES512'] as const;
export type SignatureAlgorithm = (typeof SIGNATURE_ALGORITHMS)[number];

/** One public key of a publisher. */
export interface PublisherKey {
  kid?: string;
  /** The JWS algorithms this key verifies: `EdDSA` and `Ed25519` for an Ed25519 key, the one ES* of its curve otherwise. */
  algorithms: readonly SignatureAlgorithm[];
  /** `OKP/Ed25519`, `EC/P-256`, …: for messages. */
  type: string;
  key: CryptoKey;
}

/** A publisher as the set holds it. */
export interface Publisher {
  name: string;
  /** Name prefixes (see `prefixMatches`). */
  prefixes: readonly string[];
  keys: readonly PublisherKey[];
  /** Where its keys came from (a file path, a URL), for messages. */
  source: string;
}

/** What `PublisherSet.publishers` shows of a publisher. */
export interface PublisherSummary {
  name: string;
  prefixes: readonly string[];
  keyCount: number;
  source: string;
}

/** A publisher as configured (`catalog.publishers[]`). */
export interface PublisherConfig {
  name: string;
  /** A JWK Set file (relative to `baseDir`) or an https URL. */
  jwks: string;
  prefixes: string[];
}

export interface LoadPublishersOptions {
  /** Relative JWK Set paths are resolved against this directory (the one holding mandate.yaml). */
  baseDir: string;
  /** Needed for a JWK Set given as an https URL; without it such a publisher is refused. */
  fetch?: GuardedFetch;
}

/** A publisher could not be loaded: a JWK Set, a key, a prefix or a domain proof was refused. */
export class PublisherError extends Error {
  override readonly name = 'PublisherError';
}

/** A JWK Set file or answer larger than this is refused. */
export const MAX_JWKS_BYTES = 256 * 1024;
/** A publisher with more keys than this is refused. */
export const MAX_KEYS_PER_PUBLISHER = 100;
/** The official registry reads at most this many bytes of a domain proof; so does Mandate. */
export const MAX_DOMAIN_PROOF_BYTES = 4096;

// ---------------------------------------------------------------------------
// Server names and prefixes

/** A registry namespace: reverse-DNS labels of letters, digits and hyphens, joined by dots. */
const NAMESPACE = '[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)*';
/** A registry server name: `namespace/name`, exactly one slash (the registry's pattern). */
const SERVER_NAME = new RegExp(`^(${NAMESPACE})/([A-Za-z0-9._-]+)$`);
const PREFIX = new RegExp(`^${NAMESPACE}(?:/(?:[A-Za-z0-9._-]+)?)?$`);

/**
 * Checks a configured prefix; returns an error message, or null when it is valid.
 * Valid forms: `io.example/` (every name in that namespace), `io.example` (that
 * namespace and its sub-namespaces `io.example.NAME…`), `io.example/weather`
 * (that one server name).
 */
export function prefixProblem(prefix: string): string | null {
  if (/\/\*$|\.\*$/.test(prefix)) {
    return `prefix "${prefix}": write "${prefix.replace(/[/.]\*$/, '/')}" (a trailing / already means every name in the namespace; wildcards are not used)`;
  }
  if (!PREFIX.test(prefix)) {
    return `prefix "${prefix}" is not a registry namespace ("io.example/", "io.example") or server name ("io.example/weather")`;
  }
  return null;
}

/**
 * Whether `prefix` covers the server name `serverName`. Matching is by whole
 * name parts, never by raw string prefix, and case-sensitive (a name in other
 * case is a different name, and nobody may publish it unless configured):
 * - `io.example/` matches `io.example/ANY` only (not `io.examples/x`, not `io.example.api/x`);
 * - `io.example` matches `io.example/ANY` and the sub-namespaces `io.example.api/ANY`
 *   (what the official registry grants a DNS-proven domain), never `io.examples/x`;
 * - `io.example/weather` matches that name only (not `io.example/weather-2`).
 * A name that is not `namespace/name` matches nothing.
 */
export function prefixMatches(prefix: string, serverName: string): boolean {
  const match = SERVER_NAME.exec(serverName);
  if (!match || prefixProblem(prefix) !== null) return false;
  const namespace = match[1]!;
  if (prefix.endsWith('/')) return namespace === prefix.slice(0, -1);
  if (prefix.includes('/')) return serverName === prefix;
  return namespace === prefix || namespace.startsWith(`${prefix}.`);
}

/** True when `serverName` has the registry's `namespace/name` form. */
export function isServerName(serverName: string): boolean {
  return SERVER_NAME.test(serverName);
}

// ---------------------------------------------------------------------------
// The set

/** The publishers in force: their keys and what names each may sign. */
export class PublisherSet {
  readonly #byName = new Map<string, Publisher>();

  constructor(publishers: Iterable<Publisher> = []) {
    for (const publisher of publishers) this.add(publisher);
  }

  /** Adds a publisher (a configured one, or one from `domainPublisher`). A name already in the set, or an invalid prefix, is refused. */
  add(publisher: Publisher): this {
    if (this.#byName.has(publisher.name)) throw new PublisherError(`publisher "${publisher.name}" is already defined`);
    if (publisher.prefixes.length === 0) throw new PublisherError(`publisher "${publisher.name}" has no name prefixes`);
    for (const prefix of publisher.prefixes) {
      const problem = prefixProblem(prefix);
      if (problem) throw new PublisherError(`publisher "${publisher.name}": ${problem}`);
    }
    this.#byName.set(publisher.name, { ...publisher, prefixes: [...publisher.prefixes], keys: [...publisher.keys] });
    return this;
  }

  /** Name, prefixes and key count of every publisher, in the order added. */
  get publishers(): PublisherSummary[] {
    return [...this.#byName.values()].map((p) => ({ name: p.name, prefixes: [...p.prefixes], keyCount: p.keys.length, source: p.source }));
  }

  get(name: string): Publisher | undefined {
    return this.#byName.get(name);
  }

  /** Whether the publisher `publisherName` may sign the server `serverName` (false for an unknown publisher). */
  mayPublish(publisherName: string, serverName: string): boolean {
    const publisher = this.#byName.get(publisherName);
    return !!publisher && publisher.prefixes.some((prefix) => prefixMatches(prefix, serverName));
  }

  /** The publishers that may sign `serverName`. */
  allowedFor(serverName: string): Publisher[] {
    return [...this.#byName.values()].filter((p) => this.mayPublish(p.name, serverName));
  }

  /** Every publisher, allowed or not (for telling a caller whose key it was). */
  all(): Publisher[] {
    return [...this.#byName.values()];
  }
}

// ---------------------------------------------------------------------------
// JWK Sets

const EC_CURVES: Record<string, { alg: SignatureAlgorithm; bytes: number }> = {
  'P-256': { alg: 'ES256', bytes: 32 },
  'P-384': { alg: 'ES384', bytes: 48 },
  'P-521': { alg: 'ES512', bytes: 66 },
};

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

function coordinate(value: unknown, bytes: number): boolean {
  if (typeof value !== 'string' || !/^[A-Za-z0-9_-]+$/.test(value)) return false;
  try {
    return base64url.decode(value).length === bytes;
  } catch {
    return false;
  }
}

/**
 * Turns one JWK of a publisher's set into a key. `where` names the publisher,
 * the file and the key (index and kid) for every refusal.
 */
async function importPublicJwk(jwk: unknown, where: string): Promise<PublisherKey> {
  if (!isObject(jwk)) throw new PublisherError(`${where} is not a JSON object`);
  if ('d' in jwk) {
    throw new PublisherError(`${where} is a private key (it has "d"): a publisher's JWK Set holds public keys only; publish the public part and keep the private key with the signer`);
  }
  if (jwk.kty === 'oct' || 'k' in jwk) throw new PublisherError(`${where} is a shared secret (kty "oct"): only Ed25519 and ECDSA public keys are accepted`);
  if (jwk.kid !== undefined && (typeof jwk.kid !== 'string' || jwk.kid.length === 0 || jwk.kid.length > 256)) {
    throw new PublisherError(`${where}: "kid" must be a non-empty string of at most 256 characters`);
  }
  if (jwk.use !== undefined && jwk.use !== 'sig') throw new PublisherError(`${where}: "use" is "${String(jwk.use)}", a signature key must have "sig" or none`);
  if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes('verify'))) {
    throw new PublisherError(`${where}: "key_ops" does not include "verify"`);
  }
  let algorithms: SignatureAlgorithm[];
  let minimal: JWK;
  let type: string;
  if (jwk.kty === 'OKP') {
    if (jwk.crv !== 'Ed25519') throw new PublisherError(`${where}: kty "OKP" with crv "${String(jwk.crv)}" is not supported (only Ed25519)`);
    if (!coordinate(jwk.x, 32)) throw new PublisherError(`${where}: "x" is not a base64url Ed25519 public key (32 bytes)`);
    algorithms = ['EdDSA', 'Ed25519'];
    minimal = { kty: 'OKP', crv: 'Ed25519', x: jwk.x as string };
    type = 'OKP/Ed25519';
  } else if (jwk.kty === 'EC') {
    const curve = typeof jwk.crv === 'string' ? EC_CURVES[jwk.crv] : undefined;
    if (!curve) throw new PublisherError(`${where}: kty "EC" with crv "${String(jwk.crv)}" is not supported (P-256, P-384 or P-521)`);
    if (!coordinate(jwk.x, curve.bytes) || !coordinate(jwk.y, curve.bytes)) {
      throw new PublisherError(`${where}: "x" and "y" must be base64url coordinates of ${curve.bytes} bytes for ${String(jwk.crv)}`);
    }
    algorithms = [curve.alg];
    minimal = { kty: 'EC', crv: jwk.crv as string, x: jwk.x as string, y: jwk.y as string };
    type = `EC/${String(jwk.crv)}`;
  } else {
    throw new PublisherError(`${where}: kty "${String(jwk.kty)}" is not supported (only OKP/Ed25519 and EC P-256, P-384, P-521 public keys)`);
  }
  if (jwk.alg !== undefined && !(algorithms as readonly unknown[]).includes(jwk.alg)) {
    throw new PublisherError(`${where}: "alg" is "${String(jwk.alg)}", which does not fit a ${type} key (${algorithms.join(' or ')})`);
  }
  let key: CryptoKey;
  try {
    // Only the public members are passed on: nothing else of the JWK is ever imported.
    key = (await importJWK(minimal, algorithms[0])) as CryptoKey;
  } catch (error) {
    throw new PublisherError(`${where}: not a valid ${type} public key (${(error as Error).message})`);
  }
  return { ...(typeof jwk.kid === 'string' ? { kid: jwk.kid } : {}), algorithms, type, key };
}

/** Parses a JWK Set's text into keys; `label` names the publisher and source. */
export async function parseJwks(text: string, label: string): Promise<PublisherKey[]> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new PublisherError(`${label}: not JSON (${(error as Error).message})`);
  }
  if (!isObject(parsed) || !Array.isArray(parsed.keys)) throw new PublisherError(`${label}: not a JWK Set (an object with a "keys" array)`);
  if (parsed.keys.length === 0) throw new PublisherError(`${label}: the JWK Set has no keys`);
  if (parsed.keys.length > MAX_KEYS_PER_PUBLISHER) throw new PublisherError(`${label}: ${parsed.keys.length} keys, at most ${MAX_KEYS_PER_PUBLISHER}`);
  const keys: PublisherKey[] = [];
  const kids = new Set<string>();
  for (const [index, jwk] of parsed.keys.entries()) {
    const kid = isObject(jwk) && typeof jwk.kid === 'string' ? jwk.kid : undefined;
    const key = await importPublicJwk(jwk, `${label}: key ${index}${kid === undefined ? ' (no kid)' : ` (kid "${kid}")`}`);
    if (key.kid !== undefined) {
      if (kids.has(key.kid)) throw new PublisherError(`${label}: key ${index}: kid "${key.kid}" is used by another key of the set`);
      kids.add(key.kid);
    }
    keys.push(key);
  }
  return keys;
}

/** Reads a response body, refusing one larger than `limit` bytes without reading past it. */
export async function readBounded(response: Response, limit: number, what: string): Promise<string> {
  const body = await readLimited(response, limit, () => new PublisherError(`${what}: the answer is larger than ${limit} bytes`));
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw new PublisherError(`${what}: the answer is not UTF-8 text`);
  }
}

async function readJwksSource(config: PublisherConfig, options: LoadPublishersOptions): Promise<{ text: string; source: string }> {
  const where = `publisher "${config.name}"`;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(config.jwks)) {
    let url: URL;
    try {
      url = new URL(config.jwks);
    } catch {
      throw new PublisherError(`${where}: jwks "${config.jwks}" is not a valid URL`);
    }
    if (url.protocol !== 'https:') throw new PublisherError(`${where}: jwks ${config.jwks}: only https URLs (or a file) are accepted`);
    if (!options.fetch) throw new PublisherError(`${where}: jwks ${config.jwks} is a URL, but no fetch is available to load it here`);
    const source = url.href;
    let response: Response;
    try {
      response = await options.fetch(source, { headers: { accept: 'application/jwk-set+json, application/json' }, redirect: 'manual' });
    } catch (error) {
      throw new PublisherError(`${where}: jwks ${source} could not be fetched (${(error as Error).message})`);
    }
    if (response.status !== 200) {
      await response.body?.cancel().catch(() => {});
      throw new PublisherError(`${where}: jwks ${source} answered HTTP ${response.status}, not 200`);
    }
    return { text: await readBounded(response, MAX_JWKS_BYTES, `${where}: jwks ${source}`), source };
  }
  const file = path.resolve(options.baseDir, config.jwks);
  try {
    const info = await stat(file);
    if (!info.isFile()) throw new PublisherError(`${where}: jwks file ${file} is not a file`);
    if (info.size > MAX_JWKS_BYTES) throw new PublisherError(`${where}: jwks file ${file} is larger than ${MAX_JWKS_BYTES} bytes`);
    return { text: await readFile(file, 'utf8'), source: file };
  } catch (error) {
    if (error instanceof PublisherError) throw error;
    throw new PublisherError(`${where}: jwks file ${file} could not be read (${(error as Error).message})`);
  }
}

/** Loads the configured publishers: each one's JWK Set (file or https URL) and prefixes. The first refusal stops the load. */
export async function loadPublishers(configs: readonly PublisherConfig[], options: LoadPublishersOptions): Promise<PublisherSet> {
  const set = new PublisherSet();
  for (const config of configs) {
    if (set.get(config.name)) throw new PublisherError(`publisher "${config.name}" is defined twice`);
    if (config.prefixes.length === 0) throw new PublisherError(`publisher "${config.name}" has no name prefixes`);
    for (const prefix of config.prefixes) {
      const problem = prefixProblem(prefix);
      if (problem) throw new PublisherError(`publisher "${config.name}": ${problem}`);
    }
    const { text, source } = await readJwksSource(config, options);
    const keys = await parseJwks(text, `publisher "${config.name}" (${source})`);
    set.add({ name: config.name, prefixes: [...config.prefixes], keys, source });
  }
  return set;
}

// ---------------------------------------------------------------------------
// Domain proof (the official registry's HTTP method)

export const DOMAIN_PROOF_ALGORITHMS = ['ed25519', 'ecdsap384'] as const;
export type DomainProofAlgorithm = (typeof DOMAIN_PROOF_ALGORITHMS)[number];

/** One key of a domain proof: the raw public key as published (Ed25519: 32 bytes; P-384: the 49-byte compressed point). */
export interface DomainProofKey {
  algorithm: DomainProofAlgorithm;
  publicKey: Uint8Array;
}

/** One record: `v=MCPv1; k=ALGORITHM; p=BASE64` (standard base64 with padding; spaces allowed after each `;`). */
const PROOF_RECORD = /^v=([^;\s]*);[ \t]*k=([^;\s]*);[ \t]*p=([^;\s]*)$/;
const STANDARD_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const MAX_PROOF_RECORDS = 8;

/**
 * Parses a domain proof: one record per line, `v=MCPv1; k=ed25519; p=BASE64KEY`
 * (or `k=ecdsap384` with the base64 of a compressed P-384 point). The official
 * registry reads one record from the HTTP file; Mandate accepts up to eight
 * lines so that a key can be rotated without a gap. Blank lines and the
 * whitespace around a line are ignored; anything else that is not a valid
 * record is refused (no skipping of unreadable lines).
 */
export function parseDomainProof(text: string): DomainProofKey[] {
  if (typeof text !== 'string') throw new PublisherError('domain proof: not text');
  if (Buffer.byteLength(text, 'utf8') > MAX_DOMAIN_PROOF_BYTES) throw new PublisherError(`domain proof: longer than ${MAX_DOMAIN_PROOF_BYTES} bytes`);
  const lines = text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line.length > 0);
  if (lines.length === 0) throw new PublisherError('domain proof: empty (expected "v=MCPv1; k=ed25519; p=BASE64KEY")');
  if (lines.length > MAX_PROOF_RECORDS) throw new PublisherError(`domain proof: ${lines.length} records, at most ${MAX_PROOF_RECORDS}`);
  return lines.map((line, index) => {
    const where = `domain proof, line ${index + 1}`;
    const match = PROOF_RECORD.exec(line);
    if (!match) throw new PublisherError(`${where}: not a proof record (expected "v=MCPv1; k=ed25519; p=BASE64KEY")`);
    const [, version, algorithm, encoded] = match as unknown as [string, string, string, string];
    if (version !== 'MCPv1') throw new PublisherError(`${where}: version "${version}" is not supported (only MCPv1)`);
    if (!(DOMAIN_PROOF_ALGORITHMS as readonly string[]).includes(algorithm)) {
      throw new PublisherError(`${where}: key type "${algorithm}" is not supported (${DOMAIN_PROOF_ALGORITHMS.join(' or ')})`);
    }
    if (encoded.length === 0 || !STANDARD_BASE64.test(encoded)) throw new PublisherError(`${where}: the key is not standard base64`);
    const publicKey = new Uint8Array(Buffer.from(encoded, 'base64'));
    if (algorithm === 'ed25519') {
      if (publicKey.length !== 32) throw new PublisherError(`${where}: an ed25519 key has 32 bytes, this one ${publicKey.length}`);
    } else if (publicKey.length !== 49 || (publicKey[0] !== 0x02 && publicKey[0] !== 0x03)) {
      throw new PublisherError(`${where}: an ecdsap384 key is a compressed P-384 point (49 bytes starting with 02 or 03)`);
    }
    return { algorithm: algorithm as DomainProofAlgorithm, publicKey };
  });
}

/** The publisher key for one domain-proof key; its kid is the key's RFC 7638 thumbprint. */
export async function domainProofKey(proof: DomainProofKey): Promise<PublisherKey> {
  let jwk: JWK;
  let algorithms: SignatureAlgorithm[];
  let type: string;
  if (proof.algorithm === 'ed25519') {
    jwk = { kty: 'OKP', crv: 'Ed25519', x: base64url.encode(proof.publicKey) };
    algorithms = ['EdDSA', 'Ed25519'];
    type = 'OKP/Ed25519';
  } else {
    let point: Buffer;
    try {
      // Decompression (and the on-curve check) by the platform: x and y of the uncompressed point.
      point = ECDH.convertKey(Buffer.from(proof.publicKey), 'secp384r1', undefined, undefined, 'uncompressed') as Buffer;
    } catch (error) {
      throw new PublisherError(`domain proof: not a P-384 point (${(error as Error).message})`);
    }
    jwk = { kty: 'EC', crv: 'P-384', x: base64url.encode(point.subarray(1, 49)), y: base64url.encode(point.subarray(49, 97)) };
    algorithms = ['ES384'];
    type = 'EC/P-384';
  }
  let key: CryptoKey;
  try {
    key = (await importJWK(jwk, algorithms[0])) as CryptoKey;
  } catch (error) {
    throw new PublisherError(`domain proof: not a valid ${type} public key (${(error as Error).message})`);
  }
  return { kid: await calculateJwkThumbprint(jwk, 'sha256'), algorithms, type, key };
}

const DOMAIN_LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
const DOMAIN = new RegExp(`^${DOMAIN_LABEL}(?:\\.${DOMAIN_LABEL})+$`);

/** A domain name as the proof needs it: lowercase, at least two labels, no IP address, no port. Returns it normalized. */
export function normalizeDomain(domain: string): string {
  const normalized = domain.trim().toLowerCase().replace(/\.$/, '');
  if (normalized.length > 253 || !DOMAIN.test(normalized) || /^\d+$/.test(normalized.slice(normalized.lastIndexOf('.') + 1))) {
    throw new PublisherError(`domain "${domain}" is not a domain name (letters, digits and hyphens in dot-separated labels; no IP address, port or path)`);
  }
  return normalized;
}

/** `example.com` → `com.example` (the registry's reverse-DNS namespace of a domain). */
export function reverseDomain(domain: string): string {
  return normalizeDomain(domain).split('.').reverse().join('.');
}

/**
 * A publisher proven by a domain: fetches `https://DOMAIN/.well-known/mcp-registry-auth`
 * through the guarded fetch (no redirect is followed: anything but 200 is
 * refused; at most 4096 bytes), parses its keys, and binds the domain's
 * namespace only: `example.com` may sign `com.example/…`, not
 * `com.example.api/…` (as the official registry's HTTP method: serving a file
 * on a host does not prove control of its subdomains; `api.example.com`
 * proves `com.example.api/` by its own file). The publisher is named
 * `domain:DOMAIN`; each key's kid is its RFC 7638 thumbprint.
 */
export async function domainPublisher(domain: string, fetch: GuardedFetch): Promise<Publisher> {
  const host = normalizeDomain(domain);
  const url = `https://${host}/.well-known/mcp-registry-auth`;
  let response: Response;
  try {
    response = await fetch(url, { headers: { accept: 'text/plain' }, redirect: 'manual' });
  } catch (error) {
    throw new PublisherError(`domain proof ${url} could not be fetched (${(error as Error).message})`);
  }
  if (response.status !== 200) {
    await response.body?.cancel().catch(() => {});
    throw new PublisherError(`domain proof ${url} answered HTTP ${response.status}, not 200`);
  }
  const text = await readBounded(response, MAX_DOMAIN_PROOF_BYTES, `domain proof ${url}`);
  let proofs: DomainProofKey[];
  try {
    proofs = parseDomainProof(text);
  } catch (error) {
    throw new PublisherError(`${url}: ${(error as Error).message}`);
  }
  const keys: PublisherKey[] = [];
  for (const proof of proofs) keys.push(await domainProofKey(proof));
  return { name: `domain:${host}`, prefixes: [`${reverseDomain(host)}/`], keys, source: url };
}
