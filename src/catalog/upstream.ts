/**
 * A catalog entry as a server the gateway routes to: its server.json's
 * upstream (a Streamable HTTP remote, or a package started over stdio) under
 * its route name, with the identity it was approved with. A package is
 * always checked before it is started: the approved identifier and version
 * (and file hash, when the server.json gives one) are the expected identity.
 */
import type { ResolvedServer } from '../config/load.ts';
import type { CatalogFacts } from '../policy/request.ts';
import { needsVerification, type VerifiedPackage } from './packages.ts';
import { upstreamOf } from './server-json.ts';
import type { CatalogEntry, ExpectedIdentity } from './types.ts';

/**
 * `verified`: the package's checked tarball, when its entry gives the file's
 * hash (src/catalog/packages.ts); every session then starts from that file.
 */
export function resolvedServerOf(entry: CatalogEntry, issuer: string, dataDir: string, verified?: VerifiedPackage): ResolvedServer {
  const upstream = upstreamOf(entry.serverJson);
  const { route } = entry.governance;
  const approved = entry.governance.expectedIdentity;
  const g = entry.governance;
  const catalog: CatalogFacts = {
    ...(g.owner !== '' ? { owner: g.owner } : {}),
    ...(g.team !== undefined ? { team: g.team } : {}),
    ...(g.tenant !== undefined ? { tenant: g.tenant } : {}),
    environment: g.environment,
    risk: g.risk,
    ...(g.classification !== undefined ? { classification: g.classification } : {}),
    status: g.status,
  };
  const base = { name: route, endpoint: `${issuer}/mcp/${route}`, catalog, ...(g.auth !== undefined ? { auth: g.auth } : {}) };
  if (upstream.transport === 'http') return { ...base, url: upstream.url, args: [], env: {}, transport: 'http', ...(approved !== undefined ? { expectedIdentity: approved } : {}) };
  const pkg = { ...upstream.package, ...approved?.package };
  if (verified === undefined) {
    if (needsVerification(pkg)) throw new Error('its package has not been checked against the approved hash yet');
    return { ...base, command: upstream.command, args: upstream.args, env: upstream.env, cwd: dataDir, transport: 'stdio', expectedIdentity: { ...approved, package: pkg } };
  }
  // `npx -y NAME@VERSION ARGS` becomes `npx -y --package=FILE BIN ARGS`: the same package, from the file that was checked.
  const args = ['-y', `--package=${verified.tarball}`, verified.bin, ...upstream.args.slice(2)];
  const expectedIdentity: ExpectedIdentity = { ...approved, package: { ...pkg, tarball: verified.tarball, tarballSha256: verified.sha256 } };
  return { ...base, command: upstream.command, args, env: upstream.env, cwd: dataDir, transport: 'stdio', expectedIdentity };
}
