/**
 * Closed-loop load generator for MCP `tools/call` over Streamable HTTP.
 *
 *   node bench/load.ts --url http://127.0.0.1:P/mcp [--concurrency 32]
 *        [--duration 5] [--warmup 1] [--header 'Name: value']... [--label x]
 *        [--rate R]
 *
 * It first behaves like a client: `initialize`, then `notifications/initialized`,
 * keeping the session id (and negotiated protocol version) it was given. Then
 * C request loops share one keep-alive Agent; each loop POSTs `tools/call`
 * (tool `echo`) and waits for the JSON-RPC response before sending the next.
 * Responses may be `application/json` or `text/event-stream` (SSE `data:` lines
 * are parsed until the response with the request id arrives; latency stops
 * there, the loop continues once the stream has ended).
 *
 * With `--rate R` the load is an open loop instead: a request is started
 * every 1/R s on a fixed schedule, whether or not earlier ones were answered
 * (at most `--concurrency` connections; beyond that requests wait for one),
 * and latency runs from the time the schedule gave the request, so a target
 * that falls behind is charged for the wait it causes. Targets are then
 * compared at the same offered load: the tail each adds, apart from how much
 * each can carry.
 *
 * Only exchanges that complete inside the measurement window (after the
 * warm-up) count toward count/rps/latency; with `--rate`, those scheduled
 * inside it. Errors (transport failure, timeout,
 * non-2xx, JSON-RPC error, tool error, wrong echo) are counted over the whole
 * run, warm-up included, by kind.
 *
 * Output: exactly one JSON line on stdout,
 *   {rps, p50Ms, p99Ms, count, errors, ...details}; among the details
 *   `completed` (successful exchanges over the whole run, warm-up included)
 *   and `cpuMs` (this process's CPU time, ms), from which the bench works
 *   out the CPU each process spends per request.
 * Exit code 0 if the run completed (even with errors), 1 if it could not start
 * (the line then carries `fatal`), 2 on bad arguments.
 */
import { Agent, request } from 'node:http';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

const PROTOCOL_VERSION = '2025-11-25';
const REQUEST_TIMEOUT_MS = 10_000;
/** After the response arrived on an SSE stream, how long the server may take to close it. */
const SSE_CLOSE_GRACE_MS = 2_000;
const MAX_BODY_CHARS = 4 * 1024 * 1024;
const ECHO_MESSAGE = 'mandate-bench';

// ---------------------------------------------------------------- arguments

function fail(message: string): never {
  process.stderr.write(`load: ${message}\n`);
  process.exit(2);
}

function boundedNumber(raw: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) fail(`--${name} must be a number in [${min}, ${max}], got ${raw}`);
  return n;
}

function parsed() {
  try {
    return parseArgs({
      options: {
        url: { type: 'string' },
        concurrency: { type: 'string' },
        duration: { type: 'string' },
        warmup: { type: 'string' },
        header: { type: 'string', multiple: true },
        label: { type: 'string' },
        rate: { type: 'string' },
      },
    });
  } catch (error) {
    // An unknown flag, a missing value, or a value that looks like a flag.
    return fail(error instanceof Error ? error.message.split('\n')[0] ?? error.message : String(error));
  }
}

const { values } = parsed();

if (values.url === undefined) fail('--url http://127.0.0.1:PORT/path is required');
const target = new URL(values.url);
if (target.protocol !== 'http:' || target.hostname !== '127.0.0.1') fail('--url must be http://127.0.0.1:PORT/...');
const targetPort = Number(target.port || 80);
const targetPath = `${target.pathname}${target.search}`;

const concurrency = Math.floor(boundedNumber(values.concurrency, 'concurrency', 32, 1, 1024));
const durationS = boundedNumber(values.duration, 'duration', 5, 0.5, 120);
const warmupS = boundedNumber(values.warmup, 'warmup', 1, 0, 30);
const label = values.label ?? target.href;
/** Requests per second of the open loop; 0: the closed loop. */
const rate = values.rate === undefined ? 0 : boundedNumber(values.rate, 'rate', 0, 1, 100_000);

