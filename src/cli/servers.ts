/**
 * `mandate servers list | show | import | propose | export | approve | reject
 * | suspend | renew | retire | pins | drift` (docs/catalog.md). Each command
 * acts as a named Mandate user (`--as`), checked against `admin.roles`, so
 * the two-person rule binds people, not shells. A refusal by a catalog rule
 * exits 1 with the rule in the message; a bad flag exits 2.
 */
import { entryView } from '../catalog/view.ts';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { AuditLog } from '../audit/log.ts';
import { signatureCheck } from '../catalog/provenance.ts';
import { catalogSealer } from '../catalog/seal.ts';
import { Catalog, type ProposalInput } from '../catalog/service.ts';
import { exportServerJson, loadServerJson, upstreamOf } from '../catalog/server-json.ts';
import { RISK_CLASSES, type CatalogEntry, type ExpectedIdentity, type RiskClass, type ServerJson } from '../catalog/types.ts';
import { loadConfig, type Config } from '../config/load.ts';
import { guardedFetch } from '../identity/ssrf.ts';
import type { Store } from '../store/types.ts';
import { parseDuration, parseText } from './clients.ts';
import { openAdminStore, requireDeploymentSecret, UsageError } from './common.ts';
import { printFields, printJson, printLine, printNote, printTable } from './output.ts';

export interface ServerFlags {
  config?: string;
  data?: string;
  databaseUrl?: string;
  json?: boolean;
  as?: string;
  reason?: string;
}

const DAY = 86_400_000;

interface Session {
  config: Config;
  store: Store;
  catalog: Catalog;
}

/** Loads mandate.yaml (its catalog and admin sections) and opens the store it names. */
async function withCatalog<T>(flags: ServerFlags, body: (session: Session) => Promise<T>): Promise<T> {
  const config = loadConfig({ config: flags.config, data: flags.data, databaseUrl: flags.databaseUrl });
  const store = await openAdminStore({ data: config.dataDir, databaseUrl: config.databaseUrl ?? undefined });
  try {
    // Entries are sealed with the gateway's own secret.
    const secret = requireDeploymentSecret(config.dataDir);
    const catalog = new Catalog({
      store,
      audit: new AuditLog(store),
      sealer: catalogSealer(secret),
      verifySignature: signatureCheck(config.catalog, config.configPath),
      settings: () => ({ catalog: config.catalog, admin: config.admin }),
      });
    return await body({ config, store, catalog });
  } finally {
    await store.close();
  }
}

function actor(flags: ServerFlags): string {
  if (flags.as === undefined) throw new UsageError('--as USER is required: catalog actions are taken as a named Mandate user');
  return parseText('--as', flags.as, 128);
}

function reason(flags: ServerFlags, fallback?: string): string {
  if (flags.reason === undefined) {
    if (fallback !== undefined) return fallback;
    throw new UsageError('--reason TEXT is required: say why');
  }
  return parseText('--reason', flags.reason, 1000);
}

/** `--ttl 30d` or `--expires 2027-03-01[T…]`: exactly one. */
function expiryOf(flags: { ttl?: string; expires?: string }, now = Date.now()): Date {
  if ((flags.ttl === undefined) === (flags.expires === undefined)) throw new UsageError('give exactly one of --ttl DURATION (such as 30d) or --expires DATE');
  if (flags.ttl !== undefined) return new Date(now + parseDuration('--ttl', flags.ttl, 1000, 3650 * DAY, '1s to 3650d'));
  const text = flags.expires as string;
  const date = /^\d{4}-\d{2}-\d{2}$/.test(text) ? new Date(`${text}T00:00:00Z`) : new Date(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(date.getTime())) throw new UsageError(`--expires takes an ISO 8601 date or time (2027-03-01, 2027-03-01T12:00:00Z), not "${text}"`);
  return date;
}

function riskOf(value: string | undefined): RiskClass {
  if (value === undefined || !(RISK_CLASSES as readonly string[]).includes(value)) throw new UsageError(`--risk takes ${RISK_CLASSES.join(', ')}`);
  return value as RiskClass;
}

export async function list(flags: ServerFlags & { status?: string }): Promise<void> {
  await withCatalog(flags, async ({ catalog, store }) => {
    if (flags.as !== undefined) await catalog.authorize(actor(flags), 'read');
    const entries = (await store.catalog.listEntries()).filter((entry) => flags.status === undefined || entry.governance.status === flags.status);
    if (flags.json) return printJson(entries.map(entryView));
    printTable(
      ['ROUTE', 'NAME', 'VERSION', 'STATUS', 'RISK', 'ENV', 'OWNER', 'EXPIRES'],
      entries.map((e) => {
        const v = entryView(e);
        return [v.route, v.name, v.version, v.status, v.risk, v.environment, v.owner ?? '-', v.expiresAt ?? (v.source === 'config-managed' ? 'config-managed' : '-')];
      }),
      'no servers in the catalog',
    );
  });
}

