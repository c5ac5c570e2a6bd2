/**
 * Test harness: Mandate in the test's own process. The same start-up as
 * `mandate up` (a config file on disk, loadConfig, startApp) on 127.0.0.1
 * with a temporary data directory and a silent logger, without a child
 * process to start, poll and stop. For tests whose subject is the gateway's
 * own behaviour on the wire; end-to-end tests keep process.ts.
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { startApp, type App, type AppOptions } from '../../src/app.ts';
import { loadConfig } from '../../src/config/load.ts';
import type { Store } from '../../src/store/types.ts';
import { auditEntries, auditRecords, type AuditEntry, type AuditFilter } from './audit.ts';
import { freePort, runCli, tempDir, writeTestConfig, type MandateOptions, type TestGateway } from './process.ts';

export type { AuditEntry, AuditFilter };

/** As for `mandate up` in process.ts (there is no environment to pass), plus what startApp takes in-process (filters, credentials, a logger). */
export type InProcessOptions = Omit<MandateOptions, 'env'> & { app?: Omit<AppOptions, 'load'> };

export interface InProcessMandate extends TestGateway {
  app: App;
  store: Store;
  /** The audit log as the CLI lists it, read from the running app's store. */
  audit(filter?: AuditFilter): Promise<AuditEntry[]>;
  stop(): Promise<void>;
}

/** Reads the audit log of a running app, once everything reported so far is written. */
export async function readAudit(app: App, filter: AuditFilter = {}): Promise<AuditEntry[]> {
  await app.audit.flush();
  return auditEntries(await auditRecords(app.store, filter));
}

/** Starts Mandate in this process with the configuration a test gateway runs with (writeTestConfig). */
export function startInProcess(options: InProcessOptions): Promise<InProcessMandate> {
  return startWithConfig((configPath, base) => writeTestConfig(configPath, base, options), options);
}

/**
 * Starts Mandate in this process with the configuration file `write` puts at
 * `configPath` for a gateway at `base` (http://127.0.0.1:PORT). The issuer
 * must name the port, so a free port is picked first; another process may
 * take it before the app binds it, so a failed bind is retried on a new port.
 */
export async function startWithConfig(write: (configPath: string, base: string) => void, options: Pick<InProcessOptions, 'dataDir' | 'databaseUrl' | 'app'> = {}): Promise<InProcessMandate> {
  const dir = tempDir('mandate-inprocess-');
  const configPath = path.join(dir, 'mandate.yaml');
  let last: unknown;
  for (let attempt = 1; attempt <= 3; attempt += 1) {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    // A failed attempt may have written to its data directory: each attempt gets its own.
    const dataDir = options.dataDir ?? path.join(dir, `data-${attempt}`);
    write(configPath, base);
    // The port as `mandate up --port` gives it; no environment: MANDATE_* variables of the test runner must not change the configuration.
    const load = () => loadConfig({ config: configPath, port, host: '127.0.0.1', data: dataDir, databaseUrl: options.databaseUrl }, {}, dir);
    let app: App;
    try {
      app = await startApp(load(), { log: pino({ level: 'silent' }), ...options.app, load });
    } catch (error) {
      last = error;
      if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') continue;
      rmSync(dir, { recursive: true, force: true });
      throw error;
    }
    const storeArgs = options.databaseUrl ? ['--database-url', options.databaseUrl] : ['--data', dataDir];
    let stopping: Promise<void> | null = null;
    return {
      app,
      store: app.store,
      port,
      base,
      dataDir,
      configPath,
      endpoint: (name) => `${base}/mcp/${name}`,
      cli: (args) => runCli([...args, ...storeArgs]),
      audit: (filter) => readAudit(app, filter),
      stop: () =>
        (stopping ??= app.stop().finally(() => rmSync(dir, { recursive: true, force: true }))),
    };
  }
  rmSync(dir, { recursive: true, force: true });
  throw new Error(`Mandate did not start in-process in 3 attempts: ${String(last)}`);
}
