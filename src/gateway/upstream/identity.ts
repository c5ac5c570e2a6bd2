/**
 * The upstream's expected identity (`ExpectedIdentity`, catalog/types.ts):
 * what an approved server must prove, checked on every new connection to an
 * https upstream and before every start of a stdio one. A failed check is
 * never followed by a request: the connection is destroyed before undici
 * writes a byte on it, the process is not started.
 *
 * The trust decisions, per https upstream:
 * - `spkiSha256` set: the pin IS the trust decision. A connection is accepted
 *   iff the leaf certificate's SubjectPublicKeyInfo hashes to one of the pins
 *   (an empty list accepts nothing). CA chain validation and the hostname
 *   check are off for that server's pool only: a pin may name a self-signed
 *   certificate no CA vouches for, and a key is a tighter name than a host.
 *   The TLS handshake still proves that the peer holds that leaf's private key.
 * - `spiffeId` alone: the usual validation stays on (chain to a trusted CA and
 *   the hostname), and the leaf must carry exactly that ID as its one
 *   `spiffe://` URI SAN (an X.509-SVID has exactly one).
 * - both: the pin decides trust, and the SPIFFE ID must match as well.
 * - plaintext `http:` with either: refused before connecting (no certificate
 *   can be checked on plaintext).
 * TLS session resumption is off for a checked pool: every new connection is a
 * full handshake whose certificate is checked again (nothing is cached).
 *
 * Per stdio upstream, `package` set: the command line must be the runner of
 * exactly that package at exactly that version (`checkPackage`). The package
 * file's own digest (`fileSha256`, `integrity`) is not verified here.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import path from 'node:path';
import type { ConnectionOptions, TLSSocket } from 'node:tls';
import { buildConnector } from 'undici';
import type { ExpectedIdentity } from '../../catalog/types.ts';
import { GatewayError } from '../errors.ts';
import type { RegisteredServer } from '../registry.ts';

/** Which check failed, what was expected and what the upstream showed (hashes are public: shown whole). */
export interface IdentityMismatch {
  check: 'spki' | 'spiffe' | 'package';
  expected: string;
  actual: string;
}

/** Told of every failed check (once per refused connection or start): the catalog blocks the server and records it. */
export type IdentityMismatchHook = (server: RegisteredServer, mismatch: IdentityMismatch) => void;

/** A certificate as node:crypto gives it, or as `TLSSocket.getPeerCertificate()` does (its `raw` DER). */
export type CertificateLike = X509Certificate | { raw: Buffer };

/** The error a checked connector fails a connect with; http.ts turns it into `upstream_identity`. */
export class UpstreamIdentityError extends Error {
  override readonly name = 'UpstreamIdentityError';
  readonly code = 'MANDATE_UPSTREAM_IDENTITY';
  readonly mismatch: IdentityMismatch;
  /**
   * Set once the mismatch was told to the hook: undici fails every request
   * queued on the refused connection with this one error, and the hook hears
   * of each refused connection once.
   */
  reported = false;

  constructor(mismatch: IdentityMismatch) {
    super(describeMismatch(mismatch));
    this.mismatch = mismatch;
  }
}

/** The private detail of a mismatch (audit log, operators). */
export function describeMismatch(mismatch: IdentityMismatch): string {
  return `${mismatch.check} check failed: expected ${mismatch.expected}; got ${mismatch.actual}`;
}

/** The error the client gets: names the server, says nothing of hashes (those are in the detail). */
export function identityError(server: string, mismatch: IdentityMismatch, cause?: unknown): GatewayError {
  return new GatewayError('upstream_identity', `upstream server "${server}" is refused: its identity did not match the one approved for it`, { detail: describeMismatch(mismatch), cause });
}

/** Tells the hook, if any, of a mismatch; a failing hook does not change the refusal. */
export function reportMismatch(hook: IdentityMismatchHook | undefined, server: RegisteredServer, mismatch: IdentityMismatch): void {
  try {
    hook?.(server, mismatch);
  } catch {
    // the hook's own failure: the connection or start is refused all the same
  }
}

function x509(cert: CertificateLike): X509Certificate {
  return cert instanceof X509Certificate ? cert : new X509Certificate(cert.raw);
}

/** Base64 SHA-256 of the certificate's DER SubjectPublicKeyInfo (the HPKP pin). */
export function spkiSha256(cert: CertificateLike): string {
  const der = x509(cert).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('base64');
}

/**
 * Splits node's `subjectAltName` text (`DNS:a, URI:b`). A value holding a
 * separator or an unusual character comes quoted as a JSON string
 * (`URI:"x, y"`), so a crafted SAN cannot pass for two.
 */
