/**
 * Publisher signatures on catalog entries (docs/catalog.md, "publishers and signed entries"): a
 * compact JWS with a detached payload (`header..signature`) over the RFC 8785
 * canonical form of the server.json as the publisher submitted it.
 *
 * Verification re-attaches the payload Mandate computes itself, so a
 * signature only ever covers the server.json in hand: any change to a field,
 * a remote URL, a nested `_meta` value, breaks it. Only Mandate's own
 * governance record (`_meta["dev.mandate/governance"]`, added on export) is
 * left out. The key must belong to a publisher allowed to publish the
 * server's name; the algorithm must fit the key (never `none`, never HS*).
 */
import canonicalize from 'canonicalize';
import { base64url, CompactSign, compactVerify, errors, type KeyInput } from 'jose';
import { GOVERNANCE_META_KEY, type JsonObject } from './types.ts';
import { isServerName, type Publisher, type PublisherKey, type PublisherSet, SIGNATURE_ALGORITHMS, type SignatureAlgorithm } from './publishers.ts';

export type SignatureFailure =
  /** Not a compact JWS, or its header is unreadable. */
  | 'malformed'
  /** The payload segment is not empty: Mandate takes detached signatures only. */
  | 'attached'
  /** The header asks for something Mandate does not accept: `none`, HS*, an unknown alg, `crit`, `b64`. */
  | 'header'
  /** No publisher may publish this server name. */
  | 'no-publisher'
  /** A valid signature, but by a publisher not allowed this name. */
  | 'not-allowed'
  /** No key of the allowed publishers fits the header (kid, alg). */
  | 'no-key'
  /** No key verified the signature: the server.json changed after signing, or another key signed it. */
  | 'invalid';

/** A signature was refused; `reason` says why, the message says it for a person. */
export class SignatureError extends Error {
  override readonly name = 'SignatureError';
  readonly reason: SignatureFailure;
  constructor(message: string, reason: SignatureFailure) {
    super(message);
    this.reason = reason;
  }
}

/** What a verification established. */
export interface VerifiedSignature {
  /** The publisher whose key verified it. */
  publisher: string;
  /** That key's kid (or the header's, when the key has none). */
  kid?: string;
  alg: SignatureAlgorithm;
}

export interface SignOptions {
  alg: SignatureAlgorithm;
  kid?: string;
}

/** A JWS longer than this is refused before any parsing (a real one is a few hundred characters). */
export const MAX_JWS_LENGTH = 8192;

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * The bytes a publisher signs: UTF-8 of the RFC 8785 form of the server.json,
 * without `_meta["dev.mandate/governance"]`. An `_meta` left empty (or given
 * empty) is dropped, so that an export's added-then-removed governance key
 * leaves no trace: `{"_meta": {}}` and no `_meta` sign the same bytes.
 */
export function canonicalServerJson(serverJson: JsonObject): Uint8Array {
  if (!isObject(serverJson)) throw new TypeError('a server.json must be a JSON object');
  const copy: Record<string, unknown> = { ...serverJson };
  if (isObject(copy._meta)) {
    const { [GOVERNANCE_META_KEY]: _governance, ...meta } = copy._meta;
    if (Object.keys(meta).length === 0) delete copy._meta;
    else copy._meta = meta;
  }
  const text = canonicalize(copy);
  if (text === undefined) throw new TypeError('the server.json has no JSON form');
  return new TextEncoder().encode(text);
}

/** Signs a server.json: a compact JWS with the payload segment left empty (`header..signature`). */
export async function signEntry(serverJson: JsonObject, privateKey: KeyInput, options: SignOptions): Promise<string> {
  if (!(SIGNATURE_ALGORITHMS as readonly string[]).includes(options.alg)) {
    throw new SignatureError(`alg "${String(options.alg)}" is not accepted for entry signatures (${SIGNATURE_ALGORITHMS.join(', ')})`, 'header');
  }
  const header = { alg: options.alg, ...(options.kid !== undefined ? { kid: options.kid } : {}) };
  const jws = await new CompactSign(canonicalServerJson(serverJson)).setProtectedHeader(header).sign(privateKey);
  const [protectedHeader, , signature] = jws.split('.');
  return `${protectedHeader}..${signature}`;
}

interface ParsedJws {
  protectedHeader: string;
  signature: string;
  alg: SignatureAlgorithm;
  kid?: string;
}

const SEGMENT = /^[A-Za-z0-9_-]+$/;

