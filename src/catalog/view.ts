/** A catalog entry as `mandate servers list --json` and the admin API show it: the governance record flattened, no secrets. */
import type { CatalogEntry } from './types.ts';

export function entryView(entry: CatalogEntry) {
  const g = entry.governance;
  return {
    route: g.route,
    name: entry.serverJson.name,
    version: entry.serverJson.version,
    status: g.status,
    source: g.source,
    owner: g.owner || null,
    team: g.team ?? null,
    contact: g.contact ?? null,
    tenant: g.tenant ?? null,
    environment: g.environment,
    risk: g.risk,
    classification: g.classification ?? null,
    expiresAt: g.expiresAt,
    expectedIdentity: g.expectedIdentity ?? null,
    signedBy: entry.signature?.publisher ?? null,
    pinnedTools: entry.pins.length,
    revision: entry.revision,
    createdAt: entry.createdAt,
    updatedAt: entry.updatedAt,
    approvedBy: entry.approvedBy,
    approvedAt: entry.approvedAt,
  };
}
