/**
 * Benchmark orchestrator (`npm run bench`).
 *
 * Starts, each in its own child process on a free 127.0.0.1 port:
 *   - bench/upstream.ts  trivial MCP server (the baseline),
 *   - bench/bare-hop.ts  plain HTTP forwarder in front of it,
 *   - Mandate            `bin/mandate.js up` with one server `bench` in front of it,
 *   - baseline           (with --baseline-bin) another build of Mandate, set up
 *                        the same way: the cost of a change, measured in the same run,
 * runs bench/policy.ts (the policy engine alone: decision latency with 1,000
 * policies, a 200-tool list filtered), then runs bench/load.ts (also a child process) against each target in
 * interleaved rounds, takes the median of the rounds per target, prints a
 * table and rewrites docs/benchmarks.md.
 *
 * Options (flags win over environment variables):
 *   --only direct,hop,mandate   BENCH_ONLY         targets to run (default: all three, and
 *                                                  baseline with --baseline-bin; `policy`,
 *                                                  the policy engine on its own, runs unless
 *                                                  --only leaves it out)
 *   --concurrency N             BENCH_CONCURRENCY  request loops (default 32)
 *   --duration S                BENCH_DURATION     measured seconds per run (default 5)
 *   --warmup S                  BENCH_WARMUP       warm-up seconds per run (default 1)
 *   --rounds N                  BENCH_ROUNDS       interleaved rounds (default 3)
 *   --rate N|auto|0             BENCH_RATE         then the same rounds as an open loop at N requests/s
 *                                                  (auto, the default: a quarter of the slowest proxy's closed-loop
 *                                                  median, so every target carries it; 0: skip), for the
 *                                                  tail each target adds at the same offered load
 *   --ready-timeout S                              wait for Mandate's /readyz (default 30)
 *   --mandate-header 'N: v'                        extra request header for Mandate (repeatable)
 *   --mandate-bin PATH                             Mandate entry point (default bin/mandate.js)
 *   --baseline-bin PATH                            another build's entry point, measured as `baseline`
 *   --no-docs                                      do not rewrite docs/benchmarks.md
 *   --keep-tmp                                     keep the temp dir (config, data, logs)
 *
 * Exit code: 0 when every run completed without errors, 1 otherwise.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { availableParallelism, cpus, loadavg, release, tmpdir, totalmem, type as osType } from 'node:os';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuMs, usPerRequest } from './cpu.ts';
import { BENCH_ARGS_SCHEMA, benchPolicies } from './policy-set.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const NODE = process.execPath;
const BENCH = join(ROOT, 'bench');
const MANDATE_BIN = join(ROOT, 'bin', 'mandate.js');
const DOCS_FILE = join(ROOT, 'docs', 'benchmarks.md');
/** Throughput target: Mandate / bare hop. */
const TARGET_RATIO = 0.8;
/** Tail target: Mandate's p99 at most this much above the bare hop's, ms. */
const TARGET_P99_GAP_MS = 2;
/** Policy targets: decision p50 and p99 (µs), a 200-tool list filtered (ms), and Mandate with policy / the build before it. */
const POLICY_P50_US = 50;
const POLICY_P99_US = 200;
const POLICY_LIST_MS = 5;
const POLICY_BASELINE_RATIO = 0.9;
const PAUSE_BETWEEN_RUNS_MS = 500;

type Target = 'direct' | 'hop' | 'mandate' | 'baseline';
const ALL_TARGETS: readonly Target[] = ['direct', 'hop', 'mandate', 'baseline'];
const TARGET_NAMES: Record<Target, string> = {
  direct: 'direct (upstream)',
  hop: 'bare hop',
  mandate: 'Mandate',
  baseline: 'Mandate, baseline build',
};
/** The targets that are a Mandate process (started with `up`, called at /mcp/bench). */
const GATEWAYS: readonly Target[] = ['mandate', 'baseline'];

// ---------------------------------------------------------------- options

class UsageError extends Error {}

function option(flag: string | undefined, envName: string): string | undefined {
  return flag ?? process.env[envName];
}

function bounded(raw: string | undefined, name: string, fallback: number, min: number, max: number, integer: boolean): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    throw new UsageError(`${name} must be ${integer ? 'an integer' : 'a number'} in [${min}, ${max}], got ${raw}`);
  }
  return n;
}

interface Options {
  targets: Target[];
  /** Run bench/policy.ts (the policy engine on its own). */
  policy: boolean;
  concurrency: number;
  durationS: number;
  warmupS: number;
  rounds: number;
  readyTimeoutS: number;
  mandateHeaders: string[];
  mandateBin: string;
  /** Another build's entry point (the `baseline` target); null: not measured. */
  baselineBin: string | null;
  writeDocs: boolean;
  keepTmp: boolean;
  /** Mandate's audit.durability; null: its default. */
  durability: 'process' | 'power' | null;
  /** The open loop's requests/s after the closed-loop rounds: a number, 'auto', or 0 (none). */
  rate: number | 'auto';
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      only: { type: 'string' },
      concurrency: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      rounds: { type: 'string' },
      'ready-timeout': { type: 'string' },
      'mandate-header': { type: 'string', multiple: true },
      'mandate-bin': { type: 'string' },
      'baseline-bin': { type: 'string' },
      'no-docs': { type: 'boolean', default: false },
      'keep-tmp': { type: 'boolean', default: false },
      durability: { type: 'string' },
      rate: { type: 'string' },
    },
  });
  const durability = option(values.durability, 'BENCH_DURABILITY');
  if (durability !== undefined && durability !== 'process' && durability !== 'power') {
    throw new UsageError(`--durability: '${durability}' is not process or power`);
  }
  const baselineBin = values['baseline-bin'] === undefined ? null : resolvePath(values['baseline-bin']);
  const available = ALL_TARGETS.filter((t) => t !== 'baseline' || baselineBin !== null);
  const only = option(values.only, 'BENCH_ONLY');
  let targets: Target[] = [...available];
  let policy = true;
  if (only !== undefined && only.trim() !== '') {
    const wanted = new Set(only.split(',').map((s) => s.trim().toLowerCase()).filter((s) => s !== ''));
    policy = wanted.delete('policy');
    for (const w of wanted) {
      if (w === 'baseline' && baselineBin === null) throw new UsageError('--only: the baseline target needs --baseline-bin PATH');
      if (!(ALL_TARGETS as readonly string[]).includes(w)) {
        throw new UsageError(`--only: unknown target '${w}' (expected a comma list of ${ALL_TARGETS.join(', ')})`);
      }
    }
    targets = available.filter((t) => wanted.has(t));
  }
  if (targets.length === 0 && !policy) throw new UsageError('--only selects no target');
  return {
    targets,
    policy,
    concurrency: bounded(option(values.concurrency, 'BENCH_CONCURRENCY'), 'concurrency', 32, 1, 1024, true),
    durationS: bounded(option(values.duration, 'BENCH_DURATION'), 'duration', 5, 1, 60, false),
    warmupS: bounded(option(values.warmup, 'BENCH_WARMUP'), 'warmup', 1, 0, 30, false),
    rounds: bounded(option(values.rounds, 'BENCH_ROUNDS'), 'rounds', 3, 1, 15, true),
    readyTimeoutS: bounded(values['ready-timeout'], 'ready-timeout', 30, 1, 300, false),
    mandateHeaders: values['mandate-header'] ?? [],
    mandateBin: values['mandate-bin'] === undefined ? MANDATE_BIN : resolvePath(values['mandate-bin']),
    baselineBin,
    writeDocs: !values['no-docs'],
    keepTmp: values['keep-tmp'],
    durability: durability ?? null,
    rate: parseRate(option(values.rate, 'BENCH_RATE')),
  };
}