export async function show(route: string, flags: ServerFlags): Promise<void> {
  await withCatalog(flags, async ({ catalog, store }) => {
    if (flags.as !== undefined) await catalog.authorize(actor(flags), 'read');
    const entry = await catalog.get(route);
    const proposal = await store.catalog.openProposal(route);
    const history = await catalog.history(route);
    if (flags.json) return printJson({ ...entryView(entry), serverJson: entry.serverJson, openProposal: proposal, history });
    const v = entryView(entry);
    printFields([
      ['route', v.route],
      ['name', v.name],
      ['version', v.version],
      ['status', v.status],
      ['source', v.source],
      ['owner', v.owner ?? '-'],
      ['team', v.team ?? '-'],
      ['environment', v.environment],
      ['risk', v.risk],
      ['classification', v.classification ?? '-'],
      ['expires', v.expiresAt ?? '-'],
      ['signed by', v.signedBy ?? '-'],
      ['pinned tools', String(v.pinnedTools)],
      ['approved', v.approvedBy === null ? '-' : `${v.approvedAt} by ${v.approvedBy}`],
      ['open proposal', proposal === null ? '-' : `${proposal.id} by ${proposal.proposedBy} at ${proposal.proposedAt}${proposal.content.changes.length ? `: ${proposal.content.changes.join(', ')}` : ' (new entry)'}`],
    ]);
    printLine('history:');
    for (const item of history) printLine(`  ${item.at}  ${item.action}  by ${item.actor}${item.reason ? `: ${item.reason}` : ''}`);
  });
}

export interface ImportFlags extends ServerFlags {
  route?: string;
  owner?: string;
  risk?: string;
  environment?: string;
  ttl?: string;
  expires?: string;
  signature?: string;
  name?: string;
  team?: string;
  contact?: string;
  tenant?: string;
  classification?: string;
  /** JSON: the entry's `auth`. */
  auth?: string;
  spkiSha256?: string[];
  spiffeId?: string;
  /** false with --no-identity. */
  identity?: boolean;
}

function optionalText(flag: string, value: string | undefined): string | undefined {
  return value === undefined ? undefined : parseText(flag, value, 200);
}

function signatureOf(file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(path.resolve(file), 'utf8');
  } catch (error) {
    throw new UsageError(`--signature: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const jws = text.trim();
  if (jws.length > 16_384 || !/^[A-Za-z0-9_-]+\.\.[A-Za-z0-9_-]+$/.test(jws)) throw new UsageError(`--signature: ${file} does not hold a detached compact JWS (header..signature)`);
  return jws;
}

/** The one server.json of a file or URL (`--name` picks one of a list). */
async function serverJsonOf(source: string, name: string | undefined): Promise<ServerJson> {
  const fetch = guardedFetch({ allowPrivate: [], timeoutMs: 10_000 });
  const { servers } = await loadServerJson(source, { fetch: (url: string) => fetch(url) });
  const chosen = name === undefined ? servers : servers.filter((server) => server.name === name);
  if (chosen.length === 1) return chosen[0] as ServerJson;
  if (chosen.length === 0 && name !== undefined) throw new UsageError(`${source} has no server named "${name}" (it has ${servers.map((s) => s.name).join(', ')})`);
  throw new UsageError(`${source} holds ${servers.length} servers: pick one with --name (${servers.map((s) => s.name).join(', ')})`);
}

/** `--spki-sha256` (repeatable) and `--spiffe-id` replace what the entry expected; `--no-identity` clears it. */
function identityOf(flags: ImportFlags, current: ExpectedIdentity | undefined): { expectedIdentity?: ExpectedIdentity } {
  if (flags.identity === false) return {};
  const pins = flags.spkiSha256;
  for (const pin of pins ?? []) {
    if (!/^[A-Za-z0-9+/]{43}=$/.test(pin)) throw new UsageError(`--spki-sha256 takes the base64 SHA-256 of a certificate's public key (44 characters ending in =), not "${pin}"`);
  }
  if (flags.spiffeId !== undefined && !/^spiffe:\/\/[a-z0-9.-]+(\/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*$/.test(flags.spiffeId)) {
    throw new UsageError(`--spiffe-id takes a SPIFFE ID (spiffe://trust-domain/path), not "${flags.spiffeId}"`);
  }
  if (pins === undefined && flags.spiffeId === undefined) return current === undefined ? {} : { expectedIdentity: current };
  return { expectedIdentity: { ...(pins !== undefined ? { spkiSha256: pins } : {}), ...(flags.spiffeId !== undefined ? { spiffeId: flags.spiffeId } : {}) } };
}

/** `--auth JSON`: parsed here, checked by the catalog as mandate.yaml's servers[].auth is. */
function authFlag(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new UsageError('--auth takes JSON, such as {"kind":"secret","secret":"weather-key","header":"X-Api-Key"}');
  }
}

