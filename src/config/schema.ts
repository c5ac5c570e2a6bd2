/**
 * The one configuration schema. Every key has a documented default
 * (docs/configuration.md); unknown keys are errors, not ignored.
 */
import { z } from 'zod';
import { adminSchema, catalogSchema } from './catalog-schema.ts';
import { identitySchema } from './identity-schema.ts';

export const SERVER_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

const httpUrl = z.string().refine((value) => {
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.username === '' && url.password === '';
  } catch {
    return false;
  }
}, 'must be an absolute http(s) URL without credentials');

/** A secret's name in the store (`mandate secrets set NAME`). */
export const SECRET_NAME = /^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$/;
const secretName = z.string().regex(SECRET_NAME, 'must be lowercase letters, digits, dots, hyphens and underscores (at most 64)');
/** An HTTP header name (RFC 9110 token). */
const headerName = z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/, 'must be an HTTP header name');
const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'must be an environment variable name');

/** An OAuth scope token (RFC 6749 §3.3). */
const oauthScope = z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]{1,200}$/, 'must be an OAuth scope (printable, no spaces or quotes)');

/**
 * Where the upstream's authorization server is: `issuer` (its metadata is
 * discovered, RFC 8414 or OpenID Connect Discovery) or its endpoints named
 * one by one. The client Mandate is there: `clientId`, and `clientSecret`,
 * the name of a stored secret (absent: a public client, PKCE only).
 */
const upstreamAuthorizationServer = {
  issuer: httpUrl.optional(),
  authorizationEndpoint: httpUrl.optional(),
  tokenEndpoint: httpUrl.optional(),
  revocationEndpoint: httpUrl.optional(),
  clientId: z.string().min(1).max(512),
  clientSecret: secretName.optional(),
  /** The scopes asked for at the upstream. */
  scopes: z.array(oauthScope).max(64).default([]),
  /** RFC 8707: the resource the upstream token is for (the upstream's URL, if its server wants one). */
  resource: httpUrl.optional(),
};

/**
 * What the gateway presents to an upstream (docs/credentials.md). The client's own token is never passed on;
 * `none` (the default) presents nothing.
 */
const authSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('none') }),
  z.strictObject({
    kind: z.literal('jwt'),
    /** The token's `aud`: default the upstream's URL. */
    audience: z.string().min(1).max(2048).optional(),
    /** Lifetime in seconds (at most 300). */
    ttlSeconds: z.number().int().min(10).max(300).default(60),
  }),
  z
    .strictObject({
      kind: z.literal('secret'),
      /** The stored secret's name. */
      secret: secretName,
      /** HTTP upstream: the header that carries it. */
      header: headerName.optional(),
      /** With `header`: a scheme before the value (`Bearer` gives `Authorization: Bearer VALUE`). */
      scheme: z.string().regex(/^[A-Za-z][A-Za-z0-9._-]{0,31}$/, 'must be an authentication scheme such as Bearer').optional(),
      /** stdio upstream: the environment variable that carries it. */
      env: envName.optional(),
    })
    .superRefine((auth, ctx) => {
      if ((auth.header === undefined) === (auth.env === undefined)) ctx.addIssue({ code: 'custom', message: 'set exactly one of `header` (an HTTP upstream) or `env` (a stdio upstream)' });
      if (auth.scheme !== undefined && auth.header === undefined) ctx.addIssue({ code: 'custom', path: ['scheme'], message: '`scheme` goes with `header`' });
      if (auth.header !== undefined && /^(host|content-length|content-type|accept|connection|transfer-encoding|mcp-session-id|mcp-protocol-version|last-event-id)$/i.test(auth.header)) {
        ctx.addIssue({ code: 'custom', path: ['header'], message: `"${auth.header}" is a protocol header, not a credential header` });
      }
    }),
  /** Per user: each user connects their own account at the upstream's authorization server (authorization code with PKCE). */
  z
    .strictObject({ kind: z.literal('oauth'), ...upstreamAuthorizationServer })
    .superRefine((auth, ctx) => {
      if (auth.issuer === undefined && (auth.authorizationEndpoint === undefined || auth.tokenEndpoint === undefined)) {
        ctx.addIssue({ code: 'custom', message: 'set `issuer` (its metadata is discovered) or both `authorizationEndpoint` and `tokenEndpoint`' });
      }
    }),
  /** RFC 8693: a token Mandate mints for the user, exchanged at the upstream's authorization server for one the upstream accepts. */
  z
    .strictObject({
      kind: z.literal('token-exchange'),
      ...upstreamAuthorizationServer,
      /** The `audience` parameter of the exchange (RFC 8693 §2.1): the upstream's name at its authorization server. */
      audience: z.string().min(1).max(2048).optional(),
      /** The `aud` of the subject token Mandate mints: default the upstream's URL. */
      subjectAudience: z.string().min(1).max(2048).optional(),
    })
    .superRefine((auth, ctx) => {
      if (auth.issuer === undefined && auth.tokenEndpoint === undefined) ctx.addIssue({ code: 'custom', message: 'set `issuer` (its metadata is discovered) or `tokenEndpoint`' });
      if (auth.authorizationEndpoint !== undefined) ctx.addIssue({ code: 'custom', path: ['authorizationEndpoint'], message: 'a token exchange uses the token endpoint only' });
    }),
]);

