/** `mandate tokens revoke`: refuse one token (--jti), or every token so far of a client or a user. */
import { KEEP_MS } from '../identity/revocations.ts';
import type { RevocationKind } from '../store/types.ts';
import { UsageError } from './common.ts';
import { clean, printJson, printLine } from './output.ts';
import { iso, parseText, when, withAdmin, type AdminFlags } from './clients.ts';
import { parseUserName } from './users.ts';

export interface RevokeTokensFlags extends AdminFlags {
  client?: string;
  user?: string;
  jti?: string;
}

export function revokeTokens(flags: RevokeTokensFlags): Promise<number> {
  const options: [Exclude<RevocationKind, 'grant'>, string | undefined][] = [
    ['client', flags.client],
    ['user', flags.user],
    ['jti', flags.jti],
  ];
  const given = options.filter(([, value]) => value !== undefined);
  const first = given[0];
  if (given.length !== 1 || !first || first[1] === undefined) throw new UsageError('give exactly one of --client ID, --user NAME or --jti ID');
  const [kind, raw] = first;
  const value = kind === 'user' ? parseUserName(raw) : parseText(`--${kind}`, raw, 512);
  return withAdmin(flags, async ({ store, record }) => {
    // A typo must not look like a revocation: clients and users must exist. A jti cannot be checked (tokens are not stored).
    if (kind === 'client' && !(await store.identity.getClient(value))) throw new UsageError(`no client with id "${clean(value)}" (see \`mandate clients list\`)`);
    if (kind === 'user' && !(await store.identity.getUser(value))) throw new UsageError(`no user "${value}" (see \`mandate users list\`)`);
    const now = Date.now();
    const revocation = await store.identity.addRevocation({ kind, value, revokedAt: now, expiresAt: now + KEEP_MS[kind] });
    await record('token.revoked', { kind, value }, `the ${kind} revocation was stored`);
    if (flags.json) {
      printJson({ seq: revocation.seq, kind, value, revokedAt: iso(revocation.revokedAt), expiresAt: iso(revocation.expiresAt) });
    } else if (kind === 'jti') {
      printLine(`revoked the token with jti ${value}`);
    } else {
      printLine(`revoked every token issued to ${kind} ${value} until ${when(now)}`);
    }
    return 0;
  });
}
