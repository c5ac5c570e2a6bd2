/** `mandate consents list | revoke`: what users have allowed clients to do on each MCP server. */
import { consentKey, KEEP_MS } from '../identity/revocations.ts';
import type { ConsentRecord } from '../store/types.ts';
import { UsageError } from './common.ts';
import { clean, printJson, printLine, printTable } from './output.ts';
import { iso, parseText, when, withAdmin, type AdminFlags } from './clients.ts';
import { parseUserName } from './users.ts';

export interface ConsentFlags extends AdminFlags {
  user?: string;
  client?: string;
}

export function consentView(consent: ConsentRecord) {
  return { user: consent.user, clientId: consent.clientId, resource: consent.resource, scopes: consent.scopes, grantedAt: iso(consent.grantedAt) };
}

function parseFilter(flags: ConsentFlags): { user?: string; clientId?: string } {
  const filter: { user?: string; clientId?: string } = {};
  if (flags.user !== undefined) filter.user = parseUserName(flags.user);
  if (flags.client !== undefined) filter.clientId = parseText('--client', flags.client, 512);
  return filter;
}

function describe(filter: { user?: string; clientId?: string }): string {
  return [filter.user !== undefined ? `user ${filter.user}` : '', filter.clientId !== undefined ? `client ${clean(filter.clientId)}` : ''].filter(Boolean).join(' and ');
}

export function listConsents(flags: ConsentFlags): Promise<number> {
  const filter = parseFilter(flags);
  return withAdmin(flags, async ({ store }) => {
    const consents = await store.identity.listConsents(filter);
    if (flags.json) printJson(consents.map(consentView));
    else {
      printTable(
        ['USER', 'CLIENT', 'RESOURCE', 'SCOPES', 'GRANTED'],
        consents.map((c) => [c.user, c.clientId, c.resource, c.scopes.join(' ') || '-', when(c.grantedAt)]),
        filter.user === undefined && filter.clientId === undefined ? 'no consents' : `no consents for ${describe(filter)}`,
      );
    }
    return 0;
  });
}

export function revokeConsents(flags: ConsentFlags): Promise<number> {
  const filter = parseFilter(flags);
  if (filter.user === undefined && filter.clientId === undefined) throw new UsageError('give --user NAME, --client ID, or both: refusing to revoke every consent');
  return withAdmin(flags, async ({ store, recordAll }) => {
    const removed = await store.identity.deleteConsents(filter);
    if (removed.length === 0) throw new UsageError(`no consents for ${describe(filter)} (see \`mandate consents list\`)`);
    // Withdrawn consent also ends what was granted under it: every token of that user through that client.
    const now = Date.now();
    for (const pair of new Set(removed.map((c) => consentKey(c.user, c.clientId)))) {
      await store.identity.addRevocation({ kind: 'consent', value: pair, revokedAt: now, expiresAt: now + KEEP_MS.consent });
    }
    await recordAll(
      removed.map((c) => ({ type: 'consent.revoked' as const, data: { user: c.user, client_id: c.clientId, resource: c.resource, scopes: c.scopes } })),
      `${removed.length} consent${removed.length === 1 ? ' was' : 's were'} revoked`,
    );
    if (flags.json) printJson(removed.map(consentView));
    else {
      printLine(`revoked ${removed.length} consent${removed.length === 1 ? '' : 's'} for ${describe(filter)}; the user's tokens through the client are refused and the user is asked again at the next authorization`);
      printTable(['USER', 'CLIENT', 'RESOURCE', 'SCOPES'], removed.map((c) => [c.user, c.clientId, c.resource, c.scopes.join(' ') || '-']), '');
    }
    return 0;
  });
}
