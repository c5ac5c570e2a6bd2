/**
 * The upstream credential hook: what the gateway presents to an upstream.
 * Every upstream HTTP request (requests, the stateless revision's probe,
 * notifications, the GET stream, the DELETE that ends a session) and every
 * stdio process start asks it, and adds what it gives (headers, or
 * environment variables). The client's own token never goes upstream.
 *
 * If an upstream refuses the credential (HTTP 401 or 403), `refused` is
 * asked once: it may refresh what it holds and answer true, and the request
 * is sent again, once, with what `credential` gives then. Otherwise the
 * client gets a JSON-RPC error that names the server and says its
 * credentials were refused.
 *
 * The default presents nothing. The credential broker plugs in here.
 */
import type { Principal } from '../identity/verify.ts';
import type { RegisteredServer } from './registry.ts';

export type CredentialPurpose = 'request' | 'notify' | 'listen' | 'close' | 'spawn';

export interface CredentialRequest {
  server: RegisteredServer;
  /** On whose behalf (null: tokens not required and none sent, or the gateway's own probe). */
  principal: Principal | null;
  purpose: CredentialPurpose;
  /** 0, or 1 for the one retry after a refusal. */
  attempt: number;
  /** For purpose `request`: the client's request being forwarded (a minted credential carries only what it needs). */
  call?: { method: string; tool: string | null };
}

export interface UpstreamCredential {
  /** HTTP headers added to the upstream request (protocol headers always win). */
  headers?: Readonly<Record<string, string>>;
  /** Environment variables added to a stdio process. */
  env?: Readonly<Record<string, string>>;
  /** Names the credential in the audit log (`mcp.request` data.credential), never its value: `secret:NAME:vN`, `jwt:JTI`. */
  reference?: string;
}

export interface CredentialHook {
  /** Kept synchronous where possible: it runs on every upstream request. */
  credential(request: CredentialRequest): UpstreamCredential | Promise<UpstreamCredential>;
  /** The upstream answered `status` (401 or 403) to this credential. True: retry once. */
  refused?(request: CredentialRequest, status: number): boolean | Promise<boolean>;
  /** The upstream refused the credential and no retry is left: the client gets the error. */
  rejected?(request: CredentialRequest, status: number): void;
}

const NOTHING: UpstreamCredential = Object.freeze({});

/** Presents nothing: upstreams that need no credential. */
export const NO_CREDENTIALS: CredentialHook = { credential: () => NOTHING };

export function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}