/** What `auth` cannot be for a transport (the catalog checks its entries the same way), or null. */
export function authTransportProblem(auth: z.infer<typeof authSchema>, transport: 'http' | 'stdio'): { path: string[]; message: string } | null {
  const kind = auth.kind;
  if ((kind === 'jwt' || kind === 'oauth' || kind === 'token-exchange') && transport === 'stdio') {
    return { path: ['kind'], message: `\`${kind}\` is for an HTTP server (\`url\`): a token per request, in its Authorization header` };
  }
  if (auth.kind === 'secret' && auth.header !== undefined && transport === 'stdio') return { path: ['header'], message: 'a stdio server (`command`) takes its secret in `env`, not a header' };
  if (auth.kind === 'secret' && auth.env !== undefined && transport === 'http') return { path: ['env'], message: 'an HTTP server (`url`) takes its secret in a `header`, not `env`' };
  return null;
}

/** `servers[].auth`, and a catalog entry's `auth`: what the gateway presents to the upstream. */
export const upstreamAuthSchema = authSchema;

const serverSchema = z
  .strictObject({
    name: z.string().regex(SERVER_NAME, 'must be lowercase letters, digits and hyphens ([a-z0-9-]+, at most 63)'),
    /** Streamable HTTP upstream. */
    url: httpUrl.optional(),
    /** stdio upstream: a program the gateway starts, one process per client session. */
    command: z.string().min(1).optional(),
    args: z.array(z.string()).default([]),
    env: z.record(z.string(), z.string()).default({}),
    /** Working directory of a stdio upstream; relative to the config file. Default: the config file's folder. */
    cwd: z.string().optional(),
    /** Idle timeout of one upstream request in ms; a progress notification resets it. */
    timeoutMs: z.number().int().min(100).max(3_600_000).optional(),
    /** What the gateway presents to this upstream (docs/credentials.md); default none. */
    auth: authSchema.optional(),
  })
  .superRefine((server, ctx) => {
    const problem = server.auth === undefined ? null : authTransportProblem(server.auth, server.command !== undefined ? 'stdio' : 'http');
    if (problem !== null) ctx.addIssue({ code: 'custom', path: ['auth', ...problem.path], message: problem.message });
    if ((server.url === undefined) === (server.command === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'set exactly one of `url` (Streamable HTTP) or `command` (stdio)' });
    }
    if (server.url !== undefined && (server.args.length > 0 || Object.keys(server.env).length > 0 || server.cwd)) {
      ctx.addIssue({ code: 'custom', message: '`args`, `env` and `cwd` apply only to a stdio server (`command`)' });
    }
  });

/** A token bucket: `perSecond` sustained (0: no limit), `burst` at once. */
const rateSchema = z
  .strictObject({
    perSecond: z.number().min(0).max(1_000_000),
    burst: z.number().int().min(1).max(1_000_000),
  })
  .refine((rate) => rate.perSecond === 0 || rate.burst >= 1, 'burst must be at least 1');

const LIMIT_DEFAULTS = {
  sessionsPerPrincipal: 20,
  stdioProcesses: 100,
  principalRate: { perSecond: 0, burst: 1 },
  addressRate: { perSecond: 10, burst: 50 },
};

