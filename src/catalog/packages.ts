/**
 * Packages checked before they are started (docs/catalog.md, "The
 * upstream's identity"). When an npm package's entry gives the file's hash
 * (`fileSha256` in its server.json, or an npm `integrity`), the gateway does
 * not let npx fetch whatever the registry serves at spawn time. It fetches
 * the tarball once (`npm pack NAME@VERSION`, no scripts run), checks it
 * against the approved hash, keeps it in DATA/packages under its own SHA-256,
 * and starts every session from that file
 * (`npx -y --package=FILE BIN ARGS`). The file's hash is checked again at each
 * start (src/gateway/upstream/identity.ts). A package that does not match is
 * never started: the entry is suspended with `server.identity_mismatch`.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { ExpectedIdentity } from './types.ts';

const run = promisify(execFile);

type Package = NonNullable<ExpectedIdentity['package']>;

/** A package file that matched its approved hash. */
export interface VerifiedPackage {
  /** Absolute path of the tarball, named by its SHA-256. */
  tarball: string;
  /** Hex SHA-256 of the tarball. */
  sha256: string;
  /** The npm integrity of the tarball (`sha512-…`). */
  integrity: string;
  /** The command the package provides (its `bin`). */
  bin: string;
}

/** The fetched package is not the approved one (or cannot be checked): it is not started. */
export class PackageMismatchError extends Error {
  override readonly name = 'PackageMismatchError';
  readonly expected: string;
  readonly actual: string;
  constructor(message: string, expected: string, actual: string) {
    super(message);
    this.expected = expected;
    this.actual = actual;
  }
}

/** Whether an entry's package is to be checked before it is started: an npm package whose file hash is known. */
export function needsVerification(pkg: Package | undefined): pkg is Package {
  return pkg !== undefined && (pkg.fileSha256 !== undefined || pkg.integrity !== undefined);
}

/** The hashes of a file: hex SHA-256 and npm's `sha512-` integrity. */
export function fileHashes(file: string): { sha256: string; integrity: string } {
  const bytes = readFileSync(file);
  return { sha256: createHash('sha256').update(bytes).digest('hex'), integrity: `sha512-${createHash('sha512').update(bytes).digest('base64')}` };
}

/** The command a package.json's `bin` provides: the only one, or the one named like the package. */
export function binOf(manifest: { name?: unknown; bin?: unknown }): string {
  const name = typeof manifest.name === 'string' ? manifest.name : '';
  const unscoped = name.replace(/^@[^/]+\//, '');
  if (typeof manifest.bin === 'string' && unscoped !== '') return unscoped;
  if (manifest.bin !== null && typeof manifest.bin === 'object') {
    const names = Object.keys(manifest.bin);
    if (names.length === 1) return names[0] as string;
    if (names.includes(unscoped)) return unscoped;
    throw new Error(`the package provides several commands (${names.join(', ')}) and none is named ${unscoped}`);
  }
  throw new Error('the package provides no command (no "bin" in its package.json)');
}

export interface PackageStoreOptions {
  /** Runs a program; resolves with its standard output (default: execFile with a bound). */
  exec?: (file: string, args: string[], options: { cwd: string; timeoutMs: number }) => Promise<string>;
  /** The longest a fetch may take, ms (default 120 s). */
  timeoutMs?: number;
}

const defaultExec: NonNullable<PackageStoreOptions['exec']> = async (file, args, { cwd, timeoutMs }) => {
  const { stdout } = await run(file, args, { cwd, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' });
  return stdout;
};

/** Fetches and checks packages once per identifier, version and expected hash; the files live in `dir`. */
export class PackageStore {
  private readonly dir: string;
  private readonly exec: NonNullable<PackageStoreOptions['exec']>;
  private readonly timeoutMs: number;
  private readonly checked = new Map<string, Promise<VerifiedPackage>>();

  constructor(dir: string, options: PackageStoreOptions = {}) {
    this.dir = dir;
    this.exec = options.exec ?? defaultExec;
    this.timeoutMs = options.timeoutMs ?? 120_000;
  }

  /** The verified file of `pkg` (fetched and checked on first use); PackageMismatchError when it is not the approved one. */
  verify(pkg: Package): Promise<VerifiedPackage> {
    const key = `${pkg.registryType} ${pkg.identifier}@${pkg.version} ${pkg.fileSha256 ?? ''} ${pkg.integrity ?? ''}`;
    let checking = this.checked.get(key);
    if (checking === undefined) {
      checking = this.fetchAndCheck(pkg);
      this.checked.set(key, checking);
      // A failure to fetch (the registry unreachable) is tried again next time; a mismatch is not.
      checking.catch((error: unknown) => {
        if (!(error instanceof PackageMismatchError)) this.checked.delete(key);
      });
    }
    return checking;
  }

  private async fetchAndCheck(pkg: Package): Promise<VerifiedPackage> {
    const wanted = pkg.fileSha256 !== undefined ? `sha256 ${pkg.fileSha256}` : `integrity ${pkg.integrity}`;
    if (pkg.registryType !== 'npm') throw new PackageMismatchError(`a ${pkg.registryType} package's file hash cannot be checked before it is started`, wanted, 'not checkable');
    if (pkg.integrity !== undefined && !pkg.integrity.startsWith('sha512-')) {
      throw new PackageMismatchError('only sha512 integrity values are checked', wanted, pkg.integrity.split('-')[0] ?? 'unknown');
    }
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const work = mkdtempSync(path.join(this.dir, 'fetch-'));
    try {
      const out = await this.exec('npm', ['pack', `${pkg.identifier}@${pkg.version}`, '--pack-destination', work, '--json', '--ignore-scripts'], { cwd: work, timeoutMs: this.timeoutMs });
      const packed = (JSON.parse(out) as { filename?: unknown; name?: unknown; version?: unknown }[])[0];
      if (packed === undefined || typeof packed.filename !== 'string' || packed.name !== pkg.identifier || packed.version !== pkg.version) {
        throw new Error(`npm pack did not fetch ${pkg.identifier}@${pkg.version}`);
      }
      const file = path.join(work, path.basename(packed.filename));
      const hashes = fileHashes(file);
      if (pkg.fileSha256 !== undefined && hashes.sha256 !== pkg.fileSha256.toLowerCase()) {
        throw new PackageMismatchError(`${pkg.identifier}@${pkg.version} is not the approved file`, `sha256 ${pkg.fileSha256}`, `sha256 ${hashes.sha256}`);
      }
      if (pkg.integrity !== undefined && hashes.integrity !== pkg.integrity) {
        throw new PackageMismatchError(`${pkg.identifier}@${pkg.version} is not the approved file`, `integrity ${pkg.integrity}`, `integrity ${hashes.integrity}`);
      }
      const manifest = JSON.parse(await this.exec('tar', ['-xzOf', file, 'package/package.json'], { cwd: work, timeoutMs: 30_000 })) as { name?: unknown; bin?: unknown };
      const bin = binOf(manifest);
      const tarball = path.join(this.dir, `${hashes.sha256}.tgz`);
      renameSync(file, tarball);
      return { tarball, ...hashes, bin };
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
}
