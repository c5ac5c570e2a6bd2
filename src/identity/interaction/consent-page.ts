/**
 * The consent page: showing what the client asks for, per MCP server (and
 * for the admin API), and POST UID/consent (decision=allow|deny →
 * consent.granted, success or denied). Allow saves a new grant holding
 * exactly what the page showed; it is remembered as consent only once the
 * audit log has it.
 */
import { LOOPBACK_HOSTS } from '../../config/loopback.ts';
import type { IdentityEvent, JsonValue } from '../../audit/events.ts';
import type { AuditLog } from '../../audit/log.ts';
import type { Store } from '../../store/types.ts';
import { pageHeaders, renderConsent, type ClientView } from '../pages.ts';
import { PageError, csrfToken } from './forms.ts';
import { asksNothing, consentDetails, planConsent, type ConsentPlan } from './consent-plan.ts';
import { activeUser, clientView, finish, recordOrFail, send, type Step } from './step.ts';
import { TaskError, Tasks } from '../../tasks/service.ts';
import { requestedTask, TASK_DETAIL, type GrantedTaskDetail, type TaskRequest } from '../task-details.ts';

const NO_SCOPE = 'no scope for an MCP server was requested';

/** The task the pending request opens (a mandate:task authorization detail, checked already at the authorization endpoint). */
function taskOf(step: Step, plan: ConsentPlan): TaskRequest | null {
  let task: TaskRequest | null;
  try {
    task = requestedTask(step.interaction.params as Record<string, unknown>, step.deps.config.tasks);
  } catch (error) {
    throw new PageError(400, 'invalid_authorization_details', error instanceof Error ? error.message : String(error));
  }
  if (task !== null && (plan.servers.length !== 1 || plan.admin !== null)) {
    throw new PageError(400, 'invalid_authorization_details', 'a task names exactly one MCP server');
  }
  return task;
}

/** 90 → "2 minutes", 7200 → "2 hours": how long a task lasts, for the page. */
function lifetime(seconds: number): string {
  const unit = (value: number, name: string): string => `${value} ${name}${value === 1 ? '' : 's'}`;
  if (seconds < 60) return unit(seconds, 'second');
  if (seconds < 3600) return unit(Math.round(seconds / 60), 'minute');
  if (seconds < 86400) return unit(Math.round((seconds / 3600) * 10) / 10, 'hour');
  return unit(Math.round((seconds / 86400) * 10) / 10, 'day');
}

/** A warning when answers go to another host than the one that vouches for the client (its metadata document). */
function redirectWarning(client: ClientView, redirectUri: string): string | undefined {
  if (!client.verifiedHost) return undefined;
  try {
    const url = new URL(redirectUri);
    if ((url.protocol === 'https:' || url.protocol === 'http:') && !LOOPBACK_HOSTS.has(url.hostname) && url.host !== client.verifiedHost) {
      return `Answers go to ${url.host}, not to ${client.verifiedHost}.`;
    }
  } catch {
    return undefined;
  }
  return undefined;
}

/** GET UID while the consent prompt is pending. */
export async function showConsent(step: Step, client: ClientView): Promise<void> {
  const { deps, interaction, uid, base } = step;
  const plan = planConsent(deps.servers, interaction, deps.config.issuer);
  await activeUser(deps.store, plan.accountId);
  if (asksNothing(plan)) {
    // Nothing to ask: send the client its error rather than an empty page.
    await finish(step, { error: 'invalid_scope', error_description: NO_SCOPE });
    return;
  }
  const task = taskOf(step, plan);
  const html = renderConsent({
    action: `${base}/consent`,
    csrf: csrfToken(deps.csrfKey, uid, 'consent'),
    user: plan.accountId,
    client,
    redirectUri: plan.redirectUri,
    servers: plan.servers.map(({ server, resource, scopes }) => ({ name: server.name, resource, scopes })),
    admin: plan.admin,
    oidcScopes: plan.oidcScopes,
    warning: redirectWarning(client, plan.redirectUri),
    task: task === null ? null : { purpose: task.purpose, ticket: task.ticket, server: plan.servers[0]!.server.name, tools: task.tools, lifetime: lifetime(task.ttlSeconds) },
  });
  send(step.req, step.res, 200, html, pageHeaders([plan.redirectUri]));
}

// ---------------------------------------------------------------------------
// POST UID/consent

export async function submitConsent(step: Step, form: Map<string, string>): Promise<void> {
  const { deps, interaction, res } = step;
  if (interaction.prompt.name !== 'consent') throw new PageError(400, 'invalid_request', 'this request is not waiting for consent; return to the application and start again');
  const decision = decisionFrom(form);
  const plan = planConsent(deps.servers, interaction, deps.config.issuer);
  await activeUser(deps.store, plan.accountId);
  await clientView(deps.store, plan.clientId);
  res.setHeader('Cache-Control', 'no-store');
  if (decision === 'deny') return denyConsent(step, plan);
  if (asksNothing(plan)) throw new PageError(400, 'invalid_scope', NO_SCOPE);
  const task = taskOf(step, plan);
  const grant = await saveGrant(step, plan);
  if (task !== null) {
    const opened = await openTask(step, plan, task, grant);
    if (opened === null) return;
  }
  await recordGrant(deps.audit, plan, grant);
  // Allowing a task is for that task: it is not remembered as consent for later requests.
  if (task === null) await rememberConsent(deps.store, plan);
  await finish(step, { consent: { grantId: grant.jti } }, true);
}