function altNames(text: string): { type: string; value: string }[] {
  const names: { type: string; value: string }[] = [];
  let at = 0;
  while (at < text.length) {
    const colon = text.indexOf(':', at);
    if (colon === -1) break;
    const type = text.slice(at, colon);
    let end = colon + 1;
    let value: string;
    if (text[end] === '"') {
      let close = end + 1;
      while (close < text.length && text[close] !== '"') close += text[close] === '\\' ? 2 : 1;
      value = JSON.parse(text.slice(end, close + 1)) as string;
      end = close + 1;
    } else {
      const separator = text.indexOf(', ', end);
      end = separator === -1 ? text.length : separator;
      value = text.slice(colon + 1, end);
    }
    names.push({ type, value });
    at = end + 2; // past ', '
  }
  return names;
}

/** The `spiffe://` URIs among the certificate's subject alternative names. */
export function spiffeIds(cert: CertificateLike): string[] {
  const text = x509(cert).subjectAltName ?? '';
  return altNames(text)
    .filter((name) => name.type === 'URI' && name.value.startsWith('spiffe://'))
    .map((name) => name.value);
}

/** Whether the expectation needs a certificate (an https upstream), not only a package. */
export function needsPeerCheck(expected: ExpectedIdentity | undefined): expected is ExpectedIdentity {
  return expected !== undefined && (expected.spkiSha256 !== undefined || expected.spiffeId !== undefined);
}

/** The first check a connection without a certificate fails (plaintext, or a TLS peer that sent none). */
function uncheckable(expected: ExpectedIdentity, why: string): IdentityMismatch | null {
  if (expected.spkiSha256 !== undefined) return { check: 'spki', expected: expected.spkiSha256.join(', ') || '(no acceptable pin)', actual: why };
  if (expected.spiffeId !== undefined) return { check: 'spiffe', expected: expected.spiffeId, actual: why };
  return null;
}

const PLAINTEXT = 'plaintext http: no certificate, so no pin or SPIFFE ID can be checked';

/** A plaintext upstream against an https-only expectation: always a mismatch. */
export function checkPlaintext(expected: ExpectedIdentity): IdentityMismatch | null {
  return uncheckable(expected, PLAINTEXT);
}

/**
 * Checks a connected socket against the expectation: null when it passes.
 * With a SPIFFE ID and no pin, the chain must also have been validated
 * (`authorized`): an ID no trusted CA vouches for proves nothing.
 */
export function checkPeer(expected: ExpectedIdentity, socket: TLSSocket | Socket): IdentityMismatch | null {
  if ((socket as TLSSocket).encrypted !== true) return checkPlaintext(expected);
  const tls = socket as TLSSocket;
  const cert = tls.getPeerX509Certificate();
  if (!cert) return uncheckable(expected, 'no certificate');
  if (expected.spkiSha256 !== undefined) {
    const pin = spkiSha256(cert);
    if (!expected.spkiSha256.includes(pin)) return { check: 'spki', expected: expected.spkiSha256.join(', ') || '(no acceptable pin)', actual: pin };
  }
  if (expected.spiffeId !== undefined) {
    if (expected.spkiSha256 === undefined && !tls.authorized) {
      return { check: 'spiffe', expected: expected.spiffeId, actual: `certificate not trusted (${String(tls.authorizationError ?? 'unverified')})` };
    }
    const ids = spiffeIds(cert);
    if (ids.length !== 1 || ids[0] !== expected.spiffeId) {
      return { check: 'spiffe', expected: expected.spiffeId, actual: ids.length === 0 ? 'no spiffe:// URI SAN' : ids.join(', ') };
    }
  }
  return null;
}

/**
 * An undici connector that checks every new connection against `expected`
 * once the TLS handshake is done, before the socket is handed to undici (so
 * before any byte of a request is written). A failed check destroys the
 * socket and fails the connect with an `UpstreamIdentityError`; a plaintext
 * origin is refused without connecting.
 */
export function identityConnector(expected: ExpectedIdentity, tls: ConnectionOptions = {}): buildConnector.connector {
  const pinned = expected.spkiSha256 !== undefined;
  // A pin is the trust decision: chain and hostname checks are off for this pool only.
  // No session cache: every connection is a full handshake, its certificate checked.
  const base = buildConnector({ ...tls, ...(pinned ? { rejectUnauthorized: false } : {}), maxCachedSessions: 0 });
  return (options, callback) => {
    if (options.protocol !== 'https:') {
      const mismatch = checkPlaintext(expected);
      if (mismatch) {
        process.nextTick(callback, new UpstreamIdentityError(mismatch), null);
        return;
      }
      base(options, callback);
      return;
    }
    base(options, (error, socket) => {
      if (error !== null) {
        callback(error, null);
        return;
      }
      let mismatch: IdentityMismatch | null;
      try {
        mismatch = checkPeer(expected, socket);
      } catch (failure) {
        mismatch = uncheckable(expected, `unreadable certificate: ${(failure as Error).message}`);
      }
      if (mismatch) {
        socket.destroy();
        callback(new UpstreamIdentityError(mismatch), null);
        return;
      }
      callback(null, socket);
    });
  };
}

