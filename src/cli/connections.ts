/**
 * `mandate connections list | revoke` (docs/credentials.md): the upstream
 * accounts users connected for `oauth` servers. `list` shows who, which
 * server, when, the scopes and the last use, never a token. `revoke` ends a
 * connection: every gateway node stops presenting it within a second (the
 * credentials change counter), the user's next call asks them to connect
 * again, and `credential.revoked` is recorded. The tokens are also revoked
 * at the upstream when the user disconnects on their connections page (the
 * gateway holds the upstream's client settings); from here only Mandate's
 * copy goes, and the event says the upstream was not asked.
 */
import { SERVER_NAME } from '../config/schema.ts';
import { USER_NAME } from '../identity/users.ts';
import type { ConnectionRecord } from '../store/connections.ts';
import { iso, when, withAdmin, type AdminFlags } from './clients.ts';
import { UsageError } from './common.ts';
import { clean, printJson, printLine, printTable } from './output.ts';

export interface ConnectionFlags extends AdminFlags {
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

export async function revokeConnection(user: string, server: string, flags: ConnectionFlags): Promise<void> {
  const key = {
    user: checked('USER', user, USER_NAME, 'a user name'),
    server: checked('SERVER', server, SERVER_NAME, 'a server name'),
    tenant: flags.tenant === undefined ? '' : checked('--tenant', flags.tenant, /^[a-z0-9][a-z0-9._-]{0,62}$/, 'a tenant name'),
  };
  await withAdmin(flags, async ({ store, record }) => {
    const gone = await store.connections.delete(key, Date.now());
    if (gone === null) throw new UsageError(`${key.user} has no connection to "${key.server}"${key.tenant ? ` (tenant ${key.tenant})` : ''}`);
    await record(
      'credential.revoked',
      { kind: 'oauth', user: key.user, server: key.server, ...(key.tenant ? { tenant: key.tenant } : {}), revision: gone.revision, upstream: 'not asked (from the command line)' },
      `the connection of ${key.user} to ${key.server} is revoked`,
    );
    if (flags.json) return printJson({ ...view(gone), revoked: true });
    printLine(`connection of ${key.user} to ${key.server}${key.tenant ? ` (tenant ${key.tenant})` : ''} revoked: the gateway stops using it within a second`);
  });
}
