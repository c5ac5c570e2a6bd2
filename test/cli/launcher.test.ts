/**
 * bin/mandate.js on a Node older than 24 re-runs itself with the pinned
 * Node 24: the launcher and the gateway it starts live and die together.
 * Killing the launcher, even with SIGKILL, stops the gateway in order;
 * SIGTERM and SIGINT are passed on (SIGINT also when the whole process group
 * gets it, as from a terminal's Ctrl-C); SIGHUP is passed on and stops
 * nothing. Needs an older `node` on PATH (the system one); skipped without.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { freePort, MANDATE, ROOT, runCli, tempDir, waitFor } from '../helpers/process.ts';

/** A `node` on PATH older than 24, outside this project (the launcher's case), or null. */
function olderNode(): string | null {
  for (const folder of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(folder, 'node');
    if (!folder || folder.startsWith(ROOT) || !existsSync(candidate)) continue;
    const version = spawnSync(candidate, ['-p', 'process.versions.node'], { encoding: 'utf8' }).stdout.trim();
    if (Number(version.split('.')[0]) < 24) return candidate;
  }
  return null;
}

const OLD_NODE = olderNode();
const dir = tempDir('mandate-launcher-');
after(() => rmSync(dir, { recursive: true, force: true }));

/** True while the process exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

interface Launched {
  launcher: ChildProcess;
  /** The gateway's pid (from gateway.started). */
  gateway: number;
  port: number;
  dataDir: string;
  output(): string;
  exited: Promise<number | string>;
}

async function gatewayEvents(dataDir: string): Promise<{ type: string; data: { pid?: number } }[]> {
  const out = await runCli(['audit', 'list', '--json', '--type', 'gateway.*', '--data', dataDir]);
  assert.equal(out.code, 0, out.stderr);
  return JSON.parse(out.stdout) as { type: string; data: { pid?: number } }[];
}

/** `node bin/mandate.js up` with the older node, until ready; its own process group when `group` is set. */
async function launch(name: string, group = false): Promise<Launched> {
  const dataDir = path.join(dir, name);
  const config = path.join(dir, `${name}.yaml`);
  writeFileSync(config, 'servers:\n  - name: one\n    command: node\nlog:\n  level: warn\n');
  const port = await freePort();
  const launcher = spawn(OLD_NODE!, [MANDATE, 'up', '--config', config, '--data', dataDir, '--port', String(port)], { cwd: ROOT, detached: group, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  launcher.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  launcher.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | string>((resolve) => launcher.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  await waitFor(async () => output.includes('Mandate is listening') && (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, `the gateway behind the launcher: ${output}`, 30_000);
  const started = (await gatewayEvents(dataDir)).find((event) => event.type === 'gateway.started');
  const gateway = Number(started?.data.pid);
  assert.ok(gateway > 0 && gateway !== launcher.pid, `gateway.started names another process than the launcher (${gateway})`);
  assert.equal(parentOf(gateway), launcher.pid, 'the gateway is the launcher\'s child');
  return { launcher, gateway, port, dataDir, output: () => output, exited };
}

/** Launches, runs the case, and kills whatever a failed case left behind. */
async function withLaunch(name: string, body: (run: Launched) => Promise<void>, group = false): Promise<void> {
  let run: Launched | null = null;
  try {
    run = await launch(name, group);
    await body(run);
  } finally {
    for (const pid of [run?.launcher.pid, run?.gateway]) {
      if (pid && alive(pid)) process.kill(pid, 'SIGKILL');
    }
  }
}

const within = <T>(promise: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms))]);

/** The launcher exits 0 soon, the gateway is gone, and its stop is on record. */
async function stoppedInOrder(run: Launched): Promise<void> {
  assert.equal(await within(run.exited, 15_000, 'the launcher to exit'), 0, run.output());
  assert.equal(alive(run.gateway), false);
  assert.deepEqual((await gatewayEvents(run.dataDir)).map((e) => e.type), ['gateway.started', 'gateway.stopped']);
}

describe('the launcher on an older Node', { skip: OLD_NODE ? false : 'no node older than 24 on PATH', timeout: 180_000, concurrency: 2 }, () => {
  it('SIGKILL to the launcher: the gateway stops in order within seconds (no orphan)', () =>
    withLaunch('sigkill', async (run) => {
      run.launcher.kill('SIGKILL');
      await run.exited;
      await waitFor(async () => !alive(run.gateway), `gateway ${run.gateway} to end after its launcher was killed`, 10_000);
      const events = await gatewayEvents(run.dataDir);
      assert.deepEqual(events.map((e) => e.type), ['gateway.started', 'gateway.stopped'], 'an orderly stop');
      assert.equal(events[1]?.data.pid, run.gateway);
    }));

  it('SIGTERM to the launcher: passed on, the gateway stops in order, the launcher exits 0', () =>
    withLaunch('sigterm', async (run) => {
      run.launcher.kill('SIGTERM');
      await stoppedInOrder(run);
    }));

  it('SIGHUP to the launcher: passed on; neither process stops, the gateway still answers', () =>
    withLaunch('sighup', async (run) => {
      run.launcher.kill('SIGHUP');
      await waitFor(async () => run.output().includes('SIGHUP'), 'the gateway to note the SIGHUP', 10_000);
      assert.equal(alive(run.launcher.pid!), true, 'the launcher is running');
      assert.equal(alive(run.gateway), true, 'the gateway is running');
      assert.equal((await fetch(`http://127.0.0.1:${run.port}/readyz`)).status, 200);
      run.launcher.kill('SIGTERM');
      await stoppedInOrder(run);
    }));

  it('SIGINT to the whole process group (Ctrl-C): one orderly stop, exit 0', () =>
    withLaunch(
      'sigint-group',
      async (run) => {
        // Both the launcher and the gateway get it; the launcher passes its copy on too.
        process.kill(-run.launcher.pid!, 'SIGINT');
        await stoppedInOrder(run);
        assert.doesNotMatch(run.output(), /again, exiting now/);
      },
      true,
    ));
});
