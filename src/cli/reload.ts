/**
 * `mandate reload [--data DIR] [--json]`: asks the gateway serving DIR to
 * re-read its configuration file (and, with it, its policy directory),
 * through the data directory's control socket, and waits for the outcome.
 * Exit 0 when the new configuration is in force, 1 with the reason when it
 * was refused or no gateway answered.
 *
 * The control socket requests are shared with `mandate policy reload`.
 */
import { existsSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { controlSocketPath } from '../control/socket.ts';
import { describeProblem, type Problem } from '../policy/load.ts';
import { clean, cleanLines, printJson, printNote } from './output.ts';

export interface ReloadFlags {
  data?: string;
  json?: boolean;
}

/** What the gateway answers to POST /policy/reload (and puts in a configuration reload's `policy`). */
export interface PolicyOutcome {
  ok: boolean;
  dir?: string;
  sha256?: string;
  policies?: number;
  files?: string[];
  warnings?: string[];
  unchanged?: boolean;
  error?: string;
  problems?: Problem[];
  /** On a refusal: the set still in force, or null when none is (every decided request is refused). */
  kept?: string | null;
}

interface Outcome {
  ok: boolean;
  source?: string | null;
  sha256?: string | null;
  error?: string;
  servers?: { added: string[]; removed: string[]; changed: string[] };
  applied?: string[];
  restartRequired?: string[];
  warnings?: string[];
  policy?: PolicyOutcome;
}

/** The data directory a control request goes to: --data, else MANDATE_DATA, else ./.mandate. */
export function controlDataDir(flags: { data?: string }, env = process.env): string {
  return path.resolve(flags.data ?? env.MANDATE_DATA ?? '.mandate');
}

function post<T>(socketPath: string, requestPath: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method: 'POST', path: requestPath }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        try {
          const value: unknown = JSON.parse(text);
          if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not an object');
          resolve(value as T);
        } catch {
          reject(new Error(`the gateway answered HTTP ${res.statusCode} without an outcome`));
        }
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * Sends one control request (POST `requestPath`) to the gateway serving
 * `dataDir` and resolves with its answer; null, after saying why on stderr,
 * when no gateway serves the directory or none answered.
 */
export async function askGateway<T>(dataDir: string, requestPath: string): Promise<T | null> {
  const socketPath = controlSocketPath(dataDir);
  if (!existsSync(socketPath)) {
    printNote(`mandate: no gateway is serving ${dataDir} (no control socket at ${socketPath}); start one with \`mandate up\`, or pass --data DIR`);
    return null;
  }
  try {
    return await post<T>(socketPath, requestPath);
  } catch (error) {
    printNote(`mandate: no gateway answered on ${socketPath} (${error instanceof Error ? error.message : String(error)})`);
    return null;
  }
}

/** A problem as `FILE:LINE:COLUMN: message`, its file named with the policy directory it is in. */
export function problemIn(dir: string | undefined, problem: Problem): string {
  return describeProblem(dir === undefined || problem.file === null ? problem : { ...problem, file: path.join(dir, problem.file) });
}

/** A policy load's outcome as lines (not yet cleaned), each starting with `indent`. */
export function describePolicy(outcome: PolicyOutcome, indent = ''): string[] {
  const lines: string[] = [];
  if (outcome.ok) {
    const set = `sha256 ${outcome.sha256 ?? '-'} (${outcome.policies ?? 0} ${outcome.policies === 1 ? 'policy' : 'policies'})`;
    const from = outcome.dir === undefined ? '' : ` from ${outcome.dir}`;
    lines.push(outcome.unchanged ? `${indent}policy set unchanged: ${set}${from}` : `${indent}policy set in force: ${set}${from}`);
    for (const warning of outcome.warnings ?? []) lines.push(`${indent}  warning: ${warning}`);
    return lines;
  }
  lines.push(
    outcome.kept === null
      ? `${indent}policy set refused; no policy set is in force, so every request that needs a decision is refused:`
      : `${indent}policy set refused; the one in force stays${outcome.kept === undefined ? '' : ` (sha256 ${outcome.kept})`}:`,
  );
  const problems = outcome.problems ?? [];
  if (problems.length > 0) for (const problem of problems) lines.push(`${indent}  ${problemIn(outcome.dir, problem)}`);
  else lines.push(...(outcome.error ?? 'no reason given').split('\n').map((line) => `${indent}  ${line.trimStart()}`));
  return lines;
}

function describe(outcome: Outcome): string {
  if (!outcome.ok) return `${cleanLines(`configuration refused; the running configuration stays:\n${outcome.error ?? 'no reason given'}`)}\n`;
  const lines = [`configuration reloaded from ${outcome.source ?? '(no file)'} (sha256 ${outcome.sha256 ?? '-'})`];
  const servers = outcome.servers ?? { added: [], removed: [], changed: [] };
  for (const [what, names] of [['added', servers.added], ['removed', servers.removed], ['changed', servers.changed]] as const) {
    if (names.length > 0) lines.push(`  servers ${what}: ${names.join(', ')}`);
  }
  if (servers.added.length + servers.removed.length + servers.changed.length === 0) lines.push('  servers unchanged');
  if ((outcome.applied ?? []).length > 0) lines.push(`  settings applied: ${(outcome.applied ?? []).join(', ')}`);
  if ((outcome.restartRequired ?? []).length > 0) lines.push(`  need a restart to take effect (still running with the old value): ${(outcome.restartRequired ?? []).join(', ')}`);
  for (const warning of outcome.warnings ?? []) lines.push(`  warning: ${warning}`);
  // The policy directory is read again with the configuration; its refusal does not undo the configuration.
  if (outcome.policy !== undefined) lines.push(...describePolicy(outcome.policy, '  '));
  return `${lines.map(clean).join('\n')}\n`;
}

export async function reload(flags: ReloadFlags, env = process.env): Promise<number> {
  const outcome = await askGateway<Outcome>(controlDataDir(flags, env), '/reload');
  if (outcome === null) return 1;
  if (flags.json) printJson(outcome);
  else (outcome.ok ? process.stdout : process.stderr).write(describe(outcome));
  return outcome.ok ? 0 : 1;
}
