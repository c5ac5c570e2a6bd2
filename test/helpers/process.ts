/**
 * Test harness: real processes on 127.0.0.1. Mandate is started through its
 * own CLI (bin/mandate.js) exactly as a user would start it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const NODE = process.execPath;
export const MANDATE = path.join(ROOT, 'bin/mandate.js');
export const EVERYTHING = path.join(ROOT, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js');

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

export function tempDir(prefix = 'mandate-test-'): string {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

export async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

export interface Proc {
  child: ChildProcess;
  output(): string;
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>;
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

export function startProcess(command: string, args: string[], options: { env?: Record<string, string>; cwd?: string } = {}): Proc {
  const child = spawn(command, args, { cwd: options.cwd ?? ROOT, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  return {
    child,
    output: () => output,
    exited,
    stop: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** server-everything over Streamable HTTP on a free port; resolves once it answers. */
export async function startEverythingHttp(): Promise<Proc & { url: string }> {
  const port = await freePort();
  const proc = startProcess(NODE, [EVERYTHING, 'streamableHttp'], { env: { PORT: String(port) } });
  const url = `http://127.0.0.1:${port}/mcp`;
  await waitFor(async () => (await fetch(url, { method: 'GET' })).status > 0, 'server-everything (HTTP)');
  return Object.assign(proc, { url });
}

export interface MandateOptions {
  servers: Record<string, unknown>[];
  gateway?: Record<string, unknown>;
  dataDir?: string;
  databaseUrl?: string;
  extra?: Record<string, unknown>;
  env?: Record<string, string>;
}

export interface Mandate extends Proc {
  port: number;
  base: string;
  dataDir: string;
  configPath: string;
  endpoint(name: string): string;
  /** Runs `mandate <args>` against this gateway's store. */
  cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  cleanup(): Promise<void>;
}

export function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(NODE, [MANDATE, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Starts `mandate up` with a generated config on a free port and waits for /readyz. */
export async function startMandate(options: MandateOptions): Promise<Mandate> {
  const dir = tempDir();
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const dataDir = options.dataDir ?? path.join(dir, 'data');
  const configPath = path.join(dir, 'mandate.yaml');
  writeFileSync(configPath, stringify({ issuer: base, servers: options.servers, ...(options.gateway ? { gateway: options.gateway } : {}), log: { level: 'warn' }, ...options.extra }));
  const args = [MANDATE, 'up', '--config', configPath, '--port', String(port), '--data', dataDir];
  if (options.databaseUrl) args.push('--database-url', options.databaseUrl);
  const proc = startProcess(NODE, args, { env: options.env });
  try {
    await waitFor(async () => (await fetch(`${base}/readyz`)).status === 200, `mandate on ${base}\n${proc.output()}`);
  } catch (error) {
    await proc.stop('SIGKILL');
    throw new Error(`${(error as Error).message}\n--- mandate output ---\n${proc.output()}`);
  }
  const storeArgs = options.databaseUrl ? ['--database-url', options.databaseUrl] : ['--data', dataDir];
  return Object.assign(proc, {
    port,
    base,
    dataDir,
    configPath,
    endpoint: (name: string) => `${base}/mcp/${name}`,
    cli: (cliArgs: string[]) => runCli([...cliArgs, ...storeArgs]),
    cleanup: async () => {
      await proc.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  });
}

/** Helper for JSON-RPC over raw fetch, for cases the SDK client will not produce. */
export function rpcHeaders(extra: Record<string, string> = {}): Record<string, string> {
  return { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...extra };
}

export function writeJson(file: string, value: unknown): void {
  writeFileSync(file, JSON.stringify(value));
}
