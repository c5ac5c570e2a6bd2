/**
 * The request path of an MCP endpoint, {issuer}/mcp/NAME: for each HTTP
 * method one ordered list of small named steps over one request context.
 *
 *   POST    origin → resolveServer → authenticate → postHeaders → readBody → parse
 *           → checkBounds → checkScope → decide → route → findSession → checkTool → dispatch
 *   GET     origin → resolveServer → authenticate → getHeaders → findSession → listen
 *   DELETE  origin → resolveServer → authenticate → findSession → endSession
 *
 * A step reads what the steps before it put on the context and throws a
 * GatewayError to refuse; the front door turns that into the answer.
 */
import { checkGetHeaders, checkOrigin, checkPostHeaders, header, readBody } from './endpoint/common.ts';
import { handleStateless, isModern } from './endpoint/stateless.ts';
import { accessOf, type RequestContext } from './context.ts';
import { GatewayError } from './errors.ts';
import type { Gateway } from './gateway.ts';
import { checkBounds as boundsOf, MessageError, parseMessage, type Classified } from './jsonrpc.ts';
import { CLIENT_ENDED, LEGACY_VERSIONS, type Session } from './session.ts';
import { AuthError } from '../identity/verify.ts';
import { missingScope } from '../identity/scopes.ts';
import type { IdentityEvent } from '../audit/events.ts';
import type { Decision } from '../policy/engine.ts';
import { requestDecision } from '../policy/enforce.ts';
import { isDecided, NAMED_TARGET, type DecisionRequest } from '../policy/request.ts';
import { targetName } from './jsonrpc.ts';

export type Step = (ctx: RequestContext, gateway: Gateway) => void | Promise<void>;

// ---------------------------------------------------------------- every method

/** A browser request from an origin that is not allowed is refused (DNS-rebinding protection). */
export const origin: Step = (ctx, gateway) => checkOrigin(ctx.req, gateway.settings.allowedOrigins);

/** NAME must be a server in the registry now. */
export const resolveServer: Step = (ctx, gateway) => {
  ctx.server = gateway.server(ctx.name);
};

/**
 * The bearer token is verified for this server (the client's token goes no
 * further). Refusals are recorded, flood-proof; requests without a valid
 * token are rate-limited per network address, verified principals per
 * principal.
 */
export const authenticate: Step = async (ctx, gateway) => {
  let principal;
  try {
    principal = await gateway.auth.authenticate(header(ctx.req, 'authorization'), ctx.server);
  } catch (error) {
    if (error instanceof AuthError) throw gateway.refuseToken(ctx, error);
    throw error;
  }
  if (principal === null) return;
  gateway.limitPrincipal(ctx, principal);
  ctx.access = accessOf(principal);
};

// ---------------------------------------------------------------- POST

export const postHeaders: Step = (ctx) => checkPostHeaders(ctx.req);

export const readRequestBody: Step = async (ctx, gateway) => {
  ctx.body = await readBody(ctx.req, gateway.settings.maxBodyBytes);
};

function parsed(text: string, maxDepth: number): Classified {
  try {
    return parseMessage(text, maxDepth);
  } catch (error) {
    if (error instanceof MessageError) {
      const failure = new GatewayError(error.code === -32700 ? 'parse' : error.code === -32602 ? 'invalid_params' : 'invalid_request', error.message);
      failure.requestId = error.id;
      throw failure;
    }
    throw error;
  }
}

/** One JSON-RPC message, checked field by field, no deeper than gateway.maxJsonDepth. */
export const parse: Step = (ctx, gateway) => {
  ctx.parsed = parsed(ctx.body, gateway.settings.maxJsonDepth);
};

/** Method, tool, prompt and resource names within their length limits, before anything is forwarded or stored. */
export const checkBounds: Step = (ctx) => {
  const problem = boundsOf(ctx.parsed);
  if (problem !== null) throw new GatewayError(problem.kind, problem.message);
};

