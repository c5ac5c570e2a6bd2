/**
 * `mandate reload [--data DIR] [--json]`: asks the gateway serving DIR to
 * re-read its configuration file, through the data directory's control
 * socket, and waits for the outcome. Exit 0 when the new configuration is in
 * force, 1 with the reason when it was refused or no gateway answered.
 */
import { existsSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { controlSocketPath } from '../control/socket.ts';
import { clean, cleanLines, printJson, printNote } from './output.ts';

export interface ReloadFlags {
  data?: string;
  json?: boolean;
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
}

function ask(socketPath: string): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method: 'POST', path: '/reload' }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        try {
          resolve(JSON.parse(text) as Outcome);
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
  return `${lines.map(clean).join('\n')}\n`;
}

export async function reload(flags: ReloadFlags, env = process.env): Promise<number> {
  const dataDir = path.resolve(flags.data ?? env.MANDATE_DATA ?? '.mandate');
  const socketPath = controlSocketPath(dataDir);
  if (!existsSync(socketPath)) {
    printNote(`mandate: no gateway is serving ${dataDir} (no control socket at ${socketPath}); start one with \`mandate up\`, or pass --data DIR`);
    return 1;
  }
  let outcome: Outcome;
  try {
    outcome = await ask(socketPath);
  } catch (error) {
    printNote(`mandate: no gateway answered on ${socketPath} (${error instanceof Error ? error.message : String(error)})`);
    return 1;
  }
  if (flags.json) printJson(outcome);
  else (outcome.ok ? process.stdout : process.stderr).write(describe(outcome));
  return outcome.ok ? 0 : 1;
}
