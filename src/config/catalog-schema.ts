/**
 * The `catalog` and `admin` sections (docs/catalog.md): who may publish and
 * approve servers, and the rules an entry must meet to be admitted. The
 * defaults are strict where strictness costs nothing (an owner is required,
 * entries expire, high risk needs a second person) and open where a closed
 * default would stop every deployment (signatures, which need publishers).
 */
import { z } from 'zod';

/** `user:NAME` or `group:NAME`: who holds a role. */
export const ROLE_MEMBER = /^(user|group):[^\s:]{1,128}$/;

export const ADMIN_ROLES = ['publisher', 'approver', 'auditor', 'admin'] as const;
export type AdminRole = (typeof ADMIN_ROLES)[number];

const ENVIRONMENT = /^[a-z][a-z0-9-]{0,31}$/;
const environmentName = z.string().regex(ENVIRONMENT, 'must be lowercase letters, digits and hyphens, starting with a letter (at most 32)');

const publisherSchema = z
  .strictObject({
    name: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'must be lowercase letters, digits, dots, hyphens and underscores (at most 64)'),
    /** A JWK Set file (relative to mandate.yaml) or an https URL: the publisher's public keys (Ed25519 or ECDSA). */
    jwks: z.string().min(1).optional(),
    /** Or a domain that proves its key at https://DOMAIN/.well-known/mcp-registry-auth: it may sign names under its reverse-DNS namespace. */
    domain: z.string().min(1).max(253).optional(),
    /** Server name prefixes (reverse-DNS, e.g. `io.example/`) this publisher may sign; with `domain`, the domain's namespace when absent. */
    prefixes: z.array(z.string().min(1).max(200)).min(1).optional(),
  })
  .superRefine((publisher, ctx) => {
    if ((publisher.jwks === undefined) === (publisher.domain === undefined)) ctx.addIssue({ code: 'custom', message: 'set exactly one of `jwks` (a key set) or `domain` (a domain proof)' });
    if (publisher.jwks !== undefined && publisher.prefixes === undefined) ctx.addIssue({ code: 'custom', path: ['prefixes'], message: 'a publisher with `jwks` names the prefixes it may sign' });
  });

export const ADMISSION_DEFAULTS = {
  requireOwner: true,
  maxLifetimeDays: 90,
  twoPersonRisk: ['high'] as ('low' | 'medium' | 'high')[],
  requireSignatures: [] as string[],
  environments: ['dev', 'staging', 'prod'],
  expiringLeadDays: 14,
};

const admissionSchema = z
  .strictObject({
    /** An entry names an owner (a Mandate user). */
    requireOwner: z.boolean().default(ADMISSION_DEFAULTS.requireOwner),
    /** No entry is admitted or renewed for longer than this. */
    maxLifetimeDays: z.number().int().min(1).max(3650).default(ADMISSION_DEFAULTS.maxLifetimeDays),
    /** Risk classes whose approver must be someone other than the proposer. */
    twoPersonRisk: z.array(z.enum(['low', 'medium', 'high'])).default(ADMISSION_DEFAULTS.twoPersonRisk),
    /** Environments whose entries must carry a valid publisher signature. */
    requireSignatures: z.array(environmentName).default(ADMISSION_DEFAULTS.requireSignatures),
    /** The environments an entry may name. */
    environments: z.array(environmentName).min(1).default(ADMISSION_DEFAULTS.environments),
    /** `server.expiring` is recorded this many days before an entry expires. */
    expiringLeadDays: z.number().int().min(0).max(365).default(ADMISSION_DEFAULTS.expiringLeadDays),
  })
  .superRefine((admission, ctx) => {
    admission.requireSignatures.forEach((environment, index) => {
      if (!admission.environments.includes(environment)) {
        ctx.addIssue({ code: 'custom', path: ['requireSignatures', index], message: `"${environment}" is not one of catalog.admission.environments` });
      }
    });
  })
  .default(ADMISSION_DEFAULTS);

export const catalogSchema = z
  .strictObject({
    admission: admissionSchema,
    publishers: z.array(publisherSchema).default([]),
  })
  .superRefine((catalog, ctx) => {
    const seen = new Set<string>();
    catalog.publishers.forEach((publisher, index) => {
      if (seen.has(publisher.name)) ctx.addIssue({ code: 'custom', path: ['publishers', index, 'name'], message: `duplicate publisher "${publisher.name}"` });
      seen.add(publisher.name);
    });
  })
  .default({ admission: ADMISSION_DEFAULTS, publishers: [] });

const members = z.array(z.string().regex(ROLE_MEMBER, 'must be user:NAME or group:NAME')).default([]);

export const adminSchema = z
  .strictObject({
    /** Who holds each admin role. Nobody holds one by default: catalog changes are refused until roles are given. */
    roles: z
      .strictObject({
        publisher: members,
        approver: members,
        auditor: members,
        admin: members,
      })
      .default({ publisher: [], approver: [], auditor: [], admin: [] }),
  })
  .default({ roles: { publisher: [], approver: [], auditor: [], admin: [] } });

export type CatalogConfig = z.output<typeof catalogSchema>;
export type AdmissionConfig = CatalogConfig['admission'];
export type AdminConfig = z.output<typeof adminSchema>;
