/** The `oauth` kind: per-user connections (being written). */
import type { CredentialRequest, UpstreamCredential } from '../gateway/credentials.ts';
import { GatewayError } from '../gateway/errors.ts';
import type { UpstreamAuthorization } from './upstream-as.ts';

export type OAuthAuth = Extract<UpstreamAuthorization, { kind: 'oauth' }>;

export class Connections {
  credential(request: CredentialRequest, _auth: OAuthAuth): Promise<UpstreamCredential> {
    return Promise.reject(new GatewayError('credential_missing', `upstream server "${request.server.name}" needs a connection, which this build cannot make yet`));
  }
  /** After a refusal: refresh the user's tokens; true if there are new ones to try. */
  async refresh(_request: CredentialRequest, _auth: OAuthAuth): Promise<boolean> {
    return false;
  }
  /** Drops what is held (the credentials changed). */
  clear(): void {}
}
