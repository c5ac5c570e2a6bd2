/** The `mandate` command line. */
import { Command, CommanderError, Option } from 'commander';
import { VERSION } from '../app.ts';
import { loadConfig } from '../config/load.ts';
import { isPostgresUrl, parsePostgresUrl } from '../store/postgres/url.ts';
import { exportLog, list, verify } from './audit.ts';
import { run } from './common.ts';
import { up } from './up.ts';

/** A database URL as it may be shown: never its password (environment values stay names only too). */
function describeDatabase(url: string): string {
  if (!isPostgresUrl(url)) return '(not a PostgreSQL URL)';
  try {
    return parsePostgresUrl(url).description;
  } catch {
    return '(invalid URL)';
  }
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

function storeOptions(command: Command): Command {
  return command
    .option('--data <dir>', 'data directory of the embedded store (env MANDATE_DATA)', undefined)
    .option('--database-url <url>', 'postgres://… to use PostgreSQL (env MANDATE_DATABASE_URL)');
}

const program = new Command('mandate')
  .description('Identity-governance gateway for the Model Context Protocol')
  .version(VERSION)
  .showHelpAfterError()
  .exitOverride();

storeOptions(
  program
    .command('up')
    .description('start the gateway')
    .option('--config <file>', 'configuration file (env MANDATE_CONFIG; default ./mandate.yaml if present)')
    .option('--port <n>', 'port to listen on (env MANDATE_PORT; default 8080)')
    .option('--host <addr>', 'interface to bind (env MANDATE_HOST; default 127.0.0.1)'),
).action((flags) => run(() => up(flags)));

program
  .command('config')
  .description('check a configuration file and print what it resolves to')
  .option('--config <file>', 'configuration file (default ./mandate.yaml)')
  .option('--json', 'print JSON')
  .action((flags: { config?: string; json?: boolean }) =>
    run(async () => {
      const config = loadConfig({ config: flags.config });
      if (flags.json) {
        const shown = {
          ...config,
          databaseUrl: config.databaseUrl && describeDatabase(config.databaseUrl),
          servers: config.servers.map((s) => ({ ...s, env: Object.keys(s.env) })),
        };
        process.stdout.write(`${JSON.stringify(shown, null, 2)}\n`);
      }
      else {
        process.stdout.write(`${config.configPath ?? '(no file)'}: valid\nissuer ${config.issuer}\n`);
        for (const server of config.servers) process.stdout.write(`  ${server.name}: ${server.endpoint} -> ${server.url ?? [server.command, ...server.args].join(' ')}\n`);
        for (const warning of config.warnings) process.stdout.write(`warning: ${warning}\n`);
      }
    }),
  );

const audit = program.command('audit').description('read and check the audit log');
storeOptions(
  audit
    .command('list')
    .description('list identity events, oldest first')
    .option('--json', 'print JSON')
    .option('--since <time>', 'ISO 8601 time or a duration back from now (30m, 2h, 7d)')
    .option('--type <type>', 'event type or prefix.* (repeatable, or comma-separated)', collect)
    .option('--limit <n>', 'at most this many events (default 1000)')
    .option('--after <seq>', 'only events after this sequence number'),
).action((flags) => run(() => list(flags)));
storeOptions(
  audit.command('verify').description('check the hash chain: exit 0 if intact, 1 with the first bad event if not').option('--json', 'print JSON'),
).action((flags) => run(() => verify(flags)));
storeOptions(
  audit
    .command('export')
    .description('write the log with its hashes, one JSON object per line')
    .addOption(new Option('--format <format>', 'output format').choices(['jsonl']).default('jsonl'))
    .option('--output <file>', 'write to a new file instead of standard output')
    .option('--since <time>', 'ISO 8601 time or a duration back from now'),
).action((flags) => run(() => exportLog(flags)));

// `mandate audit export | head` closes the pipe early: that is not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw error;
});

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) process.exitCode = error.exitCode === 0 ? 0 : 2;
  else throw error;
}