/** A tool-scoped token reaches only its tools; answers to server requests need no scope. */
export const checkScope: Step = (ctx, gateway) => {
  const { access, parsed: message } = ctx;
  if (access === null || message.kind === 'response') return;
  const { method } = message.message;
  const params = message.message.params as { name?: unknown } | undefined;
  const tool = method === 'tools/call' && typeof params?.name === 'string' ? params.name : null;
  const needed = missingScope(ctx.server.name, access.principal.grants, method, tool);
  if (needed === null) return;
  const what = tool !== null ? `the tool "${tool.slice(0, 128)}"` : method.slice(0, 64);
  throw gateway.refuseToken(ctx, new AuthError('insufficient_scope', `the token does not allow ${what}`, { scope: needed, principal: access.principal }));
};

/** The durable record of a decision; a refusal when the audit log cannot take it (nothing is forwarded unrecorded). */
async function recordDecision(gateway: Gateway, event: IdentityEvent): Promise<void> {
  try {
    await gateway.deps.audit.record(event);
  } catch (error) {
    throw new GatewayError('audit_unavailable', 'the audit log is unavailable: the request was refused', { detail: String(error), cause: error });
  }
}

function deniedEvent(ctx: RequestContext, decision: Decision | null, extra: IdentityEvent['data']): IdentityEvent {
  const { method, params } = (ctx.parsed as Classified & { kind: 'request' }).message;
  const policies = decision?.policies ?? [];
  return {
    type: 'policy.denied',
    actor: ctx.caller?.actor ?? 'anonymous',
    server: ctx.server.name,
    tool: targetName(method, params),
    outcome: decision === null || decision.error !== null ? 'error' : 'denied',
    reason:
      decision === null
        ? 'no policy set is in force'
        : (decision.error ??
          (decision.unseen === true
            ? `depends on the tool's hints, and this server's tool list has not been seen (policies ${policies.join(', ')})`
            : policies.length > 0
              ? `forbidden by ${policies.join(', ')}`
              : 'no policy permits it')),
    data: {
      method,
      policies: [...policies],
      policySet: decision?.set ?? null,
      address: ctx.address,
      ...ctx.marks,
      ...(ctx.principal?.task ? { task: ctx.principal.task.id } : {}),
      ...(ctx.caller ? { client_id: ctx.caller.clientId, token: ctx.caller.tokenRef } : {}),
      ...extra,
    },
  };
}

/** A denied request: recorded durably, then answered (403, the step-up challenge, or 503 when nothing could decide). */
async function deny(ctx: RequestContext, gateway: Gateway, asked: DecisionRequest, decision: Decision | null): Promise<GatewayError> {
  const { method, params } = (ctx.parsed as Classified & { kind: 'request' }).message;
  const engine = gateway.policy?.engine ?? null;
  const stepUp = decision !== null && decision.error === null && decision.unseen !== true && engine !== null && ctx.principal !== null ? engine.stepUp(asked) : null;
  await recordDecision(gateway, deniedEvent(ctx, decision, stepUp !== null ? { stepUp } : {}));
  gateway.deps.metrics.errors.inc({ server: ctx.server.name, kind: 'policy_denied' });
  if (decision === null) return new GatewayError('policy_unavailable', 'no policy set is in force: the request was refused', { detail: gateway.policy?.problem ?? undefined, counted: true });
  if (decision.error !== null) return new GatewayError('policy_unavailable', 'the request could not be decided by policy: it was refused', { detail: decision.error, counted: true });
  const tool = targetName(method, params);
  const what = tool !== null ? `"${tool.slice(0, 128)}"` : method.slice(0, 64);
  if (decision.unseen === true) {
    return new GatewayError('policy_denied', `${what} cannot be decided before the gateway has seen this server's tool list: list the tools (tools/list), then call again`, { counted: true });
  }
  if (stepUp !== null) {
    const message = `${what} needs the scope ${stepUp}`;
    const error = new AuthError('insufficient_scope', message, { scope: stepUp, principal: ctx.principal ?? undefined });
    return new GatewayError('insufficient_scope', message, { headers: gateway.auth.challenge(ctx.server, error), counted: true });
  }
  return new GatewayError('policy_denied', `${what} is not allowed by policy`, { counted: true });
}

