/**
 * The `token-exchange` kind (RFC 8693, docs/credentials.md). Not yet written:
 * every call is refused, closed, with a clear error.
 */
import type { AuditLog } from '../audit/log.ts';
import type { CredentialRequest, UpstreamCredential } from '../gateway/credentials.ts';
import { GatewayError } from '../gateway/errors.ts';
import type { Logger } from '../observability/log.ts';
import type { Signer } from './mint.ts';
import type { AuthorizationServers, UpstreamAuthorization } from './upstream-as.ts';

export type TokenExchangeAuth = Extract<UpstreamAuthorization, { kind: 'token-exchange' }>;

export interface ExchangeDeps {
  /** Signs the subject and actor tokens (null: this gateway has no signing key). */
  signer: Signer | null;
  servers: AuthorizationServers;
  /** The current value of a stored secret for the request's server (the client secret), and a name of its version. */
  clientSecret(request: CredentialRequest, name: string): { value: string; ref: string } | undefined;
  audit?: AuditLog;
  log: Logger;
  now(): number;
}

export class TokenExchange {
  private readonly deps: ExchangeDeps;

  constructor(deps: ExchangeDeps) {
    this.deps = deps;
  }

  credential(request: CredentialRequest, _auth: TokenExchangeAuth): Promise<UpstreamCredential> {
    void this.deps;
    return Promise.reject(new GatewayError('credential_missing', `upstream server "${request.server.name}" needs a token exchange, which this build cannot do yet`));
  }

  /** The upstream refused the exchanged token: the next call exchanges anew. */
  forget(_request: CredentialRequest): void {}
}
