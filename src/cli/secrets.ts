/**
 * `mandate secrets set | rotate | list | delete` (docs/credentials.md): the
 * secrets the gateway presents to upstreams. A value is read from standard
 * input only (never from the command line, where the shell's history and
 * the process list would keep it) and is never printed: `list` shows names,
 * scopes, versions, ages and last use.
 */
import { SECRET_NAME } from '../config/schema.ts';
import { checkValue, MAX_SECRET_BYTES, setSecret } from '../credentials/vault.ts';
import type { SecretVersion } from '../store/credentials.ts';
import { parseDuration, when, withAdmin, type AdminFlags } from './clients.ts';
import { readStdin, requireDeploymentSecret, storeLocation, UsageError } from './common.ts';
import { clean, printJson, printLine, printTable } from './output.ts';

export interface SecretFlags extends AdminFlags {
  env?: string;
  tenant?: string;
  stdin?: boolean;
  grace?: string;
}

const SCOPE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

function nameOf(name: string): string {
  if (!SECRET_NAME.test(name)) throw new UsageError(`a secret's name is lowercase letters, digits, dots, hyphens and underscores (at most 64), not "${clean(name)}"`);
  return name;
}

function scopeOf(name: string, flags: SecretFlags) {
  for (const [flag, value] of [['--env', flags.env], ['--tenant', flags.tenant]] as const) {
    if (value !== undefined && !SCOPE.test(value)) throw new UsageError(`${flag} takes a lowercase name (letters, digits, dots, hyphens, underscores), not "${clean(value)}"`);
  }
  return { name: nameOf(name), environment: flags.env ?? '', tenant: flags.tenant ?? '' };
}

/** The deployment secret of the data directory the flags name, as `up` finds it. */
function deploymentSecret(flags: SecretFlags): Buffer {
  return requireDeploymentSecret(storeLocation(flags).dataDir);
}

async function valueFromStdin(flags: SecretFlags): Promise<string> {
  if (flags.stdin !== true) throw new UsageError('the value is read from standard input: pass --stdin (never the value itself on the command line)');
  const value = (await readStdin(MAX_SECRET_BYTES + 2, 'one secret')).replace(/\r?\n$/, '');
  const problem = checkValue(value);
  if (problem !== null) throw new UsageError(`standard input: ${problem}`);
  return value;
}

const scopeText = (s: { environment: string; tenant: string }): string => [s.environment && `env ${s.environment}`, s.tenant && `tenant ${s.tenant}`].filter(Boolean).join(', ') || 'any';

/** `set`: a new secret, or a new version of one that replaces it at once. `rotate`: a new version of an existing one, the old one kept for --grace. */
export async function setOrRotate(mode: 'set' | 'rotate', name: string, flags: SecretFlags): Promise<void> {
  const scope = scopeOf(name, flags);
  const graceMs = mode === 'rotate' ? parseDuration('--grace', flags.grace ?? '10m', 0, 30 * 86_400_000, '0s to 30d') : 0;
  if (mode === 'set' && flags.grace !== undefined) throw new UsageError('--grace goes with `rotate` (set replaces the value at once)');
  const secret = deploymentSecret(flags);
  const value = await valueFromStdin(flags);
  await withAdmin(flags, async ({ store, record, actor }) => {
    const existing = (await store.credentials.usable(Date.now(), scope.name)).filter((v) => v.environment === scope.environment && v.tenant === scope.tenant && v.retiresAt === null);
    if (mode === 'rotate' && existing.length === 0) throw new UsageError(`no secret "${scope.name}" (${scopeText(scope)}) to rotate: set it first`);
    const version = await setSecret(store, secret, scope, value, actor, graceMs);
    const previous = existing[0]?.version ?? null;
    await record('credential.rotated', { secret: scope.name, environment: scope.environment, tenant: scope.tenant, version, previous, graceSeconds: Math.round(graceMs / 1000) }, `secret ${scope.name} version ${version} is set`);
    if (flags.json) return printJson({ name: scope.name, environment: scope.environment || null, tenant: scope.tenant || null, version, previous, graceSeconds: Math.round(graceMs / 1000) });
    printLine(`secret ${scope.name} (${scopeText(scope)}): version ${version}${previous !== null ? (graceMs > 0 ? `; version ${previous} stays usable for ${flags.grace ?? '10m'}` : `; version ${previous} is retired`) : ''}`);
  });
}

