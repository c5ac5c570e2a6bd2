/**
 * The catalog at run time, on one gateway node: it keeps the server registry
 * equal to mandate.yaml's servers plus the catalog's approved, unexpired
 * entries, and blocks the rest with a reason (403, not 404).
 *
 * - Changes made elsewhere (the CLI, another node) are picked up by polling
 *   the catalog's change counter once a second (`catalog.refreshMs`).
 * - Expiry is checked every second against the clock, in memory: an entry
 *   whose time has passed is blocked at once, before its `expired` status and
 *   `server.expired` event are written (fail closed, even with the store down).
 * - `server.expiring` is recorded once per entry and expiry, the configured
 *   number of days ahead; `/metrics` has the days left per server.
 * - mandate.yaml's servers are kept in the catalog as `config-managed`
 *   entries (shown by `mandate servers list`; the file is their approval).
 */
import type { AuditLog } from '../audit/log.ts';
import type { ResolvedServer } from '../config/load.ts';
import type { ServerRegistry } from '../gateway/registry.ts';
import type { Logger } from '../observability/log.ts';
import { wonRace, type VersionRecord } from '../store/catalog.ts';
import type { ApprovedVersion } from './registry-api.ts';
import type { Store } from '../store/types.ts';
import { signatureKey, type SignatureCheck } from './provenance.ts';
import { needsVerification, PackageMismatchError, type PackageStore, type VerifiedPackage } from './packages.ts';
import type { Sealer } from './seal.ts';
import { upstreamOf } from './server-json.ts';
import type { Catalog } from './service.ts';
import { resolvedServerOf } from './upstream.ts';
import type { CatalogEntry, ExpectedIdentity, Governance, ServerJson, ToolPin } from './types.ts';

type PackageState = { state: 'pending' | 'failed'; reason: string } | { state: 'ok'; pkg: VerifiedPackage };

const DAY = 86_400_000;

export interface CatalogRuntimeDeps {
  store: Store;
  audit: AuditLog;
  catalog: Catalog;
  registry: ServerRegistry;
  log: Logger;
  issuer: string;
  /** Working directory of stdio servers started from catalog entries. */
  dataDir: string;
  /** The servers of mandate.yaml now (they change with a reload). */
  configServers: () => readonly ResolvedServer[];
  expiringLeadDays: () => number;
  /** Days until expiry per server, for /metrics (negative once expired); null removes the server's figure. */
  onExpiry?: (route: string, days: number | null) => void;
  /** Checks a signed entry's publisher signature again before it is served (src/catalog/provenance.ts). */
  verifySignature: () => SignatureCheck;
  /** Environments whose entries must be signed (catalog.admission.requireSignatures). */
  requireSignatures: () => readonly string[];
  /** Fetches and checks packages whose file hash the entry gives (src/catalog/packages.ts). */
  packages: PackageStore;
  /** Checks each catalog entry's seal before it is served (src/catalog/seal.ts). */
  sealer: Sealer;
  refreshMs?: number;
  now?: () => number;
}

/** Why a known entry is not routable, in the words the client sees. */
function blockReason(governance: Governance, now: number): string | null {
  switch (governance.status) {
    case 'approved':
      if (governance.expiresAt !== null && Date.parse(governance.expiresAt) <= now) return `its catalog approval expired at ${governance.expiresAt}; it must be renewed`;
      return null;
    case 'expired':
      return `its catalog approval expired at ${governance.expiresAt ?? '?'}; it must be renewed`;
    case 'pending':
      return 'it is awaiting approval in the catalog';
    case 'suspended':
      return 'it is suspended in the catalog';
    case 'deprecated':
      return 'it is deprecated in the catalog';
    case 'retired':
      return 'it is retired from the catalog';
  }
}

/** mandate.yaml's server as a catalog entry's server.json: enough to list and export it. */
export function configServerJson(server: ResolvedServer): ServerJson {
  return {
    name: `local.mandate/${server.name}`,
    version: '0.0.0',
    description: `Defined in mandate.yaml (${server.transport === 'http' ? 'Streamable HTTP' : 'stdio'})`,
    ...(server.url !== undefined ? { remotes: [{ type: 'streamable-http', url: server.url }] } : {}),
  };
}

