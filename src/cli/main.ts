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
const serverCommands = () => import('./servers.ts');
const secretCommands = () => import('./secrets.ts');
const connectionCommands = () => import('./connections.ts');
const breakglassCommands = () => import('./breakglass.ts');
const approvalCommands = () => import('./approvals.ts');
const taskCommands = () => import('./tasks.ts');
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

const servers = program.command('servers').description('the server catalog: propose, approve, renew, suspend and retire MCP servers (docs/catalog.md)');
/** What every `servers` command takes: the configuration (its catalog and admin sections), the store, --json and the acting user. */
function catalogOptions(command: Command, changes = true): Command {
  command
    .option('--config <file>', 'configuration file (env MANDATE_CONFIG; default ./mandate.yaml if present)')
    .option('--data <dir>', 'data directory of the embedded store (env MANDATE_DATA)')
    .option('--database-url <url>', 'postgres://… to use PostgreSQL (env MANDATE_DATABASE_URL)')
    .option('--json', 'print JSON')
    .option('--as <user>', changes ? 'the Mandate user taking this action (checked against admin.roles)' : 'read as this Mandate user (checked against admin.roles)');
  return changes ? command.option('--reason <text>', 'why (kept in the history and the audit log)') : command;
}
/** The governance fields a proposal sets. */
function governanceOptions(command: Command): Command {
  return command
    .option('--owner <user>', 'the Mandate user who answers for it')
    .option('--risk <class>', 'low, medium or high')
    .option('--environment <name>', 'one of catalog.admission.environments (default prod)')
    .option('--ttl <duration>', 'approved for this long from now (such as 30d; s, m, h or d)')
    .option('--expires <date>', 'approved until this ISO 8601 date or time')
    .option('--team <name>', 'the owning team')
    .option('--contact <text>', 'how to reach the owners')
    .option('--tenant <name>', 'the tenant it serves')
    .option('--auth <json>', 'what the gateway presents to the upstream, as servers[].auth in mandate.yaml, in JSON (such as {"kind":"secret","secret":"weather-key","header":"X-Api-Key"}); docs/credentials.md')
    .option('--classification <name>', 'the classification of the data it handles')
    .option('--signature <file>', "a publisher's detached JWS over the server.json")
    .option('--spki-sha256 <pin>', "https upstream: the base64 SHA-256 of its certificate's public key (repeatable)", collect)
    .option('--spiffe-id <id>', 'https upstream: the SPIFFE ID its certificate must carry')
    .option('--no-identity', 'clear the expected upstream identity');
}
catalogOptions(servers.command('list').description('list catalog entries').option('--status <status>', 'only entries with this status'), false).action((flags) =>
  run(async () => (await serverCommands()).list(flags)),
);
catalogOptions(servers.command('show').description('show one entry, its open proposal and its history').argument('<name>', 'route name'), false).action(
  (name: string, flags) => run(async () => (await serverCommands()).show(name, flags)),
);
governanceOptions(
  catalogOptions(
    servers
      .command('import')
      .description('propose a server from a server.json file or URL (or a registry answer; --name picks one): a new entry, or a new version')
      .argument('<source>', 'server.json file or http(s) URL')
      .option('--route <name>', 'the route name: the gateway serves it at /mcp/NAME')
      .option('--name <server>', 'the server to take from a list of several'),
  ),
).action((source: string, flags) => run(async () => (await serverCommands()).importServer(source, flags)));
governanceOptions(
  catalogOptions(
    servers
      .command('propose')
      .description("propose a change to an entry's governance record (or, with --file, its server.json)")
      .argument('<name>', 'route name')
      .option('--file <source>', 'a new server.json file or URL')
      .option('--name <server>', 'the server to take from a list of several'),
  ),
).action((name: string, flags) => run(async () => (await serverCommands()).propose(name, flags)));
catalogOptions(servers.command('export').description("print the entry's server.json, with Mandate's record under _meta").argument('<name>', 'route name'), false).action(
  (name: string, flags) => run(async () => (await serverCommands()).exportServer(name, flags)),
);
for (const [decision, text] of [
  ['approve', "approve the open proposal (or reinstate a suspended entry); for a two-person risk class, not as its proposer"],
  ['reject', 'reject the open proposal'],
  ['suspend', 'stop routing to an entry: its sessions end and its processes stop'],
  ['retire', 'retire an entry for good: its sessions end and its processes stop'],
] as const) {
  catalogOptions(servers.command(decision).description(text).argument('<name>', 'route name')).action((name: string, flags) =>
    run(async () => (await serverCommands()).decide(decision, name, flags)),
  );
}
catalogOptions(
  servers
    .command('renew')
    .description('a new expiry for an approved or expired entry (within catalog.admission.maxLifetimeDays)')
    .argument('<name>', 'route name')
    .option('--ttl <duration>', 'approved for this long from now (such as 30d)')
    .option('--expires <date>', 'approved until this ISO 8601 date or time'),
).action((name: string, flags) => run(async () => (await serverCommands()).renew(name, flags)));
const serverPins = catalogOptions(servers.command('pins').description("list an entry's pinned tools ({name, hash})").argument('<name>', 'route name'), false).action(
  (name: string, flags) => run(async () => (await serverCommands()).pins(name, flags)),
);
catalogOptions(
  serverPins
    .command('approve')
    .description("approve a quarantined tool's live definition, naming the hash that was reviewed")
    .argument('<name>', 'route name')
    .argument('[tool]', 'tool name')
    .option('--hash <hash>', 'the reviewed hash (from `mandate servers drift`)')
    .option('--from <file>', 'approve every {name, hash} in this file (`mandate servers drift NAME --json`, after review)'),
).action((name: string, tool: string | undefined, flags, command: Command) =>
  // `pins` takes --as, --json and the store options too: given after `approve`, commander hands them to `pins`.
  run(async () => (await serverCommands()).approvePin(name, tool, { ...command.parent?.opts(), ...flags })),
);
catalogOptions(servers.command('drift').description('list quarantined tools ({name, hash, diff}): changed or new since they were pinned').argument('<name>', 'route name'), false).action(
  (name: string, flags) => run(async () => (await serverCommands()).drift(name, flags)),
);