/** Names, scopes, versions, ages and last use; never a value. */
export async function listSecrets(flags: SecretFlags): Promise<void> {
  await withAdmin(flags, async ({ store }) => {
    const now = Date.now();
    const groups = new Map<string, SecretVersion[]>();
    for (const version of await store.credentials.usable(now)) {
      const key = `${version.name}\u0000${version.environment}\u0000${version.tenant}`;
      groups.set(key, [...(groups.get(key) ?? []), version]);
    }
    const rows = [...groups.values()].map((versions) => {
      const current = versions.find((v) => v.retiresAt === null) ?? versions[versions.length - 1]!;
      const retiring = versions.filter((v) => v.retiresAt !== null);
      return {
        name: current.name,
        environment: current.environment || null,
        tenant: current.tenant || null,
        version: current.version,
        retiring: retiring.map((v) => ({ version: v.version, retiresAt: new Date(v.retiresAt as number).toISOString() })),
        createdAt: new Date(current.createdAt).toISOString(),
        createdBy: current.createdBy,
        lastUsedAt: versions.some((v) => v.lastUsedAt !== null) ? new Date(Math.max(...versions.map((v) => v.lastUsedAt ?? 0))).toISOString() : null,
      };
    });
    if (flags.json) return printJson(rows);
    printTable(
      ['NAME', 'ENV', 'TENANT', 'VERSION', 'SET', 'LAST USED', 'RETIRING'],
      rows.map((r) => [r.name, r.environment ?? '-', r.tenant ?? '-', String(r.version), when(Date.parse(r.createdAt)), r.lastUsedAt === null ? 'never' : when(Date.parse(r.lastUsedAt)), r.retiring.map((v) => `v${v.version} until ${v.retiresAt}`).join(', ') || '-']),
      'no secrets',
    );
  });
}

export async function deleteSecret(name: string, flags: SecretFlags): Promise<void> {
  const scoped = flags.env !== undefined || flags.tenant !== undefined;
  const scope = scopeOf(name, flags);
  await withAdmin(flags, async ({ store, record }) => {
    const gone = await store.credentials.delete(scope.name, scoped ? { environment: scope.environment, tenant: scope.tenant } : undefined);
    if (gone === 0) throw new UsageError(`no secret "${scope.name}"${scoped ? ` (${scopeText(scope)})` : ''}`);
    await record('credential.revoked', { secret: scope.name, ...(scoped ? { environment: scope.environment, tenant: scope.tenant } : {}), versions: gone }, `secret ${scope.name} is deleted`);
    if (flags.json) return printJson({ name: scope.name, versions: gone });
    printLine(`secret ${scope.name}${scoped ? ` (${scopeText(scope)})` : ''}: ${gone} version(s) deleted`);
  });
}

/**
 * `mandate scan`: offline, it only reads. With `--fix`, the secrets it finds
 * go into this store (unscoped, as `mandate secrets set` would put them) and
 * each migrated client points at this gateway's endpoint ({issuer}/mcp/NAME,
 * the issuer from the configuration).
 */
export async function scanCommand(paths: string[], flags: SecretFlags & { config?: string; sarif?: boolean; fix?: boolean }): Promise<number> {
  const { scan } = await import('../scan/scan.ts');
  if (flags.fix !== true) return scan(paths, flags);
  const { loadConfig } = await import('../config/load.ts');
  const config = loadConfig({ config: flags.config, data: flags.data, databaseUrl: flags.databaseUrl });
  const secret = deploymentSecret({ ...flags, data: config.dataDir });
  return withAdmin({ ...flags, data: config.dataDir, databaseUrl: config.databaseUrl ?? undefined, json: false }, async ({ store, record, actor }) =>
    scan(paths, flags, {
      fixTarget: {
        storeSecret: async (name, value) => {
          const scope = { name: nameOf(name), environment: '', tenant: '' };
          const version = await setSecret(store, secret, scope, value, actor, 0);
          await record('credential.rotated', { secret: name, environment: '', tenant: '', version, previous: version > 1 ? version - 1 : null, graceSeconds: 0, via: 'scan --fix' }, `secret ${name} is set`);
        },
        endpoint: (server) => `${config.issuer}/mcp/${server}`,
      },
    }),
  );
}
