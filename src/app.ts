/**
 * The composition root: configuration → store → audit → server registry →
 * identity → gateway → HTTP, plus live reconfiguration (`reload`, reached by
 * SIGHUP and through the control socket) and the evidence of a crashed run.
 */
import type http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { JsonValue } from './audit/events.ts';
import { AuditLog } from './audit/log.ts';
import { beginRun, endRun, recoverCrashedRuns, type RunMarker } from './audit/recovery.ts';
import { CallJournal, recoveredCall } from './audit/calls.ts';
import { CatalogRuntime } from './catalog/runtime.ts';
import { Catalog } from './catalog/service.ts';
import { ToolGate } from './catalog/tool-gate.ts';
import { catalogSealer } from './catalog/seal.ts';
import { PackageStore } from './catalog/packages.ts';
import { CredentialBroker } from './credentials/broker.ts';
import { BreakglassRuntime } from './breakglass/runtime.ts';
import { ApprovalGate } from './approvals/gate.ts';
import { Approvals } from './approvals/service.ts';
import { handleRegistryRequest } from './catalog/registry-http.ts';
import { handleAdminRequest } from './admin/api.ts';
import { signatureCheck, type SignatureCheck } from './catalog/provenance.ts';
import { loadSecretKey } from './identity/secrets.ts';
import { RefusalSummaries } from './audit/summary.ts';
import { diffConfig, inForce } from './config/diff.ts';
import { ConfigError, type Config } from './config/load.ts';
import { openControlSocket, type ControlSocket } from './control/socket.ts';
import type { CredentialHook } from './gateway/credentials.ts';
import type { FilterChain } from './gateway/delivery.ts';
import { Gateway } from './gateway/gateway.ts';
import { createHttpServer } from './gateway/http-server.ts';
import { ServerRegistry, type ServerChange } from './gateway/registry.ts';
import { Identity } from './identity/service.ts';
import { createLogger, type Logger } from './observability/log.ts';
import { NO_FILTERS } from './gateway/delivery.ts';
import { listFilter } from './policy/enforce.ts';
import { PolicyService, writeStarterSet, type PolicyLoadOutcome } from './policy/service.ts';
import { Metrics } from './observability/metrics.ts';
import { openStore } from './store/open.ts';
import type { Store } from './store/types.ts';
import { VERSION } from './version.ts';

export { VERSION };

/** What a reload did: the new configuration is in force, or it was refused and the running one stays. */
export type ReloadOutcome =
  | {
      ok: true;
      source: string | null;
      sha256: string | null;
      servers: Omit<ServerChange, 'generation'>;
      /** Other settings that changed and apply now. */
      applied: string[];
      /** Settings that changed but keep their running value until a restart. */
      restartRequired: string[];
      warnings: string[];
      /** The policy directory, read again with the configuration. */
      policy: PolicyLoadOutcome;
    }
  | { ok: false; source: string | null; error: string };

export interface App {
  config: Config;
  store: Store;
  audit: AuditLog;
  registry: ServerRegistry;
  /** The server catalog's rules (proposals, approvals) and its runtime (expiry, blocking). */
  catalog: Catalog;
  catalogRuntime: CatalogRuntime;
  policy: PolicyService;
  gateway: Gateway;
  identity: Identity;
  server: http.Server;
  log: Logger;
  metrics: Metrics;
  /** This run's marker (its id names it in the log). */
  run: RunMarker;
  /** The port actually bound (useful with port 0). */
  port: number;
  /** Re-reads the configuration (as at start) and applies what can change while running. */
  reload(): Promise<ReloadOutcome>;
  /** Re-reads the policy directory (`mandate policy reload`). */
  reloadPolicies(): Promise<PolicyLoadOutcome>;
  stop(): Promise<void>;
}

export interface AppOptions {
  log?: Logger;
  /** Reads the configuration again, with the same flags and environment as at start (reload). */
  load?: () => Config;
  /** The delivery seam's filters (default: none). */
  filters?: FilterChain;
  /** The upstream credential hook (default: no credential). */
  credentials?: CredentialHook;
  /** Listen on the data directory's control socket for `mandate reload` (default true). */
  controlSocket?: boolean;
}

function summaryOf(config: Config): { [key: string]: JsonValue } {
  return {
    source: config.configPath,
    sha256: config.configHash,
    issuer: config.issuer,
    servers: config.servers.map((s) => ({ name: s.name, transport: s.transport })),
    warnings: config.warnings,
  };
}