function parseRate(raw: string | undefined): number | 'auto' {
  if (raw === undefined || raw === 'auto') return 'auto';
  return bounded(raw, 'rate', 0, 0, 100_000, true);
}

// ---------------------------------------------------------------- child processes

const children = new Set<ChildProcess>();

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.on('exit', () => children.delete(child));
  child.on('error', () => children.delete(child));
  return child;
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (!alive(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (!alive(child)) return;
  child.kill('SIGTERM');
  if (!(await waitExit(child, 3_000))) {
    child.kill('SIGKILL');
    await waitExit(child, 2_000);
  }
}

async function stopAll(): Promise<void> {
  await Promise.all([...children].map((c) => stopChild(c)));
}

// Last resort (normal exit, uncaught error): nothing may outlive us.
process.on('exit', () => {
  for (const child of children) if (alive(child)) child.kill('SIGKILL');
});

function tail(file: string, maxChars = 4_000): string {
  try {
    const text = readFileSync(file, 'utf8');
    return text.length > maxChars ? `...${text.slice(-maxChars)}` : text;
  } catch {
    return '';
  }
}

/** Spawns a bench server script that prints `{"listening":port}` when ready. */
async function startListener(name: string, script: string, args: string[], logDir: string): Promise<{ child: ChildProcess; port: number }> {
  const errLog = join(logDir, `${name}.stderr.log`);
  const errFd = openSync(errLog, 'w');
  const child = track(spawn(NODE, [script, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', errFd] }));
  closeSync(errFd);
  const stdout = child.stdout;
  if (stdout === null) throw new Error(`${name}: no stdout`);
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: stdout });
    const timer = setTimeout(() => fail(`did not report a port within 10 s`), 10_000);
    const onExit = (code: number | null, signal: string | null): void => fail(`exited (${code ?? signal}) before listening`);
    function fail(why: string): void {
      clearTimeout(timer);
      lines.close();
      child.off('exit', onExit);
      void stopChild(child);
      reject(new Error(`${name} ${why}\n${tail(errLog)}`));
    }
    child.once('exit', onExit);
    lines.on('line', (line) => {
      try {
        const parsed: unknown = JSON.parse(line);
        const port = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>)['listening'] : undefined;
        if (typeof port === 'number') {
          clearTimeout(timer);
          child.off('exit', onExit);
          lines.close();
          stdout.resume(); // keep draining, though nothing more is expected
          resolve({ child, port });
        }
      } catch {
        // Not our line; ignore.
      }
    });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}

function httpStatus(url: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve) => {
    const req = get(url, { timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Registers a machine client and gets a client-credentials access token for the bench server. */
async function machineToken(port: number): Promise<string> {
  const base = `http://127.0.0.1:${port}`;
  const registered = await fetch(`${base}/oauth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ client_name: 'bench', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' }),
  });
  if (registered.status !== 201) throw new Error(`bench: registration failed: ${registered.status} ${await registered.text()}`);
  const { client_id: id, client_secret: secret } = (await registered.json()) as { client_id: string; client_secret: string };
  const issued = await fetch(`${base}/oauth/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: `${base}/mcp/bench`, scope: 'mcp:bench' }),
  });
  if (issued.status !== 200) throw new Error(`bench: token request failed: ${issued.status} ${await issued.text()}`);
  return ((await issued.json()) as { access_token: string }).access_token;
}

interface GatewaySetup {
  /** Names its config, data directory and logs in the temp dir. */
  name: string;
  bin: string;
  /** With the identity section (tokens required); false for a build from before authentication. */
  identity: boolean;
  /** A policy directory for its `policies:` key (a build from before policies has none). */
  policies?: string;
  /** Present a stored secret to the upstream (`auth: { kind: secret }`), set with `mandate secrets set` before the start. */
  secret?: boolean;
}

/** The secret the bench's Mandate presents to its upstream (a header the upstream ignores: the cost is Mandate's). */
const BENCH_SECRET = 'bench-key';

/** A data directory with a deployment secret, a migrated store and the bench's secret in it, as an operator would prepare it. */
function prepareSecret(bin: string, data: string): void {
  writeFileSync(join(data, 'secret.key'), `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600 });
  execFileSync(NODE, [bin, 'migrate', '--data', data], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  execFileSync(NODE, [bin, 'secrets', 'set', BENCH_SECRET, '--stdin', '--data', data], { cwd: ROOT, input: randomBytes(24).toString('base64url'), stdio: ['pipe', 'ignore', 'pipe'] });
}

async function startMandate(setup: GatewaySetup, upstreamPort: number, tmp: string, readyTimeoutS: number, durability: Options['durability']): Promise<{ child: ChildProcess; port: number }> {
  const { bin, name } = setup;
  if (!existsSync(bin)) {
    throw new UsageError(
      bin === MANDATE_BIN ? `${bin} does not exist: Mandate is not built yet. Run with --only direct,hop to measure the baselines only.` : `${bin} does not exist (--${name === 'mandate' ? 'mandate' : 'baseline'}-bin)`,
    );
  }
  const port = await freePort();
  const config = join(tmp, `${name}.yaml`);
  const data = join(tmp, `${name}-data`);
  await mkdir(data, { recursive: true });
  if (setup.secret) prepareSecret(bin, data);
  await writeFile(
    config,
    [
      'issuer: http://127.0.0.1:' + port,
      'servers:',
      '  - name: bench',
      `    url: http://127.0.0.1:${upstreamPort}/mcp`,
      ...(setup.secret ? [`    auth: { kind: secret, secret: ${BENCH_SECRET}, header: X-Api-Key }`] : []),
      ...(durability ? ['audit:', `  durability: ${durability}`] : []),
      ...(setup.policies ? [`policies: ${JSON.stringify(setup.policies)}`] : []),
      // Authentication stays on: the load carries a client-credentials token.
      ...(setup.identity ? ['identity:', '  accessTokenTtl: 7200', '  registration:', '    mode: open'] : []),
      '',
    ].join('\n'),
  );
  const outLog = join(tmp, `${name}.stdout.log`);
  const errLog = join(tmp, `${name}.stderr.log`);
  const outFd = openSync(outLog, 'w');
  const errFd = openSync(errLog, 'w');
  const child = track(
    spawn(NODE, [bin, 'up', '--config', config, '--port', String(port), '--data', data], {
      cwd: ROOT,
      stdio: ['ignore', outFd, errFd],
    }),
  );
  closeSync(outFd);
  closeSync(errFd);
  mandateSpawned = true;
  let spawnError: Error | undefined;
  child.on('error', (e) => (spawnError = e));

  const deadline = Date.now() + readyTimeoutS * 1000;
  let lastStatus = 0;
  while (Date.now() < deadline) {
    if (spawnError !== undefined || !alive(child)) break;
    lastStatus = await httpStatus(`http://127.0.0.1:${port}/readyz`, 1_000);
    if (lastStatus === 200) return { child, port };
    await sleep(150);
  }
  const exited = spawnError === undefined && !alive(child);
  const why =
    spawnError !== undefined
      ? `could not be spawned (${spawnError.message})`
      : exited
        ? `exited (${child.exitCode ?? child.signalCode}) before /readyz answered 200`
        : `did not answer 200 on /readyz within ${readyTimeoutS} s (last status: ${lastStatus === 0 ? 'no answer' : lastStatus})`;
  await stopChild(child);
  const stderr = tail(errLog);
  throw new StartError(
    `Mandate (${bin}) ${why}.\nCommand: ${NODE} ${bin} up --config ${config} --port ${port} --data ${data}\n` +
      `--- Mandate stderr (tail) ---\n${stderr || '(empty)'}\n--- Mandate stdout (tail) ---\n${tail(outLog) || '(empty)'}`,
    exited ? stderr : null,
  );
}