function parseDetached(jws: string): ParsedJws {
  if (typeof jws !== 'string') throw new SignatureError('the signature is not a string', 'malformed');
  if (jws.length > MAX_JWS_LENGTH) throw new SignatureError(`the signature is longer than ${MAX_JWS_LENGTH} characters`, 'malformed');
  const parts = jws.split('.');
  if (parts.length !== 3) throw new SignatureError('malformed signature: a compact JWS has three dot-separated parts (header..signature)', 'malformed');
  const [protectedHeader, payload, signature] = parts as [string, string, string];
  if (payload !== '') {
    throw new SignatureError('the JWS carries its payload: Mandate takes a detached signature (header..signature) and verifies it against the server.json itself', 'attached');
  }
  if (!SEGMENT.test(protectedHeader) || !SEGMENT.test(signature)) throw new SignatureError('malformed signature: the header and signature must be non-empty base64url', 'malformed');
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(base64url.decode(protectedHeader)));
  } catch {
    throw new SignatureError('malformed signature: the protected header is not base64url JSON', 'malformed');
  }
  if (!isObject(header)) throw new SignatureError('malformed signature: the protected header is not a JSON object', 'malformed');
  const { alg, kid } = header;
  if (typeof alg !== 'string') throw new SignatureError('the JWS header has no "alg"', 'header');
  if (alg === 'none') throw new SignatureError('alg "none" is an unsigned JWS: refused', 'header');
  if (/^HS/.test(alg)) throw new SignatureError(`alg "${alg}" is a shared-secret MAC, not a publisher signature: refused (use EdDSA or ES256/ES384/ES512)`, 'header');
  if (!(SIGNATURE_ALGORITHMS as readonly string[]).includes(alg)) {
    throw new SignatureError(`alg "${alg}" is not accepted for entry signatures (${SIGNATURE_ALGORITHMS.join(', ')})`, 'header');
  }
  if ('crit' in header || 'b64' in header) {
    throw new SignatureError('the JWS header has "crit" or "b64": critical extensions and unencoded payloads (RFC 7797) are not accepted', 'header');
  }
  if (kid !== undefined && (typeof kid !== 'string' || kid.length === 0)) throw new SignatureError('the JWS header "kid" must be a non-empty string', 'header');
  return { protectedHeader, signature, alg: alg as SignatureAlgorithm, ...(kid !== undefined ? { kid: kid as string } : {}) };
}

interface Candidate {
  publisher: Publisher;
  key: PublisherKey;
}

/** The keys of `publishers` that fit the header: the one with its kid when it names one, else every key of the alg. */
function candidates(publishers: readonly Publisher[], parsed: ParsedJws): Candidate[] {
  return publishers.flatMap((publisher) =>
    publisher.keys
      .filter((key) => (parsed.kid === undefined || key.kid === parsed.kid) && key.algorithms.includes(parsed.alg))
      .map((key) => ({ publisher, key })),
  );
}

async function verifiesWith(candidate: Candidate, parsed: ParsedJws, payload: string): Promise<boolean> {
  try {
    await compactVerify(`${parsed.protectedHeader}.${payload}.${parsed.signature}`, candidate.key.key, { algorithms: [parsed.alg] });
    return true;
  } catch (error) {
    if (error instanceof errors.JOSEError) return false;
    throw error;
  }
}

/**
 * Verifies a publisher's detached JWS over `serverJson`. Only the publishers
 * allowed to publish the server's name are tried; a header `kid` selects the
 * key. Throws `SignatureError` for every refusal.
 */
export async function verifyEntry(serverJson: JsonObject, jws: string, publishers: PublisherSet): Promise<VerifiedSignature> {
  const parsed = parseDetached(jws);
  const name = serverJson.name;
  if (typeof name !== 'string' || !isServerName(name)) {
    throw new SignatureError(`the server.json name ${JSON.stringify(name)} is not a registry name (namespace/name)`, 'no-publisher');
  }
  const payload = base64url.encode(canonicalServerJson(serverJson));
  const allowed = publishers.allowedFor(name);
  const others = publishers.all().filter((p) => !allowed.includes(p));

  const tried = candidates(allowed, parsed);
  for (const candidate of tried) {
    if (await verifiesWith(candidate, parsed, payload)) {
      const kid = candidate.key.kid ?? parsed.kid;
      return { publisher: candidate.publisher.name, ...(kid !== undefined ? { kid } : {}), alg: parsed.alg };
    }
  }

  // Refused. Say whose key it was when another publisher's key verifies it.
  let signer: Candidate | undefined;
  for (const candidate of candidates(others, parsed)) {
    if (await verifiesWith(candidate, parsed, payload)) {
      signer = candidate;
      break;
    }
  }
  const signedBy = signer && `signed by publisher "${signer.publisher.name}"${signer.key.kid ? ` (key "${signer.key.kid}")` : ''}`;
  if (allowed.length === 0) {
    throw new SignatureError(`no publisher may publish "${name}": no configured prefix covers it${signedBy ? ` (${signedBy})` : ''}`, 'no-publisher');
  }
  if (signer) {
    throw new SignatureError(`${signedBy}, which may not publish "${name}" (its prefixes: ${signer.publisher.prefixes.join(', ')})`, 'not-allowed');
  }
  const names = allowed.map((p) => `"${p.name}"`).join(', ');
  if (tried.length === 0) {
    const what = parsed.kid !== undefined ? `key with kid "${parsed.kid}" for alg ${parsed.alg}` : `key for alg ${parsed.alg}`;
    throw new SignatureError(`no key matched: the publishers allowed to publish "${name}" (${names}) have no ${what}`, 'no-key');
  }
  throw new SignatureError(
    `signature invalid: no key of ${names} verifies it over this server.json (was it changed after signing, or signed with another key?)`,
    'invalid',
  );
}
