/**
 * A catalog entry as a server the gateway routes to: its server.json's
 * upstream (a Streamable HTTP remote, or a package started over stdio) under
 * its route name, with the identity it was approved with. A package is
 * always checked before it is started: the approved identifier and version
 * (and file hash, when the server.json gives one) are the expected identity.
 */
import type { ResolvedServer } from '../config/load.ts';
import type { CatalogFacts } from '../policy/request.ts';
import { upstreamOf } from './server-json.ts';
import type { CatalogEntry, ExpectedIdentity } from './types.ts';

export function resolvedServerOf(entry: CatalogEntry, issuer: string, dataDir: string): ResolvedServer {
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
  const base = { name: route, endpoint: `${issuer}/mcp/${route}`, catalog };
  if (upstream.transport === 'http') return { ...base, url: upstream.url, args: [], env: {}, transport: 'http', ...(approved !== undefined ? { expectedIdentity: approved } : {}) };
  const expectedIdentity: ExpectedIdentity = { ...approved, package: { ...upstream.package, ...approved?.package } };
  return { ...base, command: upstream.command, args: upstream.args, env: upstream.env, cwd: dataDir, transport: 'stdio', expectedIdentity };
}
