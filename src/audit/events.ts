/**
 * Identity events: what every plane reports, and what the audit log keeps.
 * Components emit these; audit, metrics and logs subscribe.
 */

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

export const EVENT_TYPES = [
  'gateway.started',
  'gateway.stopped',
  'gateway.recovered',
  'config.loaded',
  'config.rejected',
  'session.opened',
  'session.closed',
  'mcp.request',
  'upstream.error',
  'upstream.restarted',
  'client.registered',
  'client.approved',
  'client.rejected',
  'client.revoked',
  'client.expired',
  'login.succeeded',
  'login.failed',
  'consent.granted',
  'consent.revoked',
  'token.issued',
  'token.refreshed',
  'token.reuse_detected',
  'token.revoked',
  'token.exchanged',
  'auth.rejected',
  'limit.exceeded',
  'authorization.denied',
  'policy.loaded',
  'policy.rejected',
  'policy.allowed',
  'policy.denied',
  'user.added',
  'user.disabled',
  'user.enabled',
  'user.groups_changed',
  'keys.rotated',
  'server.proposed',
  'server.approved',
  'server.rejected',
  'server.suspended',
  'server.renewed',
  'server.expiring',
  'server.expired',
  'server.retired',
  'server.drift_detected',
  'server.drift_approved',
  'server.identity_mismatch',
  'credential.issued',
  'credential.refreshed',
  'credential.rotated',
  'credential.revoked',
  'credential.rejected',
  'breakglass.opened',
  'breakglass.closed',
  'breakglass.reviewed',
  'approval.requested',
  'approval.approved',
  'approval.denied',
  'approval.used',
  'task.opened',
  'task.closed',
  'task.revoked',
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

export type Outcome = 'success' | 'failure' | 'error' | 'denied' | 'cancelled';

/** An event as a component reports it. Never put a secret or a whole token in it. */
export interface IdentityEvent {
  type: EventType;
  /** Who asked: the principal, once authentication exists; null before. */
  actor?: string | null;
  /** Where: the configured server name. */
  server?: string | null;
  /** Where: the tool, resource or prompt named by the request. */
  tool?: string | null;
  outcome: Outcome;
  /** Why it was allowed or refused (filled by policy in later planes). */
  reason?: string | null;
  /** Anything else worth keeping: method, latency, session handle, detail. */
  data?: { [key: string]: JsonValue };
}

/** An event stamped with its time, ready to be sealed into the chain. */
export interface TimedEvent extends IdentityEvent {
  time: string;
}

/** An event as stored: sealed into the hash chain. */
export interface AuditRecord {
  /** 1-based position in the chain, contiguous. */
  seq: number;
  /** ISO 8601 UTC time the event was recorded. */
  time: string;
  type: string;
  server: string | null;
  outcome: string;
  /** Canonical JSON (RFC 8785) of the whole event, seq included. */
  body: string;
  /** Hash of the previous record (64 zeros for the first). */
  prevHash: string;
  /** sha256 hex over prevHash, a newline, and body. */
  hash: string;
}

export function isEventType(value: string): value is EventType {
  return (EVENT_TYPES as readonly string[]).includes(value);
}