/**
 * Every request that reaches a server is decided by the policy set in force
 * (docs/policy.md). A denial is recorded durably before it is answered. An
 * allowed request carries its decision to the exchange (forward.ts): a
 * tools/call's is recorded before it is forwarded, so a crash cannot leave a
 * call without its decision, and every allowed request's `mcp.request`
 * record names the determining policies.
 */
export const decide: Step = async (ctx, gateway) => {
  const policy = gateway.policy;
  const message = ctx.parsed;
  if (policy === null || message.kind !== 'request' || !isDecided(message.message.method)) return;
  const { method, params } = message.message;
  const asked = requestDecision(policy, ctx.principal, ctx.server, method, params, ctx.address, (tool) => gateway.tools?.pinned(ctx.server, tool));
  if (asked === null) throw new GatewayError('invalid_params', `${method.slice(0, 64)} needs ${NAMED_TARGET[method] ?? 'its target'}`);
  const engine = policy.engine;
  const decision = engine === null ? null : engine.decide(asked);
  // A break-glass grant marks the request's record, allowed or denied.
  if (asked.breakglass !== undefined) ctx.marks = { breakglass: asked.breakglass.id };
  if (decision === null || !decision.allow) throw await deny(ctx, gateway, asked, decision);
  if (decision.approval !== undefined && method === 'tools/call') {
    const approval = await approved(ctx, gateway, asked, decision, decision.approval);
    ctx.marks = { ...ctx.marks, approval };
  }
  ctx.decision = decision;
};

/**
 * A call a permit allows only with a person's approval (docs/approvals.md):
 * the id of the approval it uses, or the refusal (the URL elicitation of its
 * request, or its denial). Without approvals at this gateway, refused.
 */
async function approved(ctx: RequestContext, gateway: Gateway, asked: DecisionRequest, decision: Decision, groups: readonly string[]): Promise<string> {
  const tool = asked.target.name;
  if (gateway.approvals === null) throw new GatewayError('policy_denied', `calling "${tool}" needs a person's approval, and this gateway takes no approvals`);
  const principal = ctx.principal;
  return gateway.approvals.check({
    requester: principal?.user ?? `client:${principal?.clientId ?? 'anonymous'}`,
    clientId: principal?.clientId ?? 'anonymous',
    server: ctx.server.name,
    tool,
    args: asked.args ?? {},
    groups,
    policies: decision.policies,
    policySet: decision.set,
    pin: gateway.tools?.pinHash?.(ctx.server, tool) ?? '',
  });
}

/** Stateless (2026-07-28), a new session's initialize, or a request in a session. */
export const route: Step = (ctx) => {
  const message = ctx.parsed;
  if (isModern(ctx.req, message.message)) ctx.route = 'stateless';
  else if (header(ctx.req, 'mcp-session-id') === undefined) {
    if (message.kind !== 'request' || message.message.method !== 'initialize') {
      throw new GatewayError('session_missing', 'Bad Request: Mcp-Session-Id header is required (send initialize first)');
    }
    ctx.route = 'initialize';
  } else ctx.route = 'session';
};

/** After initialize, a client states the negotiated version on every request. */
function checkVersion(ctx: RequestContext, session: Session): void {
  const version = header(ctx.req, 'mcp-protocol-version');
  if (version === undefined || session.protocolVersion === null) return;
  if (!(LEGACY_VERSIONS as readonly string[]).includes(version)) {
    throw new GatewayError('unsupported_version', `unsupported MCP-Protocol-Version "${version.slice(0, 40)}"`, {
      data: { supported: [...LEGACY_VERSIONS], requested: version.slice(0, 40) },
    });
  }
  if (version !== session.protocolVersion) {
    throw new GatewayError('invalid_request', `MCP-Protocol-Version "${version.slice(0, 40)}" differs from the version negotiated for this session`);
  }
}

