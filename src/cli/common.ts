/** What every `mandate` command shares: store options and clean failure. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { ConfigError, loadConfig, type Config } from '../config/load.ts';
import { existingSecretKey } from '../identity/secrets.ts';
import { refuseBehind } from '../store/migrations.ts';
import { openStore } from '../store/open.ts';
import { SQLITE_FILE } from '../store/sqlite/store.ts';
import type { Store } from '../store/types.ts';
import { cleanLines } from './output.ts';

/** A problem with what the user asked: message, exit 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export interface StoreFlags {
  data?: string;
  databaseUrl?: string;
}

/**
 * The gateway's deployment secret, for a command that seals what the gateway
 * opens (catalog seals, upstream secrets): never made up here, since anything
 * sealed under another key could not be opened by the gateway.
 */
export function requireDeploymentSecret(dataDir: string, env = process.env): Buffer {
  const secret = existingSecretKey(dataDir, env);
  if (secret === null) {
    throw new UsageError(`no deployment secret in ${dataDir} (secret.key) or MANDATE_SECRET_KEY: start the gateway once with this data directory, or set MANDATE_SECRET_KEY as the gateway has it`);
  }
  return secret;
}

/** Where the flags (or the environment) say the store is, as `up` would find it. */
export function storeLocation(flags: StoreFlags, env: NodeJS.ProcessEnv = process.env): { databaseUrl: string | undefined; dataDir: string } {
  return { databaseUrl: flags.databaseUrl ?? env.MANDATE_DATABASE_URL ?? undefined, dataDir: path.resolve(flags.data ?? env.MANDATE_DATA ?? '.mandate') };
}

/** Opens the store the flags name (creating an embedded one that does not exist); opening changes no schema. */
export async function openFlaggedStore(flags: StoreFlags, env = process.env): Promise<Store> {
  const { databaseUrl, dataDir } = storeLocation(flags, env);
  return openStore({ databaseUrl: databaseUrl || undefined, dataDir });
}

/**
 * Opens the store an admin command reads, as `up` would find it. It changes
 * no schema: a schema that is behind (run `mandate migrate`) or newer than
 * this build is refused, so a least-privilege role can run every command.
 */
export async function openAdminStore(flags: StoreFlags, env = process.env): Promise<Store> {
  const { databaseUrl, dataDir } = storeLocation(flags, env);
  if (!databaseUrl && !existsSync(path.join(dataDir, SQLITE_FILE))) {
    throw new UsageError(`no Mandate store in ${dataDir} (start the gateway with \`mandate up\` or run \`mandate migrate\` first, or pass --data DIR or --database-url URL)`);
  }
  const store = await openFlaggedStore(flags, env);
  try {
    refuseBehind(await store.schema(), store.description);
  } catch (error) {
    await store.close();
    throw error;
  }
  return store;
}

/**
 * Loads mandate.yaml (`--config`) and opens the store it names (`--data`,
 * `--database-url` override it) as an admin command does, for `body`; closes
 * the store after.
 */
export async function withConfiguredStore<T>(flags: StoreFlags & { config?: string }, body: (store: Store, config: Config) => Promise<T>): Promise<T> {
  const config = loadConfig({ config: flags.config, data: flags.data, databaseUrl: flags.databaseUrl });
  const store = await openAdminStore({ data: config.dataDir, databaseUrl: config.databaseUrl ?? undefined });
  try {
    return await body(store, config);
  } finally {
    await store.close();
  }
}

/** A flag the command cannot go without: exit 2 naming it. */
export function required(flag: string, value: string | undefined, why: string): string {
  if (value === undefined || value.trim() === '') throw new UsageError(`${flag} is required: ${why}`);
  return value;
}

/** Runs a command body; known errors print one clear line and exit non-zero, never a stack trace. */
export async function run(body: () => Promise<number | void>): Promise<void> {
  try {
    const code = await body();
    process.exitCode = code ?? 0;
  } catch (error) {
    const usage = error instanceof UsageError || error instanceof ConfigError;
    const message = error instanceof Error ? error.message : String(error);
    // Messages may echo input (a flag's value, a name from the store): shown cleaned, their own line breaks kept.
    process.stderr.write(`mandate: ${cleanLines(message)}\n`);
    process.exitCode = usage ? 2 : 1;
  }
}

/** All of standard input, refused (UsageError, naming `what`) once it is longer than `limit` bytes. */
export async function readStdin(limit: number, what: string): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new UsageError(`standard input holds more than ${what} (at most ${limit} bytes)`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
