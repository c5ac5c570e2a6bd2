/**
 * The `identity` section: the authorization server, client registration and
 * token enforcement. Defaults are the safe choice; every relaxation warns.
 */
import { z } from 'zod';
import { LOOPBACK_HOSTS } from './loopback.ts';

const seconds = (min: number, max: number) => z.number().int().min(min).max(max);

/** A host name pattern: `example.com` (exactly) or `*.example.com` (any subdomain). */
const hostPattern = z
  .string()
  .regex(/^(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?$|^\[[0-9a-f:]+\]$/, 'must be a lowercase host name, `*.` and a host name, or a bracketed IPv6 address');

const httpsOrigin = z.string().refine((value) => {
  try {
    const url = new URL(value);
    return url.protocol === 'https:' && url.origin === value.replace(/\/$/, '');
  } catch {
    return false;
  }
}, 'must be an https origin (https://host[:port])');

export const REGISTRATION_MODES = ['closed', 'initial-access-token', 'approval', 'open'] as const;
export type RegistrationMode = (typeof REGISTRATION_MODES)[number];

/** A publisher whose signed software statements (RFC 7591 §2.3) let a registration skip approval. */
const softwareIssuerSchema = z.strictObject({
  /** The statement's `iss`. */
  issuer: z.string().min(1),
  /** The publisher's public signing keys (a JWK Set); private members are refused. */
  jwks: z.strictObject({
    keys: z
      .array(z.record(z.string(), z.unknown()))
      .min(1)
      .refine((keys) => keys.every((key) => !('d' in key) && !('k' in key)), 'public keys only: remove "d" / "k"'),
  }),
});

const registrationSchema = z
  .strictObject({
    /** closed | initial-access-token | approval (default) | open (development only). */
    mode: z.enum(REGISTRATION_MODES).default('approval'),
    /** https origins redirect URIs may use; loopback (http://127.0.0.1, http://[::1], http://localhost) is always allowed for native clients. */
    allowedRedirectOrigins: z.array(httpsOrigin).default([]),
    /** Which client classes may register themselves. */
    allowedClasses: z.array(z.enum(['interactive', 'machine'])).min(1).default(['interactive', 'machine']),
    /** Registrations accepted from one network address per hour. */
    maxPerAddressPerHour: z.number().int().min(1).max(100_000).default(20),
    /** A registered client that never obtains a token is deleted after this many hours. */
    unusedClientTtlHours: z.number().int().min(1).max(24 * 365).default(72),
    /** Largest registration request body, bytes. */
    maxBodyBytes: z.number().int().min(1024).max(56 * 1024).default(16 * 1024),
    /** Trusted software statement publishers; a valid statement from one makes the client active at once. */
    softwareStatementIssuers: z.array(softwareIssuerSchema).default([]),
  })
  .default({ mode: 'approval', allowedRedirectOrigins: [], allowedClasses: ['interactive', 'machine'], maxPerAddressPerHour: 20, unusedClientTtlHours: 72, maxBodyBytes: 16 * 1024, softwareStatementIssuers: [] });

const cimdSchema = z
  .strictObject({
    /** Accept https client_id URLs (Client ID Metadata Documents). */
    enabled: z.boolean().default(true),
    /** Hosts whose client_id URLs are accepted. Empty: none (CIMD is on but admits nobody until listed). */
    allowedDomains: z.array(hostPattern).default([]),
    /** Hosts allowed to resolve to private, loopback or link-local addresses (otherwise refused: SSRF guard). */
    allowPrivateAddresses: z.array(hostPattern).default([]),
    /** Fetch timeout, ms. */
    timeoutMs: z.number().int().min(100).max(30_000).default(2500),
    /** Largest metadata document, bytes. */
    maxBytes: z.number().int().min(256).max(64 * 1024).default(5120),
    /** Cache bounds for fetched documents, seconds (the response's Cache-Control is honoured within them). */
    cacheMinSeconds: seconds(0, 86_400).default(60),
    cacheMaxSeconds: seconds(1, 7 * 86_400).default(86_400),
  })
  .default({ enabled: true, allowedDomains: [], allowPrivateAddresses: [], timeoutMs: 2500, maxBytes: 5120, cacheMinSeconds: 60, cacheMaxSeconds: 86_400 });

/** An https URL, or http on a loopback host (development). */
function httpsOrLoopback(value: string): boolean {
  try {
    const url = new URL(value);
    return url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname));
  } catch {
    return false;
  }
}

