/**
 * Opening a task from an authorization request (docs/tasks.md "Opening a
 * task from an authorization request"): the `mandate:task` authorization
 * detail (RFC 9396), as a client asks for it and as the grant keeps it once
 * the user allowed it and the task was opened.
 *
 * Asked:   { type: 'mandate:task', purpose, ticket?, tools?, ttl? }
 * Granted: { type: 'mandate:task', task_id, purpose, ticket?, tools, server, expires_at }
 *
 * The granted detail travels from the grant to the authorization code and
 * to each access token (oidc-provider's `rar`); provider.ts reads it to bound
 * the token's lifetime and scopes and to add the `task` claim.
 */
import { errors } from 'oidc-provider';
import type { TasksConfig } from '../config/schema.ts';
import type { TaskClaim } from './delegated.ts';
import { TOOL_NAME } from './scopes.ts';

export const TASK_DETAIL = 'mandate:task';

/** What a client asked for, checked. */
export interface TaskRequest {
  purpose: string;
  ticket: string | null;
  /** [] = every tool of the server. */
  tools: string[];
  ttlSeconds: number;
}

/** What the grant, the code and each access token keep once the task is open. */
export interface GrantedTaskDetail {
  type: typeof TASK_DETAIL;
  task_id: string;
  purpose: string;
  ticket?: string;
  tools: string[];
  server: string;
  /** Epoch seconds. */
  expires_at: number;
}

const KNOWN = new Set(['type', 'purpose', 'ticket', 'tools', 'ttl']);
const bad = (message: string): Error => new errors.InvalidAuthorizationDetails(`mandate:task: ${message}`);

function printable(label: string, value: unknown, max: number): string {
  if (typeof value !== 'string' || value.trim() === '' || value.length > max || /[\p{Cc}\p{Cf}]/u.test(value)) {
    throw bad(`${label} takes 1 to ${max} printable characters`);
  }
  return value;
}

/** A `mandate:task` detail as asked for, checked strictly; anything wrong is invalid_authorization_details. */
export function checkTaskRequest(detail: Record<string, unknown>, settings: TasksConfig): TaskRequest {
  for (const key of Object.keys(detail)) if (!KNOWN.has(key)) throw bad(`unknown member "${key}" (purpose, ticket, tools, ttl)`);
  const purpose = printable('purpose', detail.purpose, 1000);
  const ticket = detail.ticket === undefined ? null : printable('ticket', detail.ticket, 200);
  let tools: string[] = [];
  if (detail.tools !== undefined) {
    if (!Array.isArray(detail.tools)) throw bad('tools is a list of tool names');
    for (const tool of detail.tools) if (typeof tool !== 'string' || !TOOL_NAME.test(tool)) throw bad(`"${String(tool)}" is not a tool name`);
    tools = [...new Set(detail.tools as string[])];
  }
  let ttlSeconds = settings.defaultTtlSeconds;
  if (detail.ttl !== undefined) {
    if (typeof detail.ttl !== 'number' || !Number.isInteger(detail.ttl) || detail.ttl <= 0 || detail.ttl > settings.maxTtlSeconds) {
      throw bad(`ttl is a whole number of seconds, more than 0 and at most ${settings.maxTtlSeconds} (tasks.maxTtlSeconds)`);
    }
    ttlSeconds = detail.ttl;
  }
  return { purpose, ticket, tools, ttlSeconds };
}

/** The parsed `authorization_details` parameter (a JSON string), or [] when absent or unreadable. */
export function detailsParam(value: unknown): Array<Record<string, unknown>> {
  if (typeof value !== 'string') return [];
  try {
    const parsed = JSON.parse(value) as unknown;
    return Array.isArray(parsed) ? parsed.filter((entry): entry is Record<string, unknown> => typeof entry === 'object' && entry !== null) : [];
  } catch {
    return [];
  }
}

/** The `mandate:task` detail an authorization request asks for, if any. */
export function requestedTask(params: Record<string, unknown> | undefined, settings: TasksConfig): TaskRequest | null {
  const detail = detailsParam(params?.authorization_details).find((entry) => entry.type === TASK_DETAIL);
  return detail === undefined ? null : checkTaskRequest(detail, settings);
}

/** Whether an authorization request carries a `mandate:task` detail. */
export function asksForTask(params: Record<string, unknown> | undefined): boolean {
  return detailsParam(params?.authorization_details).some((entry) => entry.type === TASK_DETAIL);
}

/** The granted task detail among a grant's, a code's or a token's details (`rar`). */
export function grantedTask(rar: unknown): GrantedTaskDetail | undefined {
  if (!Array.isArray(rar)) return undefined;
  const found = rar.find((entry: unknown) => typeof entry === 'object' && entry !== null && (entry as { type?: unknown }).type === TASK_DETAIL && typeof (entry as { task_id?: unknown }).task_id === 'string');
  return found as GrantedTaskDetail | undefined;
}

/** The `task` claim of a token carrying a granted task detail. */
export function claimOf(detail: GrantedTaskDetail): TaskClaim {
  return { id: detail.task_id, purpose: detail.purpose, ...(detail.ticket !== undefined ? { ticket: detail.ticket } : {}), tools: detail.tools };
}
