/**
 * Runs `mandate` as a user would, with a controlled working directory and
 * environment (no MANDATE_* variables leak in from the test runner), and a
 * hard time limit so a command that unexpectedly starts serving cannot hang a test.
 */
import { spawn } from 'node:child_process';
import { MANDATE, NODE, ROOT } from '../helpers/process.ts';

export interface CliResult {
  code: number | string;
  stdout: string;
  stderr: string;
  /** True if the command was still running at the time limit and had to be killed. */
  killed: boolean;
}

export function mandate(
  args: string[],
  options: {
    env?: Record<string, string>;
    cwd?: string;
    timeoutMs?: number;
    /** Kill (and report `killed`) as soon as stdout matches. */
    killWhen?: RegExp;
    /** Written to standard input, which is then closed (without it, standard input is closed at once). */
    input?: string;
  } = {},
): Promise<CliResult> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) if (value !== undefined && !name.startsWith('MANDATE_')) env[name] = value;
  Object.assign(env, options.env);
  return new Promise((resolve) => {
    const child = spawn(NODE, [MANDATE, ...args], { cwd: options.cwd ?? ROOT, env, stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    if (options.input !== undefined) child.stdin?.end(options.input);
    let stdout = '';
    let stderr = '';
    let killed = false;
    child.stdout!.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (options.killWhen?.test(stdout) && !killed) {
        killed = true;
        child.kill('SIGKILL');
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, options.timeoutMs ?? 20_000);
    // 'close', not 'exit': at 'exit' the child's output may still be in the pipe, unread.
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? -1, stdout, stderr, killed });
    });
  });
}
