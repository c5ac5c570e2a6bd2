/**
 * What every interaction handler shares: its dependencies, the step it works
 * on (the request, the response and the pending interaction), writing pages
 * and redirects, recording audit events before anything finishes, and the
 * checks on the client and the user that each page repeats.
 */
import { ACCOUNT_CLIENT_ID } from '../account.ts';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { InteractionResults } from 'oidc-provider';
import type Provider from 'oidc-provider';
import type { AuditLog } from '../../audit/log.ts';
import type { IdentityEvent } from '../../audit/events.ts';
import type { Config } from '../../config/load.ts';
import type { Logger } from '../../observability/log.ts';
import type { Store } from '../../store/types.ts';
import type { Servers } from '../scopes.ts';
import { requestNotes } from '../context.ts';
import { pageHeaders, renderErrorPage, type ClientView } from '../pages.ts';
import { AUDIT_DOWN, PageError } from './forms.ts';
import type { LoginThrottle } from './throttle.ts';

export interface InteractionDeps {
  provider: Provider;
  store: Store;
  audit: AuditLog;
  config: Config;
  /** The MCP servers consent is asked for (the gateway's registry). */
  servers: Servers;
  /** Secret for CSRF tokens (any high-entropy string; all nodes must share it). */
  csrfKey: string;
  /** Failed-login counters; default: one per provider, in memory. */
  throttle?: LoginThrottle;
  /** Where unexpected errors are reported (never shown to the browser). */
  log?: Logger;
}

export type Interaction = Awaited<ReturnType<Provider['interactionDetails']>>;

/** One request under a pending interaction. `base` is the interaction's own path. */
export interface Step {
  deps: InteractionDeps;
  req: IncomingMessage;
  res: ServerResponse;
  uid: string;
  interaction: Interaction;
  base: string;
}

// ---------------------------------------------------------------------------
// Paths and request facts

/** The issuer's path without a trailing slash ('' at the root). */

/** {issuer path}/interaction/UID */

export function addressOf(req: IncomingMessage): string {
  return requestNotes.getStore()?.address ?? req.socket.remoteAddress ?? 'unknown';
}

/** The client the interaction is for ('' if none). */
export function clientIdOf(interaction: Interaction): string {
  return typeof interaction.params.client_id === 'string' ? interaction.params.client_id : '';
}

// ---------------------------------------------------------------------------
// Responses

export function send(req: IncomingMessage, res: ServerResponse, status: number, html: string, headers: Record<string, string>): void {
  const body = Buffer.from(html, 'utf8');
  res.writeHead(status, { ...headers, 'Content-Length': String(body.length) });
  res.end(req.method === 'HEAD' ? undefined : body);
}

export function sendError(req: IncomingMessage, res: ServerResponse, status: number, error: string, description: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  send(req, res, status, renderErrorPage({ error, error_description: description }), { ...pageHeaders(null), ...headers });
}

/** 303 to `location`, with no body. */
export function seeOther(res: ServerResponse, location: string, headers: Record<string, string>): void {
  res.writeHead(303, { Location: location, ...headers, 'Content-Length': '0' });
  res.end();
}

/** Hands the result to oidc-provider, which redirects the browser on. */
export async function finish(step: Step, result: InteractionResults, mergeWithLastSubmission = false): Promise<void> {
  await step.deps.provider.interactionFinished(step.req, step.res, result, { mergeWithLastSubmission });
}

/** Records every event, or refuses the step (503) when the audit log cannot be written. */
export async function recordOrFail(audit: AuditLog, events: IdentityEvent[]): Promise<void> {
  try {
    await Promise.all(events.map((event) => audit.record(event)));
  } catch {
    throw new PageError(503, 'temporarily_unavailable', AUDIT_DOWN, { 'Retry-After': '5' });
  }
}

// ---------------------------------------------------------------------------
// Checks the pages share

export function requireLoginPrompt(interaction: Interaction): void {
  if (interaction.prompt.name !== 'login') throw new PageError(400, 'invalid_request', 'you are already signed in for this request; return to the application and start again');
}

/** How the client is shown; refused if an administrator revoked or rejected it meanwhile. */
export async function clientView(store: Store, clientId: string): Promise<ClientView> {
  const record = await store.identity.getClient(clientId);
  if (record && (record.status === 'revoked' || record.status === 'rejected')) {
    throw new PageError(400, 'unauthorized_client', 'this application is no longer allowed to sign in here');
  }
  if (clientId === ACCOUNT_CLIENT_ID) return { id: clientId, name: 'your Mandate account', verifiedHost: null };
  const name = typeof record?.metadata.client_name === 'string' && record.metadata.client_name.trim() ? record.metadata.client_name.trim() : null;
  let verifiedHost: string | null = null;
  if (clientId.startsWith('https://') && (!record || record.source === 'cimd')) {
    try {
      verifiedHost = new URL(clientId).host;
    } catch {
      verifiedHost = null;
    }
  }
  return { id: clientId, name, verifiedHost };
}

export async function activeUser(store: Store, name: string): Promise<void> {
  const user = await store.identity.getUser(name);
  if (!user || user.disabled) throw new PageError(403, 'access_denied', 'this account is disabled');
}