/**
 * Allow on a request opening a task: the task is opened for the user (as
 * `mandate tasks open` would, recording task.opened) and its detail, with
 * the task's id, is added to the grant, from which the code and each access
 * token carry it (provider.ts). A refusal by a task rule ends the request
 * with invalid_authorization_details, and the grant goes.
 */
async function openTask(step: Step, plan: ConsentPlan, request: TaskRequest, grant: Grant): Promise<GrantedTaskDetail | null> {
  const { deps } = step;
  const service = new Tasks({ store: deps.store, audit: deps.audit, settings: () => ({ admin: deps.config.admin, tasks: deps.config.tasks }) });
  let detail: GrantedTaskDetail;
  try {
    const task = await service.open(plan.accountId, {
      purpose: request.purpose,
      ...(request.ticket !== null ? { ticket: request.ticket } : {}),
      server: plan.servers[0]!.server.name,
      tools: request.tools,
      ttlSeconds: request.ttlSeconds,
      clientId: plan.clientId,
    });
    detail = {
      type: TASK_DETAIL,
      task_id: task.id,
      purpose: task.purpose,
      ...(task.ticket !== null ? { ticket: task.ticket } : {}),
      tools: task.tools,
      server: task.server,
      expires_at: Math.floor(task.expiresAt / 1000),
    };
  } catch (error) {
    await grant.destroy().catch(() => undefined);
    if (!(error instanceof TaskError)) throw error;
    await finish(step, { error: 'invalid_authorization_details', error_description: error.message });
    return null;
  }
  grant.addRar(detail as unknown as Parameters<Grant['addRar']>[0]);
  await grant.save();
  return detail;
}

function decisionFrom(form: Map<string, string>): 'allow' | 'deny' {
  const decision = form.get('decision');
  if (decision !== 'allow' && decision !== 'deny') throw new PageError(400, 'invalid_request', 'the decision must be allow or deny');
  return decision;
}

/** consent.granted per MCP server and for the admin API (one without a resource when only OpenID scopes were asked). */
function consentEvents(plan: ConsentPlan, outcome: 'success' | 'denied', grantId?: string): IdentityEvent[] {
  const granted: Record<string, JsonValue> = grantId ? { grant_id: grantId } : {};
  if (plan.servers.length === 0 && plan.admin === null) {
    return [{ type: 'consent.granted', actor: plan.accountId, outcome, data: { client_id: plan.clientId, scopes: plan.oidcScopes, redirect_uri: plan.redirectUri, ...granted } }];
  }
  const events: IdentityEvent[] = plan.servers.map((entry) => ({
    type: 'consent.granted',
    actor: plan.accountId,
    server: entry.server.name,
    outcome,
    data: { client_id: plan.clientId, resource: entry.resource, scopes: [...entry.scopes, ...plan.oidcScopes], redirect_uri: plan.redirectUri, ...granted },
  }));
  if (plan.admin !== null) {
    events.push({
      type: 'consent.granted',
      actor: plan.accountId,
      outcome,
      data: { client_id: plan.clientId, resource: plan.admin.resource, scopes: [...plan.admin.scopes, ...plan.oidcScopes], redirect_uri: plan.redirectUri, ...granted },
    });
  }
  return events;
}

async function denyConsent(step: Step, plan: ConsentPlan): Promise<void> {
  await recordOrFail(step.deps.audit, consentEvents(plan, 'denied'));
  await finish(step, { error: 'access_denied', error_description: 'the user denied the request' });
}

type Grant = InstanceType<Step['deps']['provider']['Grant']>;

/** A new grant holding exactly what the page showed. */
async function saveGrant(step: Step, plan: ConsentPlan): Promise<Grant> {
  const { Grant } = step.deps.provider;
  const grant = new Grant({ accountId: plan.accountId, clientId: plan.clientId });
  for (const entry of plan.servers) grant.addResourceScope(entry.resource, entry.scopes.join(' '));
  if (plan.admin !== null) grant.addResourceScope(plan.admin.resource, plan.admin.scopes.join(' '));
  if (plan.oidcScopes.length > 0) grant.addOIDCScope(plan.oidcScopes.join(' '));
  const details = consentDetails(step.interaction);
  if (details.missingOIDCClaims?.length) grant.addOIDCClaims(details.missingOIDCClaims);
  await grant.save();
  return grant;
}

/** consent.granted on record; if it cannot be, the grant goes too (nothing refers to it yet). */
async function recordGrant(audit: AuditLog, plan: ConsentPlan, grant: Grant): Promise<void> {
  try {
    await recordOrFail(audit, consentEvents(plan, 'success', grant.jti));
  } catch (error) {
    await grant.destroy().catch(() => undefined);
    throw error;
  }
}

/** Remembered only once it is on record. */
async function rememberConsent(store: Store, plan: ConsentPlan): Promise<void> {
  const grantedAt = Date.now();
  for (const entry of [...plan.servers, ...(plan.admin === null ? [] : [plan.admin])]) {
    await store.identity.putConsent({ user: plan.accountId, clientId: plan.clientId, resource: entry.resource, scopes: [...entry.scopes, ...plan.oidcScopes], grantedAt });
  }
}
