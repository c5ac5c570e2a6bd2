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

/** Whether a process with this pid is alive (signal 0 probes without sending anything). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
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

/**
 * Starts a server on a free port, retrying on a new port if it does not come
 * up: freePort() releases the port before the child binds it, so another test
 * process can take it in between. Ready means: our child is alive, says it
 * listens on that port, and `ready` holds.
 */
async function startOnFreePort<T extends Proc>(what: string, start: (port: number) => T, says: (port: number) => string, ready: (port: number) => Promise<boolean>): Promise<T & { port: number }> {
  let last = '';
  for (let attempt = 1; attempt <= 3; attempt += 1) {
    const port = await freePort();
    const proc = start(port);
    try {
      await waitFor(async () => proc.child.exitCode === null && proc.output().includes(says(port)) && (await ready(port)), `${what} on port ${port}`);
      return Object.assign(proc, { port });
    } catch (error) {
      await proc.stop('SIGKILL');
      last = `${(error as Error).message}\n--- output ---\n${proc.output()}`;
    }
  }
  throw new Error(`${what} did not start in 3 attempts: ${last}`);
}

/** server-everything over Streamable HTTP on a free port; resolves once it answers. */
export async function startEverythingHttp(): Promise<Proc & { url: string }> {
  const proc = await startOnFreePort(
    'server-everything (HTTP)',
    (port) => startProcess(NODE, [EVERYTHING, 'streamableHttp'], { env: { PORT: String(port) } }),
    (port) => `listening on port ${port}`,
    async (port) => (await fetch(`http://127.0.0.1:${port}/mcp`, { method: 'GET' })).status > 0,
  );
  return Object.assign(proc, { url: `http://127.0.0.1:${proc.port}/mcp` });
}

export interface MandateOptions {
  servers: Record<string, unknown>[];
  gateway?: Record<string, unknown>;
  /** The identity section; default `{ requireToken: false }` (transport tests need no token). */
  identity?: Record<string, unknown>;
  dataDir?: string;
  databaseUrl?: string;
  extra?: Record<string, unknown>;
  env?: Record<string, string>;
}

/** A gateway under test, in its own process (startMandate) or in the test's (inprocess.ts). */
export interface TestGateway {
  port: number;
  /** http://127.0.0.1:PORT, also the issuer. */
  base: string;
  dataDir: string;
  configPath: string;
  endpoint(name: string): string;
  /** Runs `mandate <args>` (a child process) against this gateway's store. */
  cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
}

export interface Mandate extends Proc, TestGateway {
  cleanup(): Promise<void>;
}

export function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(NODE, [MANDATE, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    // 'close', not 'exit': at 'exit' the child's output may still be in the pipe, unread.
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Writes the configuration a test gateway at `base` runs with (log level warn; no token needed unless `identity` says so). */
export function writeTestConfig(configPath: string, base: string, options: Omit<MandateOptions, 'dataDir' | 'databaseUrl' | 'env'>): void {
  writeFileSync(
    configPath,
    stringify({ issuer: base, servers: options.servers, ...(options.gateway ? { gateway: options.gateway } : {}), identity: options.identity ?? { requireToken: false }, log: { level: 'warn' }, ...options.extra }),
  );
}

/** Starts `mandate up` with a generated config on a free port and waits for /readyz. */
export async function startMandate(options: MandateOptions): Promise<Mandate> {
  const dir = tempDir();
  const dataDir = options.dataDir ?? path.join(dir, 'data');
  const configPath = path.join(dir, 'mandate.yaml');
  const proc = await startOnFreePort(
    'mandate',
    (port) => {
      const base = `http://127.0.0.1:${port}`;
      writeTestConfig(configPath, base, options);
      const args = [MANDATE, 'up', '--config', configPath, '--port', String(port), '--data', dataDir];
      if (options.databaseUrl) args.push('--database-url', options.databaseUrl);
      return startProcess(NODE, args, { env: options.env });
    },
    (port) => `Mandate is listening on http://127.0.0.1:${port}`,
    async (port) => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200,
  );
  const base = `http://127.0.0.1:${proc.port}`;
  const storeArgs = options.databaseUrl ? ['--database-url', options.databaseUrl] : ['--data', dataDir];
  return Object.assign(proc, {
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

/** Stops a process (and removes a gateway's files), killing it if it does not exit in 15 s. */
export async function stopBounded(proc: Proc & { cleanup?: () => Promise<void> }): Promise<void> {
  const stopping = proc.cleanup ? proc.cleanup() : proc.stop().then(() => undefined);
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), 15_000);
  try {
    await stopping;
  } finally {
    clearTimeout(timer);
  }
}

/** Helper for JSON-RPC over raw fetch, for cases the SDK client will not produce. */
export function rpcHeaders(extra: Record<string, string> = {}): Record<string, string> {
  return { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...extra };
}

export function writeJson(file: string, value: unknown): void {
  writeFileSync(file, JSON.stringify(value));
}