const secrets = program.command('secrets').description('secrets the gateway presents to upstream servers (docs/credentials.md); values are read from standard input and never printed');
for (const [mode, text] of [
  ['set', 'set a secret (a new version replaces the current one at once); the value is read from standard input'],
  ['rotate', 'a new version of a secret; the one it replaces stays usable for --grace (default 10m)'],
] as const) {
  const command = adminOptions(
    secrets
      .command(mode)
      .description(text)
      .argument('<name>', 'secret name')
      .option('--env <environment>', 'only for servers of this environment (catalog entries)')
      .option('--tenant <tenant>', 'only for servers of this tenant (catalog entries)')
      .option('--stdin', 'read the value from standard input (required: never give it on the command line)'),
  );
  if (mode === 'rotate') command.option('--grace <duration>', 'how long the replaced version stays usable (such as 10m; s, m, h or d)');
  command.action((name: string, flags) => run(async () => (await secretCommands()).setOrRotate(mode, name, flags)));
}
adminOptions(secrets.command('list').description('names, scopes, versions, ages and last use (never a value)'), false).action((flags) =>
  run(async () => (await secretCommands()).listSecrets(flags)),
);
adminOptions(
  secrets
    .command('delete')
    .description('delete a secret: every version, in one scope (--env, --tenant) or in all')
    .argument('<name>', 'secret name')
    .option('--env <environment>', 'only this environment\'s versions')
    .option('--tenant <tenant>', 'only this tenant\'s versions'),
).action((name: string, flags) => run(async () => (await secretCommands()).deleteSecret(name, flags)));

