/**
 * Loads and checks the configuration: flags over environment over file over
 * defaults. A bad value stops start-up with a message naming the field.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseDocument } from 'yaml';
import type { ExpectedIdentity } from '../catalog/types.ts';
import type { CatalogFacts } from '../policy/request.ts';
import type { z } from 'zod';
import { identityWarnings } from './identity-schema.ts';
import { LOOPBACK_HOSTS } from './loopback.ts';
import { configSchema, type ParsedConfig, type ServerConfig } from './schema.ts';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export interface ConfigOptions {
  /** --config; else MANDATE_CONFIG; else ./mandate.yaml if present. */
  config?: string;
  port?: string | number;
  host?: string;
  data?: string;
  databaseUrl?: string;
}

export interface ResolvedServer extends ServerConfig {
  /** Canonical URI of the server's MCP endpoint at the gateway: {issuer}/mcp/NAME. */
  endpoint: string;
  transport: 'http' | 'stdio';
  /** What the upstream must prove at every connection or start (gateway/upstream/identity.ts); set by the catalog. */
  expectedIdentity?: ExpectedIdentity;
  /** What the catalog says of the server, for policies (Cedar attributes of its Server); absent for mandate.yaml's servers. */
  catalog?: CatalogFacts;
}

export interface Config extends Omit<ParsedConfig, 'servers' | 'issuer' | 'gateway' | 'policies'> {
  issuer: string;
  /** The policy directory, absolute. */
  policies: string;
  /** Whether `policies` was set (otherwise the data directory's, where the starter set is written). */
  policiesConfigured: boolean;
  servers: ResolvedServer[];
  gateway: ParsedConfig['gateway'] & { allowedOrigins: string[] };
  configPath: string | null;
  /** SHA-256 (hex) of the configuration file as read, or null without a file. */
  configHash: string | null;
  dataDir: string;
  databaseUrl: string | null;
  /** Insecure or surprising settings worth a warning at start. */
  warnings: string[];
}

/** The issuer's path without a trailing slash ('' for an origin-only issuer): MCP endpoints and the authorization server live under it. */
export function issuerPath(issuer: string): string {
  return new URL(issuer).pathname.replace(/\/$/, '');
}

export function formatIssues(source: string, error: z.ZodError): string {
  const lines = error.issues.map((issue) => {
    const where = issue.path.length ? issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, '') : '(top level)';
    return `  ${where}: ${issue.message}`;
  });
  return `${source}: invalid configuration\n${lines.join('\n')}`;
}

function parsePort(value: string | number, source: string): number {
  const port = typeof value === 'number' ? value : Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535 || (typeof value === 'string' && !/^\d+$/.test(value))) {
    throw new ConfigError(`${source}: port must be a whole number from 0 to 65535 (got "${value}")`);
  }
  return port;
}

function readFile(file: string): { value: unknown; hash: string } {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (error) {
    throw new ConfigError(`${file}: cannot read configuration file (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const doc = parseDocument(bytes.toString('utf8'), { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(`${file}: not valid YAML\n  ${doc.errors.map((e) => e.message.split('\n')[0]).join('\n  ')}`);
  }
  return { value: doc.toJS() ?? {}, hash: createHash('sha256').update(bytes).digest('hex') };
}

function locateConfig(options: ConfigOptions, env: NodeJS.ProcessEnv, cwd: string): string | null {
  const named = options.config ?? env.MANDATE_CONFIG;
  if (named) return path.resolve(cwd, named);
  const fallback = path.resolve(cwd, 'mandate.yaml');
  return existsSync(fallback) ? fallback : null;
}

export function loadConfig(options: ConfigOptions = {}, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Config {
  const configPath = locateConfig(options, env, cwd);
  const file = configPath ? readFile(configPath) : null;
  const raw = file?.value ?? {};
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(`${configPath}: the top level must be a mapping (key: value)`);
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(formatIssues(configPath ?? 'configuration', parsed.error));
  const config = parsed.data;

  // A flag given empty is an error; an empty environment variable counts as unset.
  const port =
    options.port !== undefined
      ? parsePort(options.port, '--port')
      : env.MANDATE_PORT
        ? parsePort(env.MANDATE_PORT, 'MANDATE_PORT')
        : config.listen.port;
  const host = options.host ?? env.MANDATE_HOST ?? config.listen.host;

  const issuerText = config.issuer ?? `http://localhost:${port}`;
  const issuer = issuerText.replace(/\/+$/, '');
  const issuerUrl = new URL(issuer);
  if (issuerUrl.search || issuerUrl.hash) throw new ConfigError(`${configPath}: issuer: must not have a query or fragment`);

  const baseDir = configPath ? path.dirname(configPath) : cwd;
  const servers: ResolvedServer[] = config.servers.map((server) => ({
    ...server,
    cwd: server.command !== undefined ? path.resolve(baseDir, server.cwd ?? '.') : undefined,
    endpoint: `${issuer}/mcp/${server.name}`,
    transport: server.url !== undefined ? 'http' : 'stdio',
  }));

  const allowedOrigins = (config.gateway.allowedOrigins ?? [issuerUrl.origin]).map((origin) => {
    if (origin === '*') return origin;
    try {
      const url = new URL(origin);
      if (url.origin !== origin.replace(/\/$/, '')) throw new Error('not an origin');
      return url.origin;
    } catch {
      throw new ConfigError(`${configPath}: gateway.allowedOrigins: "${origin}" is not an origin (scheme://host[:port]) or "*"`);
    }
  });

  const databaseUrl = options.databaseUrl ?? env.MANDATE_DATABASE_URL ?? null;
  const dataDir = path.resolve(cwd, options.data ?? env.MANDATE_DATA ?? '.mandate');

  const warnings: string[] = [];
  if (!configPath) warnings.push('no configuration file (./mandate.yaml or --config): no MCP servers are configured');
  if (allowedOrigins.includes('*')) warnings.push('gateway.allowedOrigins contains "*": any web page may call the gateway from a browser (DNS-rebinding protection is off)');
  if (issuerUrl.protocol === 'http:' && !LOOPBACK_HOSTS.has(issuerUrl.hostname)) {
    warnings.push(`issuer ${issuer} is plain http on a non-loopback host: use https in production`);
  }
  warnings.push(...identityWarnings(config.identity));

  return {
    ...config,
    listen: { ...config.listen, host, port },
    issuer,
    servers,
    gateway: { ...config.gateway, allowedOrigins },
    policies: config.policies !== undefined ? path.resolve(baseDir, config.policies) : path.join(dataDir, 'policies'),
    policiesConfigured: config.policies !== undefined,
    configPath,
    configHash: file?.hash ?? null,
    dataDir,
    databaseUrl,
    warnings,
  };
}
