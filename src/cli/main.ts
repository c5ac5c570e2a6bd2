/** The `mandate` command line. */
import { Command, CommanderError, Option } from 'commander';
import { VERSION } from '../version.ts';
import { loadConfig } from '../config/load.ts';
import { isPostgresUrl, parsePostgresUrl } from '../store/postgres/url.ts';
import { run } from './common.ts';

// Each command's module is loaded when that command runs: a command starts
// without loading what the others need (the store, the authorization server).
const auditCommands = () => import('./audit.ts');
const clientCommands = () => import('./clients.ts');
const consentCommands = () => import('./consents.ts');
const tokenCommands = () => import('./tokens.ts');
const userCommands = () => import('./users.ts');
const policyCommands = () => import('./policy.ts');
import { cleanLines, printJson, printLine } from './output.ts';

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

/** Store options and --json for every admin command; --actor too for those that change something (it names the admin in the audit log). */
function adminOptions(command: Command, changes = true): Command {
  storeOptions(command).option('--json', 'print JSON');
  return changes ? command.option('--actor <name>', 'admin named in the audit event (default: $USER, else admin)') : command;
}

const program = new Command('mandate')
  .description('Identity-governance gateway for the Model Context Protocol')
  .version(VERSION)
  .showHelpAfterError()
  // Commander's own errors echo what was typed (an unknown option or command): cleaned like every other line.
  .configureOutput({ outputError: (text, write) => write(cleanLines(text)) })
  .exitOverride();

storeOptions(
  program
    .command('up')
    .description('start the gateway')
    .option('--config <file>', 'configuration file (env MANDATE_CONFIG; default ./mandate.yaml if present)')
    .option('--port <n>', 'port to listen on (env MANDATE_PORT; default 8080)')
    .option('--host <addr>', 'interface to bind (env MANDATE_HOST; default 127.0.0.1)'),
).action((flags) => run(async () => (await import('./up.ts')).up(flags)));

storeOptions(
  program
    .command('migrate')
    .description('apply pending schema migrations (the only command besides `up` that changes the schema) and print what was applied')
    .option('--json', 'print the applied migrations as a JSON array'),
).action((flags) => run(async () => (await import('./migrate.ts')).migrate(flags)));

program
  .command('reload')
  .description('make the gateway serving a data directory re-read its configuration file; exit 0 once it is in force, 1 if it was refused')
  .option('--data <dir>', 'data directory of the gateway (env MANDATE_DATA; default ./.mandate)')
  .option('--json', 'print the outcome as JSON')
  .action((flags: { data?: string; json?: boolean }) => run(async () => (await import('./reload.ts')).reload(flags)));

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
        printJson(shown);
      }
      else {
        printLine(`${config.configPath ?? '(no file)'}: valid`);
        printLine(`issuer ${config.issuer}`);
        for (const server of config.servers) printLine(`  ${server.name}: ${server.endpoint} -> ${server.url ?? [server.command, ...server.args].join(' ')}`);
        for (const warning of config.warnings) printLine(`warning: ${warning}`);
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
).action((flags) => run(async () => (await auditCommands()).list(flags)));
storeOptions(
  audit.command('verify').description('check the hash chain: exit 0 if intact, 1 with the first bad event if not').option('--json', 'print JSON'),
).action((flags) => run(async () => (await auditCommands()).verify(flags)));
storeOptions(
  audit
    .command('export')
    .description('write the log with its hashes, one JSON object per line')
    .addOption(new Option('--format <format>', 'output format').choices(['jsonl']).default('jsonl'))
    .option('--output <file>', 'write to a new file instead of standard output')
    .option('--since <time>', 'ISO 8601 time or a duration back from now'),
).action((flags) => run(async () => (await auditCommands()).exportLog(flags)));

const clients = program.command('clients').description('OAuth clients: review registrations, approve, reject, revoke');
adminOptions(
  clients
    .command('list')
    .description('list clients, oldest first')
    .addOption(new Option('--status <status>', 'only clients with this status').choices(['pending', 'active', 'rejected', 'revoked'])),
  false,
).action((flags) => run(async () => (await clientCommands()).listClients(flags)));
adminOptions(clients.command('show').description('show one client (whether it has a secret, never the secret)').argument('<id>', 'client id'), false).action(
  (id: string, flags) => run(async () => (await clientCommands()).showClient(id, flags)),
);
adminOptions(clients.command('approve').description('approve a pending client (it may then obtain tokens)').argument('<id>', 'client id')).action(
  (id: string, flags) => run(async () => (await clientCommands()).decideClient('approve', id, flags)),
);
adminOptions(clients.command('reject').description('reject a pending client').argument('<id>', 'client id')).action((id: string, flags) =>
  run(async () => (await clientCommands()).decideClient('reject', id, flags)),
);
adminOptions(
  clients.command('revoke').description('revoke a pending or active client, and every token issued to it').argument('<id>', 'client id'),
).action((id: string, flags) => run(async () => (await clientCommands()).decideClient('revoke', id, flags)));
adminOptions(
  clients
    .command('token')
    .description('initial access tokens for dynamic client registration')
    .command('create')
    .description('create an initial access token; it is printed once and only its hash is kept')
    .option('--uses <n>', 'registrations it allows (default 1, at most 1000)')
    .option('--expires-in <duration>', 'lifetime such as 30m, 24h, 7d (default 24h, at most 30d)')
    .option('--label <text>', 'a note to recognise it by'),
).action((flags) => run(async () => (await clientCommands()).createRegistrationToken(flags)));

