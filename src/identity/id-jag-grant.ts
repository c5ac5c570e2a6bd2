/**
 * Enterprise-managed authorization (the MCP extension
 * `io.modelcontextprotocol/enterprise-managed-authorization`): the Identity
 * Assertion JWT Authorization Grant (ID-JAG,
 * draft-ietf-oauth-identity-assertion-authz-grant) at the token endpoint,
 * `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523) with
 * the ID-JAG as `assertion`.
 *
 * The enterprise IdP decided (it signed the assertion for this user, this
 * client, this server and these scopes); Mandate still decides too:
 *   - the client authenticates (confidential clients only) and has the grant
 *     among its grant_types (the library checks that);
 *   - the assertion: header `typ` `oauth-id-jag+jwt`; `iss` one of
 *     `identity.enterprise.idps` ("unknown issuer" otherwise); signed by one
 *     of that IdP's keys (asymmetric algorithms only); `aud` this
 *     authorization server's issuer; `exp` in the future and `iat` not
 *     (30 s tolerance); valid for at most the IdP's `maxLifetimeSeconds`;
 *     `client_id` the authenticated client; `jti` present and never seen
 *     before (kept until the assertion's exp, in the store: every node
 *     sharing it refuses a replay); `sub` present;
 *   - the target: `resource` (the parameter, or the claim; both must agree)
 *     is a server behind Mandate, else invalid_target;
 *   - the user: the IdP's `userClaim` (default `sub`) names an existing,
 *     enabled Mandate user (never provisioned here);
 *   - the scopes: `scope` (else the assertion's `scope`, else `mcp:NAME`)
 *     must all be the server's (`mcp:NAME`, `mcp:NAME:tool:T`) and, when the
 *     assertion carries `scope`, covered by it: never wider than the IdP
 *     granted (invalid_scope).
 * The issued token is a JWT for that server like any other (`sub` the user,
 * `client_id` the client, `gid` a grant made for it, so revoking the grant,
 * the user or the client revokes it), with no refresh token, living at most
 * `identity.accessTokenTtl` and never past the assertion's exp. Everything
 * learnt is left on `ctx.state.idJag` for the audit record (steps.ts,
 * `token.issued`): the IdP, the assertion's jti and the IdP's subject. The
 * assertion itself is never kept or recorded.
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  decodeJwt,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import { errors, type KoaContextWithOIDC, type ResourceServer } from 'oidc-provider';
import type { EnterpriseIdpConfig } from '../config/identity-schema.ts';
import type { ResolvedServer } from '../config/load.ts';
import type { Store } from '../store/types.ts';
import { pinnedLifetime } from './revocations.ts';
import { isServerScope, scopeCovered, scopeWords, serverForResource, serverScope, type Servers } from './scopes.ts';
import { guardedFetch } from './ssrf.ts';
import { USER_NAME } from './users.ts';

export const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
/** The JWT `typ` of an Identity Assertion JWT Authorization Grant. */
export const ID_JAG_TYPE = 'oauth-id-jag+jwt';
/** What authorization server metadata lists in `authorization_grant_profiles_supported` (the extension's discovery). */
export const ID_JAG_PROFILE = 'urn:ietf:params:oauth:grant-profile:id-jag';

/** The parameters the grant reads (besides grant_type and client authentication); none may repeat. */
export const ID_JAG_PARAMETERS: ReadonlySet<string> = new Set(['assertion', 'resource', 'scope']);

/** Asymmetric signatures only: never `none`, never a shared secret. */
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];
const CLOCK_TOLERANCE = 30;
/** A JWK Set file is read again after this long (a rotated key set is picked up without a restart). */
const FILE_KEYS_MS = 60_000;
const MAX_JWKS_BYTES = 256 * 1024;
const ASSERTION_MAX_LENGTH = 16 * 1024;
/** The model the seen assertions are kept under (oidc-provider's, stored like every artifact by adapter.ts). */
const REPLAY_MODEL = 'ReplayDetection';

/** What one ID-JAG request decided, for its audit record; grows as the checks pass. */
export interface IdJagNotes {
  /** The assertion's `iss`, once it is a configured IdP. */
  idp: string | null;
  /** The assertion's `jti` and `sub` (the user at the IdP), once its signature checked out. */
  assertionJti: string | null;
  idpSubject: string | null;
  /** The Mandate user and the target server, once known. */
  user: string | null;
  server: string | null;
  /** Set once issued. */
  issued?: { jti: string; scope: string; exp: number; grant: string };
}

