/** `mandate up`: start the gateway and run until a signal. */
import { startApp } from '../app.ts';
import { loadConfig, type ConfigOptions } from '../config/load.ts';

export async function up(options: ConfigOptions): Promise<number> {
  const config = loadConfig(options);
  const app = await startApp(config);
  const base = `http://${config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host}:${app.port}`;
  process.stdout.write(`Mandate is listening on ${base} (store: ${app.store.description})\n`);
  for (const server of config.servers) process.stdout.write(`  ${server.name.padEnd(16)} ${server.endpoint}  (${server.transport})\n`);
  if (config.servers.length === 0) process.stdout.write('  no MCP servers configured: add them to mandate.yaml\n');
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        process.stderr.write(`mandate: ${signal} again, exiting now\n`);
        process.exit(130);
      }
      stopping = true;
      app.stop().then(() => resolve(0), (error: unknown) => {
        process.stderr.write(`mandate: error while stopping: ${String(error)}\n`);
        resolve(1);
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