const connections = program.command('connections').description("upstream accounts users connected for `oauth` servers (docs/credentials.md); never a token");
adminOptions(
  connections
    .command('list')
    .description('who connected which server, when, with what scopes, and the last use')
    .option('--user <name>', "only this user's connections")
    .option('--server <name>', 'only connections to this server'),
  false,
).action((flags) => run(async () => (await connectionCommands()).listConnections(flags)));
adminOptions(
  connections
    .command('revoke')
    .description("end a user's connection to a server: the gateway stops using it within a second, and the user is asked to connect again")
    .argument('<user>', 'user name')
    .argument('<server>', 'server name')
    .option('--tenant <tenant>', "the connection for this tenant's entry of the server")
    .option('--config <file>', "the configuration naming the server's upstream (env MANDATE_CONFIG): its tokens are then revoked there too"),
).action((user: string, server: string, flags) => run(async () => (await connectionCommands()).revokeConnection(user, server, flags)));

const breakglass = program.command('breakglass').description('emergency access, with a ticket and a reason, for a bounded time, reviewed afterwards (docs/breakglass.md)');
/** The configuration (the store it names, and its settings), the store options and --json: what `breakglass` and `approvals` commands take. */
function configuredStoreOptions(command: Command): Command {
  return command
    .option('--config <file>', 'configuration file (env MANDATE_CONFIG; default ./mandate.yaml if present)')
    .option('--data <dir>', 'data directory of the embedded store (env MANDATE_DATA)')
    .option('--database-url <url>', 'postgres://… to use PostgreSQL (env MANDATE_DATABASE_URL)')
    .option('--json', 'print JSON');
}
/** What every `breakglass` command takes: the configuration (its admin and breakglass sections), the store, --json and the acting user. */
function breakglassOptions(command: Command, as: string): Command {
  return configuredStoreOptions(command).option('--as <user>', as);
}
breakglassOptions(
  breakglass
    .command('open')
    .description('grant emergency access to a server (or some of its tools) until --ttl ends; needs the role admin')
    .option('--ticket <text>', 'the ticket the access serves (required)')
    .option('--reason <text>', 'why the access is needed (required)')
    .option('--server <name>', 'the server the access is for (required)')
    .option('--tool <name>', 'only this tool (repeatable; default every tool of the server)', collect)
    .option('--ttl <duration>', 'how long, at most breakglass.maxTtlSeconds (default 1h; s, m, h or d)')
    .option('--for <user>', 'whose calls it covers (default the --as user)'),
  'the admin opening it (checked against admin.roles)',
).action((flags) => run(async () => (await breakglassCommands()).open(flags)));
breakglassOptions(
  breakglass.command('close').description('end a grant before it expires; needs the role admin').argument('<id>', 'grant id (bg-…)').option('--reason <text>', 'why it ends now'),
  'the admin closing it (checked against admin.roles)',
).action((id: string, flags) => run(async () => (await breakglassCommands()).close(id, flags)));
breakglassOptions(
  breakglass
    .command('review')
    .description('review a grant afterwards, once, as an admin or auditor other than who opened it')
    .argument('<id>', 'grant id (bg-…)')
    .option('--outcome <outcome>', 'justified or unjustified (required)')
    .option('--reason <text>', 'why (required)'),
  'the reviewer (checked against admin.roles)',
).action((id: string, flags) => run(async () => (await breakglassCommands()).review(id, flags)));
breakglassOptions(breakglass.command('list').description('every grant, newest first'), 'read as this Mandate user (checked against admin.roles)').action((flags) =>
  run(async () => (await breakglassCommands()).list(flags)),
);
breakglassOptions(
  breakglass.command('overdue').description('grants not reviewed within breakglass.reviewDays of being opened, oldest first'),
  'read as this Mandate user (checked against admin.roles)',
).action((flags) => run(async () => (await breakglassCommands()).overdue(flags)));