export class CatalogRuntime {
  private readonly deps: CatalogRuntimeDeps;
  private entries: CatalogEntry[] = [];
  private pins = new Map<string, readonly ToolPin[]>();
  /** The earliest expiry among the entries listed now: the next time the registry must change without a catalog change. */
  private nextExpiry = Number.POSITIVE_INFINITY;
  /** Routes the sub-registry API lists (compose). */
  private listed = new Set<string>();
  /** Every approved version, as last read. */
  private versions: VersionRecord[] = [];
  /** Why a signed (or unsigned) entry is refused at routing, by route; recomputed on every read of the catalog. */
  private signatureProblems = new Map<string, string>();
  /** Verified signatures (signed bytes and JWS) of this configuration's publishers. */
  private verified = new Set<string>();
  /** Where each entry's package check stands, by route and revision. */
  private readonly packageStates = new Map<string, PackageState>();
  /** Routes blocked on this node after an identity mismatch, until the catalog says they are suspended. */
  private readonly identityBlocked = new Map<string, string>();
  private seen = -1;
  private timer: NodeJS.Timeout | null = null;
  private refreshing: Promise<void> | null = null;
  /** `route expiresAt` pairs already warned about or being expired, so each is done once per node. */
  private readonly warned = new Set<string>();
  private readonly expiring = new Set<string>();
  private readonly reported = new Set<string>();