const users = program.command('users').description('local users who log in with a password');
adminOptions(
  users
    .command('add')
    .description('add a user; the password comes from standard input or a prompt, never from the command line')
    .argument('<name>', 'user name')
    .option('--password-stdin', 'read the password from standard input (one trailing newline is removed)')
    .option('--group <group>', 'a group the user belongs to (repeatable, or comma-separated)', collect),
).action((name: string, flags) => run(async () => (await userCommands()).addUser(name, flags)));
adminOptions(users.command('list').description('list users'), false).action((flags) => run(async () => (await userCommands()).listUsers(flags)));
adminOptions(users.command('disable').description('disable a user: no more logins, and every token issued for them is refused').argument('<name>', 'user name')).action(
  (name: string, flags) => run(async () => (await userCommands()).setUserDisabled(name, true, flags)),
);
adminOptions(users.command('enable').description('enable a disabled user').argument('<name>', 'user name')).action((name: string, flags) =>
  run(async () => (await userCommands()).setUserDisabled(name, false, flags)),
);

const tokens = program.command('tokens').description('access and refresh tokens');
adminOptions(
  tokens
    .command('revoke')
    .description('refuse tokens: one (--jti), or every one issued so far to a client or for a user')
    .option('--client <id>', 'every token issued to this client')
    .option('--user <name>', 'every token issued for this user')
    .option('--jti <id>', 'the token with this jti'),
).action((flags) => run(async () => (await tokenCommands()).revokeTokens(flags)));

const consents = program.command('consents').description("users' consents to clients");
adminOptions(
  consents.command('list').description('list consents').option('--user <name>', 'only this user').option('--client <id>', 'only this client'),
  false,
).action((flags) => run(async () => (await consentCommands()).listConsents(flags)));
adminOptions(
  consents
    .command('revoke')
    .description('remove consents (the user is asked again); give --user, --client or both')
    .option('--user <name>', "this user's consents")
    .option('--client <id>', 'consents given to this client'),
).action((flags) => run(async () => (await consentCommands()).revokeConsents(flags)));

const policy = program.command('policy').description('check, test and explain the Cedar policy set, and make the gateway reload it');
/** Where a command reads the policy set when not told a directory: the configuration's `policies:`, else DATA/policies. */
function policyDirOptions(command: Command): Command {
  return command
    .option('--config <file>', 'configuration file naming the policy directory (env MANDATE_CONFIG; default ./mandate.yaml if present)')
    .option('--data <dir>', 'data directory: its policies/ when the configuration names no directory (env MANDATE_DATA; default ./.mandate)')
    .option('--json', 'print JSON');
}
policyDirOptions(
  policy
    .command('validate')
    .description('parse and validate a policy directory against the schema: exit 0 if valid, 1 with each problem (file:line:col) if not')
    .argument('[dir]', 'policy directory (default: the configured one)'),
).action((dir: string | undefined, flags) => run(async () => (await policyCommands()).validate(dir, flags)));
policyDirOptions(
  policy
    .command('test')
    .description('decide the cases in YAML files with a policy set: exit 0 if every case is as expected, 1 if one is not')
    .argument('<files...>', 'cases files (YAML lists of cases)')
    .option('--policies <dir>', 'policy directory (default: the configured one)'),
).action((files: string[], flags) => run(async () => (await policyCommands()).test(files, flags)));
policyDirOptions(
  policy
    .command('explain')
    .description('decide one request and show why: the decision, the determining policies, the entities and context built')
    .option('--user <name>', 'the user calling (else --client alone: a machine client calling as itself)')
    .option('--group <group>', "a group of the user (repeatable, or comma-separated)", collect)
    .option('--client <id>', "the client (a user's call: default test-client)")
    .requiredOption('--server <name>', 'the server called')
    .option('--tool <name>', 'a tools/call of this tool')
    .option('--method <method>', 'another MCP method (tools/list, prompts/get, resources/read…)')
    .option('--target <name>', 'the prompt or resource URI the method names')
    .option('--args <json>', "the tool's arguments, a JSON object")
    .option('--scope <scope>', "a scope of the token (repeatable, or comma-separated)", collect)
    .option('--policies <dir>', 'policy directory (default: the configured one)'),
).action((flags) => run(async () => (await policyCommands()).explain(flags)));
policyDirOptions(
  policy
    .command('schema')
    .description("print the Cedar schema policies are validated against: Mandate's, plus the policy directory's additions")
    .option('--policies <dir>', 'policy directory (default: the configured one, if it exists)'),
).action((flags) => run(async () => (await policyCommands()).schema(flags)));
policy
  .command('reload')
  .description('make the gateway serving a data directory re-read its policy directory; exit 0 once the set is in force, 1 if it was refused')
  .option('--data <dir>', 'data directory of the gateway (env MANDATE_DATA; default ./.mandate)')
  .option('--json', 'print the outcome as JSON')
  .action((flags: { data?: string; json?: boolean }) => run(async () => (await policyCommands()).reload(flags)));

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
