/**
 * The credential broker (docs/credentials.md): the gateway's credential hook
 * (src/gateway/credentials.ts), asked for every upstream request and every
 * stdio start. It presents what the server's `auth` names, never anything of
 * the client's (whose token the gateway never passes on):
 *
 * - `none` (the default): nothing;
 * - `secret`: the stored secret's current version, as a header (with its
 *   scheme) for an HTTP upstream or an environment variable for a stdio one.
 *   The most specific version applies: the server's tenant and environment,
 *   then its tenant, then its environment, then the secret without a scope;
 *   a tenant's server is given credentials only for callers in that tenant. A secret that is
 *   not set fails the call closed with an error naming the secret, never a
 *   value. After a rotation, an upstream that refuses the new version (401
 *   or 403) is asked once more with the one it replaced, until that one's
 *   grace period ends.
 *
 * Values are opened once per version and kept in memory; a node learns of
 * changes made elsewhere (the CLI, another node) by polling the change
 * counter once a second, so a rotation is in force within about a second.
 */
import type { AuditLog } from '../audit/log.ts';
import type { CredentialHook, CredentialRequest, UpstreamCredential } from '../gateway/credentials.ts';
import { GatewayError } from '../gateway/errors.ts';
import type { Logger } from '../observability/log.ts';
import type { SecretScope, SecretVersion } from '../store/credentials.ts';
import type { Store } from '../store/types.ts';
import { openVersion } from './vault.ts';
import { Signer, type Minter } from './mint.ts';
import { Poller } from '../store/poller.ts';
import { Connections } from './connections.ts';
import { TokenExchange } from './exchange.ts';
import { AuthorizationServers } from './upstream-as.ts';

const NOTHING: UpstreamCredential = Object.freeze({});
/** A rejection of one version by one server is recorded at most this often. */
const REPORT_MS = 60_000;
/** A version's last use is written at most this often. */
const MARK_USED_MS = 60_000;

interface Opened {
  version: number;
  value: string;
  retiresAt: number | null;
}

/** The versions of one scope in use: the current one, and the one it replaced while in its grace period. */
interface Held {
  scope: SecretScope;
  current: Opened;
  previous: Opened | null;
}

const keyOf = (name: string, environment: string, tenant: string): string => `${name}\u0000${environment}\u0000${tenant}`;

export type { Minter } from './mint.ts';

export interface BrokerDeps {
  store: Store;
  /** For `jwt` upstreams: sign with the keys published at /oauth/jwks. */
  minter?: Minter;
  /** The deployment secret the values are sealed under. */
  secret: Buffer;
  /** Where connect links point (the authorization server's issuer). */
  issuer: string;
  log: Logger;
  audit?: AuditLog;
  refreshMs?: number;
  now?: () => number;
}

/** A secret the request's server needs is not set: refused, naming the secret and how to set it, never a value. */
function secretMissing(request: CredentialRequest, secret: string): GatewayError {
  return new GatewayError('credential_missing', `upstream server "${request.server.name}" needs the secret "${secret}", which is not set`, { detail: `mandate secrets set ${secret} --stdin` });
}

/** The group that puts a caller in a tenant: `tenant:NAME`. */
export const tenantGroup = (tenant: string): string => `tenant:${tenant}`;

/**
 * Per-tenant isolation: a server that serves a tenant (its catalog entry's
 * `tenant`) is given its credentials (that tenant's secrets, its users'
 * connections, exchanged tokens) only on behalf of a caller in that tenant,
 * a user in the group `tenant:NAME`. Anyone else is refused before anything
 * is resolved, whatever less specific secret exists. A `jwt` carries no
 * tenant's credential (it names the caller), so it is not held back.
 */
function tenantRefusal(request: CredentialRequest): GatewayError | null {
  const tenant = request.server.catalog?.tenant ?? '';
  if (tenant === '' || request.principal?.groups.includes(tenantGroup(tenant)) === true) return null;
  return new GatewayError('refused', `upstream server "${request.server.name}" serves the tenant "${tenant}": its credentials are used only for callers in that tenant`, {
    detail: `the caller is not in the group ${tenantGroup(tenant)}`,
  });
}

