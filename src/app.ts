/**
 * The composition root: configuration → store → audit → identity → gateway → HTTP.
 */
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AuditLog } from './audit/log.ts';
import type { Config } from './config/load.ts';
import { Gateway } from './gateway/gateway.ts';
import { Identity } from './identity/service.ts';
import { createHttpServer } from './gateway/http-server.ts';
import { createLogger, type Logger } from './observability/log.ts';
import { Metrics } from './observability/metrics.ts';
import { openStore } from './store/open.ts';
import type { Store } from './store/types.ts';
import { VERSION } from './version.ts';

export { VERSION };

export interface App {
  config: Config;
  store: Store;
  audit: AuditLog;
  gateway: Gateway;
  identity: Identity;
  server: http.Server;
  log: Logger;
  metrics: Metrics;
  /** The port actually bound (useful with port 0). */
  port: number;
  stop(): Promise<void>;
}

export async function startApp(config: Config, options: { log?: Logger } = {}): Promise<App> {
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

  await audit.record({
    type: 'config.loaded',
    outcome: 'success',
    data: {
      source: config.configPath,
      issuer: config.issuer,
      servers: config.servers.map((s) => ({ name: s.name, transport: s.transport })),
      warnings: config.warnings,
    },
  });

  let identity: Identity;
  try {
    identity = await Identity.start({ config, store, audit, log });
  } catch (error) {
    await audit.flush();
    await store.close();
    throw error;
  }
  const gateway = new Gateway(config, { audit, metrics, log });
  let markStarted!: () => void;
  let markFailed!: (error: unknown) => void;
  const started = new Promise<void>((resolve, reject) => {
    markStarted = resolve;
    markFailed = reject;
  });
  const server = createHttpServer({ gateway, store, identity, started });
  let port: number;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.listen.port, config.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    port = (server.address() as AddressInfo).port;
    await audit.record({
      type: 'gateway.started',
      outcome: 'success',
      data: { version: VERSION, store: store.kind, listen: `${config.listen.host}:${port}`, pid: process.pid },
    });
  } catch (error) {
    // Not listening, or the start could not be recorded: nothing is served.
    markFailed(error);
    server.close();
    server.closeAllConnections();
    identity.stop();
    await gateway.shutdown();
    await store.close();
    throw error;
  }
  markStarted();
  log.info({ listen: `${config.listen.host}:${port}`, store: store.description, servers: config.servers.length }, 'mandate gateway started');

  let stopping: Promise<void> | null = null;
  const stop = () => {
    stopping ??= (async () => {
      server.close();
      server.closeIdleConnections();
      await gateway.shutdown();
      identity.stop();
      server.closeAllConnections();
      await audit.record({ type: 'gateway.stopped', outcome: 'success', data: { pid: process.pid } }).catch(() => undefined);
      await audit.flush();
      await store.close();
      log.info('mandate gateway stopped');
      log.flush();
    })();
    return stopping;
  };
  return { config, store, audit, gateway, identity, server, log, metrics, port, stop };
}