const upstreamOidcSchema = z.strictObject({
  /** The upstream OpenID Provider's issuer URL (https; http only on a loopback host, for development). */
  issuer: z.string().refine(httpsOrLoopback, 'must be an https URL (http only on a loopback host)'),
  clientId: z.string().min(1),
  /** Name of the environment variable holding the client secret (never the secret itself). */
  clientSecretEnv: z.string().regex(/^[A-Z_][A-Z0-9_]*$/).default('MANDATE_OIDC_CLIENT_SECRET'),
  scopes: z.array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/)).default(['openid', 'profile', 'email']),
  /** Claim that becomes the Mandate user name (lowercased); must match the user-name rules. */
  usernameClaim: z.string().min(1).default('preferred_username'),
  /** Claim holding the user's groups (an array of strings, or one string). */
  groupsClaim: z.string().min(1).default('groups'),
  /** What the sign-in button says. */
  displayName: z.string().min(1).max(60).default('single sign-on'),
});

const loginSchema = z
  .strictObject({
    /** Local users (`mandate users add`) may sign in with a password. */
    local: z.boolean().default(true),
    /** Sign in through an upstream OpenID Connect provider. */
    oidc: upstreamOidcSchema.optional(),
  })
  .default({ local: true });

export type UpstreamOidcConfig = z.output<typeof upstreamOidcSchema>;

/** Whom a delegation rule covers: `user:NAME`, `group:NAME`, or `*` (any user). */
const delegationSubject = z.string().regex(/^(user:[a-z0-9][a-z0-9._@-]{0,63}|group:[A-Za-z0-9][A-Za-z0-9._:-]{0,127}|\*)$/, 'must be user:NAME, group:NAME or "*"');

/** One delegation rule: client `actor` may exchange tokens of the users `for` names (src/identity/exchange-grant.ts). */
const delegationRuleSchema = z.strictObject({
  /** A client id (`mc_…`, or a Client ID Metadata Document URL). */
  actor: z.string().min(1).max(2048),
  for: z.array(delegationSubject).min(1),
});

/** Token exchange (RFC 8693) at the token endpoint: who may act for whom, and how deep a chain of actors may be. */
const delegationSchema = z
  .strictObject({
    /** How many actors an issued token's `act` claim may nest (the first exchange makes one). */
    maxChainDepth: z.number().int().min(1).max(5).default(2),
    /** Who may act for whom. Empty (the default): nobody, and every exchange is refused unless the subject token names the client in `may_act`. */
    allow: z.array(delegationRuleSchema).default([]),
  })
  .default({ maxChainDepth: 2, allow: [] });

export type DelegationConfig = z.output<typeof delegationSchema>;

