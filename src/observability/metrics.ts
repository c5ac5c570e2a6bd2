/**
 * Prometheus metrics. Label values come from closed sets (configured server
 * names, known MCP methods, error kinds), never from raw client input.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const KNOWN_METHODS = new Set([
  'initialize', 'ping', 'server/discover', 'subscriptions/listen',
  'tools/list', 'tools/call', 'resources/list', 'resources/templates/list', 'resources/read',
  'resources/subscribe', 'resources/unsubscribe', 'prompts/list', 'prompts/get', 'completion/complete',
  'logging/setLevel', 'sampling/createMessage', 'elicitation/create', 'roots/list',
  'tasks/get', 'tasks/result', 'tasks/list', 'tasks/cancel',
]);

export function methodLabel(method: string): string {
  return KNOWN_METHODS.has(method) ? method : 'other';
}

/** Labelled children cached by their label values: prom-client hashes label objects on every call otherwise. */
class ChildCache<T> {
  private readonly children = new Map<string, T>();
  private readonly make: (values: string[]) => T;
  constructor(make: (values: string[]) => T) {
    this.make = make;
  }
  get(...values: string[]): T {
    const key = values.join('\u0000');
    let child = this.children.get(key);
    if (!child) {
      child = this.make(values);
      this.children.set(key, child);
    }
    return child;
  }
}

export class Metrics {
  readonly registry = new Registry();
  readonly requests: Counter<'server' | 'method' | 'outcome'>;
  readonly upstreamLatency: Histogram<'server' | 'method'>;
  readonly errors: Counter<'server' | 'kind'>;
  readonly sessions: Gauge<'server'>;
  readonly auditEvents: Counter<'type'>;
  readonly auditLost: Counter;
  readonly daysToExpiry: Gauge<'server'>;
  /** Break-glass grants whose review is overdue (docs/breakglass.md). */
  readonly breakglassOverdue: Gauge;
  private readonly requestChildren: ChildCache<{ inc(): void }>;
  private readonly latencyChildren: ChildCache<{ observe(value: number): void }>;
  private readonly auditChildren: ChildCache<{ inc(): void }>;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'mandate_process_' });
    this.requests = new Counter({
      name: 'mandate_mcp_requests_total',
      help: 'MCP requests handled, by server, method and outcome',
      labelNames: ['server', 'method', 'outcome'],
      registers: [this.registry],
    });
    this.upstreamLatency = new Histogram({
      name: 'mandate_upstream_latency_seconds',
      help: 'Time from forwarding a request upstream to its response',
      labelNames: ['server', 'method'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [this.registry],
    });
    this.errors = new Counter({
      name: 'mandate_errors_total',
      help: 'Errors by server and kind',
      labelNames: ['server', 'kind'],
      registers: [this.registry],
    });
    this.sessions = new Gauge({
      name: 'mandate_sessions_active',
      help: 'Open MCP sessions by server',
      labelNames: ['server'],
      registers: [this.registry],
    });
    this.auditEvents = new Counter({
      name: 'mandate_audit_events_total',
      help: 'Identity events written to the audit log, by type',
      labelNames: ['type'],
      registers: [this.registry],
    });
    this.auditLost = new Counter({
      name: 'mandate_audit_write_failures_total',
      help: 'Identity events that could not be written',
      registers: [this.registry],
    });
    this.breakglassOverdue = new Gauge({
      name: 'mandate_breakglass_overdue',
      help: 'Break-glass grants not reviewed within breakglass.reviewDays of their opening',
      registers: [this.registry],
    });
    this.daysToExpiry = new Gauge({
      name: 'mandate_catalog_days_to_expiry',
      help: 'Days until a catalog entry\'s approval expires, by server (negative once expired)',
      labelNames: ['server'],
      registers: [this.registry],
    });
    this.requestChildren = new ChildCache((v) => this.requests.labels(...(v as [string, string, string])));
    this.latencyChildren = new ChildCache((v) => this.upstreamLatency.labels(...(v as [string, string])));
    this.auditChildren = new ChildCache((v) => this.auditEvents.labels(v[0] as string));
  }

  /** One forwarded request: its latency and outcome (the hot path). */
  request(server: string, method: string, outcome: string, seconds: number): void {
    const label = methodLabel(method);
    this.latencyChildren.get(server, label).observe(seconds);
    this.requestChildren.get(server, label, outcome).inc();
  }

  /** One event written to the audit log (types are a closed set). */
  auditEvent(type: string): void {
    this.auditChildren.get(type).inc();
  }
}
