/**
 * Mandate as the OAuth client of an upstream's authorization server (the
 * `oauth` and `token-exchange` kinds, docs/credentials.md), with
 * openid-client: the server's metadata (discovered from `issuer`, or its
 * endpoints as configured), the client's authentication (the stored secret
 * `clientSecret` names, with client_secret_basic unless the server offers
 * only client_secret_post; without one a public client, PKCE only), short
 * timeouts, and plain http only for a loopback or an `http:` URL the
 * configuration named.
 *
 * A configuration is built once per server's settings and client secret
 * version; a failed discovery is retried after 30 s, not on every call.
 */
import * as client from 'openid-client';
import type { UpstreamAuth } from '../config/schema.ts';
import { errorCode } from '../identity/upstream-login.ts';

export type UpstreamAuthorization = Extract<UpstreamAuth, { kind: 'oauth' | 'token-exchange' }>;

/** Upstream authorization server requests (discovery, token, revocation): seconds. */
const TIMEOUT_S = 10;
const DISCOVERY_RETRY_MS = 30_000;

/** The upstream's authorization server could not be used: the message is safe to show (no upstream text, no token). */
export class AuthorizationServerError extends Error {
  override name = 'AuthorizationServerError';
  /** An OAuth error code or a class name, for the audit log. */
  readonly code: string;
  constructor(message: string, code: string) {
    super(message);
    this.code = code;
  }
}

function clientAuth(metadata: client.ServerMetadata, secret: string | undefined): client.ClientAuth {
  if (secret === undefined) return client.None();
  const methods = metadata.token_endpoint_auth_methods_supported;
  if (methods && !methods.includes('client_secret_basic') && methods.includes('client_secret_post')) return client.ClientSecretPost(secret);
  return client.ClientSecretBasic(secret);
}

function insecure(auth: UpstreamAuthorization): boolean {
  return [auth.issuer, auth.authorizationEndpoint, auth.tokenEndpoint, auth.revocationEndpoint].some((url) => url !== undefined && new URL(url).protocol === 'http:');
}

async function build(auth: UpstreamAuthorization, secret: string | undefined): Promise<client.Configuration> {
  const execute = insecure(auth) ? [client.allowInsecureRequests] : [];
  const discovered: Partial<client.ServerMetadata> =
    auth.issuer !== undefined ? (await client.discovery(new URL(auth.issuer), auth.clientId, undefined, client.None(), { execute, timeout: TIMEOUT_S })).serverMetadata() : {};
  // Endpoints named in the configuration win over discovered ones.
  const metadata: client.ServerMetadata = {
    ...discovered,
    issuer: discovered.issuer ?? new URL(auth.tokenEndpoint as string).origin,
    ...(auth.authorizationEndpoint !== undefined ? { authorization_endpoint: auth.authorizationEndpoint } : {}),
    ...(auth.tokenEndpoint !== undefined ? { token_endpoint: auth.tokenEndpoint } : {}),
    ...(auth.revocationEndpoint !== undefined ? { revocation_endpoint: auth.revocationEndpoint } : {}),
  };
  if (metadata.token_endpoint === undefined) throw new AuthorizationServerError(`the authorization server ${auth.issuer ?? ''} names no token endpoint`, 'no_token_endpoint');
  const config = new client.Configuration(metadata, auth.clientId, secret !== undefined ? { client_secret: secret } : { token_endpoint_auth_method: 'none' }, clientAuth(metadata, secret));
  config.timeout = TIMEOUT_S;
  for (const extension of execute) extension(config);
  return config;
}

interface Cached {
  config?: Promise<client.Configuration>;
  failedAt?: number;
}

/** Configurations by server settings and client secret version. */
export class AuthorizationServers {
  private readonly cache = new Map<string, Cached>();

  /**
   * The client configuration for `auth`. `secret` is the client secret's
   * current value and `secretRef` names its version (a rotation builds anew).
   */
  get(auth: UpstreamAuthorization, secret: string | undefined, secretRef: string, now = Date.now()): Promise<client.Configuration> {
    const key = JSON.stringify([auth.issuer, auth.authorizationEndpoint, auth.tokenEndpoint, auth.revocationEndpoint, auth.clientId, secretRef]);
    const cached = this.cache.get(key);
    if (cached?.config !== undefined) return cached.config;
    if (cached?.failedAt !== undefined && now - cached.failedAt < DISCOVERY_RETRY_MS) {
      return Promise.reject(new AuthorizationServerError(`the upstream's authorization server ${auth.issuer ?? auth.tokenEndpoint} cannot be reached right now`, 'unavailable'));
    }
    if (this.cache.size > 1000) this.cache.clear();
    const entry: Cached = {};
    entry.config = build(auth, secret).catch((error: unknown) => {
      this.cache.set(key, { failedAt: Date.now() });
      if (error instanceof AuthorizationServerError) throw error;
      throw new AuthorizationServerError(`the upstream's authorization server ${auth.issuer ?? auth.tokenEndpoint} cannot be reached right now`, errorCode(error));
    });
    this.cache.set(key, entry);
    return entry.config;
  }
}