function proposalInput(serverJson: ServerJson, route: string, flags: ImportFlags, base?: CatalogEntry): ProposalInput {
  const g = base?.governance;
  const owner = optionalText('--owner', flags.owner) ?? (g?.owner || undefined);
  const team = optionalText('--team', flags.team) ?? g?.team;
  const contact = optionalText('--contact', flags.contact) ?? g?.contact;
  const tenant = optionalText('--tenant', flags.tenant) ?? g?.tenant;
  const classification = optionalText('--classification', flags.classification) ?? g?.classification;
  const auth = flags.auth !== undefined ? authFlag(flags.auth) : g?.auth;
  const expiresAt = flags.ttl === undefined && flags.expires === undefined && g?.expiresAt ? new Date(g.expiresAt) : expiryOf(flags);
  return {
    serverJson,
    route,
    risk: flags.risk === undefined && g ? g.risk : riskOf(flags.risk),
    environment: optionalText('--environment', flags.environment) ?? g?.environment,
    expiresAt,
    ...(owner !== undefined ? { owner } : {}),
    ...(team !== undefined ? { team } : {}),
    ...(contact !== undefined ? { contact } : {}),
    ...(tenant !== undefined ? { tenant } : {}),
    ...(classification !== undefined ? { classification } : {}),
    ...(auth !== undefined ? { auth } : {}),
    ...identityOf(flags, g?.expectedIdentity),
    ...(flags.signature !== undefined ? { signature: signatureOf(flags.signature) } : base?.signature ? { signature: base.signature.jws } : {}),
  };
}

/** An entry is admitted as submitted even when this gateway cannot start or reach it yet; say so, since it will be refused at routing. */
function noteUnservable(serverJson: ServerJson): void {
  try {
    upstreamOf(serverJson);
  } catch (error) {
    printNote(`note: this gateway cannot serve it as it is (${error instanceof Error ? error.message : String(error)}); once approved it is listed but refused at /mcp/NAME`);
  }
}

function printProposal(flags: ServerFlags, proposal: Awaited<ReturnType<Catalog['propose']>>): void {
  if (flags.json) return printJson(proposal);
  printLine(`proposal ${proposal.id}: ${proposal.kind === 'new' ? 'new server' : proposal.content.changes.join(', ')} for "${proposal.route}" (${proposal.content.serverJson.name} ${proposal.content.serverJson.version}), awaiting approval`);
}

/** `servers import FILE|URL --route NAME …`: a new entry, or a new version of one, as a proposal. */
export async function importServer(source: string, flags: ImportFlags): Promise<void> {
  const as = actor(flags);
  if (flags.route === undefined) throw new UsageError('--route NAME is required: the name the gateway serves it at (/mcp/NAME)');
  const route = flags.route;
  const serverJson = await serverJsonOf(source, flags.name);
  await withCatalog(flags, async ({ catalog, store }) => {
    const base = (await store.catalog.getEntry(route)) ?? undefined;
    const input = proposalInput(serverJson, route, flags, base?.governance.source === 'catalog' ? base : undefined);
    printProposal(flags, await catalog.propose(input, as, reason(flags, `imported from ${source}`)));
    noteUnservable(serverJson);
  });
}

/** `servers propose NAME …`: a change to an entry's governance record (or, with --file, its server.json). */
export async function propose(route: string, flags: ImportFlags & { file?: string }): Promise<void> {
  const as = actor(flags);
  const why = reason(flags);
  const serverJson = flags.file === undefined ? undefined : await serverJsonOf(flags.file, flags.name);
  await withCatalog(flags, async ({ catalog }) => {
    const current = await catalog.get(route);
    printProposal(flags, await catalog.propose(proposalInput(serverJson ?? current.serverJson, route, flags, current), as, why));
  });
}

export async function exportServer(route: string, flags: ServerFlags): Promise<void> {
  await withCatalog(flags, async ({ catalog }) => {
    if (flags.as !== undefined) await catalog.authorize(actor(flags), 'read');
    const entry = await catalog.get(route);
    printJson(exportServerJson(entry.serverJson, entry.governance));
  });
}

type Decision = 'approve' | 'reject' | 'suspend' | 'retire';

export async function decide(decision: Decision, route: string, flags: ServerFlags): Promise<void> {
  const as = actor(flags);
  const why = reason(flags);
  await withCatalog(flags, async ({ catalog }) => {
    const result = decision === 'reject' ? await catalog.reject(route, as, why) : await catalog[decision](route, as, why);
    if (flags.json) return printJson('governance' in result ? entryView(result) : result);
    const done = { approve: 'approved', reject: 'rejected', suspend: 'suspended', retire: 'retired' }[decision];
    printLine(`${route}: ${done} by ${as}`);
    if (decision === 'approve' && 'governance' in result) printLine(`  ${result.serverJson.name} ${result.serverJson.version}, ${result.governance.status}, expires ${result.governance.expiresAt ?? '-'}`);
  });
}