/** An exact npm version (semver, no range, tag or wildcard). */
const NPM_VERSION = /^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;
/** An exact PyPI version (PEP 440's public form and local label; no wildcard). */
const PYPI_VERSION = /^(?:\d+!)?\d+(?:\.\d+)*(?:[-_.]?(?:a|b|rc|alpha|beta|c|pre|preview)[-_.]?\d*)?(?:[-_.]?(?:post|rev|r)[-_.]?\d*)?(?:[-_.]?dev[-_.]?\d*)?(?:\+[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*)?$/i;

/** A PyPI project name in its normal form (PEP 503): `Foo_Bar` and `foo-bar` are one project. */
const pypiName = (name: string): string => name.toLowerCase().replace(/[-_.]+/g, '-');

/** Whether `command` is the runner `name`: the bare name (found on PATH) or an absolute path to it. */
function isRunner(command: string, name: string): boolean {
  return command === name || (path.isAbsolute(command) && path.basename(command) === name);
}

/**
 * Checks a stdio command line against the expected package: null when it
 * starts exactly that package at exactly that version. npm: `npx -y
 * IDENTIFIER@VERSION [server args…]` (or `--yes`); pypi: `uvx
 * IDENTIFIER==VERSION [server args…]`. No other option may come before the
 * package (it could change what runs), the version must be an exact one
 * (never `latest`, a range or none), and a registry with no known runner is
 * refused.
 */
/** A package started from its verified tarball: exactly that file, with the hash it had when it matched the approved one. */
function checkTarball(expected: NonNullable<ExpectedIdentity['package']>, command: string, args: readonly string[]): IdentityMismatch | null {
  const tarball = expected.tarball as string;
  const wanted = `npx -y --package=${tarball} (sha256 ${expected.tarballSha256 ?? '?'})`;
  const [yes, spec] = args;
  if (!isRunner(command, 'npx') || (yes !== '-y' && yes !== '--yes') || spec !== `--package=${tarball}`) return { check: 'package', expected: wanted, actual: [command, ...args].join(' ') };
  let actual: string;
  try {
    actual = createHash('sha256').update(readFileSync(tarball)).digest('hex');
  } catch (error) {
    return { check: 'package', expected: wanted, actual: `the file cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})` };
  }
  return actual === expected.tarballSha256 ? null : { check: 'package', expected: `sha256 ${expected.tarballSha256}`, actual: `sha256 ${actual}` };
}

export function checkPackage(expected: ExpectedIdentity['package'], command: string, args: readonly string[]): IdentityMismatch | null {
  if (expected === undefined) return null;
  const actual = [command, ...args].join(' ');
  const { registryType, identifier, version } = expected;
  const mismatch = (wanted: string, got = actual): IdentityMismatch => ({ check: 'package', expected: wanted, actual: got });
  if (registryType === 'npm' && expected.tarball !== undefined) return checkTarball(expected, command, args);
  if (registryType === 'npm') {
    const wanted = `npx -y ${identifier}@${version}`;
    if (!NPM_VERSION.test(version)) return mismatch(wanted, `the approved version "${version}" is not an exact version`);
    const [yes, spec] = args;
    if (!isRunner(command, 'npx') || (yes !== '-y' && yes !== '--yes') || spec !== `${identifier}@${version}`) return mismatch(wanted);
    return null;
  }
  if (registryType === 'pypi') {
    const wanted = `uvx ${identifier}==${version}`;
    if (!PYPI_VERSION.test(version)) return mismatch(wanted, `the approved version "${version}" is not an exact version`);
    const [spec] = args;
    const at = spec?.indexOf('==') ?? -1;
    if (!isRunner(command, 'uvx') || spec === undefined || at <= 0) return mismatch(wanted);
    if (pypiName(spec.slice(0, at)) !== pypiName(identifier) || spec.slice(at + 2) !== version) return mismatch(wanted);
    return null;
  }
  return mismatch(`a ${registryType} package ${identifier}@${version}`, `no known runner for registry type "${registryType}": ${actual}`);
}
