/** `mandate up`: start the gateway and run until a signal. */
import type { App } from '../app.ts';
import { loadConfig, type ConfigOptions } from '../config/load.ts';
import { tuneHeap } from './heap.ts';
import { cleanLines, printLine, printNote } from './output.ts';

/**
 * A repeat of the same stop signal this soon after the first is the same
 * request, not an impatient second one: a terminal's Ctrl-C (or a service
 * manager's SIGTERM to the whole group) reaches both this process and the
 * launcher that started it on an older Node (bin/mandate.js), which passes
 * it on.
 */
const SAME_REQUEST_MS = 1000;

export async function up(options: ConfigOptions): Promise<number> {
  // Before anything is loaded: the garbage collector's setting for the whole run (heap.ts).
  tuneHeap();
  const config = loadConfig(options);
  // Signals are handled from the first moment: one that arrives during
  // start-up stops the gateway in order as soon as it has started.
  let app: App | null = null;
  let stopRequested: { signal: NodeJS.Signals; at: number } | null = null;
  let finish: (code: number) => void = () => undefined;
  const finished = new Promise<number>((resolve) => (finish = resolve));
  const stop = () => {
    if (!app) return;
    app.stop().then(() => finish(0), (error: unknown) => {
      printNote(`mandate: error while stopping: ${String(error)}`);
      finish(1);
    });
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopRequested) {
      if (signal === stopRequested.signal && Date.now() - stopRequested.at < SAME_REQUEST_MS) return;
      printNote(`mandate: ${signal} again, exiting now`);
      process.exit(130);
    }
    stopRequested = { signal, at: Date.now() };
    stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // SIGHUP re-reads the configuration file (as `mandate reload` does); the outcome is logged and recorded.
  process.on('SIGHUP', () => {
    if (!app) return;
    app.reload().then(
      (outcome) => process.stderr.write(`${cleanLines(outcome.ok ? `mandate: SIGHUP: configuration reloaded (${outcome.sha256 ?? 'no file'})` : `mandate: SIGHUP: configuration refused, the running one stays:\n${outcome.error}`)}\n`),
      (error: unknown) => printNote(`mandate: SIGHUP: reload failed: ${String(error)}`),
    );
  });

  // Loaded once the configuration is known to be good: a bad file is refused without loading the gateway.
  const { startApp } = await import('../app.ts');
  app = await startApp(config, { load: () => loadConfig(options) });
  const base = `http://${config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host}:${app.port}`;
  printLine(`Mandate is listening on ${base} (store: ${app.store.description})`);
  for (const server of config.servers) printLine(`  ${server.name.padEnd(16)} ${server.endpoint}  (${server.transport})`);
  if (config.servers.length === 0) printLine('  no MCP servers configured: add them to mandate.yaml');
  if (stopRequested) stop();
  return finished;
}