const extraHeaders: Record<string, string> = {};
for (const h of values.header ?? []) {
  const colon = h.indexOf(':');
  if (colon <= 0) fail(`--header must be 'Name: value', got ${h}`);
  extraHeaders[h.slice(0, colon).trim().toLowerCase()] = h.slice(colon + 1).trim();
}

// ---------------------------------------------------------------- one exchange

interface Exchange {
  status: number;
  headers: IncomingHttpHeaders;
  /** The JSON-RPC response matching the request id, if one arrived. */
  message: Record<string, unknown> | undefined;
  /** performance.now() when the response (or the failure) was known. */
  respondedAt: number;
  sse: boolean;
  /** Set when the exchange failed below the JSON-RPC level. */
  failure: string | undefined;
}

const agent = new Agent({ keepAlive: true, keepAliveMsecs: 1000, maxSockets: concurrency, maxFreeSockets: concurrency });

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function matches(parsed: unknown, id: number | null): parsed is Record<string, unknown> {
  return isObject(parsed) && parsed['id'] === id && ('result' in parsed || 'error' in parsed);
}

/**
 * POSTs one JSON-RPC message. `id` null means a notification (no response body
 * expected). Resolves once the exchange is over: the body (or SSE stream) has
 * ended, or failed, or timed out. Never rejects.
 */
