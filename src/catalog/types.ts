/**
 * The catalog's data model (docs/catalog.md). An entry is a `server.json` as
 * its publisher submitted it (the MCP registry's format, kept byte-for-byte
 * in meaning: every field, `_meta` included) plus Mandate's governance
 * record: who owns it, how risky it is, until when it is approved, what
 * upstream identity and which tool definitions were reviewed.
 */
import type { UpstreamAuth } from '../config/schema.ts';
import type { JsonValue } from '../audit/events.ts';

export type JsonObject = { [key: string]: JsonValue };

/** A `server.json` (registry schema 2025-12-11): `name` and `version` are required, every other field is kept as given. */
export type ServerJson = JsonObject & { name: string; version: string };

/** The `_meta` key under which Mandate's governance record travels on export. */
export const GOVERNANCE_META_KEY = 'dev.mandate/governance';
/** The `_meta` key the registry uses for what a publisher provided (kept as submitted). */
export const PUBLISHER_META_KEY = 'io.modelcontextprotocol.registry/publisher-provided';
/** The key of the registry's own status fields in a list answer; Mandate answers with its own key instead. */
export const OFFICIAL_META_KEY = 'io.modelcontextprotocol.registry/official';

export const ENTRY_STATUSES = ['pending', 'approved', 'suspended', 'deprecated', 'retired', 'expired'] as const;
export type EntryStatus = (typeof ENTRY_STATUSES)[number];

export const RISK_CLASSES = ['low', 'medium', 'high'] as const;
export type RiskClass = (typeof RISK_CLASSES)[number];

/** What the upstream must prove it is, checked at every connection or spawn. */
export interface ExpectedIdentity {
  /** https upstreams: base64 SHA-256 of the certificate's SubjectPublicKeyInfo (any one may match). */
  spkiSha256?: string[];
  /** https upstreams: the SPIFFE ID the certificate must carry as a URI SAN (`spiffe://…`). */
  spiffeId?: string;
  /** stdio upstreams: the package that may be started. */
  package?: {
    registryType: string;
    identifier: string;
    version: string;
    /** Hex SHA-256 of the package file, when the server.json gives one. */
    fileSha256?: string;
    /** npm's `integrity` (`sha512-…`), when known. */
    integrity?: string;
    /** Set by the gateway once the package file matched: the verified tarball every session starts from (src/catalog/packages.ts). */
    tarball?: string;
    /** That tarball's hex SHA-256, checked again at each start. */
    tarballSha256?: string;
  };
}

/** One reviewed tool: the SHA-256 (hex) of the RFC 8785 form of `{name, title, description, inputSchema, outputSchema, annotations}`. */
export interface ToolPin {
  name: string;
  hash: string;
  /** The pinned definition (those six fields, absent ones left out): shown in diffs, its annotations are Cedar attributes. */
  definition: JsonObject;
}

/** Mandate's governance record of one entry. */
export interface Governance {
  /** The route name: the gateway serves the entry at `/mcp/ROUTE`; every `servers` command names it. */
  route: string;
  /** A Mandate user who answers for the entry. */
  owner: string;
  team?: string;
  contact?: string;
  tenant?: string;
  environment: string;
  risk: RiskClass;
  classification?: string;
  /** ISO 8601: the entry stops being routable at this time until renewed. Null only for `config-managed` entries. */
  expiresAt: string | null;
  status: EntryStatus;
  expectedIdentity?: ExpectedIdentity;
  /** What the gateway presents to the upstream (docs/credentials.md): a credential by reference (a secret's name, a kind), never one's value. */
  auth?: UpstreamAuth;
  /** `config-managed`: imported from mandate.yaml at start (the file is its approval); `catalog`: admitted by proposal and approval. */
  source: 'catalog' | 'config-managed';
}

/** A publisher-signed entry: a detached compact JWS (`header..signature`) over the RFC 8785 form of the server.json. */
export interface EntrySignature {
  jws: string;
  /** The publisher whose key verified it at admission. */
  publisher: string;
  /** The key's `kid`, when it has one. */
  kid?: string;
}

/** One catalog entry: the current state of a route. */
export interface CatalogEntry {
  serverJson: ServerJson;
  governance: Governance;
  signature: EntrySignature | null;
  pins: ToolPin[];
  /** Bumped by every change to the row. */
  revision: number;
  createdAt: string;
  updatedAt: string;
  /** The last approval: who, when. */
  approvedBy: string | null;
  approvedAt: string | null;
  /** Mandate's seal over what was decided (src/catalog/seal.ts); a row edited outside Mandate no longer matches it. */
  seal?: string | null;
}