/** The caller's session on this server: a request in a session, GET and DELETE. */
export const findSession: Step = (ctx, gateway) => {
  if (ctx.req.method === 'POST' && ctx.route !== 'session') return;
  const id = header(ctx.req, 'mcp-session-id');
  if (id === undefined) {
    const verb = ctx.req.method === 'GET' ? 'GET needs an Mcp-Session-Id (stateless clients use POST only)' : 'DELETE needs an Mcp-Session-Id';
    throw new GatewayError('method_not_allowed', verb, { headers: { allow: 'POST' } });
  }
  const session = gateway.session(id, ctx.server, ctx.access);
  if (ctx.req.method === 'POST') checkVersion(ctx, session);
  ctx.session = session;
};

/** A catalog server's tool is called only as reviewed: its pinned definition was seen in this session's list (src/catalog/tool-gate.ts). */
export const checkTool: Step = (ctx, gateway) => {
  const message = ctx.parsed;
  if (gateway.tools === null || gateway.tools === undefined || message.kind !== 'request' || message.message.method !== 'tools/call') return;
  const tool = targetName('tools/call', message.message.params);
  if (tool === null) return;
  const refusal = gateway.tools.refusal(ctx.server, ctx.session?.handle ?? null, tool);
  if (refusal !== null) throw new GatewayError('refused', refusal, { data: { server: ctx.server.name, tool } });
};

/** Hands the message to its session (opened here for initialize) or to the stateless path. */
export const dispatch: Step = async (ctx, gateway) => {
  const { parsed: message, res } = ctx;
  if (ctx.route === 'stateless') return handleStateless(ctx, gateway);
  if (ctx.route === 'initialize') {
    if (message.kind !== 'request') return;
    return gateway.openSession(ctx).initialize(message.message, res, { address: ctx.address, decision: null });
  }
  const session = ctx.session as Session;
  switch (message.kind) {
    case 'request':
      return session.request(message.message, res, { address: ctx.address, decision: ctx.decision, marks: ctx.marks });
    case 'notification':
      await session.notification(message.message);
      res.writeHead(202, { 'mcp-session-id': session.id }).end();
      return;
    case 'response':
      await session.response(message.message);
      res.writeHead(202, { 'mcp-session-id': session.id }).end();
  }
};

// ---------------------------------------------------------------- GET, DELETE

export const getHeaders: Step = (ctx) => {
  if (header(ctx.req, 'mcp-session-id') !== undefined) checkGetHeaders(ctx.req);
};

/** The standalone server-to-client stream, or the resumption of a stream after Last-Event-ID. */
export const listen: Step = (ctx) => (ctx.session as Session).listen(ctx.res, header(ctx.req, 'last-event-id'));

export const endSession: Step = async (ctx) => {
  await (ctx.session as Session).close(CLIENT_ENDED);
  ctx.res.writeHead(200, { 'content-length': '0' }).end();
};

// ---------------------------------------------------------------- the lists

export const PIPELINES: Readonly<Record<string, readonly Step[]>> = {
  POST: [origin, resolveServer, authenticate, postHeaders, readRequestBody, parse, checkBounds, checkScope, decide, route, findSession, checkTool, dispatch],
  GET: [origin, resolveServer, authenticate, getHeaders, findSession, listen],
  DELETE: [origin, resolveServer, authenticate, findSession, endSession],
};

/** Runs the steps in order; a step that returns nothing costs no promise. */
export async function runSteps(steps: readonly Step[], ctx: RequestContext, gateway: Gateway): Promise<void> {
  for (const step of steps) {
    const pending = step(ctx, gateway);
    if (pending !== undefined) await pending;
  }
}