function post(headers: OutgoingHttpHeaders, payload: string, id: number | null): Promise<Exchange> {
  return new Promise((resolve) => {
    let settled = false;
    let status = 0;
    let resHeaders: IncomingHttpHeaders = {};
    let message: Record<string, unknown> | undefined;
    let respondedAt = 0;
    let sse = false;
    let graceTimer: NodeJS.Timeout | undefined;

    const finish = (failure: string | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (graceTimer !== undefined) clearTimeout(graceTimer);
      resolve({
        status,
        headers: resHeaders,
        message,
        respondedAt: respondedAt === 0 ? performance.now() : respondedAt,
        sse,
        failure,
      });
    };

    const req = request(
      {
        agent,
        host: '127.0.0.1',
        port: targetPort,
        method: 'POST',
        path: targetPath,
        headers: { ...headers, 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        status = res.statusCode ?? 0;
        resHeaders = res.headers;
        const contentType = res.headers['content-type'] ?? '';
        res.setEncoding('utf8');
        let buffered = '';
        let tooBig = false;

        if (contentType.startsWith('text/event-stream')) {
          sse = true;
          res.on('data', (chunk: string) => {
            if (message !== undefined || tooBig) return; // drain the rest of the stream
            buffered += chunk;
            if (buffered.length > MAX_BODY_CHARS) {
              tooBig = true;
              return;
            }
            if (buffered.includes('\r')) buffered = buffered.replace(/\r\n?/g, '\n');
            let end: number;
            while (message === undefined && (end = buffered.indexOf('\n\n')) !== -1) {
              const event = buffered.slice(0, end);
              buffered = buffered.slice(end + 2);
              let data = '';
              for (const line of event.split('\n')) {
                if (!line.startsWith('data:')) continue;
                const value = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
                data = data === '' ? value : `${data}\n${value}`;
              }
              if (data === '') continue;
              try {
                const parsed: unknown = JSON.parse(data);
                if (matches(parsed, id)) {
                  message = parsed;
                  respondedAt = performance.now();
                  // The server should close the stream now; do not wait forever.
                  graceTimer = setTimeout(() => {
                    req.destroy();
                    finish(undefined);
                  }, SSE_CLOSE_GRACE_MS);
                }
              } catch {
                // Not JSON: ignore this event, as a client would.
              }
            }
          });
          res.on('end', () => finish(tooBig ? 'body_too_large' : message === undefined && id !== null ? 'sse_no_response' : undefined));
        } else {
          res.on('data', (chunk: string) => {
            if (tooBig) return;
            buffered += chunk;
            if (buffered.length > MAX_BODY_CHARS) tooBig = true;
          });
          res.on('end', () => {
            respondedAt = performance.now();
            if (tooBig) {
              finish('body_too_large');
              return;
            }
            if (buffered !== '' && contentType.startsWith('application/json')) {
              try {
                const parsed: unknown = JSON.parse(buffered);
                if (isObject(parsed)) message = parsed;
              } catch {
                finish('bad_json');
                return;
              }
            }
            finish(undefined);
          });
        }
        res.on('error', () => finish('network'));
      },
    );
    const timer = setTimeout(() => {
      req.destroy();
      finish('timeout');
    }, REQUEST_TIMEOUT_MS);
    req.on('error', () => finish('network'));
    req.end(payload);
  });
}

// ---------------------------------------------------------------- session setup

const baseHeaders: OutgoingHttpHeaders = {
  'content-type': 'application/json',
  accept: 'application/json, text/event-stream',
  ...extraHeaders,
};

function emit(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ label, ...line })}\n`);
}

function fatal(message: string): never {
  emit({ fatal: message, rps: 0, p50Ms: null, p99Ms: null, count: 0, errors: 1 });
  process.exit(1);
}

function describe(ex: Exchange): string {
  const err = ex.message?.['error'];
  const detail = isObject(err) ? ` ${JSON.stringify(err)}` : '';
  return `status ${ex.status}${ex.failure !== undefined ? `, ${ex.failure}` : ''}${detail}`;
}

let nextId = 1;

async function openSession(): Promise<{ sessionId: string; protocolVersion: string }> {
  const id = nextId++;
  const init = await post(
    baseHeaders,
    JSON.stringify({
      jsonrpc: '2.0',
      id,
      method: 'initialize',
      params: {
        protocolVersion: PROTOCOL_VERSION,
        capabilities: {},
        clientInfo: { name: 'mandate-bench-load', version: '0.1.0' },
      },
    }),
    id,
  );
  const result = init.message?.['result'];
  if (init.failure !== undefined || init.status < 200 || init.status > 299 || !isObject(result)) {
    fatal(`initialize failed: ${describe(init)}`);
  }
  const rawSession = init.headers['mcp-session-id'];
  const sessionId = Array.isArray(rawSession) ? rawSession[0] : rawSession;
  if (sessionId === undefined || sessionId === '') fatal('initialize answered without an Mcp-Session-Id header');
  const negotiated = result['protocolVersion'];
  const protocolVersion = typeof negotiated === 'string' ? negotiated : PROTOCOL_VERSION;

  const note = await post(
    { ...baseHeaders, 'mcp-protocol-version': protocolVersion, 'mcp-session-id': sessionId },
    JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
    null,
  );
  if (note.failure !== undefined || note.status < 200 || note.status > 299) {
    fatal(`notifications/initialized failed: ${describe(note)}`);
  }
  return { sessionId, protocolVersion };
}

function closeSession(sessionId: string, protocolVersion: string): Promise<void> {
  return new Promise((resolve) => {
    const req = request(
      {
        agent,
        host: '127.0.0.1',
        port: targetPort,
        method: 'DELETE',
        path: targetPath,
        headers: { ...extraHeaders, 'mcp-session-id': sessionId, 'mcp-protocol-version': protocolVersion },
        timeout: 2_000,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve());
        res.on('error', () => resolve());
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve());
    req.end();
  });
}

// ---------------------------------------------------------------- measurement

const { sessionId, protocolVersion } = await openSession();
const callHeaders: OutgoingHttpHeaders = {
  ...baseHeaders,
  'mcp-protocol-version': protocolVersion,
  'mcp-session-id': sessionId,
};

const errorKinds: Record<string, number> = {};
let errors = 0;
let sseResponses = 0;
/** Successful exchanges over the whole run, warm-up included: what the processes' CPU time is divided by. */
let completed = 0;
const latencies: number[] = [];

function countError(kind: string): void {
  errors++;
  errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
}

/** Classifies a finished tools/call exchange; returns true if it succeeded. */
function check(ex: Exchange): boolean {
  if (ex.failure !== undefined) {
    countError(ex.failure);
    return false;
  }
  if (ex.status < 200 || ex.status > 299) {
    countError(`http_${ex.status}`);
    return false;
  }
  const msg = ex.message;
  if (msg === undefined) {
    countError('no_response');
    return false;
  }
  if ('error' in msg) {
    const err = msg['error'];
    countError(`jsonrpc_${isObject(err) && typeof err['code'] === 'number' ? err['code'] : 'error'}`);
    return false;
  }
  const result = msg['result'];
  if (!isObject(result)) {
    countError('bad_result');
    return false;
  }
  if (result['isError'] === true) {
    countError('tool_error');
    return false;
  }
  const content = result['content'];
  const first = Array.isArray(content) ? (content[0] as unknown) : undefined;
  if (!isObject(first) || first['text'] !== ECHO_MESSAGE) {
    countError('bad_result');
    return false;
  }
  return true;
}

const startedAt = performance.now();
const measureFrom = startedAt + warmupS * 1000;
const measureUntil = measureFrom + durationS * 1000;

// Hard stop, whatever happens: the loops are also bounded by time.
const watchdog = setTimeout(() => {
  fatal('watchdog: run did not finish in time');
}, (warmupS + durationS) * 1000 + REQUEST_TIMEOUT_MS + SSE_CLOSE_GRACE_MS + 5_000);
watchdog.unref();

function callPayload(id: number): string {
  return `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"echo","arguments":{"message":"${ECHO_MESSAGE}"}}}`;
}

/** Counts a finished call; a successful one `counted` (in the measured window) adds its latency from `from`. */
function settle(ex: Exchange, from: number, counted: boolean): void {
  const ok = check(ex);
  if (ex.sse) sseResponses++;
  if (ok) completed++;
  if (ok && counted) latencies.push(ex.respondedAt - from);
}

async function loop(): Promise<void> {
  while (performance.now() < measureUntil) {
    const id = nextId++;
    const payload = callPayload(id);
    const sentAt = performance.now();
    const ex = await post(callHeaders, payload, id);
    settle(ex, sentAt, ex.respondedAt >= measureFrom && ex.respondedAt <= measureUntil);
  }
}

/** The open loop: one request every 1/rate s from the start, each timed from when it was due. */
function openLoop(): Promise<void> {
  const interval = 1000 / rate;
  let started = 0;
  let outstanding = 0;
  let scheduled = true;
  return new Promise((resolve) => {
    const fire = (dueAt: number): void => {
      const id = nextId++;
      outstanding++;
      void post(callHeaders, callPayload(id), id).then((ex) => {
        outstanding--;
        settle(ex, dueAt, dueAt >= measureFrom && dueAt < measureUntil);
        if (!scheduled && outstanding === 0) resolve();
      });
    };
    const tick = (): void => {
      const now = performance.now();
      for (let due = startedAt + started * interval; due <= now && due < measureUntil; due = startedAt + started * interval) {
        started++;
        fire(due);
      }
      const next = startedAt + started * interval;
      if (next >= measureUntil) {
        scheduled = false;
        if (outstanding === 0) resolve();
        return;
      }
      setTimeout(tick, Math.max(0, next - performance.now()));
    };
    tick();
  });
}

if (rate > 0) await openLoop();
else await Promise.all(Array.from({ length: concurrency }, () => loop()));
clearTimeout(watchdog);
await closeSession(sessionId, protocolVersion);
agent.destroy();

function percentile(sorted: Float64Array, p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] ?? null;
}

const round3 = (n: number | null): number | null => (n === null ? null : Math.round(n * 1000) / 1000);

/** This process's CPU time since it started, ms. */
function cpuTotalMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

const sorted = Float64Array.from(latencies).sort();
let sum = 0;
for (const v of sorted) sum += v;
const count = sorted.length;

emit({
  rps: Math.round((count / durationS) * 10) / 10,
  p50Ms: round3(percentile(sorted, 50)),
  p99Ms: round3(percentile(sorted, 99)),
  count,
  errors,
  errorKinds,
  meanMs: round3(count === 0 ? null : sum / count),
  maxMs: round3(count === 0 ? null : (sorted[count - 1] ?? null)),
  sseResponses,
  completed,
  cpuMs: Math.round(cpuTotalMs()),
  concurrency,
  ...(rate > 0 ? { rate } : {}),
  durationS,
  warmupS,
  protocolVersion,
});