export interface IdJagDeps {
  idps: readonly EnterpriseIdpConfig[];
  /** This authorization server's issuer: the only `aud` accepted. */
  issuer: string;
  /** Where relative JWK Set paths start (the directory of mandate.yaml). */
  baseDir: string;
  accessTokenTtl: number;
  store: Store;
  servers: Servers;
  /** The resource server description of an MCP server's tokens (provider.ts), with these scopes and this lifetime. */
  describe(server: ResolvedServer, scope: string, ttl: number): ResourceServer;
}

/** invalid_grant saying why (the library's own InvalidGrant hides its detail): the caller is an authenticated client asking about its own request. */
const invalidGrant = (description: string): Error => new errors.CustomOIDCProviderError('invalid_grant', description);

const text = (value: unknown): string | undefined => (typeof value === 'string' && value !== '' ? value : undefined);
/** A claim's value as the audit record may show it. */
const shown = (value: unknown): string | null => (typeof value === 'string' ? value.slice(0, 300) : null);

/** A JWK Set read from a file, again once it is older than FILE_KEYS_MS. Private or symmetric keys are refused. */
function fileKeys(file: string): JWTVerifyGetKey {
  let loaded: { at: number; keys: JWTVerifyGetKey } | null = null;
  return async (header, token) => {
    if (!loaded || Date.now() - loaded.at > FILE_KEYS_MS) {
      const info = await stat(file);
      if (!info.isFile() || info.size > MAX_JWKS_BYTES) throw new Error(`${file} is not a JWK Set file of at most ${MAX_JWKS_BYTES} bytes`);
      const set = JSON.parse(await readFile(file, 'utf8')) as JSONWebKeySet;
      if (!Array.isArray(set.keys) || set.keys.some((key) => 'd' in key || 'k' in key)) throw new Error(`${file}: public keys only`);
      loaded = { at: Date.now(), keys: createLocalJWKSet(set) };
    }
    return loaded.keys(header, token);
  };
}

/**
 * An IdP's keys: a remote JWK Set (cached by jose, fetched through the SSRF
 * guard with no redirects; the configured host itself may be private, the
 * operator named it) or a file relative to mandate.yaml.
 */
function idpKeys(idp: EnterpriseIdpConfig, baseDir: string): JWTVerifyGetKey {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(idp.jwks)) return fileKeys(path.resolve(baseDir, idp.jwks));
  const url = new URL(idp.jwks);
  const fetch = guardedFetch({ allowPrivate: [url.hostname], timeoutMs: 5000 });
  return createRemoteJWKSet(url, {
    timeoutDuration: 5000,
    cooldownDuration: 30_000,
    cacheMaxAge: 10 * 60_000,
    [customFetch]: (input, init) => fetch(input, init as RequestInit),
  });
}

/** Why jose refused an assertion, in words for the client. */
function refusal(error: unknown, issuer: string): string {
  if (error instanceof joseErrors.JWTExpired) return 'the assertion has expired';
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    if (error.claim === 'aud') return `the assertion's aud is not this authorization server (${issuer})`;
    if (error.claim === 'typ') return `the assertion's typ header must be ${ID_JAG_TYPE}`;
    return `the assertion's ${error.claim} claim does not check out (${error.reason})`;
  }
  if (error instanceof joseErrors.JWKSNoMatchingKey || error instanceof joseErrors.JWSSignatureVerificationFailed) return 'the assertion\'s signature does not verify with the identity provider\'s keys';
  if (error instanceof joseErrors.JOSEAlgNotAllowed) return `the assertion's alg is not accepted (one of ${ALGORITHMS.join(', ')})`;
  if (error instanceof joseErrors.JWKSTimeout || error instanceof joseErrors.JWKSInvalid) return 'the identity provider\'s keys could not be loaded';
  if (error instanceof joseErrors.JOSEError) return `the assertion is not valid (${error.code})`;
  return 'the identity provider\'s keys could not be loaded';
}