  constructor(deps: CatalogRuntimeDeps) {
    this.deps = deps;
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  /** Syncs mandate.yaml's servers into the catalog, loads it and starts watching. */
  async start(): Promise<void> {
    await this.syncConfig();
    await this.refresh(true);
    this.timer = setInterval(() => void this.tick(), this.deps.refreshMs ?? 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** The approved versions of every entry that is approved, unexpired and intact (served, or servable elsewhere), for the sub-registry API; the entry's current version is the latest. */
  servedVersions(): ApprovedVersion[] {
    const served: ApprovedVersion[] = [];
    for (const entry of this.entries) {
      const { route } = entry.governance;
      if (!this.listed.has(route)) continue;
      for (const version of this.versions) {
        if (version.route !== route) continue;
        const isLatest = version.version === entry.serverJson.version;
        served.push({ serverJson: version.serverJson, governance: entry.governance, publishedAt: version.approvedAt, updatedAt: isLatest ? entry.updatedAt : version.approvedAt, isLatest });
      }
    }
    return served;
  }

  /** The tool pins of a catalog entry in force at `route`; undefined for a server that is not pinned (from mandate.yaml, or not in the catalog). */
  pinsOf(route: string): readonly ToolPin[] | undefined {
    return this.pins.get(route);
  }

  /**
   * An upstream failed its expected-identity check: the server is blocked on
   * this node at once, then suspended in the catalog (every node, across
   * restarts) with `server.identity_mismatch` recorded.
   */
  identityMismatch(route: string, mismatch: { check: string; expected: string; actual: string }, beforeServing = false): void {
    if (this.identityBlocked.has(route) || (!beforeServing && !this.pins.has(route))) return;
    this.identityBlocked.set(route, 'its upstream did not present the identity approved for it; it is suspended in the catalog');
    this.apply();
    this.deps.log.error({ server: route, ...mismatch }, 'an upstream failed its identity check: the server is blocked');
    // The block on this node is lifted only once the catalog says what holds now (suspended, or reinstated meanwhile).
    void (async () => {
      try {
        await this.deps.catalog.identityMismatch(route, mismatch);
        this.entries = await this.deps.store.catalog.listEntries();
        this.identityBlocked.delete(route);
        this.apply();
      } catch (error) {
        this.deps.log.error({ server: route, err: String(error) }, 'could not suspend a server whose identity did not match (it stays blocked on this node)');
      }
    })();
  }

  /** Each catalog entry's signature, checked with the publishers in force; what is refused, by route. */
  private async checkSignatures(entries: readonly CatalogEntry[]): Promise<Map<string, string>> {
    const problems = new Map<string, string>();
    const required = this.deps.requireSignatures();
    for (const entry of entries) {
      const { governance, signature } = entry;
      if (governance.source !== 'catalog' || governance.status !== 'approved') continue;
      if (signature === null) {
        if (required.includes(governance.environment)) problems.set(governance.route, `entries for "${governance.environment}" must be signed by an approved publisher and this one is not`);
        continue;
      }
      const key = signatureKey(entry.serverJson, signature.jws);
      if (this.verified.has(key)) continue;
      try {
        await this.deps.verifySignature()(entry.serverJson, signature.jws);
        this.verified.add(key);
      } catch (error) {
        problems.set(governance.route, 'its publisher signature no longer verifies');
        this.deps.log.error({ server: governance.route, err: error instanceof Error ? error.message : String(error) }, 'a catalog entry\'s signature does not verify: it is not served');
      }
    }
    return problems;
  }

  /** After a reload: mandate.yaml's servers again (publishers and rules may have changed too), then the registry. */
  async configChanged(): Promise<void> {
    this.verified = new Set();
    await this.refresh(true).catch((error: unknown) => this.deps.log.error({ err: String(error) }, 'could not read the catalog after a reload'));
    this.apply();
    await this.syncConfig().catch((error: unknown) => this.deps.log.error({ err: String(error) }, 'could not record mandate.yaml\'s servers in the catalog'));
  }

  /** Re-reads the catalog if it changed (or when forced) and applies it. */
  async refresh(force = false): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const last = await this.deps.store.catalog.lastChange();
        if (!force && last === this.seen) return;
        const entries = await this.deps.store.catalog.listEntries();
        this.versions = await this.deps.store.catalog.listVersions();
        this.signatureProblems = await this.checkSignatures(entries);
        this.entries = entries;
        this.seen = last;
        this.apply();
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  private async tick(): Promise<void> {
    try {
      await this.refresh();
    } catch (error) {
      // The entries in memory stay in force; expiry below still runs on the clock.
      this.deps.log.warn({ err: String(error) }, 'could not read the catalog; the last one read stays in force');
    }
    // Unchanged entries need composing again only when one of them reaches its expiry.
    if (this.now() >= this.nextExpiry) this.apply();
    await this.watchExpiry();
  }

  /** The registry: mandate.yaml's servers, then every routable catalog entry; the rest blocked with their reason. */
  apply(): void {
    const { servers, blocked, listed } = this.compose(this.deps.configServers());
    this.nextExpiry = Math.min(
      Number.POSITIVE_INFINITY,
      ...this.entries.filter((entry) => listed.has(entry.governance.route) && entry.governance.expiresAt !== null).map((entry) => Date.parse(entry.governance.expiresAt as string)),
    );
    const served = new Set(servers.map((server) => server.name));
    this.pins = new Map(this.entries.filter((entry) => entry.governance.source === 'catalog' && served.has(entry.governance.route)).map((entry) => [entry.governance.route, entry.pins]));
    this.listed = listed;
    this.deps.registry.setBlocked(blocked);
    this.deps.registry.replace(servers);
  }

  /** What the registry would hold with these mandate.yaml servers (a reload plans with it before applying). */
  compose(configServers: readonly ResolvedServer[]): { servers: ResolvedServer[]; blocked: Map<string, string>; listed: Set<string> } {
    const now = this.now();
    const servers: ResolvedServer[] = [...configServers];
    const taken = new Set(servers.map((server) => server.name));
    const blocked = new Map<string, string>();
    /** Approved, unexpired, intact entries: listed by the sub-registry API even when this gateway cannot start or reach them. */
    const listed = new Set<string>();
    for (const entry of this.entries) {
      const { governance } = entry;
      if (governance.source === 'config-managed' || taken.has(governance.route)) continue;
      const reason =
        this.identityBlocked.get(governance.route) ??
        (this.deps.sealer.verify(entry) ? null : 'its catalog record was changed outside Mandate (the seal does not match); it must be approved again') ??
        this.signatureProblems.get(governance.route) ??
        blockReason(governance, now);
      if (reason !== null) {
        blocked.set(governance.route, reason);
        continue;
      }
      listed.add(governance.route);
      const pkg = this.packageOf(entry);
      let verified: VerifiedPackage | undefined;
      if (pkg !== undefined) {
        const state = this.packageState(entry, pkg);
        if (state.state !== 'ok') {
          blocked.set(governance.route, state.reason);
          continue;
        }
        verified = state.pkg;
      }
      try {
        servers.push(resolvedServerOf(entry, this.deps.issuer, this.deps.dataDir, verified));
      } catch (error) {
        blocked.set(governance.route, `its catalog entry cannot be served by this gateway: ${error instanceof Error ? error.message : String(error)}`);
        const key = `${governance.route} ${entry.revision}`;
        if (!this.reported.has(key)) {
          this.reported.add(key);
          this.deps.log.error({ server: governance.route, err: error instanceof Error ? error.message : String(error) }, 'a catalog entry cannot be served');
        }
      }
    }
    return { servers, blocked, listed };
  }

  /** The package an entry starts, when it must be checked against its approved file hash before it is started. */
  private packageOf(entry: CatalogEntry): NonNullable<ExpectedIdentity['package']> | undefined {
    let upstream;
    try {
      upstream = upstreamOf(entry.serverJson);
    } catch {
      return undefined;
    }
    if (upstream.transport !== 'stdio') return undefined;
    const pkg = { ...upstream.package, ...entry.governance.expectedIdentity?.package };
    return needsVerification(pkg) ? pkg : undefined;
  }

  /**
   * Where the check of an entry's package stands; starts it when it has not
   * started. Until it matched, the server is not routable. A file that is not
   * the approved one suspends the entry (server.identity_mismatch); a fetch
   * that failed is tried again after a while.
   */
  private packageState(entry: CatalogEntry, pkg: NonNullable<ExpectedIdentity['package']>): PackageState {
    const route = entry.governance.route;
    const key = `${route} ${entry.revision}`;
    const known = this.packageStates.get(key);
    if (known !== undefined) return known;
    const pending: PackageState = { state: 'pending', reason: 'its package is being checked against the approved file hash; try again shortly' };
    this.packageStates.set(key, pending);
    void this.deps.packages.verify(pkg).then(
      (verified) => {
        this.packageStates.set(key, { state: 'ok', pkg: verified });
        this.apply();
      },
      (error: unknown) => {
        if (error instanceof PackageMismatchError) {
          this.packageStates.set(key, { state: 'failed', reason: 'its package is not the approved file; it is suspended in the catalog' });
          this.apply();
          this.identityMismatch(route, { check: 'package', expected: error.expected, actual: error.actual }, true);
          return;
        }
        this.packageStates.set(key, { state: 'failed', reason: 'its package could not be fetched to be checked; try again later' });
        this.deps.log.error({ server: route, err: error instanceof Error ? error.message : String(error) }, 'a catalog entry\'s package could not be fetched and checked');
        this.apply();
        setTimeout(() => {
          if (this.packageStates.get(key)?.state === 'failed') this.packageStates.delete(key);
        }, 30_000).unref();
      },
    );
    return pending;
  }

  /** Expired entries get their status and event; entries about to expire get one warning. */
  private async watchExpiry(): Promise<void> {
    const now = this.now();
    const lead = this.deps.expiringLeadDays() * DAY;
    for (const entry of this.entries) {
      const { governance } = entry;
      if (governance.source === 'config-managed' || governance.expiresAt === null) continue;
      const expires = Date.parse(governance.expiresAt);
      this.deps.onExpiry?.(governance.route, governance.status === 'approved' || governance.status === 'expired' ? (expires - now) / DAY : null);
      if (governance.status !== 'approved') continue;
      const key = `${governance.route} ${governance.expiresAt}`;
      if (expires <= now) {
        if (this.expiring.has(key)) continue;
        this.expiring.add(key);
        try {
          if (await this.deps.catalog.expire(governance.route)) this.deps.log.warn({ server: governance.route, expiresAt: governance.expiresAt }, 'a catalog entry expired');
          await this.refresh(true);
        } catch (error) {
          this.expiring.delete(key);
          this.deps.log.error({ server: governance.route, err: String(error) }, 'could not record a catalog entry\'s expiry (it is blocked all the same)');
        }
      } else if (expires - now <= lead && !this.warned.has(key)) {
        this.warned.add(key);
        const history = await this.deps.store.catalog.history(governance.route).catch(() => []);
        if (history.some((item) => item.action === 'expiring' && item.data.expiresAt === governance.expiresAt)) continue;
        const at = new Date(now).toISOString();
        const days = Math.ceil((expires - now) / DAY);
        try {
          await this.deps.store.catalog.apply({
            entry: null,
            expectRevision: null,
            history: [{ route: governance.route, at, actor: 'mandate', action: 'expiring', reason: `expires in ${days} day(s)`, data: { expiresAt: governance.expiresAt } }],
          });
          await this.deps.audit.record({
            type: 'server.expiring',
            actor: 'mandate',
            server: governance.route,
            outcome: 'success',
            reason: `expires at ${governance.expiresAt}`,
            data: { name: entry.serverJson.name, owner: governance.owner, expiresAt: governance.expiresAt, daysLeft: days },
          });
        } catch (error) {
          this.warned.delete(key);
          this.deps.log.error({ server: governance.route, err: String(error) }, 'could not record that a catalog entry expires soon');
        }
      }
    }
  }

  private sealed(entry: CatalogEntry): CatalogEntry {
    return { ...entry, seal: this.deps.sealer.seal(entry) };
  }

  /** Writes mandate.yaml's servers as config-managed entries; entries of servers no longer in it are retired. */
  private async syncConfig(): Promise<void> {
    const store = this.deps.store.catalog;
    const at = new Date(this.now()).toISOString();
    const existing = new Map((await store.listEntries()).map((entry) => [entry.governance.route, entry]));
    const wanted = new Set<string>();
    for (const server of this.deps.configServers()) {
      wanted.add(server.name);
      const current = existing.get(server.name);
      if (current !== undefined && current.governance.source === 'catalog' && current.governance.status !== 'retired') {
        this.deps.log.warn({ server: server.name }, 'mandate.yaml defines a server whose route a catalog entry also uses: mandate.yaml\'s definition is served');
        continue;
      }
      const serverJson = configServerJson(server);
      const governance: Governance = { route: server.name, owner: '', environment: 'config', risk: 'low', expiresAt: null, status: 'approved', source: 'config-managed' };
      if (current !== undefined && current.governance.source === 'config-managed' && current.governance.status === 'approved' && JSON.stringify(current.serverJson) === JSON.stringify(serverJson)) continue;
      const revision = current === undefined ? 1 : current.revision + 1;
      const unsealed: CatalogEntry = { serverJson, governance, signature: null, pins: [], revision, createdAt: current?.createdAt ?? at, updatedAt: at, approvedBy: 'mandate.yaml', approvedAt: at };
      const entry = this.sealed(unsealed);
      // Another node with the same mandate.yaml may have written it first: nothing to do then.
      await wonRace(store.apply({ entry, expectRevision: current?.revision ?? null, history: [{ route: server.name, at, actor: 'mandate.yaml', action: 'imported', reason: 'defined in mandate.yaml', data: { name: serverJson.name } }] }));
    }
    for (const [route, entry] of existing) {
      if (entry.governance.source !== 'config-managed' || wanted.has(route) || entry.governance.status === 'retired') continue;
      await wonRace(
        store.apply({
          entry: this.sealed({ ...entry, governance: { ...entry.governance, status: 'retired' }, revision: entry.revision + 1, updatedAt: at }),
          expectRevision: entry.revision,
          history: [{ route, at, actor: 'mandate.yaml', action: 'retired', reason: 'no longer in mandate.yaml', data: {} }],
        }),
      );
    }
  }
}
