/**
 * The policy engine on its own: decisions per second and their latency with
 * a large set, and the cost of filtering a long tools/list. In one process,
 * no network; prints one JSON line (bench/run.ts reads it).
 *
 *   node bench/policy.ts [--servers 100] [--per-server 10] [--decisions 20000] [--tools 200]
 *
 * The set: bench/policy-set.ts (1,000 policies across 100 servers). The
 * callers are ten agents per server (a member of its team, some also in
 * ops); each decision is a random agent calling a random tool of its server
 * with a path argument. Decisions are measured with the engine's cache (as
 * it runs: a repeated question whose policies read nothing per request is
 * answered from it) and without it (every decision evaluated).
 */
import { parseArgs } from 'node:util';
import { PolicyEngine } from '../src/policy/engine.ts';
import { loadPolicyTexts } from '../src/policy/load.ts';
import type { DecisionRequest } from '../src/policy/request.ts';
import { BENCH_ARGS_SCHEMA, benchPolicies } from './policy-set.ts';

const { values } = parseArgs({
  options: {
    servers: { type: 'string', default: '100' },
    'per-server': { type: 'string', default: '10' },
    decisions: { type: 'string', default: '20000' },
    tools: { type: 'string', default: '200' },
  },
});
const SERVERS = Number(values.servers);
const PER_SERVER = Number(values['per-server']);
const DECISIONS = Number(values.decisions);
const TOOLS = Number(values.tools);

const text = benchPolicies(SERVERS, PER_SERVER);
const loadStarted = performance.now();
const source = loadPolicyTexts('bench', [{ name: 'bench.cedar', text }], [{ name: 'args.cedarschema', text: BENCH_ARGS_SCHEMA }]);
const loadMs = performance.now() - loadStarted;

// A small deterministic generator (mulberry32), so every run asks the same questions.
let seed = 42;
const random = (n: number): number => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return (((t ^ (t >>> 14)) >>> 0) % n);
};

/** The callers: per server ten agents (a user of its team, a quarter also in ops, each through its own client). */
const AGENTS = Array.from({ length: SERVERS * 10 }, (_, a) => {
  const s = a % SERVERS;
  const user = `user-${a}`;
  return { s, user, groups: a % 4 === 0 ? [`team-${s}`, 'ops'] : [`team-${s}`], client: `mc_${a}` };
});

/** One call: a random agent calls a random tool of its server, with a path argument (inside its area or not). */
function request(): DecisionRequest {
  const agent = AGENTS[random(AGENTS.length)] as (typeof AGENTS)[number];
  const { s } = agent;
  const k = random(PER_SERVER + 1);
  const tool = k === PER_SERVER ? 'danger' : `tool-${k}`;
  return {
    principal: { type: 'User', id: agent.user, groups: agent.groups },
    client: { id: agent.client, name: 'agent', owner: agent.user, kind: 'interactive' },
    method: 'tools/call',
    server: `srv-${s}`,
    target: { type: 'Tool', name: tool },
    // As the upstream declared them: fixed per tool.
    hints: { readOnlyHint: k % 2 === 0 },
    scopes: [`mcp:srv-${s}`],
    args: { path: random(2) === 0 ? `/data/${s}/file-${random(1000)}` : `/etc/file-${random(1000)}` },
    now: Date.now(),
    tokenAge: random(600),
    sourceAddress: '127.0.0.1',
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? 0;
}

function measure(engine: PolicyEngine, requests: DecisionRequest[]): { p50Us: number; p99Us: number; perSecond: number; allowed: number } {
  const times: number[] = [];
  let allowed = 0;
  const started = performance.now();
  for (const asked of requests) {
    const t = performance.now();
    if (engine.decide(asked).allow) allowed += 1;
    times.push((performance.now() - t) * 1000);
  }
  const total = performance.now() - started;
  times.sort((a, b) => a - b);
  const round = (n: number) => Math.round(n * 10) / 10;
  return { p50Us: round(percentile(times, 50)), p99Us: round(percentile(times, 99)), perSecond: Math.round(requests.length / (total / 1000)), allowed };
}

const servers = Array.from({ length: SERVERS }, (_, s) => `srv-${s}`);
const requests = Array.from({ length: DECISIONS }, request);
// Warm-up: prepare every server's subset and let the engine's code settle.
const cached = new PolicyEngine(source);
const prepareStarted = performance.now();
cached.prepare(servers);
const prepareMs = performance.now() - prepareStarted;
measure(cached, requests.slice(0, 2000));
const cold = new PolicyEngine(source, { cache: false });
cold.prepare(servers);
measure(cold, requests.slice(0, 2000));

const withCache = measure(cached, requests);
const withoutCache = measure(cold, requests);

// Filtering one long tools/list: every tool of one server (ten of them named by policies, three of those
// with an argument condition: partial evaluation), for a member of its team. The engine is warmed up
// with another caller's list first; then the first list (nothing cached for this caller) and the second.
const listEngine = new PolicyEngine(source);
listEngine.prepare(servers);
const listTargets = (who: string): DecisionRequest[] =>
  Array.from({ length: TOOLS }, (_, k) => ({
    ...request(),
    server: 'srv-7',
    principal: { type: 'User', id: who, groups: ['team-7'] },
    client: { id: `mc_${who}`, name: 'agent', owner: who, kind: 'interactive' },
    target: { type: 'Tool', name: k < PER_SERVER ? `tool-${k}` : `listed-${k}` },
    hints: { readOnlyHint: k % 2 === 0 },
    args: {},
  }));
const filterOnce = (targets: DecisionRequest[]): { ms: number; shown: number } => {
  const t = performance.now();
  let shown = 0;
  for (const asked of targets) if (listEngine.couldAllow(asked)) shown += 1;
  return { ms: Math.round((performance.now() - t) * 100) / 100, shown };
};
for (let i = 0; i < 5; i += 1) filterOnce(listTargets(`warm-${i}`));
const lister = listTargets('lister');
const firstList = filterOnce(lister);
const secondList = filterOnce(lister);

console.log(
  JSON.stringify({
    policies: source.policies.length,
    servers: SERVERS,
    loadMs: Math.round(loadMs),
    prepareMs: Math.round(prepareMs),
    decisions: DECISIONS,
    cached: withCache,
    uncached: withoutCache,
    list: { tools: TOOLS, firstMs: firstList.ms, secondMs: secondList.ms, shown: firstList.shown },
  }),
);