/**
 * Whether the policy set in force lets a user, through a client, use a
 * server at all (asked by the token exchange before it adds a server): its
 * tools listed, or one of the tools the requested scopes name called. No
 * set in force: refused.
 */
async function exchangeRefusal(policy: PolicyService | null, store: Store, ask: { user: string; groups: readonly string[]; clientId: string; server: string; scopes: readonly string[] }): Promise<string | null> {
  const engine = policy?.engine ?? null;
  if (engine === null) return 'no policy set is in force';
  const record = await store.identity.getClient(ask.clientId);
  const name = typeof record?.metadata.client_name === 'string' ? record.metadata.client_name : ask.clientId;
  const client = { id: ask.clientId, name, owner: record?.owner ?? null, kind: record?.class ?? 'machine' } as const;
  const base = { principal: { type: 'User' as const, id: ask.user, groups: ask.groups }, client, server: ask.server, scopes: ask.scopes, now: Date.now(), tokenAge: 0, sourceAddress: '0.0.0.0' };
  if (engine.decide({ ...base, method: 'tools/list', target: { type: 'Server', name: ask.server } }).allow) return null;
  const prefix = `mcp:${ask.server}:tool:`;
  const tools = ask.scopes.filter((scope) => scope.startsWith(prefix)).map((scope) => scope.slice(prefix.length));
  if (tools.some((tool) => engine.couldAllow({ ...base, method: 'tools/call', target: { type: 'Tool', name: tool } }))) return null;
  return `the policy set lets user ${ask.user} use nothing there`;
}

