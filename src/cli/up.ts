/** `mandate up`: start the gateway and run until a signal. */
import { startApp, type App } from '../app.ts';
import { loadConfig, type ConfigOptions } from '../config/load.ts';

export async function up(options: ConfigOptions): Promise<number> {
  const config = loadConfig(options);
  // Signals are handled from the first moment: one that arrives during
  // start-up stops the gateway in order as soon as it has started.
  let app: App | null = null;
  let stopRequested = false;
  let finish: (code: number) => void = () => undefined;
  const finished = new Promise<number>((resolve) => (finish = resolve));
  const stop = () => {
    if (!app) return;
    app.stop().then(() => finish(0), (error: unknown) => {
      process.stderr.write(`mandate: error while stopping: ${String(error)}\n`);
      finish(1);
    });
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopRequested) {
      process.stderr.write(`mandate: ${signal} again, exiting now\n`);
      process.exit(130);
    }
    stopRequested = true;
    stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // SIGHUP re-reads the configuration file (as `mandate reload` does); the outcome is logged and recorded.
  process.on('SIGHUP', () => {
    if (!app) return;
    app.reload().then(
      (outcome) => {
        if (outcome.ok) process.stderr.write(`mandate: configuration reloaded (${outcome.sha256 ?? 'no file'})\n`);
        else process.stderr.write(`mandate: configuration refused, the running one stays:\n${outcome.error}\n`);
      },
      (error: unknown) => process.stderr.write(`mandate: reload failed: ${String(error)}\n`),
    );
  });

  app = await startApp(config, { load: () => loadConfig(options) });
  const base = `http://${config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host}:${app.port}`;
  process.stdout.write(`Mandate is listening on ${base} (store: ${app.store.description})\n`);
  for (const server of config.servers) process.stdout.write(`  ${server.name.padEnd(16)} ${server.endpoint}  (${server.transport})\n`);
  if (config.servers.length === 0) process.stdout.write('  no MCP servers configured: add them to mandate.yaml\n');
  if (stopRequested) stop();
  return finished;
}
