/**
 * The bench's load generator (bench/load.ts) against the bench's upstream,
 * both real processes: the open loop (`--rate`) starts requests on its
 * schedule and counts those due in the measured window.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const BENCH = fileURLToPath(new URL('../../bench/', import.meta.url));

describe('bench/load.ts', () => {
  let upstream: ChildProcess;
  let url: string;

  before(async () => {
    upstream = spawn(process.execPath, [`${BENCH}upstream.ts`, '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const lines = createInterface({ input: upstream.stdout! });
    const port = await new Promise<number>((resolve, reject) => {
      lines.on('line', (line) => resolve((JSON.parse(line) as { listening: number }).listening));
      upstream.once('exit', (code) => reject(new Error(`upstream exited ${code}`)));
    });
    url = `http://127.0.0.1:${port}/mcp`;
  });

  after(() => {
    upstream.kill();
  });

  function load(...args: string[]): { status: number | null; result: Record<string, unknown> | null; stderr: string } {
    const run = spawnSync(process.execPath, [`${BENCH}load.ts`, '--url', url, ...args], { encoding: 'utf8', timeout: 30_000 });
    const last = run.stdout.trim().split('\n').pop() ?? '';
    return { status: run.status, result: last === '' ? null : (JSON.parse(last) as Record<string, unknown>), stderr: run.stderr };
  }

  it('--rate: one request every 1/R s, each due in the window counted once, timed from when it was due', () => {
    const { status, result } = load('--rate', '200', '--duration', '1', '--warmup', '0.5', '--concurrency', '8');
    assert.equal(status, 0);
    assert.ok(result);
    assert.equal(result.rate, 200);
    assert.equal(result.errors, 0);
    // 200 requests are due in the measured second; every one is answered.
    assert.ok((result.count as number) >= 199 && (result.count as number) <= 201, `count ${String(result.count)}`);
    assert.ok((result.p50Ms as number) > 0 && (result.p99Ms as number) >= (result.p50Ms as number));
    // Every request of the run, warm-up included, and the generator's own CPU time.
    assert.ok((result.completed as number) >= 299 && (result.completed as number) <= 301, `completed ${String(result.completed)}`);
    assert.ok(Number.isInteger(result.cpuMs) && (result.cpuMs as number) > 0, `cpuMs ${String(result.cpuMs)}`);
  });

  it('refuses a rate that is not a number in range, or no value, naming the flag (exit 2)', () => {
    for (const args of [['--rate=-5'], ['--rate', 'fast'], ['--rate', '0']]) {
      const { status, stderr } = load(...args);
      assert.equal(status, 2, args.join(' '));
      assert.match(stderr, /^load: --rate must be a number in \[1, 100000\], got /, args.join(' '));
    }
    const missing = load('--rate', '-5');
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /^load: .*'--rate'/);
  });
});
