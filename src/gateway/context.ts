/**
 * The request context: one per HTTP request to an MCP endpoint, carried
 * through the request steps (steps.ts). Each step reads what the earlier
 * steps put here and never works it out again: the resolved server, the
 * verified principal and how the audit log names it, the body, the parsed
 * message, the session.
 */
import type { RequestMarks } from './forward.ts';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Principal } from '../identity/verify.ts';
import type { Caller } from './forward.ts';
import type { Classified, RequestId } from './jsonrpc.ts';
import type { RegisteredServer } from './registry.ts';
import type { Access, Session } from './session.ts';
import type { Decision } from '../policy/engine.ts';

/** How a POST is served: a stateless (2026-07-28) request, a session's first request, or one in a session. */
export type PostRoute = 'stateless' | 'initialize' | 'session';

export class RequestContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** The server name from the path (not yet known to exist). */
  readonly name: string;
  /** The client's network address (the nearest untrusted hop). */
  readonly address: string;
  /** Set by `resolveServer`. */
  server!: RegisteredServer;
  /** Set by `authenticate`: null when tokens are not required and none was sent. */
  access: Access | null = null;
  /** Set by `readBody`. */
  body = '';
  /** Set by `parse`. */
  parsed!: Classified;
  /** Set by `decide`: the policy decision that allowed the request (null when it is not a decision). */
  decision: Decision | null = null;
  /** Set by `decide`: what marks the request's record (the break-glass grant that covered it, the approval it used), or null. */
  marks: RequestMarks | null = null;
  /** Set by `route`. */
  route: PostRoute = 'session';
  /** Set by `findSession` (GET, DELETE, and POSTs in a session). */
  session: Session | null = null;

  constructor(req: IncomingMessage, res: ServerResponse, name: string, address: string) {
    this.req = req;
    this.res = res;
    this.name = name;
    this.address = address;
  }

  get principal(): Principal | null {
    return this.access?.principal ?? null;
  }

  get caller(): Caller | null {
    return this.access?.caller ?? null;
  }

  /** The id of the request being served, once the body is parsed (errors answer with it). */
  get requestId(): RequestId | null {
    // `parsed` is unset until the parse step has run.
    const parsed = this.parsed as Classified | undefined;
    return parsed?.kind === 'request' ? parsed.message.id : null;
  }
}

/** One Access per verified principal (principals are cached by the verifier, so this is too). */
const known = new WeakMap<Principal, Access>();

export function accessOf(principal: Principal): Access {
  let access = known.get(principal);
  if (access === undefined) {
    const caller: Caller = { actor: principal.sub, clientId: principal.clientId, key: `${principal.sub}\n${principal.clientId}`, tokenRef: principal.tokenRef };
    access = { principal, caller };
    known.set(principal, access);
  }
  return access;
}
