/**
 * `mandate breakglass open | close | review | list | overdue`
 * (docs/breakglass.md). Each reads mandate.yaml (`--config`) for its `admin`
 * roles and `breakglass` settings, opens the store it names, and acts as a
 * named Mandate user (`--as`) through the break-glass service, which holds
 * every rule. A missing or malformed flag exits 2 naming the flag; a refusal
 * by a rule exits 1 naming the rule.
 */
import { AuditLog } from '../audit/log.ts';
import { Breakglass, OUTCOMES } from '../breakglass/service.ts';
import type { BreakglassRecord } from '../store/breakglass.ts';
import { iso, parseDuration, parseText, when } from './clients.ts';
import { required, UsageError, withConfiguredStore } from './common.ts';
import { printFields, printJson, printLine, printTable } from './output.ts';
import type { ServerFlags } from './servers.ts';

/** As every `servers` command: --config, the store, --json, --as, --reason. */
export type BreakglassFlags = ServerFlags;

export interface OpenFlags extends BreakglassFlags {
  ticket?: string;
  server?: string;
  tool?: string[];
  ttl?: string;
  for?: string;
}

const DAY = 86_400_000;

/** Loads mandate.yaml and opens the store it names, for one break-glass action. */
function withBreakglass<T>(flags: BreakglassFlags, body: (service: Breakglass) => Promise<T>): Promise<T> {
  return withConfiguredStore(flags, (store, config) =>
    body(new Breakglass({ store, audit: new AuditLog(store), settings: () => ({ admin: config.admin, breakglass: config.breakglass }) })),
  );
}

const actor = (flags: BreakglassFlags): string => parseText('--as', required('--as USER', flags.as, 'break-glass actions are taken as a named Mandate user'), 128);

function stateOf(grant: BreakglassRecord, now: number): string {
  if (grant.closedAt !== null) return 'closed';
  return grant.expiresAt > now ? 'active' : 'expired';
}

/** A grant as `--json` prints it: times in ISO 8601, and its state now. */
function view(grant: BreakglassRecord, now = Date.now()) {
  return {
    ...grant,
    state: stateOf(grant, now),
    openedAt: iso(grant.openedAt),
    expiresAt: iso(grant.expiresAt),
    closedAt: iso(grant.closedAt),
    reviewedAt: iso(grant.reviewedAt),
  };
}

const toolsText = (grant: BreakglassRecord): string => (grant.tools.length === 0 ? 'every tool' : grant.tools.join(', '));

function printGrants(grants: BreakglassRecord[], json: boolean | undefined, empty: string): void {
  const now = Date.now();
  if (json) return printJson(grants.map((grant) => view(grant, now)));
  printTable(
    ['ID', 'USER', 'OPENED BY', 'SERVER', 'TOOLS', 'TICKET', 'OPENED', 'UNTIL', 'STATE', 'REVIEW'],
    grants.map((g) => [g.id, g.user, g.openedBy, g.server, toolsText(g), g.ticket, when(g.openedAt), when(g.expiresAt), stateOf(g, now), g.outcome === null ? 'pending' : `${g.outcome} (${g.reviewedBy ?? '?'})`]),
    empty,
  );
}

export async function open(flags: OpenFlags): Promise<void> {
  const ticket = required('--ticket TEXT', flags.ticket, 'break-glass access is opened only for a ticket (the incident or change it serves)');
  const reason = required('--reason TEXT', flags.reason, 'say why break-glass access is needed');
  const server = required('--server NAME', flags.server, 'name the server the access is for');
  const ttlMs = parseDuration('--ttl', flags.ttl ?? '1h', 1000, 365 * DAY, '1s to 365d');
  const as = actor(flags);
  await withBreakglass(flags, async (service) => {
    const { grant, webhook } = await service.open(as, { ticket, reason, server, tools: flags.tool ?? [], ttlSeconds: ttlMs / 1000, user: flags.for });
    if (flags.json) return printJson({ ...view(grant), webhook });
    printLine(`opened break-glass grant ${grant.id}`);
    printFields([
      ['user', grant.user === grant.openedBy ? grant.user : `${grant.user} (opened by ${grant.openedBy})`],
      ['server', grant.server],
      ['tools', toolsText(grant)],
      ['ticket', grant.ticket],
      ['until', when(grant.expiresAt)],
      ['webhook', webhook],
    ]);
  });
}

export async function close(id: string, flags: BreakglassFlags): Promise<void> {
  const as = actor(flags);
  await withBreakglass(flags, async (service) => {
    const grant = await service.close(as, id, flags.reason);
    if (flags.json) return printJson(view(grant));
    printLine(`closed break-glass grant ${grant.id} (${grant.user} on ${grant.server}); its review is still due`);
  });
}

export async function review(id: string, flags: BreakglassFlags & { outcome?: string }): Promise<void> {
  const outcome = required('--outcome', flags.outcome, `say whether the access was ${OUTCOMES.join(' or ')}`);
  if (!(OUTCOMES as readonly string[]).includes(outcome)) throw new UsageError(`--outcome takes ${OUTCOMES.join(' or ')}`);
  const reason = required('--reason TEXT', flags.reason, 'say why the access was or was not justified');
  const as = actor(flags);
  await withBreakglass(flags, async (service) => {
    const grant = await service.review(as, id, outcome, reason);
    if (flags.json) return printJson(view(grant));
    printLine(`reviewed break-glass grant ${grant.id}: ${outcome}`);
  });
}

export async function list(flags: BreakglassFlags): Promise<void> {
  await withBreakglass(flags, async (service) => {
    if (flags.as !== undefined) await service.authorize(actor(flags), 'read');
    printGrants(await service.list(), flags.json, 'no break-glass grants');
  });
}

export async function overdue(flags: BreakglassFlags): Promise<void> {
  await withBreakglass(flags, async (service) => {
    if (flags.as !== undefined) await service.authorize(actor(flags), 'read');
    printGrants(await service.overdue(), flags.json, 'no overdue reviews');
  });
}