/** Per-principal and per-node limits (docs/configuration.md). */
const limitsSchema = z
  .strictObject({
    /** Open sessions one principal (a user, or a machine client) may hold on this node. */
    sessionsPerPrincipal: z.number().int().min(1).max(100_000).default(LIMIT_DEFAULTS.sessionsPerPrincipal),
    /** stdio server processes this node runs at once (one per session). */
    stdioProcesses: z.number().int().min(1).max(100_000).default(LIMIT_DEFAULTS.stdioProcesses),
    /** Requests per verified principal; off (perSecond 0) by default. */
    principalRate: rateSchema.default(LIMIT_DEFAULTS.principalRate),
    /** Requests without a valid token, per network address. */
    addressRate: rateSchema.default(LIMIT_DEFAULTS.addressRate),
  })
  .default(LIMIT_DEFAULTS);

const BREAKGLASS_DEFAULTS = { maxTtlSeconds: 14_400, reviewDays: 3 };
const APPROVALS_DEFAULTS = { ttlSeconds: 900 };
const TASKS_DEFAULTS = { defaultTtlSeconds: 3600, maxTtlSeconds: 86_400 };

export const configSchema = z
  .strictObject({
    /** Public base URL of the gateway; MCP endpoints are {issuer}/mcp/NAME. Default http://localhost:{port}. */
    issuer: httpUrl.optional(),
    listen: z
      .strictObject({
        /** Interface to bind. Default 127.0.0.1 (loopback only). */
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8080),
        /** Addresses of reverse proxies in front: from them, the client's address is read from X-Forwarded-For (sign-in throttle, registration limits, audit). */
        trustedProxies: z.array(z.ipv4().or(z.ipv6())).default([]),
      })
      .default({ host: '127.0.0.1', port: 8080, trustedProxies: [] }),
    servers: z.array(serverSchema).default([]),
    /** Directory of Cedar policy files (`*.cedar`, `*.cedarschema`); relative to this file. Default: `policies` in the data directory, where a starter set is written on first start. */
    policies: z.string().min(1).optional(),
    gateway: z
      .strictObject({
        /** Browser origins allowed to call MCP endpoints (DNS-rebinding protection). Default: the issuer's origin. */
        allowedOrigins: z.array(z.string().min(1)).optional(),
        /** Largest accepted client request body, bytes. */
        maxBodyBytes: z.number().int().min(1024).max(64 * 1024 * 1024).default(1024 * 1024),
        /** Largest accepted upstream message, bytes. */
        maxUpstreamMessageBytes: z.number().int().min(1024).max(256 * 1024 * 1024).default(16 * 1024 * 1024),
        /** Default idle timeout of an upstream request, ms (reset by progress). */
        upstreamTimeoutMs: z.number().int().min(100).max(3_600_000).default(60_000),
        /** Hard cap on one request's total duration, ms, progress or not. */
        maxRequestMs: z.number().int().min(100).max(24 * 3_600_000).default(600_000),
        /** A session with no traffic for this long is closed, ms. */
        sessionIdleMs: z.number().int().min(1000).default(30 * 60_000),
        /** At most this many open sessions per gateway node. */
        maxSessions: z.number().int().min(1).default(1000),
        /** Server-to-client messages kept per session for Last-Event-ID resumption. */
        resumeBufferEvents: z.number().int().min(0).max(100_000).default(200),
        /** Deepest nesting of arrays and objects in a client message; deeper is an invalid request. */
        maxJsonDepth: z.number().int().min(8).max(1000).default(64),
        limits: limitsSchema,
      })
      .default({
        maxBodyBytes: 1024 * 1024,
        maxUpstreamMessageBytes: 16 * 1024 * 1024,
        upstreamTimeoutMs: 60_000,
        maxRequestMs: 600_000,
        sessionIdleMs: 30 * 60_000,
        maxSessions: 1000,
        resumeBufferEvents: 200,
        maxJsonDepth: 64,
        limits: LIMIT_DEFAULTS,
      }),
    audit: z
      .strictObject({
        /** SQLite: `power` (default) survives power loss (fsync per commit); `process` only a gateway crash (kill -9), for more throughput. */
        durability: z.enum(['process', 'power']).default('power'),
        /**
         * With durability power: when an allowed call's line in the call journal is synced. `before-forward`:
         * the call waits for it; `while-forwarding` (default): the call is forwarded once its line is written,
         * and the file is synced when a call is still in flight 5-10 ms later (docs/audit.md says what each survives).
         */
        journalSync: z.enum(['before-forward', 'while-forwarding']).default('while-forwarding'),
        /** Repeated refusals (no valid token, over a limit) are recorded once, then counted: one summary event per kind per interval. */
        summaryIntervalSeconds: z.number().int().min(1).max(86_400).default(60),
      })
      .default({ durability: 'power', journalSync: 'while-forwarding', summaryIntervalSeconds: 60 }),
    store: z
      .strictObject({
        /** PostgreSQL: the longest wait for a database connection (a new one, or a free one from the pool), ms. */
        connectTimeoutMs: z.number().int().min(100).max(60_000).default(3000),
        /** PostgreSQL: the longest one statement may run (the server cancels it; a lock wait counts), ms. */
        statementTimeoutMs: z.number().int().min(100).max(300_000).default(5000),
      })
      .default({ connectTimeoutMs: 3000, statementTimeoutMs: 5000 }),
    identity: identitySchema,
    /** Catalog admission rules and publishers (docs/catalog.md). */
    catalog: catalogSchema,
    /** Who may publish, approve and audit catalog entries (docs/catalog.md). */
    admin: adminSchema,
    /** Emergency access (docs/breakglass.md): its longest grant, when its review is due, who is told. */
    breakglass: z
      .strictObject({
        /** The longest a grant may last, seconds (60 to 86400). */
        maxTtlSeconds: z.number().int().min(60).max(86_400).default(BREAKGLASS_DEFAULTS.maxTtlSeconds),
        /** An unreviewed grant is overdue this many days after it was opened (0 to 365). */
        reviewDays: z.number().int().min(0).max(365).default(BREAKGLASS_DEFAULTS.reviewDays),
        /** POSTed a JSON notice when a grant opens (best effort). */
        webhook: httpUrl.optional(),
      })
      .default(BREAKGLASS_DEFAULTS),
    /** Approvals of single calls (docs/approvals.md): how long a request stays open and an approval usable. */
    approvals: z
      .strictObject({
        /** Seconds from the request (60 to 86400). */
        ttlSeconds: z.number().int().min(60).max(86_400).default(APPROVALS_DEFAULTS.ttlSeconds),
      })
      .default(APPROVALS_DEFAULTS),
    /** Tasks (docs/tasks.md): how long a task lasts when no --ttl is given, and at most. */
    tasks: z
      .strictObject({
        /** A task's lifetime when `mandate tasks open` is given no --ttl, seconds (60 to 604800; at most maxTtlSeconds). */
        defaultTtlSeconds: z.number().int().min(60).max(604_800).default(TASKS_DEFAULTS.defaultTtlSeconds),
        /** The longest a task may last, seconds (60 to 604800). */
        maxTtlSeconds: z.number().int().min(60).max(604_800).default(TASKS_DEFAULTS.maxTtlSeconds),
      })
      .refine((tasks) => tasks.defaultTtlSeconds <= tasks.maxTtlSeconds, {
        path: ['defaultTtlSeconds'],
        message: 'tasks.defaultTtlSeconds must not exceed tasks.maxTtlSeconds',
      })
      .default(TASKS_DEFAULTS),
    log: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      })
      .default({ level: 'info' }),
  })
  .superRefine((config, ctx) => {
    const seen = new Set<string>();
    config.servers.forEach((server, index) => {
      if (seen.has(server.name)) {
        ctx.addIssue({ code: 'custom', path: ['servers', index, 'name'], message: `duplicate server name "${server.name}"` });
      }
      seen.add(server.name);
    });
  });

export type RawConfig = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
export type ServerConfig = ParsedConfig['servers'][number];
export type UpstreamAuth = NonNullable<ServerConfig['auth']>;
/** The `breakglass` section (docs/breakglass.md). */
export type BreakglassConfig = ParsedConfig['breakglass'];
/** The `approvals` section (docs/approvals.md). */
export type ApprovalsConfig = ParsedConfig['approvals'];
/** The `tasks` section (docs/tasks.md). */
export type TasksConfig = ParsedConfig['tasks'];