const approvals = program.command('approvals').description("approve or deny single calls that a permit's @approval(\"GROUP\") holds for a human (docs/approvals.md)");
configuredStoreOptions(
  approvals.command('list').description("approval requests, newest first (pending: only those not expired); --json prints each call's arguments").option('--status <status>', 'only pending, approved, denied or used ones'),
).action((flags) => run(async () => (await approvalCommands()).list(flags)));
for (const [name, verdict, what] of [
  ['approve', 'approved', 'approve a pending call: the same call, retried, then passes once'],
  ['deny', 'denied', 'deny a pending call'],
] as const) {
  configuredStoreOptions(
    approvals
      .command(name)
      .description(`${what}; as a member of one of its groups, not its requester`)
      .argument('<id>', 'request id (ap-…)')
      .option('--reason <text>', 'why (required)')
      .option('--as <user>', 'the Mandate user deciding (required)'),
  ).action((id: string, flags) => run(async () => (await approvalCommands()).decide(verdict, id, flags)));
}

const tasks = program.command('tasks').description("bounded pieces of work a user's tokens are bound to: a purpose, one server, a lifetime (docs/tasks.md)");
configuredStoreOptions(
  tasks
    .command('open')
    .description('open a task for yourself: one server (or some of its tools), until --ttl ends')
    .option('--purpose <text>', 'what the task is for (required)')
    .option('--ticket <text>', 'the ticket it serves')
    .option('--server <name>', 'the server the task uses (required)')
    .option('--tool <name>', 'only this tool (repeatable; default every tool of the server)', collect)
    .option('--ttl <duration>', 'how long (default tasks.defaultTtlSeconds, at most tasks.maxTtlSeconds; s, m, h or d)')
    .option('--for-client <id>', 'only tokens issued to this client (default any client of the user)')
    .option('--as <user>', 'the Mandate user opening it, for themselves (required)'),
).action((flags) => run(async () => (await taskCommands()).open(flags)));
configuredStoreOptions(
  tasks
    .command('close')
    .description("end a task: its tokens fail on their next request; the task's user or an admin")
    .argument('<id>', 'task id (tk-…)')
    .option('--as <user>', "the task's user, or an admin (required)"),
).action((id: string, flags) => run(async () => (await taskCommands()).close(id, flags)));
configuredStoreOptions(
  tasks
    .command('revoke')
    .description('revoke a task: its tokens fail on their next request; needs the role admin')
    .argument('<id>', 'task id (tk-…)')
    .option('--reason <text>', 'why')
    .option('--as <user>', 'the admin revoking it (required; checked against admin.roles)'),
).action((id: string, flags) => run(async () => (await taskCommands()).revoke(id, flags)));
configuredStoreOptions(
  tasks.command('list').description('tasks, newest first').option('--user <name>', "only this user's tasks").option('--status <status>', 'only open, closed, expired or revoked ones'),
).action((flags) => run(async () => (await taskCommands()).list(flags)));

program
  .command('scan')
  .description('find hard-coded credentials in MCP client configurations, offline: exit 1 if any, 0 if none (docs/credentials.md)')
  .argument('[paths...]', 'files, or directories searched for client configuration files (default: the usual locations in the home directory and the current directory)')
  .option('--json', 'print the findings as a JSON array')
  .option('--sarif', 'print the findings as SARIF 2.1.0')
  .option('--fix', "move each secret into Mandate's secret store and point the client at Mandate's endpoint for its server")
  .option('--config <file>', 'with --fix: the configuration naming the issuer and the store (env MANDATE_CONFIG; default ./mandate.yaml)')
  .option('--data <dir>', 'with --fix: data directory of the embedded store (env MANDATE_DATA)')
  .option('--database-url <url>', 'with --fix: postgres://… to use PostgreSQL (env MANDATE_DATABASE_URL)')
  .option('--actor <name>', 'with --fix: admin named in the audit events (default: $USER, else admin)')
  .action((paths: string[], flags) => run(async () => (await secretCommands()).scanCommand(paths, flags)));

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