class StartError extends Error {
  /** What the process printed before it exited; null if it did not exit by itself. */
  readonly exitedWith: string | null;
  constructor(message: string, exitedWith: string | null) {
    super(message);
    this.exitedWith = exitedWith;
  }
}

/** Names a build by the commit of its checkout (the report names no local path). */
function buildName(bin: string): string {
  try {
    const commit = execFileSync('git', ['-C', dirname(bin), 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['-C', dirname(bin), 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return `commit ${commit}${dirty === '' ? '' : ' with uncommitted changes'}`;
  } catch {
    return 'a build outside a git checkout';
  }
}

/** How each gateway target was set up, for the report. */
const gatewayNotes = new Map<Target, string>();

/**
 * Starts one gateway target and returns its URL and request headers. A
 * baseline build from before authentication refuses the identity section; it
 * is then started without it and called without a token (and the report says so).
 */
/**
 * The policy set this build's Mandate decides with: the bench server's
 * permit for machine clients among 990 policies for 99 other servers
 * (bench/policy-set.ts), so each decision runs against a large set.
 */
async function writeBenchPolicies(dir: string): Promise<string> {
  const policies = join(dir, 'policies');
  await mkdir(policies, { recursive: true });
  await writeFile(join(policies, 'args.cedarschema'), BENCH_ARGS_SCHEMA);
  await writeFile(
    join(policies, 'bench.cedar'),
    `@id("bench-machines")\npermit (principal is Client, action in [Action::"tools/call", Action::"tools/list"], resource in Server::"bench")\n  when { principal.kind == "machine" };\n${benchPolicies(99, 10)}\n`,
  );
  return policies;
}

async function startGateway(target: Target, opts: Options, upstreamPort: number, dir: string): Promise<{ url: string; headers: string[]; pid: number | undefined }> {
  const bin = target === 'baseline' ? opts.baselineBin : opts.mandateBin;
  if (bin === null) throw new UsageError('the baseline target needs --baseline-bin PATH');
  let identity = true;
  let started: { child: ChildProcess; port: number };
  const policies = target === 'mandate' ? await writeBenchPolicies(dir) : undefined;
  try {
    started = await startMandate({ name: target, bin, identity, ...(policies ? { policies, secret: true } : {}) }, upstreamPort, dir, opts.readyTimeoutS, opts.durability);
  } catch (error) {
    if (!(target === 'baseline' && error instanceof StartError && error.exitedWith?.includes('identity'))) throw error;
    identity = false;
    started = await startMandate({ name: `${target}-without-identity`, bin, identity }, upstreamPort, dir, opts.readyTimeoutS, opts.durability);
  }
  const headers = [...opts.mandateHeaders];
  if (identity) headers.push(`Authorization: Bearer ${await machineToken(started.port)}`);
  const build = buildName(bin);
  gatewayNotes.set(target, identity ? `${build}, with a client-credentials token on every request` : `${build}, a build without authentication (it refused the identity section), called without a token`);
  console.log(`bench: ${TARGET_NAMES[target]} ready on port ${started.port} (${identity ? 'requests carry an access token' : 'no authentication in this build'})`);
  return { url: `http://127.0.0.1:${started.port}/mcp/bench`, headers, pid: started.child.pid };
}

// ---------------------------------------------------------------- the policy engine alone

interface PolicyFigures {
  policies: number;
  servers: number;
  decisions: number;
  cached: { p50Us: number; p99Us: number; perSecond: number };
  uncached: { p50Us: number; p99Us: number; perSecond: number };
  list: { tools: number; firstMs: number; secondMs: number };
}

/** bench/policy.ts in its own process (nothing else runs meanwhile); its one JSON line. */
function runPolicyBench(): Promise<PolicyFigures> {
  return new Promise((resolve, reject) => {
    const child = track(spawn(NODE, [join(BENCH, 'policy.ts')], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    let err = '';
    child.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`bench/policy.ts exited ${code}: ${err.slice(-2000)}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as PolicyFigures);
      } catch {
        reject(new Error(`bench/policy.ts printed no result: ${out.slice(-500)}`));
      }
    });
  });
}

// ---------------------------------------------------------------- load runs

interface LoadResult {
  rps: number;
  p50Ms: number | null;
  p99Ms: number | null;
  count: number;
  errors: number;
  errorKinds?: Record<string, number>;
  sseResponses?: number;
  protocolVersion?: string;
  /** Successful exchanges over the whole run, warm-up included. */
  completed?: number;
  /** The load generator's own CPU time, ms. */
  cpuMs?: number;
  fatal?: string;
}

/** CPU time per completed request in one run, µs, per process; null where it could not be read. */
interface CpuPerRequest {
  /** The hop or Mandate (every thread); null for direct. */
  proxy: number | null;
  upstream: number | null;
  load: number | null;
}

/** The processes whose CPU time a run reads: each proxy target's, and the upstream's. */
type Pids = Map<Target | 'upstream', number | undefined>;

function runLoad(url: string, label: string, opts: Options, headers: string[], rate = 0): Promise<LoadResult> {
  const args = [
    join(BENCH, 'load.ts'),
    '--url', url,
    '--concurrency', String(opts.concurrency),
    '--duration', String(opts.durationS),
    '--warmup', String(opts.warmupS),
    '--label', label,
    ...(rate > 0 ? ['--rate', String(rate)] : []),
  ];
  for (const h of headers) args.push('--header', h);
  const child = track(spawn(NODE, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] }));
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => {
    if (stdout.length < 1_000_000) stdout += s;
  });
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    if (stderr.length < 100_000) stderr += s;
  });
  const limitMs = (opts.warmupS + opts.durationS) * 1000 + 60_000;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`load generator for ${label} did not finish within ${limitMs / 1000} s`));
    }, limitMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      const last = stdout.trim().split('\n').pop() ?? '';
      let parsed: LoadResult | undefined;
      try {
        parsed = JSON.parse(last) as LoadResult;
      } catch {
        parsed = undefined;
      }
      if (parsed === undefined) {
        reject(new Error(`load generator for ${label} exited (${code}) without a result\n${stderr.trim()}`));
      } else if (parsed.fatal !== undefined) {
        reject(new Error(`load generator for ${label}: ${parsed.fatal}\n${stderr.trim()}`));
      } else {
        resolve(parsed);
      }
    });
  });
}

// ---------------------------------------------------------------- summary

interface Summary {
  target: Target;
  rps: number;
  p50Ms: number | null;
  p99Ms: number | null;
  count: number;
  errors: number;
  errorKinds: Record<string, number>;
  roundsRps: number[];
  roundsP99: (number | null)[];
  sseResponses: number;
  /** The median over the rounds of each process's CPU per request. */
  cpu: CpuPerRequest;
}

function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

function summarize(target: Target, runs: LoadResult[], cpu: CpuPerRequest[]): Summary {
  const errorKinds: Record<string, number> = {};
  for (const r of runs) {
    for (const [k, v] of Object.entries(r.errorKinds ?? {})) errorKinds[k] = (errorKinds[k] ?? 0) + v;
  }
  const notNull = (xs: (number | null)[]): number[] => xs.filter((x): x is number => x !== null);
  return {
    target,
    rps: median(runs.map((r) => r.rps)) ?? 0,
    p50Ms: median(notNull(runs.map((r) => r.p50Ms))),
    p99Ms: median(notNull(runs.map((r) => r.p99Ms))),
    count: runs.reduce((a, r) => a + r.count, 0),
    errors: runs.reduce((a, r) => a + r.errors, 0),
    errorKinds,
    roundsRps: runs.map((r) => r.rps),
    roundsP99: runs.map((r) => r.p99Ms),
    sseResponses: runs.reduce((a, r) => a + (r.sseResponses ?? 0), 0),
    cpu: {
      proxy: median(notNull(cpu.map((c) => c.proxy))),
      upstream: median(notNull(cpu.map((c) => c.upstream))),
      load: median(notNull(cpu.map((c) => c.load))),
    },
  };
}

const fmtUs = (n: number | null): string => (n === null ? 'n/a' : String(Math.round(n)));

/** Proxy · upstream · load generator, µs per request. */
function fmtCpu(c: CpuPerRequest): string {
  return `${fmtUs(c.proxy)} · ${fmtUs(c.upstream)} · ${fmtUs(c.load)}`;
}

const fmtRps = (n: number): string => Math.round(n).toLocaleString('en-US');
const fmtMs = (n: number | null): string => (n === null ? 'n/a' : n.toFixed(2));
const fmtRatio = (n: number | null): string => (n === null ? 'n/a' : `${n.toFixed(2)}×`);

function ratio(a: Summary | undefined, b: Summary | undefined): number | null {
  if (a === undefined || b === undefined || b.rps <= 0) return null;
  return a.rps / b.rps;
}

/**
 * The ratio round by round (the two targets ran next to each other, so a slow
 * phase of the machine touches both), and the median of those.
 */
function pairedRatios(a: Summary | undefined, b: Summary | undefined): { rounds: number[]; median: number } | null {
  if (a === undefined || b === undefined) return null;
  const rounds = a.roundsRps.flatMap((rps, i) => {
    const other = b.roundsRps[i];
    return other !== undefined && other > 0 ? [rps / other] : [];
  });
  const m = median(rounds);
  return m === null ? null : { rounds, median: m };
}

function fmtPaired(p: ReturnType<typeof pairedRatios>): string {
  return p === null ? 'n/a' : `${fmtRatio(p.median)} (${p.rounds.map((r) => r.toFixed(2)).join(' / ')})`;
}

function padTable(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ')).join('\n');
}

interface Machine {
  nproc: number;
  cpuModel: string;
  memoryGiB: string;
  node: string;
  os: string;
  loadAvg: string;
}

function machine(): Machine {
  return {
    nproc: availableParallelism(),
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: (totalmem() / 1024 ** 3).toFixed(1),
    node: process.version,
    os: `${osType()} ${release()}`,
    loadAvg: loadavg().map((l) => l.toFixed(2)).join(' '),
  };
}

/** The policy section: the engine alone, and Mandate with its policy set against the build before it. */
function renderPolicy(policy: PolicyFigures | null, summaries: Map<Target, Summary>): string {
  const mandate = summaries.get('mandate');
  const baseline = summaries.get('baseline');
  const mb = ratio(mandate, baseline);
  const verdict = (ok: boolean) => (ok ? 'met' : 'not met');
  const engine =
    policy === null
      ? 'The policy engine was not measured in this run (`--only` left out `policy`).'
      : `| | p50 | p99 | decisions/s |
| --- | ---: | ---: | ---: |
| decision, as the gateway runs it (with its cache) | ${policy.cached.p50Us} µs | ${policy.cached.p99Us} µs | ${policy.cached.perSecond.toLocaleString('en-US')} |
| decision, every one evaluated (cache off) | ${policy.uncached.p50Us} µs | ${policy.uncached.p99Us} µs | ${policy.uncached.perSecond.toLocaleString('en-US')} |

A ${policy.list.tools}-tool \`tools/list\` filtered for a caller seen for the first time: **${policy.list.firstMs} ms**; the same list again: ${policy.list.secondMs} ms.

Against the targets (${policy.policies} policies across ${policy.servers} servers, ${policy.decisions.toLocaleString('en-US')} decisions): p50 ≤ ${POLICY_P50_US} µs: **${verdict(policy.cached.p50Us <= POLICY_P50_US)}** (${policy.cached.p50Us} µs); p99 ≤ ${POLICY_P99_US} µs: **${verdict(policy.cached.p99Us <= POLICY_P99_US)}** (${policy.cached.p99Us} µs); the list ≤ ${POLICY_LIST_MS} ms: **${verdict(policy.list.firstMs <= POLICY_LIST_MS)}** (${policy.list.firstMs} ms). Evaluated without the cache, a decision takes ${policy.uncached.p50Us} µs at p50: a new question costs that once.`;
  const e2e =
    mb === null
      ? 'Mandate with policy against the build before it: not measured in this run (it needs `--baseline-bin`).'
      : `End to end, Mandate deciding every \`tools/call\` with its policy set (and journaling each allowed call before forwarding it) against the baseline build: **${fmtRatio(mb)}** (median of the per-round ratios ${fmtPaired(pairedRatios(mandate, baseline))}), p50 ${fmtMs(mandate?.p50Ms ?? null)} against ${fmtMs(baseline?.p50Ms ?? null)} ms, p99 ${fmtMs(mandate?.p99Ms ?? null)} against ${fmtMs(baseline?.p99Ms ?? null)} ms; target ≥ ${POLICY_BASELINE_RATIO}×: **${verdict(mb >= POLICY_BASELINE_RATIO)}**.`;
  return `## Policy

bench/policy.ts decides \`tools/call\` requests with 1,000 policies across 100
servers (bench/policy-set.ts: per server a read permit for its team, tool
permits, every third with an argument condition, a forbid, a permit on
read-only tools), in one process, for ten agents per server each calling a
random tool of its server with a path argument; then filters a 200-tool list.

${engine}

${e2e}
`;
}

/** The open-loop rounds: their rate and each target's figures. */
interface OpenLoop {
  rate: number;
  summaries: Map<Target, Summary>;
}

/** The open loop's section: each target's latency at one offered load. */
function renderOpenLoop(open: OpenLoop | null, opts: Options): string {
  if (open === null) return `## At the same offered load

Not measured in this run (\`--rate 0\`).
`;
  const rows = ALL_TARGETS.flatMap((t) => {
    const s = open.summaries.get(t);
    return s === undefined ? [] : [`| ${TARGET_NAMES[t]} | ${fmtRps(s.rps)} | ${fmtMs(s.p50Ms)} | ${fmtMs(s.p99Ms)} | ${s.errors} | ${s.roundsP99.map(fmtMs).join(' / ')} |`];
  });
  const gap = p99Gap(open.summaries);
  const mandate = open.summaries.get('mandate');
  const hop = open.summaries.get('hop');
  const p50 = mandate?.p50Ms != null && hop?.p50Ms != null ? mandate.p50Ms - hop.p50Ms : null;
  const verdict =
    gap === null
      ? 'Mandate or the bare hop was not measured, so their tails are not compared.'
      : `At ${fmtRps(open.rate)} requests/s Mandate's p99 is **${gap.toFixed(2)} ms** above the bare hop's (${fmtMs(mandate?.p99Ms ?? null)} against ${fmtMs(hop?.p99Ms ?? null)} ms) and its p50 ${p50 === null ? 'n/a' : `${p50.toFixed(2)} ms`} above.`;
  return `## At the same offered load

In a closed loop a request's latency is mostly the concurrency divided by the
throughput, so the table above mixes how much a target can carry with how
much time it adds to a request. Here the same targets ran the same
${opts.rounds} interleaved round(s) as an **open loop at ${fmtRps(open.rate)} requests/s**
(\`--rate\`; by default a quarter of the slowest proxy's closed-loop median, so every
target carries it with room to spare: nearer a target's limit the load
generator, on the same cores, falls behind its own schedule): a request is
due every 1/${fmtRps(open.rate)} s whatever the answers, and its latency runs from
when it was due, so a target that falls behind is charged for the wait it
causes.

| target | requests/s carried | p50 ms | p99 ms | errors | p99 ms per round |
| --- | ---: | ---: | ---: | --- | --- |
${rows.join('\n')}

${verdict}
`;
}

function renderDocs(summaries: Map<Target, Summary>, opts: Options, m: Machine, date: string, policy: PolicyFigures | null, open: OpenLoop | null): string {
  const direct = summaries.get('direct');
  const hop = summaries.get('hop');
  const mandate = summaries.get('mandate');
  const baseline = summaries.get('baseline');
  const rows = ALL_TARGETS.filter((t) => t !== 'baseline' || baseline !== undefined).map((t) => {
    const s = summaries.get(t);
    if (s === undefined) return `| ${TARGET_NAMES[t]} | not measured in this run | | | | | |`;
    return `| ${TARGET_NAMES[t]} | ${fmtRps(s.rps)} | ${fmtMs(s.p50Ms)} | ${fmtMs(s.p99Ms)} | ${s.errors}${s.errors > 0 ? ` (${Object.entries(s.errorKinds).map(([k, v]) => `${k}: ${v}`).join(', ')})` : ''} | ${s.roundsRps.map(fmtRps).join(' / ')} | ${s.roundsP99.map(fmtMs).join(' / ')} |`;
  });
  const mh = ratio(mandate, hop);
  const anyErrors = [...summaries.values()].some((s) => s.errors > 0);
  let verdict: string;
  if (mandate === undefined) {
    verdict = 'Mandate was **not measured** in this run, so there is no ratio against the target yet. Run `npm run bench` (all three targets) once `bin/mandate.js up` starts.';
  } else if (mh === null) {
    verdict = 'The ratio could not be computed (the bare hop measured 0 requests/s).';
  } else {
    const gap = mandate.p99Ms !== null && hop?.p99Ms != null ? mandate.p99Ms - hop.p99Ms : null;
    const tail = gap === null ? 'p99 could not be compared' : `Mandate's p99 is **${gap.toFixed(2)} ms** above the bare hop's (${fmtMs(mandate.p99Ms)} against ${fmtMs(hop?.p99Ms ?? null)}) against a target of at most ${TARGET_P99_GAP_MS} ms: **${gap <= TARGET_P99_GAP_MS ? 'met' : 'not met'}**`;
    verdict = `Mandate / bare hop = **${fmtRatio(mh)}** against a target of ≥ ${TARGET_RATIO}×: **${mh >= TARGET_RATIO ? 'met' : 'not met'}**. ${tail}${mandate.errors > 0 ? '. Mandate answered with errors in this run, so the figures are not valid' : ''}.`;
  }
  const sse = mandate !== undefined && mandate.sseResponses > 0 ? `\nMandate answered ${mandate.sseResponses} of its tools/call requests as an SSE stream (the load generator parses those to the response).\n` : '';
  return `# Benchmarks

This page is rewritten by \`npm run bench\` (bench/run.ts). The figures below are
from one run on the machine described; they are only comparable with each other.

## What is measured

A client calls MCP \`tools/call\` (tool \`echo\`, a 13-character message) over
Streamable HTTP, against ${baseline === undefined ? 'three' : 'four'} targets measured in the same run:

1. **direct**: a trivial MCP server (bench/upstream.ts: raw \`node:http\`, no SDK,
   answers \`application/json\` immediately). This is the baseline.
2. **bare hop**: the same server behind a plain Node HTTP forwarder
   (bench/bare-hop.ts: \`node:http\` server + keep-alive \`http.request\`, headers and
   bodies piped through unchanged). This is the cost of one more process in the path.
3. **Mandate**: the same server behind \`mandate up\`, configured with one server
   \`bench\` (\`servers: [{name: bench, url: http://127.0.0.1:<upstream>/mcp}]\`),
   called at \`/mcp/bench\` with a client-credentials access token on every
   request (verified, audience-checked and revocation-checked by the gateway), with ${opts.durability === null ? 'its default settings (audit.durability: power, an fsync per commit)' : `its default settings except \`audit.durability: ${opts.durability}\``}. Every
   request is parsed in both directions and its \`mcp.request\` event is
   committed to the SQLite audit log before the answer is sent. Every request is
   decided by a set of 991 Cedar policies (\`policies:\`: a permit for machine
   clients on \`bench\`, and bench/policy-set.ts for 99 other servers), each
   allowed call is written to the call journal before it is forwarded (docs/audit.md),
   and every upstream request carries a stored secret (\`auth: { kind: secret }\`, an
   \`X-Api-Key\` header from the credential broker, docs/credentials.md).
${baseline === undefined ? '' : `4. **Mandate, baseline build**: another build of Mandate (\`--baseline-bin\`), set up
   the same way but without \`policies:\` and the stored secret, whatever the build: ${gatewayNotes.get('baseline') ?? 'as above'}. Mandate / baseline
   is what the change between the two builds costs, measured in the same run,
   together with what deciding every call and presenting the secret cost (the
   same build as both targets measured 0.95×, per round 0.96×, on 2026-12-03).
`}
The load generator (bench/load.ts, its own process) first acts as a client:
\`initialize\`, then \`notifications/initialized\`, keeping the \`Mcp-Session-Id\` it
is given. Then ${opts.concurrency} request loops share a keep-alive agent; each
POSTs \`tools/call\` (\`Content-Type: application/json\`,
\`Accept: application/json, text/event-stream\`, \`MCP-Protocol-Version\`,
\`Mcp-Session-Id\`) and waits for the JSON-RPC response (JSON, or an SSE stream
parsed up to the response) before sending the next: a closed loop at fixed
concurrency. Each run is ${opts.warmupS} s of warm-up then ${opts.durationS} s measured;
only exchanges completing in the measured window count. Latency is from sending
the request to receiving its JSON-RPC response. Errors (transport failure,
timeout, non-2xx, JSON-RPC error, tool error, wrong echo) are counted over the
whole run and reported; a run with errors is not a valid figure.

The targets run in ${opts.rounds} interleaved round(s) (the order rotates each
round) to spread the machine's noise; each figure in the table is the median of
the rounds (requests/s, p50 and p99 each taken separately). Every process
(load generator, upstream, hop, Mandate) runs on the same machine and shares
its cores, so the load generator itself bounds the direct figure and the
absolute numbers mean little elsewhere; the ratios are the point.

Where Mandate's time goes, per thread and per step, and what was tried:
docs/performance.md.

## How to reproduce

\`\`\`sh
npm run bench                                 # all three targets
npm run bench -- --only direct,hop            # without Mandate
npm run bench -- --concurrency 64 --duration 10 --rounds 5
BENCH_CONCURRENCY=16 BENCH_DURATION=3 npm run bench
# against an earlier build, in the same run (a second checkout with its own npm ci)
git worktree add ../mandate-before <commit> && (cd ../mandate-before && npm ci)
npm run bench -- --baseline-bin ../mandate-before/bin/mandate.js --rounds 5
\`\`\`

On a noisy machine a ratio between two runs minutes apart means little; a
change is judged by \`Mandate / baseline build\` within one run.

| flag | environment | default | meaning |
| --- | --- | --- | --- |
| \`--only\` | \`BENCH_ONLY\` | \`direct,hop,mandate\` | targets to run |
| \`--concurrency\` | \`BENCH_CONCURRENCY\` | 32 | concurrent request loops |
| \`--duration\` | \`BENCH_DURATION\` | 5 | measured seconds per run |
| \`--warmup\` | \`BENCH_WARMUP\` | 1 | warm-up seconds per run |
| \`--rounds\` | \`BENCH_ROUNDS\` | 3 | interleaved rounds |
| \`--ready-timeout\` | | 30 | seconds to wait for Mandate's \`/readyz\` |
| \`--mandate-header 'Name: value'\` | | | extra request header for both Mandate targets (repeatable) |
| \`--mandate-bin\` | | \`bin/mandate.js\` | Mandate entry point to start with \`up\` |
| \`--baseline-bin\` | | | another build's entry point, measured as a fourth target (a build without authentication is called without a token) |
| \`--durability\` | \`BENCH_DURABILITY\` | Mandate's default | Mandate's \`audit.durability\` (\`process\` or \`power\`) |
| \`--rate\` | \`BENCH_RATE\` | \`auto\` | after the closed loops, the same rounds as an open loop at this many requests/s (\`auto\`: a quarter of the slowest proxy's closed-loop median; \`0\`: none) |
| \`--no-docs\` | | | do not rewrite this page |
| \`--keep-tmp\` | | | keep the temp dir (Mandate config, data, logs) |

Each piece also runs on its own: \`node bench/upstream.ts --port N\`,
\`node bench/bare-hop.ts --port N --target http://127.0.0.1:U\`,
\`node bench/load.ts --url http://127.0.0.1:P/mcp [--concurrency C --duration S --warmup S --rate R]\`
(prints one JSON line: \`{rps, p50Ms, p99Ms, count, errors, ...}\`). Only
127.0.0.1 is ever a target.

## Machine

| | |
| --- | --- |
| CPUs (nproc) | ${m.nproc} (${m.cpuModel}) |
| Memory | ${m.memoryGiB} GiB |
| Node | ${m.node} |
| OS | ${m.os} |
| Load average at start | ${m.loadAvg} |

The machine is shared and noisy: runs of the same target minutes apart have
differed by tens of percent (see the per-round column). Compare the ratios
within one run, not figures across runs.

## Results

Run of ${date}: concurrency ${opts.concurrency}, ${opts.warmupS} s warm-up + ${opts.durationS} s measured per run, ${opts.rounds} round(s).

| target | requests/s | p50 ms | p99 ms | errors | requests/s per round | p99 ms per round |
| --- | ---: | ---: | ---: | --- | --- | --- |
${rows.join('\n')}

| ratio (requests/s) | of the medians | median of the per-round ratios (each round) |
| --- | ---: | --- |
| bare hop / direct | ${fmtRatio(ratio(hop, direct))} | ${fmtPaired(pairedRatios(hop, direct))} |
| Mandate / bare hop | ${mandate === undefined ? 'not measured' : fmtRatio(mh)} | ${fmtPaired(pairedRatios(mandate, hop))} |
| Mandate / direct | ${mandate === undefined ? 'not measured' : fmtRatio(ratio(mandate, direct))} | ${fmtPaired(pairedRatios(mandate, direct))} |
${baseline === undefined ? '' : `| baseline build / bare hop | ${fmtRatio(ratio(baseline, hop))} | ${fmtPaired(pairedRatios(baseline, hop))} |\n| Mandate / baseline build | ${mandate === undefined ? 'not measured' : fmtRatio(ratio(mandate, baseline))} | ${fmtPaired(pairedRatios(mandate, baseline))} |\n`}
${renderCpu(summaries)}
The target is judged on the ratio of the medians. The per-round ratios show
how far the machine's noise moves it: within a round the targets run one
after the other, so a slow phase of the machine touches them alike.
${sse}
## Against the target

Target: Mandate sustains at least ${TARGET_RATIO}× the throughput of the bare hop, with
its p99 latency at most ${TARGET_P99_GAP_MS} ms above the bare hop's, while every answer
waits for its durable audit record.

${verdict}${anyErrors ? '\n\n**This run had errors** (see the table); its figures are not valid.' : ''}

${renderOpenLoop(open, opts)}
${renderPolicy(policy, summaries)}
${WHERE_THE_TIME_GOES}`;
}

/** Each process's CPU time per request, per target; on shared cores throughput follows their sum. */
function renderCpu(summaries: Map<Target, Summary>): string {
  // Without /proc (another system) only the load generator's own time is known: no table.
  if (![...summaries.values()].some(({ cpu }) => cpu.upstream !== null)) return '';
  const rows = ALL_TARGETS.flatMap((t) => {
    const s = summaries.get(t);
    if (s === undefined) return [];
    const { proxy, upstream, load } = s.cpu;
    const parts = [proxy, upstream, load].filter((n): n is number => n !== null);
    const sum = upstream === null || load === null ? null : parts.reduce((x, y) => x + y, 0);
    return [`| ${TARGET_NAMES[t]} | ${t === 'direct' ? '(none)' : fmtUs(proxy)} | ${fmtUs(upstream)} | ${fmtUs(load)} | ${fmtUs(sum)} |`];
  });
  return `CPU time per request, µs (median of the rounds): each process's user and
system time over the run, every thread (read from /proc before and after
it; the load generator's own, start-up included), divided by the requests
the run completed, warm-up included. The three
processes share the machine's cores, so when they keep them busy the
throughput follows the sum.

| target | the proxy | upstream | load generator | all three |
| --- | ---: | ---: | ---: | ---: |
${rows.join('\n')}
`;
}

/** What profiling found (CPU per request read from /proc, V8 CPU profiles); kept by hand. */
const WHERE_THE_TIME_GOES = `## Where the time goes

Per-thread CPU per request, profiles, garbage collection, what changed the
ratio and what was tried without effect, each figure with its machine and
date: docs/performance.md. This command does not rewrite that page.
`;

// ---------------------------------------------------------------- rounds

/** Every target once per round, the order rotating each round; closed loops, or open loops at `rate`. */
async function runRounds(opts: Options, urls: Map<Target, string>, headers: Map<Target, string[]>, pids: Pids, rate: number): Promise<Map<Target, Summary>> {
  const results = new Map<Target, LoadResult[]>(opts.targets.map((t) => [t, []]));
  const cpu = new Map<Target, CpuPerRequest[]>(opts.targets.map((t) => [t, []]));
  for (let round = 0; round < opts.rounds; round++) {
    const order = opts.targets.map((_, i) => opts.targets[(i + round) % opts.targets.length] as Target);
    for (const target of order) {
      const url = urls.get(target);
      if (url === undefined) continue;
      await sleep(PAUSE_BETWEEN_RUNS_MS);
      const proxyBefore = cpuMs(pids.get(target));
      const upstreamBefore = cpuMs(pids.get('upstream'));
      const r = await runLoad(url, target, opts, headers.get(target) ?? [], rate);
      const completed = r.completed ?? 0;
      const used: CpuPerRequest = {
        proxy: usPerRequest(proxyBefore, cpuMs(pids.get(target)), completed),
        upstream: usPerRequest(upstreamBefore, cpuMs(pids.get('upstream')), completed),
        load: usPerRequest(0, r.cpuMs ?? null, completed),
      };
      results.get(target)?.push(r);
      cpu.get(target)?.push(used);
      console.log(
        `  round ${round + 1}/${opts.rounds} ${target.padEnd(8)} ${fmtRps(r.rps).padStart(8)} req/s  p50 ${fmtMs(r.p50Ms)} ms  p99 ${fmtMs(r.p99Ms)} ms  errors ${r.errors}  CPU µs/req ${fmtCpu(used)}`,
      );
    }
  }
  const summaries = new Map<Target, Summary>();
  for (const t of opts.targets) summaries.set(t, summarize(t, results.get(t) ?? [], cpu.get(t) ?? []));
  return summaries;
}

function printTable(opts: Options, summaries: Map<Target, Summary>): void {
  const header = ['target', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'req/s per round', 'p99 per round', 'CPU µs/req: proxy · upstream · load'];
  const table = [header];
  for (const t of opts.targets) {
    const s = summaries.get(t);
    if (s === undefined) continue;
    table.push([TARGET_NAMES[t], fmtRps(s.rps), fmtMs(s.p50Ms), fmtMs(s.p99Ms), String(s.errors), s.roundsRps.map(fmtRps).join(' / '), s.roundsP99.map(fmtMs).join(' / '), fmtCpu(s.cpu)]);
  }
  console.log(`\n${padTable(table)}\n`);
}

/** The open loop's rate: as given, or a quarter of the slowest proxy's closed-loop median (every target can carry it), in hundreds. */
function openLoopRate(opts: Options, summaries: Map<Target, Summary>): number {
  if (opts.rate !== 'auto') return opts.rate;
  const proxies = (['hop', 'mandate', 'baseline'] as const).map((t) => summaries.get(t)?.rps).filter((rps): rps is number => rps !== undefined && rps > 0);
  const slowest = proxies.length > 0 ? Math.min(...proxies) : summaries.get('direct')?.rps;
  if (slowest === undefined || slowest <= 0) return 0;
  return Math.max(100, Math.floor(slowest / 4 / 100) * 100);
}

/** Mandate's p99 minus the bare hop's, ms; null if either is missing. */
function p99Gap(summaries: Map<Target, Summary>): number | null {
  const mandate = summaries.get('mandate')?.p99Ms;
  const hop = summaries.get('hop')?.p99Ms;
  return mandate == null || hop == null ? null : mandate - hop;
}

// ---------------------------------------------------------------- main

let tmp: string | undefined;
let keepTmp = false;
/** Set once Mandate was spawned: its config, data and logs are then worth keeping on failure. */
let mandateSpawned = false;
let cleaning: Promise<void> | undefined;
let interrupted = false;

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await stopAll();
    if (tmp !== undefined && !keepTmp) rmSync(tmp, { recursive: true, force: true });
  })();
  return cleaning;
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    interrupted = true;
    process.stderr.write(`\nbench: ${signal}, stopping children\n`);
    void cleanup().finally(() => process.exit(130));
  });
}

async function main(): Promise<number> {
  const opts = parseOptions();
  keepTmp = opts.keepTmp;
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 24) throw new UsageError(`Node >= 24 is required (this is ${process.version}); use node_modules/.bin/node`);

  tmp = await mkdtemp(join(tmpdir(), 'mandate-bench-'));
  const m = machine();
  const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  console.log(`bench: ${opts.targets.join(', ')} | concurrency ${opts.concurrency}, ${opts.warmupS} s warm-up + ${opts.durationS} s, ${opts.rounds} round(s)`);
  console.log(`bench: ${m.nproc} CPU(s), ${m.memoryGiB} GiB, node ${m.node}, load ${m.loadAvg}`);

  let policy: PolicyFigures | null = null;
  if (opts.policy) {
    policy = await runPolicyBench();
    console.log(
      `policy engine: ${policy.policies} policies / ${policy.servers} servers; decision p50 ${policy.cached.p50Us} µs, p99 ${policy.cached.p99Us} µs ` +
        `(uncached p50 ${policy.uncached.p50Us} µs, p99 ${policy.uncached.p99Us} µs); ${policy.list.tools}-tool list ${policy.list.firstMs} ms first, ${policy.list.secondMs} ms again`,
    );
  }
  if (opts.targets.length === 0) {
    if (opts.writeDocs) {
      await mkdir(join(ROOT, 'docs'), { recursive: true });
      await writeFile(DOCS_FILE, renderDocs(new Map(), opts, m, date, policy, null));
      console.log(`bench: wrote ${DOCS_FILE}`);
    }
    return 0;
  }

  const upstream = await startListener('upstream', join(BENCH, 'upstream.ts'), ['--port', '0'], tmp);
  const pids: Pids = new Map([['upstream', upstream.child.pid]]);
  const urls = new Map<Target, string>();
  const headers = new Map<Target, string[]>();
  urls.set('direct', `http://127.0.0.1:${upstream.port}/mcp`);
  for (const target of GATEWAYS) {
    if (!opts.targets.includes(target)) continue;
    const gateway = await startGateway(target, opts, upstream.port, tmp);
    urls.set(target, gateway.url);
    headers.set(target, gateway.headers);
    pids.set(target, gateway.pid);
  }
  if (opts.targets.includes('hop')) {
    const hop = await startListener('bare-hop', join(BENCH, 'bare-hop.ts'), ['--port', '0', '--target', `http://127.0.0.1:${upstream.port}`], tmp);
    urls.set('hop', `http://127.0.0.1:${hop.port}/mcp`);
    pids.set('hop', hop.child.pid);
  }

  const summaries = await runRounds(opts, urls, headers, pids, 0);
  printTable(opts, summaries);
  const hd = ratio(summaries.get('hop'), summaries.get('direct'));
  const mh = ratio(summaries.get('mandate'), summaries.get('hop'));
  if (hd !== null) console.log(`bare hop / direct:  ${fmtRatio(hd)}`);
  if (mh !== null) console.log(`Mandate / bare hop: ${fmtRatio(mh)} (target ≥ ${TARGET_RATIO}×: ${mh >= TARGET_RATIO ? 'met' : 'NOT met'})`);
  const bh = ratio(summaries.get('baseline'), summaries.get('hop'));
  const mb = ratio(summaries.get('mandate'), summaries.get('baseline'));
  if (bh !== null) console.log(`baseline / bare hop: ${fmtRatio(bh)}`);
  if (mb !== null) console.log(`Mandate / baseline: ${fmtRatio(mb)}`);
  for (const [a, b] of [['mandate', 'hop'], ['baseline', 'hop'], ['mandate', 'baseline']] as const) {
    const paired = pairedRatios(summaries.get(a), summaries.get(b));
    if (paired !== null) console.log(`${a} / ${b}, per round: ${fmtPaired(paired)}`);
  }
  if (!opts.targets.includes('mandate')) console.log('Mandate: not measured in this run');

  const rate = openLoopRate(opts, summaries);
  let open: OpenLoop | null = null;
  if (rate > 0) {
    console.log(`\nbench: the same targets as an open loop at ${fmtRps(rate)} requests/s (${opts.rate === 'auto' ? 'a quarter of the slowest proxy\'s closed-loop median' : '--rate'})`);
    open = { rate, summaries: await runRounds(opts, urls, headers, pids, rate) };
    printTable(opts, open.summaries);
    const gap = p99Gap(open.summaries);
    if (gap !== null) console.log(`Mandate's p99 at ${fmtRps(rate)} requests/s: ${gap.toFixed(2)} ms above the bare hop's`);
  }

  const all = [...summaries.values(), ...(open?.summaries.values() ?? [])];
  const anyErrors = all.some((s) => s.errors > 0);
  if (anyErrors) {
    for (const s of all) {
      if (s.errors > 0) console.log(`ERRORS for ${s.target}: ${JSON.stringify(s.errorKinds)}`);
    }
  }
  if (opts.writeDocs) {
    await mkdir(join(ROOT, 'docs'), { recursive: true });
    await writeFile(DOCS_FILE, renderDocs(summaries, opts, m, date, policy, open));
    console.log(`bench: wrote ${DOCS_FILE}`);
  }
  return anyErrors ? 1 : 0;
}

let code = 1;
try {
  code = await main();
} catch (e) {
  if (interrupted) {
    code = 130;
  } else if (e instanceof UsageError) {
    process.stderr.write(`bench: ${e.message}\n`);
    code = 2;
  } else {
    process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n`);
    if (mandateSpawned && !keepTmp) process.stderr.write('bench: (use --keep-tmp to keep the config, data and logs)\n');
    code = 1;
  }
} finally {
  await cleanup();
}
process.exit(code);