export class CredentialBroker implements CredentialHook {
  private readonly deps: BrokerDeps;
  private held = new Map<string, Held>();
  private seen = -1;
  private readonly poller = new Poller(
    (force) => this.read(force),
    (error) => this.deps.log.warn({ err: String(error) }, 'could not read the secrets; the ones read before stay in use'),
  );
  private readonly marked = new Map<string, number>();
  private readonly reported = new Map<string, number>();
  /** Minted tokens, by server, caller and scope, until they are due for renewal. */
  private readonly tokens = new Map<string, { credential: UpstreamCredential; renewAt: number }>();
  private readonly signer: Signer | null;
  private readonly authorizationServers = new AuthorizationServers();
  /** The `oauth` kind's per-user connections (the connect pages and `mandate connections` use them too). */
  readonly connections: Connections;
  private readonly exchange: TokenExchange;

  constructor(deps: BrokerDeps) {
    this.deps = deps;
    this.signer = deps.minter === undefined ? null : new Signer(deps.minter);
    const shared = {
      servers: this.authorizationServers,
      clientSecret: (request: CredentialRequest, name: string) => this.clientSecret(request, name),
      ...(deps.audit !== undefined ? { audit: deps.audit } : {}),
      log: deps.log,
      now: () => this.now(),
    };
    this.connections = new Connections({ ...shared, store: deps.store, secret: deps.secret, issuer: deps.issuer });
    this.exchange = new TokenExchange({ ...shared, signer: this.signer });
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  start(): Promise<void> {
    return this.poller.start(this.deps.refreshMs ?? 1000);
  }

  stop(): void {
    this.poller.stop();
  }

  /** Reads the secrets again if they changed (or when forced). */
  refresh(force = false): Promise<void> {
    return this.poller.run(force);
  }

  private async read(force: boolean): Promise<void> {
    const last = await this.deps.store.credentials.lastChange();
    const now = this.now();
    const expired = [...this.held.values()].some((held) => held.previous !== null && held.previous.retiresAt !== null && held.previous.retiresAt <= now);
    if (!force && last === this.seen && !expired) return;
    this.held = this.open(await this.deps.store.credentials.usable(now));
    if (last !== this.seen) this.connections.clear();
    this.seen = last;
  }

  private open(versions: readonly SecretVersion[]): Map<string, Held> {
    const byScope = new Map<string, SecretVersion[]>();
    for (const version of versions) {
      const key = keyOf(version.name, version.environment, version.tenant);
      byScope.set(key, [...(byScope.get(key) ?? []), version]);
    }
    const held = new Map<string, Held>();
    for (const [key, list] of byScope) {
      const current = list.find((v) => v.retiresAt === null);
      if (current === undefined) continue;
      const previous = list.filter((v) => v.retiresAt !== null).sort((a, b) => b.version - a.version)[0];
      try {
        held.set(key, {
          scope: { name: current.name, environment: current.environment, tenant: current.tenant },
          current: { version: current.version, value: openVersion(this.deps.secret, current), retiresAt: null },
          previous: previous === undefined ? null : { version: previous.version, value: openVersion(this.deps.secret, previous), retiresAt: previous.retiresAt },
        });
      } catch (error) {
        // Sealed under another deployment secret: refused at use with the secret named, never half-read.
        this.deps.log.error({ secret: current.name, err: error instanceof Error ? error.message : String(error) }, 'a stored secret cannot be opened with this deployment secret');
      }
    }
    return held;
  }

  /** The versions for a server: its tenant and environment, then its tenant (any environment), then its environment, then unscoped. */
  private find(name: string, environment: string, tenant: string): Held | undefined {
    return (
      (tenant !== '' ? (this.held.get(keyOf(name, environment, tenant)) ?? this.held.get(keyOf(name, '', tenant))) : undefined) ??
      (environment !== '' ? this.held.get(keyOf(name, environment, '')) : undefined) ??
      this.held.get(keyOf(name, '', ''))
    );
  }

  /**
   * The current value of a stored secret for the request's server, for the
   * broker's own use (an upstream authorization server's client secret):
   * `ref` names the version, so a rotation is noticed. Not set: the call
   * fails closed, naming the secret.
   */
  clientSecret(request: CredentialRequest, name: string): { value: string; ref: string } {
    const held = this.heldFor(request, name);
    if (held === undefined) throw secretMissing(request, name);
    return { value: held.current.value, ref: `${held.scope.name}:${held.scope.environment}:${held.scope.tenant}:v${held.current.version}` };
  }

  /** The versions of `secret` for the request's server (its catalog tenant and environment, if any). */
  private heldFor(request: CredentialRequest, secret: string): Held | undefined {
    return this.find(secret, request.server.catalog?.environment ?? '', request.server.catalog?.tenant ?? '');
  }

  credential(request: CredentialRequest): UpstreamCredential | Promise<UpstreamCredential> {
    const auth = request.server.auth;
    if (auth === undefined || auth.kind === 'none') return NOTHING;
    if (auth.kind === 'jwt') return this.minted(request, auth);
    const refusal = tenantRefusal(request);
    if (refusal !== null) return Promise.reject(refusal);
    if (auth.kind === 'oauth') return this.connections.credential(request, auth);
    if (auth.kind === 'token-exchange') return this.exchange.credential(request, auth);
    const held = this.heldFor(request, auth.secret);
    if (held === undefined) return Promise.reject(secretMissing(request, auth.secret));
    const now = this.now();
    const retry = request.attempt > 0 && held.previous !== null && (held.previous.retiresAt ?? 0) > now;
    const used = retry ? (held.previous as Opened) : held.current;
    this.noteUse(held.scope, used.version, now);
    const scope = [held.scope.environment && `env=${held.scope.environment}`, held.scope.tenant && `tenant=${held.scope.tenant}`].filter(Boolean).join(',');
    const reference = `secret:${held.scope.name}${scope ? `[${scope}]` : ''}:v${used.version}`;
    if (auth.header !== undefined) return { headers: { [auth.header]: auth.scheme !== undefined ? `${auth.scheme} ${used.value}` : used.value }, reference };
    return { env: { [auth.env as string]: used.value }, reference };
  }

  /**
   * A minted token for a call: `sub` the user (or the machine client), `act`
   * the client acting for them, `scope` only what the call needs (for a
   * tools/call, the one tool's scope; else the token's scopes on this
   * server), `aud` the upstream, at most 5 minutes. Signed with the key the
   * authorization server publishes at /oauth/jwks, so the upstream verifies
   * it there. A token is reused for the same caller and scope until 80% of
   * its lifetime.
   */
  private async minted(request: CredentialRequest, auth: Extract<NonNullable<CredentialRequest['server']['auth']>, { kind: 'jwt' }>): Promise<UpstreamCredential> {
    const signer = this.signer;
    if (signer === null) throw new GatewayError('credential_missing', `upstream server "${request.server.name}" needs a minted token, and this gateway has no signing key`);
    const server = request.server;
    const principal = request.principal;
    const own = principal === null ? [] : principal.scopes.filter((scope) => scope === `mcp:${server.name}` || scope.startsWith(`mcp:${server.name}:`));
    const tool = request.call?.method === 'tools/call' ? request.call.tool : null;
    const scopes = tool !== null ? [`mcp:${server.name}:tool:${tool}`] : own;
    const sub = principal?.sub ?? 'mandate';
    const audience = auth.audience ?? server.url ?? server.endpoint;
    const key = `${server.name}\u0000${server.generation}\u0000${sub}\u0000${principal?.clientId ?? ''}\u0000${scopes.join(' ')}`;
    const now = this.now();
    const cached = this.tokens.get(key);
    if (cached !== undefined && request.attempt === 0 && cached.renewAt > now) return cached.credential;
    const { token, jti } = await signer.mint(
      { scope: scopes.join(' '), ...(principal !== null ? { act: { sub: principal.clientId }, client_id: principal.clientId } : {}) },
      { sub, aud: audience, ttlSeconds: auth.ttlSeconds, now },
    );
    // On record before it is used (a token that cannot be recorded is not presented); reused tokens were recorded when minted.
    if (this.deps.audit !== undefined) {
      try {
        await this.deps.audit.record({
          type: 'credential.issued',
          actor: 'mandate',
          server: server.name,
          outcome: 'success',
          data: { kind: 'jwt', sub, client: principal?.clientId ?? null, jti, scope: scopes.join(' '), expires_in: auth.ttlSeconds },
        });
      } catch (error) {
        throw new GatewayError('audit_unavailable', 'the audit log is unavailable: no upstream credential was issued', { detail: String(error), cause: error });
      }
    }
    const credential: UpstreamCredential = { headers: { authorization: `Bearer ${token}` }, reference: `jwt:${jti}` };
    if (this.tokens.size >= 10_000) this.tokens.clear();
    this.tokens.set(key, { credential, renewAt: now + auth.ttlSeconds * 800 });
    return credential;
  }

  /** After a rotation, the version it replaced is tried once while in its grace period; a minted token is minted again. */
  refused(request: CredentialRequest): boolean | Promise<boolean> {
    const auth = request.server.auth;
    if (auth?.kind === 'jwt') return true;
    if (auth?.kind === 'oauth') return this.connections.refresh(request, auth);
    if (auth?.kind === 'token-exchange') {
      this.exchange.forget(request);
      return true;
    }
    if (auth === undefined || auth.kind !== 'secret') return false;
    const held = this.heldFor(request, auth.secret);
    return held?.previous !== null && held?.previous !== undefined && (held.previous.retiresAt ?? 0) > this.now();
  }

  /** An upstream refused the secret for good: recorded as credential.rejected, at most once a minute per server and version (a misconfigured upstream must not flood the log). */
  rejected(request: CredentialRequest, status: number): void {
    const auth = request.server.auth;
    if (auth === undefined || auth.kind === 'none') return;
    if (auth.kind !== 'secret') {
      const user = auth.kind === 'jwt' ? '' : (request.principal?.user ?? '');
      this.report(request, status, `${auth.kind}\u0000${user}`, { kind: auth.kind, status, ...(user !== '' ? { user } : {}) });
      return;
    }
    const held = this.heldFor(request, auth.secret);
    const version = request.attempt > 0 && held?.previous ? held.previous.version : (held?.current.version ?? null);
    this.report(request, status, `${auth.secret}\u0000${version}`, { secret: auth.secret, version, status, environment: held?.scope.environment ?? null, tenant: held?.scope.tenant ?? null });
  }

  /** Records credential.rejected for the request's server, at most once a minute per `key` on that server. */
  private report(request: CredentialRequest, status: number, key: string, data: Record<string, string | number | null>): void {
    const audit = this.deps.audit;
    if (audit === undefined) return;
    const now = this.now();
    const throttle = `${request.server.name}\u0000${key}`;
    if ((this.reported.get(throttle) ?? 0) + REPORT_MS > now) return;
    this.reported.set(throttle, now);
    audit
      .record({ type: 'credential.rejected', actor: 'mandate', server: request.server.name, outcome: 'failure', reason: `the upstream answered HTTP ${status}`, data })
      .catch(() => undefined);
  }

  private noteUse(scope: SecretScope, version: number, now: number): void {
    const key = `${keyOf(scope.name, scope.environment, scope.tenant)}\u0000${version}`;
    if ((this.marked.get(key) ?? 0) + MARK_USED_MS > now) return;
    this.marked.set(key, now);
    this.deps.store.credentials.markUsed(scope, version, now).catch(() => undefined);
  }
}
