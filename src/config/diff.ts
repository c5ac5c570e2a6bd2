/**
 * What a new configuration changes against the one in force, and which of
 * those changes a running gateway can take. Servers, the gateway's limits
 * and timeouts, the summary interval and the log level apply at once; the
 * rest (where it listens, its issuer, its store, the authorization server's
 * settings) needs a restart, and is reported as such rather than ignored.
 */
import canonicalize from 'canonicalize';
import type { Config } from './load.ts';

/** Settings a running gateway cannot change; a change to one of them needs a restart. */
const RESTART_ONLY = ['issuer', 'listen', 'dataDir', 'databaseUrl', 'audit.durability', 'audit.journalSync', 'identity', 'store'] as const;

/** Settings applied while running. */
const LIVE = ['servers', 'policies', 'gateway', 'audit.summaryIntervalSeconds', 'catalog', 'admin', 'breakglass', 'approvals', 'tasks', 'log'] as const;

/**
 * The restart-only settings for this pair: the list above, and the allowed
 * browser origins when the issuer changed (they default to the issuer's
 * origin, which stays the running one until a restart).
 */
function restartOnly(current: Config, next: Config): string[] {
  return current.issuer === next.issuer ? [...RESTART_ONLY] : [...RESTART_ONLY, 'gateway.allowedOrigins'];
}

function at(config: Config, path: string): unknown {
  let value: unknown = config;
  for (const part of path.split('.')) value = (value as Record<string, unknown> | undefined)?.[part];
  return value;
}

/** Dotted paths under `path` whose values differ (objects are compared key by key, other values as a whole). */
function differences(before: unknown, after: unknown, path: string): string[] {
  const plain = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
  if (plain(before) && plain(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    return keys.flatMap((key) => differences(before[key], after[key], `${path}.${key}`));
  }
  return canonicalize(before ?? null) === canonicalize(after ?? null) ? [] : [path];
}

export interface ConfigDiff {
  /** Changed settings that apply at once (dotted paths; servers are reported by the registry). */
  applied: string[];
  /** Changed settings that keep their old value until the gateway restarts. */
  restartRequired: string[];
}

/**
 * The configuration in force after a reload: `next`, except that every
 * setting that needs a restart keeps its running value.
 */
export function inForce(current: Config, next: Config): Config {
  const result = structuredClone(next);
  for (const path of restartOnly(current, next)) {
    const parts = path.split('.');
    const last = parts.pop() as string;
    let target = result as unknown as Record<string, unknown>;
    for (const part of parts) target = target[part] as Record<string, unknown>;
    target[last] = structuredClone(at(current, path));
  }
  return result;
}

export function diffConfig(current: Config, next: Config): ConfigDiff {
  const kept = restartOnly(current, next);
  const restartRequired = kept.flatMap((path) => differences(at(current, path), at(next, path), path));
  const applied = LIVE.filter((path) => path !== 'servers')
    .flatMap((path) => differences(at(current, path), at(next, path), path))
    .filter((path) => !kept.some((restart) => path === restart || path.startsWith(`${restart}.`)));
  return { applied, restartRequired };
}