export async function startApp(config: Config, options: AppOptions = {}): Promise<App> {
  const log = options.log ?? createLogger(config.log.level);
  for (const warning of config.warnings) log.warn(warning);
  const metrics = new Metrics();
  const store = await openStore({
    databaseUrl: config.databaseUrl ?? undefined,
    dataDir: config.dataDir,
    durability: config.audit.durability,
    connectTimeoutMs: config.store.connectTimeoutMs,
    statementTimeoutMs: config.store.statementTimeoutMs,
  });
  try {
    // Applies pending migrations (none: no DDL at all); refuses a schema newer than this build.
    await store.migrate();
  } catch (error) {
    await store.close();
    throw error;
  }
  const audit = new AuditLog(store);
  audit.subscribe((event) => metrics.auditEvent(event.type));
  audit.onLost = (event, error) => {
    metrics.auditLost.inc();
    log.error({ type: event.type, err: String(error) }, 'an identity event could not be written to the audit log');
  };
  const run = beginRun(config.dataDir);
  const calls = new CallJournal(config.dataDir, run.run, config.audit.durability, config.audit.journalSync);
  let current = config;

  let identity: Identity;
  const registry = new ServerRegistry(config.servers);
  // Publishers are read once per configuration: a reload that changes them checks every signature again.
  let signaturesFor: { catalog: Config['catalog']; check: SignatureCheck } | null = null;
  const signatures = (): SignatureCheck => {
    if (signaturesFor?.catalog !== current.catalog) signaturesFor = { catalog: current.catalog, check: signatureCheck(current.catalog, current.configPath) };
    return signaturesFor.check;
  };
  // The deployment secret seals catalog entries (src/catalog/seal.ts), as it seals the authorization server's keys.
  const deploymentSecret = loadSecretKey(config.dataDir);
  const sealer = catalogSealer(deploymentSecret);
  // What upstreams are shown (docs/credentials.md): opened once per version, kept in memory, refreshed on change.
  // `jwt` upstreams get tokens signed with the authorization server's active key (read at each mint: rotation follows).
  const broker = new CredentialBroker({ store, secret: deploymentSecret, issuer: config.issuer, log, audit, minter: { issuer: config.issuer, key: () => identity.signingKey } });
  let policyRef: PolicyService | null = null;
  // Break-glass grants in force (docs/breakglass.md): the policy context reads them, each node polls the store.
  const breakglass = new BreakglassRuntime({
    source: store.breakglass,
    log,
    reviewDays: () => current.breakglass.reviewDays,
    onOverdue: (count) => metrics.breakglassOverdue.set(count),
  });
  const catalog = new Catalog({
    store,
    audit,
    sealer,
    settings: () => ({ catalog: current.catalog, admin: current.admin }),
    verifySignature: (serverJson, jws) => signatures()(serverJson, jws),
  });
  const catalogRuntime = new CatalogRuntime({
    store,
    audit,
    catalog,
    registry,
    log,
    issuer: config.issuer,
    dataDir: config.dataDir,
    configServers: () => current.servers,
    sealer,
    packages: new PackageStore(path.join(config.dataDir, 'packages')),
    verifySignature: signatures,
    requireSignatures: () => current.catalog.admission.requireSignatures,
    expiringLeadDays: () => current.catalog.admission.expiringLeadDays,
    onExpiry: (route, days) => (days === null ? metrics.daysToExpiry.remove(route) : metrics.daysToExpiry.set({ server: route }, Math.round(days * 100) / 100)),
  });
  try {
    await recoverCrashedRuns(config.dataDir, store, audit, run);
    await audit.record({ type: 'config.loaded', outcome: 'success', data: { ...summaryOf(config), run: run.run } });
    await catalogRuntime.start();
    await broker.start();
    await breakglass.start();
    identity = await Identity.start({
      config,
      store,
      audit,
      log,
      registry,
      connections: broker.connections,
      approvals: new Approvals({ store, audit }),
      // Read when an exchange asks: the policy set is built after the identity plane.
      policyRefusal: (ask) => exchangeRefusal(policyRef, store, ask),
    });
  } catch (error) {
    catalogRuntime.stop();
    broker.stop();
    breakglass.stop();
    await audit.flush();
    endRun(config.dataDir, run);
    await store.close();
    throw error;
  }
  const policy: PolicyService = new PolicyService(config.policies, { audit, log, run: run.run, servers: () => registry.list().map((server) => server.name) });
  if (!config.policiesConfigured && writeStarterSet(config.policies)) log.info({ dir: config.policies }, 'wrote the starter policy set (the token\'s scopes decide)');
  // A set that cannot be loaded leaves none in force: every decided request is refused and /readyz says why.
  await policy.load('start');
  policy.watch();
  policy.breakglass = breakglass;
  policyRef = policy;
  const reloadPolicies = () => policy.load('command');
  const refusals = new RefusalSummaries(audit, config.audit.summaryIntervalSeconds * 1000);
  const tools = new ToolGate({ store, audit, log, pins: (route) => catalogRuntime.pinsOf(route) });
  const gateway = new Gateway(config.gateway, {
    audit,
    calls,
    metrics,
    log,
    registry,
    run: run.run,
    auth: identity,
    refusals,
    // Tool pins first (a quarantined tool is not listed whatever the policy says), then the policy's list filter.
    filters: (options.filters ?? NO_FILTERS).after(listFilter(policy)).after(tools.filter()),
    tools,
    // Calls a permit allows only with a person's approval (docs/approvals.md).
    approvals: new ApprovalGate({ store, audit, issuer: config.issuer, ttlMs: () => current.approvals.ttlSeconds * 1000 }),
    onIdentityMismatch: (server, mismatch) => catalogRuntime.identityMismatch(server.name, mismatch),
    credentials: options.credentials ?? broker,
    policy,
  });
  let markStarted!: () => void;
  let markFailed!: (error: unknown) => void;
  const started = new Promise<void>((resolve, reject) => {
    markStarted = resolve;
    markFailed = reject;
  });
  const trustedProxies = config.listen.trustedProxies;
  const registryDeps = { runtime: catalogRuntime, registry, identity, policy, requireToken: () => current.identity.requireToken };
  const adminDeps = { catalog, store, identity, issuer: config.issuer, settings: () => gateway.settings, refusals, log, changed: () => catalogRuntime.refresh() };
  const server = createHttpServer({
    gateway,
    store,
    identity,
    started,
    issuer: config.issuer,
    trustedProxies: () => trustedProxies,
    registryApi: (req, res, pathAndQuery, address) => handleRegistryRequest(registryDeps, req, res, pathAndQuery, address),
    adminApi: (req, res, pathAndQuery, address) => handleAdminRequest(adminDeps, req, res, pathAndQuery, address),
  });

  let reloading: Promise<ReloadOutcome> | null = null;
  const reload = (): Promise<ReloadOutcome> => {
    reloading ??= (async () => {
      try {
        return await applyReload();
      } finally {
        reloading = null;
      }
    })();
    return reloading;
  };
  const applyReload = async (): Promise<ReloadOutcome> => {
    const source = current.configPath;
    if (options.load === undefined) return { ok: false, source, error: 'this gateway was started without a configuration loader: nothing to re-read' };
    let next: Config;
    try {
      next = options.load();
    } catch (error) {
      const message = error instanceof ConfigError ? error.message : `cannot load the configuration: ${error instanceof Error ? error.message : String(error)}`;
      log.error({ source }, `configuration refused; the running configuration stays:\n${message}`);
      await audit.record({ type: 'config.rejected', outcome: 'failure', reason: message.split('\n')[0] ?? 'invalid configuration', data: { source, errors: message.split('\n').slice(1).map((line) => line.trim()), run: run.run } }).catch(() => undefined);
      return { ok: false, source, error: message };
    }
    const diff = diffConfig(current, next);
    // Recorded before it applies: a configuration is never in force without its record.
    const { added, removed, changed: altered } = registry.plan(catalogRuntime.compose(next.servers).servers).change;
    const changed = { added, removed, changed: altered };
    try {
      await audit.record({
        type: 'config.loaded',
        outcome: 'success',
        reason: 'reload',
        data: { ...summaryOf(next), changes: { servers: changed, applied: diff.applied, restartRequired: diff.restartRequired }, run: run.run },
      });
    } catch (error) {
      return { ok: false, source, error: `the audit log cannot be written, so nothing was changed: ${error instanceof Error ? error.message : String(error)}` };
    }
    // What needs a restart keeps its running value.
    current = inForce(current, next);
    gateway.settings = current.gateway;
    refusals.interval = current.audit.summaryIntervalSeconds * 1000;
    log.level = current.log.level;
    await catalogRuntime.configChanged();
    for (const warning of next.warnings) log.warn(warning);
    if (diff.restartRequired.length > 0) log.warn({ settings: diff.restartRequired }, 'these settings changed but need a restart to take effect');
    log.info({ servers: changed, applied: diff.applied }, 'configuration reloaded');
    const policies = await policy.load('reload', current.policies);
    return { ok: true, source, sha256: next.configHash, servers: changed, applied: diff.applied, restartRequired: diff.restartRequired, warnings: next.warnings, policy: policies };
  };

  let port: number;
  let control: ControlSocket | null = null;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.listen.port, config.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    port = (server.address() as AddressInfo).port;
    if (options.controlSocket !== false) {
      control = await openControlSocket(config.dataDir, { reload, reloadPolicies }, (error) => log.error({ err: String(error) }, 'control request failed'));
      if (control === null) log.warn({ dataDir: config.dataDir }, 'another gateway answers on this data directory\'s control socket: `mandate reload` reaches that one');
    }
    await audit.record({
      type: 'gateway.started',
      outcome: 'success',
      data: { version: VERSION, store: store.kind, listen: `${config.listen.host}:${port}`, pid: process.pid, run: run.run },
    });
  } catch (error) {
    // Not listening, or the start could not be recorded: nothing is served.
    markFailed(error);
    catalogRuntime.stop();
    broker.stop();
    breakglass.stop();
    server.close();
    server.closeAllConnections();
    await control?.close();
    identity.stop();
    refusals.stop();
    await policy.stop();
    await gateway.shutdown();
    await audit.flush();
    endRun(config.dataDir, run);
    await store.close();
    throw error;
  }
  markStarted();
  log.info({ listen: `${config.listen.host}:${port}`, store: store.description, servers: registry.size, run: run.run }, 'mandate gateway started');

  let stopping: Promise<void> | null = null;
  const stop = () => {
    stopping ??= (async () => {
      server.close();
      server.closeIdleConnections();
      catalogRuntime.stop();
      broker.stop();
      breakglass.stop();
      await control?.close();
      await gateway.shutdown();
      identity.stop();
      refusals.stop();
      await policy.stop();
      server.closeAllConnections();
      // Calls forwarded whose own record could not be written: their decisions go in now, or the run
      // stays marked as unfinished so the next start recovers them from the journal.
      const unfinished = calls.pending;
      const recorded = await Promise.all(unfinished.map((entry) => audit.record(recoveredCall(entry, run.run)).then(() => true, () => false)));
      const complete = recorded.every(Boolean);
      await audit.record({ type: 'gateway.stopped', outcome: 'success', data: { pid: process.pid, run: run.run } }).catch(() => undefined);
      await audit.flush();
      if (complete) {
        await calls.close();
        endRun(config.dataDir, run);
      } else log.error({ calls: unfinished.length }, 'decisions of forwarded calls could not be recorded; they stay in the call journal for the next start');
      await store.close();
      log.info('mandate gateway stopped');
      log.flush();
    })();
    return stopping;
  };
  return {
    get config() {
      return current;
    },
    store,
    audit,
    registry,
    catalog,
    catalogRuntime,
    policy,
    gateway,
    identity,
    server,
    log,
    metrics,
    run,
    port,
    reload,
    reloadPolicies,
    stop,
  };
}
