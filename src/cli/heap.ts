/**
 * The gateway process's garbage collection (docs/performance.md, "Garbage
 * collection"). `mandate up` turns V8's incremental marking off: on a busy
 * machine its concurrent marking starves, scavenges during the long marking
 * cycles keep and promote far more, and the old generation fills with what
 * they promoted, so the next cycle comes sooner; requests then see 10 ms
 * pauses for seconds at a time. Without it, the old generation of a gateway
 * stays small and is rarely collected, in one pause that grows with the
 * live heap (about 12 ms for 25 MB here). `MANDATE_INCREMENTAL_MARKING=on`
 * keeps V8's default, for a gateway with a large live heap.
 */
import { setFlagsFromString } from 'node:v8';
import { ConfigError } from '../config/load.ts';

export const INCREMENTAL_MARKING_ENV = 'MANDATE_INCREMENTAL_MARKING';

/** The V8 flags `mandate up` sets, from the environment; a value it does not know is a configuration error (exit 2). */
export function heapFlags(env: NodeJS.ProcessEnv): string[] {
  const value = env[INCREMENTAL_MARKING_ENV];
  if (value === undefined || value === '' || value === 'off') return ['--no-incremental-marking'];
  if (value === 'on') return [];
  throw new ConfigError(`${INCREMENTAL_MARKING_ENV} must be "on" or "off", not ${JSON.stringify(value.slice(0, 40))}`);
}

/**
 * Sets them. V8 reads this flag each time it considers starting to mark, so
 * setting it before the gateway loads takes effect for the whole run.
 */
export function tuneHeap(env: NodeJS.ProcessEnv = process.env): string[] {
  const flags = heapFlags(env);
  for (const flag of flags) setFlagsFromString(flag);
  return flags;
}