/** A JWK Set's place: an https URL (http only on a loopback host, for development), or a file path relative to mandate.yaml. */
const jwksSource = z
  .string()
  .min(1)
  .refine((value) => !/^[a-z][a-z0-9+.-]*:\/\//i.test(value) || httpsOrLoopback(value), 'must be an https URL (http only on a loopback host) or a file path');

/** An enterprise identity provider whose Identity Assertion JWT Authorization Grants (ID-JAG) are accepted (src/identity/id-jag-grant.ts). */
const enterpriseIdpSchema = z.strictObject({
  /** The assertions' `iss`, exactly. */
  issuer: z.string().min(1).max(2048),
  /** The IdP's public signing keys: a JWK Set at an https URL, or a file relative to mandate.yaml. */
  jwks: jwksSource,
  /** The assertion claim naming the Mandate user (an existing, enabled user; never provisioned). */
  userClaim: z.string().min(1).max(200).default('sub'),
  /** An assertion valid for longer than this (exp - iat) is refused, seconds. */
  maxLifetimeSeconds: seconds(10, 3600).default(300),
});

/** Enterprise-managed authorization: the jwt-bearer grant with ID-JAG assertions. No IdP (the default): every such request is refused. */
const enterpriseSchema = z
  .strictObject({
    idps: z.array(enterpriseIdpSchema).default([]),
  })
  .superRefine((enterprise, ctx) => {
    const seen = new Set<string>();
    enterprise.idps.forEach((idp, index) => {
      if (seen.has(idp.issuer)) ctx.addIssue({ code: 'custom', path: ['idps', index, 'issuer'], message: `duplicate issuer "${idp.issuer}"` });
      seen.add(idp.issuer);
    });
  })
  .default({ idps: [] });

export type EnterpriseConfig = z.output<typeof enterpriseSchema>;
export type EnterpriseIdpConfig = EnterpriseConfig['idps'][number];

export const identitySchema = z
  .strictObject({
    /** Every MCP request needs a valid token. `false` is for development only and warns at start. */
    requireToken: z.boolean().default(true),
    /** Access token lifetime, seconds (default 10 minutes). */
    accessTokenTtl: seconds(30, 86_400).default(600),
    /** Refresh token lifetime, seconds (default 14 days); each use rotates it. */
    refreshTokenTtl: seconds(60, 365 * 86_400).default(14 * 86_400),
    /** Authorization code lifetime, seconds. */
    authorizationCodeTtl: seconds(10, 600).default(60),
    /** Login session lifetime, seconds. */
    sessionTtl: seconds(60, 30 * 86_400).default(86_400),
    /** A signing key older than this many days is replaced at start. */
    keyRotationDays: z.number().int().min(1).max(3650).default(30),
    registration: registrationSchema,
    cimd: cimdSchema,
    login: loginSchema,
    delegation: delegationSchema,
    enterprise: enterpriseSchema,
  })
  .refine((identity) => identity.login.local || identity.login.oidc !== undefined, { message: 'identity.login: enable local users or configure oidc, or nobody can sign in', path: ['login'] })
  .default({
    requireToken: true,
    accessTokenTtl: 600,
    refreshTokenTtl: 14 * 86_400,
    authorizationCodeTtl: 60,
    sessionTtl: 86_400,
    keyRotationDays: 30,
    registration: { mode: 'approval', allowedRedirectOrigins: [], allowedClasses: ['interactive', 'machine'], maxPerAddressPerHour: 20, unusedClientTtlHours: 72, maxBodyBytes: 16 * 1024, softwareStatementIssuers: [] },
    cimd: { enabled: true, allowedDomains: [], allowPrivateAddresses: [], timeoutMs: 2500, maxBytes: 5120, cacheMinSeconds: 60, cacheMaxSeconds: 86_400 },
    login: { local: true },
    delegation: { maxChainDepth: 2, allow: [] },
    enterprise: { idps: [] },
  });

export type IdentityConfig = z.output<typeof identitySchema>;

/** Settings worth a warning at start. */
export function identityWarnings(identity: IdentityConfig): string[] {
  const warnings: string[] = [];
  if (!identity.requireToken) warnings.push('identity.requireToken is false: MCP requests are forwarded without a token (development only)');
  for (const rule of identity.delegation.allow) {
    if (rule.for.includes('*')) warnings.push(`identity.delegation.allow: client ${rule.actor} may act for any user (token exchange)`);
  }
  if (identity.registration.mode === 'open') warnings.push('identity.registration.mode is "open": anyone may register a client and obtain tokens (development only)');
  return warnings;
}
