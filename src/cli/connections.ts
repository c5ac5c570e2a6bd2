/**
 * `mandate connections list | revoke` (docs/credentials.md): the upstream
 * accounts users connected for `oauth` servers. `list` shows who, which
 * server, when, the scopes and the last use, never a token. `revoke` ends a
 * connection: every gateway node stops presenting it within a second (the
 * credentials change counter), the user's next call asks them to connect
 * again, and `credential.revoked` is recorded. With --config (which names
 * the server's upstream authorization server and client secret), its
 * tokens are revoked there too, as the user's Disconnect does; without it
 * only Mandate's copy goes, and the event says the upstream was not asked.
 */
import { SERVER_NAME } from '../config/schema.ts';
import { USER_NAME } from '../identity/users.ts';
import type { ConnectionRecord } from '../store/connections.ts';
import { iso, when, withAdmin, type AdminFlags } from './clients.ts';
import { resolvedServerOf } from '../catalog/upstream.ts';
import { CredentialBroker } from '../credentials/broker.ts';
import { createLogger } from '../observability/log.ts';
import type { RegisteredServer } from '../gateway/registry.ts';
import type { Store } from '../store/types.ts';
import { requireDeploymentSecret, storeLocation, UsageError } from './common.ts';
import { clean, printJson, printLine, printTable } from './output.ts';

export interface ConnectionFlags extends AdminFlags {
  /** The configuration naming the server's upstream authorization server (to revoke its tokens there too). */
  config?: string;
  user?: string;
  server?: string;
  tenant?: string;
}

function checked(flag: string, value: string, pattern: RegExp, what: string): string {
  if (!pattern.test(value)) throw new UsageError(`${flag} takes ${what}, not "${clean(value)}"`);
  return value;
}

const view = (c: ConnectionRecord) => ({
  user: c.user,
  server: c.server,
  tenant: c.tenant || null,
  revision: c.revision,
  scope: c.scope,
  connectedAt: iso(c.createdAt),
  refreshedAt: iso(c.refreshedAt),
  lastUsedAt: iso(c.lastUsedAt),
  expiresAt: iso(c.expiresAt),
});

export async function listConnections(flags: ConnectionFlags): Promise<void> {
  const user = flags.user === undefined ? undefined : checked('--user', flags.user, USER_NAME, 'a user name');
  await withAdmin(flags, async ({ store }) => {
    const rows = (await store.connections.list(user)).filter((c) => flags.server === undefined || c.server === flags.server).map(view);
    if (flags.json) return printJson(rows);
    printTable(
      ['USER', 'SERVER', 'TENANT', 'CONNECTED', 'LAST USED', 'SCOPES'],
      rows.map((r) => [r.user, r.server, r.tenant ?? '-', when(Date.parse(r.connectedAt as string)), r.lastUsedAt === null ? 'never' : when(Date.parse(r.lastUsedAt)), r.scope || '-']),
      'no connections',
    );
  });
}

/**
 * The connection's server as the gateway runs it (from the configuration,
 * else its catalog entry), when it still connects user accounts: its
 * upstream's revocation endpoint and client secret are then known.
 */
async function oauthServer(store: Store, configPath: string | undefined, flags: ConnectionFlags, name: string): Promise<RegisteredServer | null> {
  if (configPath === undefined) return null;
  const { loadConfig } = await import('../config/load.ts');
  const config = loadConfig({ config: configPath, data: flags.data, databaseUrl: flags.databaseUrl });
  const configured = config.servers.find((server) => server.name === name);
  const entry = configured === undefined ? await store.catalog.getEntry(name) : null;
  const resolved = configured ?? (entry !== null ? resolvedServerOf(entry, config.issuer, config.dataDir) : undefined);
  return resolved?.auth?.kind === 'oauth' ? { ...resolved, generation: 0 } : null;
}

export async function revokeConnection(user: string, server: string, flags: ConnectionFlags): Promise<void> {
  const key = {
    user: checked('USER', user, USER_NAME, 'a user name'),
    server: checked('SERVER', server, SERVER_NAME, 'a server name'),
    tenant: flags.tenant === undefined ? '' : checked('--tenant', flags.tenant, /^[a-z0-9][a-z0-9._-]{0,62}$/, 'a tenant name'),
  };
  const configPath = flags.config ?? process.env.MANDATE_CONFIG;
  await withAdmin(flags, async ({ store, audit, actor }) => {
    const existing = await store.connections.get(key);
    if (existing === null) throw new UsageError(`${key.user} has no connection to "${key.server}"${key.tenant ? ` (tenant ${key.tenant})` : ''}`);
    const registered = await oauthServer(store, configPath, flags, key.server);
    // The broker ends it as the connections page does: removed here, revoked upstream when it can be, on record.
    const secret = requireDeploymentSecret(storeLocation(flags).dataDir);
    const broker = new CredentialBroker({ store, secret, issuer: '', log: createLogger('silent'), audit });
    await broker.refresh(true);
    const ended = await broker.connections.disconnect(key, actor, registered ?? undefined);
    await audit.flush();
    if (ended === null) throw new UsageError(`${key.user} has no connection to "${key.server}" (it ended meanwhile)`);
    const upstream = registered === null ? 'not asked (pass --config to revoke it at the upstream too)' : ended.upstream;
    if (flags.json) return printJson({ ...view(existing), revoked: true, upstream });
    printLine(`connection of ${key.user} to ${key.server}${key.tenant ? ` (tenant ${key.tenant})` : ''} revoked (upstream: ${upstream}): the gateway stops using it within a second`);
  });
}