export async function renew(route: string, flags: ServerFlags & { ttl?: string; expires?: string }): Promise<void> {
  const as = actor(flags);
  const why = reason(flags);
  const expiresAt = expiryOf(flags);
  await withCatalog(flags, async ({ catalog }) => {
    const entry = await catalog.renew(route, expiresAt, as, why);
    if (flags.json) return printJson(entryView(entry));
    printLine(`${route}: renewed by ${as} until ${entry.governance.expiresAt}`);
  });
}

export async function pins(route: string, flags: ServerFlags): Promise<void> {
  await withCatalog(flags, async ({ catalog }) => {
    if (flags.as !== undefined) await catalog.authorize(actor(flags), 'read');
    const entry = await catalog.get(route);
    const rows = entry.pins.map((pin) => ({ name: pin.name, hash: pin.hash }));
    if (flags.json) return printJson(rows);
    printTable(['TOOL', 'HASH'], rows.map((r) => [r.name, r.hash]), `no pinned tools for "${route}"`);
  });
}

const HASH = /^[0-9a-f]{64}$/;

/** The reviewed `{name, hash}` pairs of a file `mandate servers drift NAME --json` wrote (after review). */
function reviewedPins(file: string): { name: string; hash: string }[] {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path.resolve(file), 'utf8'));
  } catch (error) {
    throw new UsageError(`--from: cannot read ${file} as JSON (${error instanceof Error ? error.message : String(error)})`);
  }
  if (!Array.isArray(value) || value.length === 0 || value.length > 1000) throw new UsageError(`--from: ${file} must hold a list of {name, hash} (as \`mandate servers drift NAME --json\` prints)`);
  return value.map((item: unknown, index) => {
    const { name, hash } = (item ?? {}) as { name?: unknown; hash?: unknown };
    if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > 256 || typeof hash !== 'string' || !HASH.test(hash)) {
      throw new UsageError(`--from: item ${index} of ${file} is not {name, hash} with a 64-hex-digit hash`);
    }
    return { name, hash };
  });
}

/** `pins approve NAME TOOL --hash H`, or `pins approve NAME --from FILE` for every tool reviewed in FILE. */
export async function approvePin(route: string, tool: string | undefined, flags: ServerFlags & { hash?: string; from?: string }): Promise<void> {
  const as = actor(flags);
  const why = reason(flags);
  let wanted: { name: string; hash: string }[];
  if (flags.from !== undefined) {
    if (tool !== undefined || flags.hash !== undefined) throw new UsageError('give either TOOL --hash H, or --from FILE');
    wanted = reviewedPins(flags.from);
  } else {
    if (tool === undefined) throw new UsageError('name the TOOL (with --hash), or give --from FILE');
    if (flags.hash === undefined || !HASH.test(flags.hash)) throw new UsageError('--hash takes the reviewed definition\'s SHA-256 (64 hex digits, from `mandate servers drift`)');
    wanted = [{ name: tool, hash: flags.hash }];
  }
  await withCatalog(flags, async ({ catalog }) => {
    // One approval per tool, each checked against the live definition: a stale one stops the rest.
    const done: { name: string; hash: string }[] = [];
    let pinned = 0;
    for (const item of wanted) {
      pinned = (await catalog.approvePin(route, item.name, item.hash, as, why)).pins.length;
      done.push(item);
      if (!flags.json) printLine(`${route}: ${item.name} pinned at ${item.hash} by ${as}`);
    }
    if (flags.json) printJson({ approved: done, pinnedTools: pinned });
  });
}

export async function drift(route: string, flags: ServerFlags): Promise<void> {
  await withCatalog(flags, async ({ catalog, store }) => {
    if (flags.as !== undefined) await catalog.authorize(actor(flags), 'read');
    await catalog.get(route);
    const rows = (await store.catalog.listDrift(route)).map((d) => ({ name: d.tool, hash: d.hash, kind: d.kind, diff: d.diff, detectedAt: d.detectedAt }));
    if (flags.json) return printJson(rows);
    if (rows.length === 0) return printLine(`no quarantined tools for "${route}"`);
    for (const row of rows) {
      printLine(`${row.name}  ${row.kind}  ${row.hash}  (seen ${row.detectedAt})`);
      for (const line of row.diff.split('\n')) printLine(`    ${line}`);
    }
    printNote('approve one after review: mandate servers pins approve NAME TOOL --hash HASH --as USER --reason TEXT');
  });
}