/**
 * Marks the assertion seen, once across every node sharing the store: the
 * record is saved (a save keeps a consumed record consumed) and consumed
 * atomically; only the first consumer wins. Kept until the assertion's exp
 * (and the clock tolerance).
 */
async function firstUse(ctx: KoaContextWithOIDC, iss: string, jti: string, exp: number): Promise<boolean> {
  const Replay = ctx.oidc.provider.ReplayDetection as unknown as {
    instantiate(payload: Record<string, unknown>): { save(ttl: number): Promise<unknown> };
    adapter: { consume(id: string): Promise<void> };
  };
  const id = createHash('sha256').update(`${iss}\0${jti}`).digest('base64url');
  const ttl = Math.max(1, exp + CLOCK_TOLERANCE - Math.floor(Date.now() / 1000));
  await Replay.instantiate({ jti: id, iss }).save(ttl);
  try {
    await Replay.adapter.consume(id);
    return true;
  } catch (error) {
    if (error instanceof errors.InvalidGrant) return false;
    throw error;
  }
}

/** The grant's handler, for `provider.registerGrantType(JWT_BEARER, …, ID_JAG_PARAMETERS)`. */
export function idJagGrant(deps: IdJagDeps): (ctx: KoaContextWithOIDC) => Promise<void> {
  const keys = new Map(deps.idps.map((idp) => [idp.issuer, idpKeys(idp, deps.baseDir)] as const));
  return async (ctx) => {
    const { client } = ctx.oidc;
    const params = (ctx.oidc.params ?? {}) as Record<string, unknown>;
    if (!client) throw new errors.InvalidClient('the client is not authenticated');
    const clientId = client.clientId;
    const notes: IdJagNotes = { idp: null, assertionJti: null, idpSubject: null, user: null, server: null };
    (ctx.state as Record<string, unknown>).idJag = notes;
    if (deps.idps.length === 0) throw new errors.UnauthorizedClient('no enterprise identity provider is configured here (identity.enterprise.idps): ID-JAG assertions are not accepted');
    // The client the assertion names must have proven who it is.
    if (client.clientAuthMethod === 'none') throw new errors.UnauthorizedClient('the jwt-bearer grant needs a confidential client: the client an assertion names must authenticate');

    const assertion = text(params.assertion);
    if (assertion === undefined) throw new errors.InvalidRequest('missing required parameter: assertion');
    if (assertion.length > ASSERTION_MAX_LENGTH) throw invalidGrant('the assertion is too large');
    let header: ReturnType<typeof decodeProtectedHeader>;
    let unverified: JWTPayload;
    try {
      header = decodeProtectedHeader(assertion);
      unverified = decodeJwt(assertion);
    } catch {
      throw invalidGrant('the assertion is not a signed JWT');
    }
    if (typeof header.typ !== 'string' || header.typ.toLowerCase().replace(/^application\//, '') !== ID_JAG_TYPE) {
      throw invalidGrant(`the assertion's typ header must be ${ID_JAG_TYPE} (an Identity Assertion JWT Authorization Grant)`);
    }
    const idp = deps.idps.find((candidate) => candidate.issuer === unverified.iss);
    if (!idp) throw invalidGrant(`unknown issuer: ${shown(unverified.iss) ?? '(none)'} is not an enterprise identity provider configured here`);
    notes.idp = idp.issuer;

    let claims: JWTPayload;
    try {
      ({ payload: claims } = await jwtVerify(assertion, keys.get(idp.issuer)!, {
        issuer: idp.issuer,
        audience: deps.issuer,
        typ: ID_JAG_TYPE,
        algorithms: ALGORITHMS,
        clockTolerance: CLOCK_TOLERANCE,
        requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id'],
      }));
    } catch (error) {
      throw invalidGrant(refusal(error, deps.issuer));
    }
    notes.assertionJti = shown(claims.jti);
    notes.idpSubject = shown(claims.sub);
    const now = Math.floor(Date.now() / 1000);
    const { exp, iat } = claims as { exp: number; iat: number };
    if (iat > now + CLOCK_TOLERANCE) throw invalidGrant('the assertion was issued in the future (iat)');
    if (exp - iat > idp.maxLifetimeSeconds) throw invalidGrant(`the assertion is valid for ${exp - iat} s; this identity provider's may be valid for at most ${idp.maxLifetimeSeconds} s`);
    if (typeof claims.jti !== 'string' || claims.jti === '') throw invalidGrant('the assertion has no jti');
    if (claims.client_id !== clientId) throw invalidGrant(`the assertion was issued for client ${shown(claims.client_id) ?? '(none)'}, not for ${clientId}`);

    // The target: the resource parameter and the claim name the same server behind Mandate.
    const claimed = claims.resource;
    if (claimed !== undefined && typeof claimed !== 'string') throw new errors.InvalidTarget('the assertion\'s resource claim must be one MCP server, {issuer}/mcp/NAME');
    const asked = params.resource;
    if (asked !== undefined && typeof asked !== 'string') throw new errors.InvalidTarget('resource may be given once: name the MCP server, {issuer}/mcp/NAME');
    if (asked !== undefined && claimed !== undefined && asked !== claimed) throw new errors.InvalidTarget(`resource ${asked} is not the assertion's resource ${claimed}`);
    const resource = asked ?? claimed;
    if (resource === undefined) throw new errors.InvalidTarget('the resource is required (the parameter, or the assertion\'s claim): name the MCP server, {issuer}/mcp/NAME');
    const server = serverForResource(deps.servers, resource);
    if (!server) throw new errors.InvalidTarget(`resource ${resource} is not an MCP server behind this gateway`);
    notes.server = server.name;

    // The user: named by the IdP, known and enabled here.
    const raw = claims[idp.userClaim];
    const user = typeof raw === 'string' ? raw.trim().toLowerCase() : '';
    if (!USER_NAME.test(user)) throw invalidGrant(`the assertion's ${idp.userClaim} claim is not a Mandate user name`);
    const account = await deps.store.identity.getUser(user);
    if (!account) throw invalidGrant(`user ${user} (the assertion's ${idp.userClaim}) is not a Mandate user`);
    if (account.disabled) throw invalidGrant(`user ${user} is disabled`);
    notes.user = user;

    // The scopes: the server's only, and never wider than the IdP granted.
    const granted = claims.scope === undefined ? null : new Set(scopeWords(claims.scope));
    const requested = params.scope !== undefined ? scopeWords(params.scope) : granted !== null ? [...granted] : [serverScope(server.name)];
    if (requested.length === 0) throw new errors.InvalidScope('scope is empty', '');
    const foreign = requested.find((scope) => !isServerScope(server.name, scope));
    if (foreign !== undefined) throw new errors.InvalidScope(`scope ${foreign} is not a scope of server ${server.name}`, foreign);
    const wider = granted === null ? undefined : requested.find((scope) => !scopeCovered(granted, server.name, scope));
    if (wider !== undefined) throw new errors.InvalidScope(`scope ${wider} is wider than the assertion grants`, wider);
    const scope = [...new Set(requested)].join(' ');

    const remaining = exp - now;
    if (remaining <= 0) throw invalidGrant('the assertion has expired');
    // Spent only by a request that gets its token (a refusal above leaves it usable); once, across nodes.
    if (!(await firstUse(ctx, idp.issuer, claims.jti, exp))) throw invalidGrant('the assertion was already used (replay): ask the identity provider for a new one');

    const ttl = Math.min(deps.accessTokenTtl, remaining);
    // A grant of its own, so the token is a user's (gid) and revoking the grant ends it.
    const grant = new ctx.oidc.provider.Grant({ accountId: user, clientId, expiresIn: ttl } as ConstructorParameters<typeof ctx.oidc.provider.Grant>[0]);
    grant.addResourceScope(server.endpoint, scope);
    const grantId = await grant.save();
    const token = new ctx.oidc.provider.AccessToken({
      accountId: user,
      client,
      grantId,
      gty: 'jwt_bearer',
      scope,
      expiresIn: ttl,
      ...pinnedLifetime(now, ttl),
      resourceServer: new ctx.oidc.provider.ResourceServer(server.endpoint, deps.describe(server, scope, ttl)),
    });
    ctx.oidc.entity('AccessToken', token);
    const value = await token.save();
    const issued = decodeJwt(value);
    notes.issued = { jti: String(issued.jti), scope, exp: Number(issued.exp), grant: grantId };

    ctx.body = { access_token: value, token_type: 'Bearer', expires_in: token.expiration, scope };
  };
}
