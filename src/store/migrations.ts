/**
 * Versioned schema migrations, one SQL script per dialect. Versions only ever
 * grow: never edit a released migration, add the next one. The store
 * (src/store/store.ts) applies them in order, one transaction per migration,
 * under a lock (PostgreSQL: advisory lock; SQLite: BEGIN IMMEDIATE),
 * re-checking `schema_migrations` inside the lock so concurrent starts apply
 * each version exactly once.
 */
import { SchemaError, type MigrationState, type SchemaState } from './types.ts';

export interface Migration {
  version: number;
  name: string;
  sqlite: string;
  postgres: string;
}

/** Created (if missing) inside the migration lock, before any migration runs. */
export const SCHEMA_MIGRATIONS_DDL = {
  sqlite: `CREATE TABLE IF NOT EXISTS schema_migrations (
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  applied_at TEXT NOT NULL
) STRICT`,
  postgres: `CREATE TABLE IF NOT EXISTS schema_migrations (
  version integer PRIMARY KEY,
  name text NOT NULL,
  applied_at text NOT NULL
)`,
} as const;

const REFUSED = 'audit_events is append-only';

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'audit_events',
    // seq is the rowid; times and types compare as plain text (ISO 8601 UTC).
    sqlite: `
CREATE TABLE audit_events (
  seq INTEGER PRIMARY KEY CHECK (seq > 0),
  time TEXT NOT NULL,
  type TEXT NOT NULL,
  server TEXT,
  outcome TEXT NOT NULL,
  body TEXT NOT NULL,
  prev_hash TEXT NOT NULL CHECK (length(prev_hash) = 64),
  hash TEXT NOT NULL CHECK (length(hash) = 64)
) STRICT;
CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_type ON audit_events (type);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, '${REFUSED}'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, '${REFUSED}'); END;
`,
    // COLLATE "C": byte order, so ISO times sort correctly and prefixes use the index.
    postgres: `
CREATE TABLE audit_events (
  seq bigint PRIMARY KEY CHECK (seq > 0),
  time text COLLATE "C" NOT NULL,
  type text COLLATE "C" NOT NULL,
  server text,
  outcome text NOT NULL,
  body text NOT NULL,
  prev_hash text NOT NULL CHECK (length(prev_hash) = 64),
  hash text NOT NULL CHECK (length(hash) = 64)
);
CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_type ON audit_events (type);
CREATE FUNCTION audit_events_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '${REFUSED} (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse();
`,
  },
  {
    version: 2,
    name: 'identity',
    // What the authorization server keeps (src/store/identity-types.ts). Keys,
    // uids, user codes, token and secret values are SHA-256 hashes made by the
    // caller; private keys are sealed. Times are epoch milliseconds; JSON is text.
    // Revocation seqs are AUTOINCREMENT so a purged seq is never handed out again.
    sqlite: `
CREATE TABLE oidc_artifacts (
  model TEXT NOT NULL,
  key TEXT NOT NULL,
  payload TEXT NOT NULL,
  grant_id TEXT,
  uid TEXT,
  user_code TEXT,
  consumed_at INTEGER,
  expires_at INTEGER,
  PRIMARY KEY (model, key)
) STRICT;
CREATE INDEX oidc_artifacts_grant ON oidc_artifacts (grant_id);
CREATE INDEX oidc_artifacts_uid ON oidc_artifacts (model, uid);
CREATE INDEX oidc_artifacts_user_code ON oidc_artifacts (model, user_code);
CREATE INDEX oidc_artifacts_expires ON oidc_artifacts (expires_at);
CREATE TABLE clients (
  id TEXT NOT NULL PRIMARY KEY,
  status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'rejected', 'revoked')),
  class TEXT NOT NULL CHECK (class IN ('interactive', 'machine')),
  source TEXT NOT NULL CHECK (source IN ('dcr', 'cimd', 'admin')),
  owner TEXT,
  metadata TEXT NOT NULL,
  secret_hash TEXT,
  registered_from TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  last_used_at INTEGER,
  decided_by TEXT
) STRICT;
CREATE INDEX clients_status ON clients (status);
CREATE INDEX clients_registered_from ON clients (registered_from, created_at);
CREATE TABLE registration_tokens (
  hash TEXT NOT NULL PRIMARY KEY,
  label TEXT,
  created_by TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  uses_left INTEGER NOT NULL CHECK (uses_left >= 0)
) STRICT;
CREATE TABLE users (
  name TEXT NOT NULL PRIMARY KEY,
  password_hash TEXT,
  groups TEXT NOT NULL,
  disabled INTEGER NOT NULL CHECK (disabled IN (0, 1)),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) STRICT;
CREATE TABLE consents (
  user_name TEXT NOT NULL,
  client_id TEXT NOT NULL,
  resource TEXT NOT NULL,
  scopes TEXT NOT NULL,
  granted_at INTEGER NOT NULL,
  PRIMARY KEY (user_name, client_id, resource)
) STRICT;
CREATE INDEX consents_client ON consents (client_id);
CREATE TABLE secret_keys (
  kid TEXT NOT NULL PRIMARY KEY,
  purpose TEXT NOT NULL CHECK (purpose IN ('signing', 'cookie')),
  alg TEXT NOT NULL,
  sealed TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  retired_at INTEGER,
  expires_at INTEGER
) STRICT;
CREATE TABLE revocations (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL CHECK (kind IN ('jti', 'grant', 'client', 'user', 'consent')),
  value TEXT NOT NULL,
  revoked_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX revocations_expires ON revocations (expires_at);
`,
    // COLLATE "C" on names that are listed in order, so both stores sort alike.
    postgres: `
CREATE TABLE oidc_artifacts (
  model text NOT NULL,
  key text NOT NULL,
  payload text NOT NULL,
  grant_id text,
  uid text,
  user_code text,
  consumed_at bigint,
  expires_at bigint,
  PRIMARY KEY (model, key)
);
CREATE INDEX oidc_artifacts_grant ON oidc_artifacts (grant_id);
CREATE INDEX oidc_artifacts_uid ON oidc_artifacts (model, uid);
CREATE INDEX oidc_artifacts_user_code ON oidc_artifacts (model, user_code);
CREATE INDEX oidc_artifacts_expires ON oidc_artifacts (expires_at);
CREATE TABLE clients (
  id text COLLATE "C" PRIMARY KEY,
  status text NOT NULL CHECK (status IN ('pending', 'active', 'rejected', 'revoked')),
  class text NOT NULL CHECK (class IN ('interactive', 'machine')),
  source text NOT NULL CHECK (source IN ('dcr', 'cimd', 'admin')),
  owner text,
  metadata text NOT NULL,
  secret_hash text,
  registered_from text,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL,
  last_used_at bigint,
  decided_by text
);
CREATE INDEX clients_status ON clients (status);
CREATE INDEX clients_registered_from ON clients (registered_from, created_at);
CREATE TABLE registration_tokens (
  hash text PRIMARY KEY,
  label text,
  created_by text NOT NULL,
  created_at bigint NOT NULL,
  expires_at bigint NOT NULL,
  uses_left integer NOT NULL CHECK (uses_left >= 0)
);
CREATE TABLE users (
  name text COLLATE "C" PRIMARY KEY,
  password_hash text,
  groups text NOT NULL,
  disabled boolean NOT NULL,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL
);
CREATE TABLE consents (
  user_name text COLLATE "C" NOT NULL,
  client_id text COLLATE "C" NOT NULL,
  resource text COLLATE "C" NOT NULL,
  scopes text NOT NULL,
  granted_at bigint NOT NULL,
  PRIMARY KEY (user_name, client_id, resource)
);
CREATE INDEX consents_client ON consents (client_id);
CREATE TABLE secret_keys (
  kid text COLLATE "C" PRIMARY KEY,
  purpose text NOT NULL CHECK (purpose IN ('signing', 'cookie')),
  alg text NOT NULL,
  sealed text NOT NULL,
  created_at bigint NOT NULL,
  retired_at bigint,
  expires_at bigint
);
CREATE TABLE revocations (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind text NOT NULL CHECK (kind IN ('jti', 'grant', 'client', 'user', 'consent')),
  value text NOT NULL,
  revoked_at bigint NOT NULL,
  expires_at bigint NOT NULL
);
CREATE INDEX revocations_expires ON revocations (expires_at);
`,
  },
  {
    version: 3,
    name: 'catalog',
    // The catalog (src/store/catalog.ts, docs/catalog.md). JSON is text as
    // written (a server.json keeps its key order); times are ISO 8601 UTC
    // strings, which compare as text. At most one open proposal per route.
    // Every change appends to catalog_history in the same transaction, so its
    // highest seq tells a gateway node whether anything changed since it looked.
    sqlite: `
CREATE TABLE catalog_entries (
  route TEXT NOT NULL PRIMARY KEY,
  name TEXT NOT NULL,
  version TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'suspended', 'deprecated', 'retired', 'expired')),
  source TEXT NOT NULL CHECK (source IN ('catalog', 'config-managed')),
  server_json TEXT NOT NULL,
  governance TEXT NOT NULL,
  signature TEXT,
  pins TEXT NOT NULL,
  expires_at TEXT,
  revision INTEGER NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  approved_by TEXT,
  approved_at TEXT,
  seal TEXT
) STRICT;
CREATE INDEX catalog_entries_name ON catalog_entries (name);
CREATE TABLE catalog_versions (
  route TEXT NOT NULL,
  version TEXT NOT NULL,
  name TEXT NOT NULL,
  server_json TEXT NOT NULL,
  approved_by TEXT NOT NULL,
  approved_at TEXT NOT NULL,
  PRIMARY KEY (route, version)
) STRICT;
CREATE TABLE catalog_proposals (
  id TEXT NOT NULL PRIMARY KEY,
  route TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('new', 'change')),
  status TEXT NOT NULL CHECK (status IN ('open', 'approved', 'rejected')),
  content TEXT NOT NULL,
  proposed_by TEXT NOT NULL,
  proposed_at TEXT NOT NULL,
  reason TEXT,
  decided_by TEXT,
  decided_at TEXT,
  decision_reason TEXT
) STRICT;
CREATE UNIQUE INDEX catalog_proposals_open ON catalog_proposals (route) WHERE status = 'open';
CREATE TABLE catalog_drift (
  route TEXT NOT NULL,
  tool TEXT NOT NULL,
  hash TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('changed', 'new')),
  definition TEXT NOT NULL,
  diff TEXT NOT NULL,
  detected_at TEXT NOT NULL,
  PRIMARY KEY (route, tool)
) STRICT;
CREATE TABLE catalog_history (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  route TEXT NOT NULL,
  at TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  reason TEXT,
  data TEXT NOT NULL
) STRICT;
CREATE INDEX catalog_history_route ON catalog_history (route, seq);
`,
    postgres: `
CREATE TABLE catalog_entries (
  route text COLLATE "C" PRIMARY KEY,
  name text COLLATE "C" NOT NULL,
  version text NOT NULL,
  status text NOT NULL CHECK (status IN ('pending', 'approved', 'suspended', 'deprecated', 'retired', 'expired')),
  source text NOT NULL CHECK (source IN ('catalog', 'config-managed')),
  server_json text NOT NULL,
  governance text NOT NULL,
  signature text,
  pins text NOT NULL,
  expires_at text COLLATE "C",
  revision integer NOT NULL,
  created_at text COLLATE "C" NOT NULL,
  updated_at text COLLATE "C" NOT NULL,
  approved_by text,
  approved_at text COLLATE "C",
  seal text
);
CREATE INDEX catalog_entries_name ON catalog_entries (name);
CREATE TABLE catalog_versions (
  route text COLLATE "C" NOT NULL,
  version text COLLATE "C" NOT NULL,
  name text COLLATE "C" NOT NULL,
  server_json text NOT NULL,
  approved_by text NOT NULL,
  approved_at text COLLATE "C" NOT NULL,
  PRIMARY KEY (route, version)
);
CREATE TABLE catalog_proposals (
  id text COLLATE "C" PRIMARY KEY,
  route text COLLATE "C" NOT NULL,
  kind text NOT NULL CHECK (kind IN ('new', 'change')),
  status text NOT NULL CHECK (status IN ('open', 'approved', 'rejected')),
  content text NOT NULL,
  proposed_by text NOT NULL,
  proposed_at text COLLATE "C" NOT NULL,
  reason text,
  decided_by text,
  decided_at text COLLATE "C",
  decision_reason text
);
CREATE UNIQUE INDEX catalog_proposals_open ON catalog_proposals (route) WHERE status = 'open';
CREATE TABLE catalog_drift (
  route text COLLATE "C" NOT NULL,
  tool text COLLATE "C" NOT NULL,
  hash text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('changed', 'new')),
  definition text NOT NULL,
  diff text NOT NULL,
  detected_at text COLLATE "C" NOT NULL,
  PRIMARY KEY (route, tool)
);
CREATE TABLE catalog_history (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  route text COLLATE "C" NOT NULL,
  at text COLLATE "C" NOT NULL,
  actor text NOT NULL,
  action text NOT NULL,
  reason text,
  data text NOT NULL
);
CREATE INDEX catalog_history_route ON catalog_history (route, seq);
`,
  },
  {
    version: 4,
    name: 'credentials',
    // Upstream secrets (src/store/credentials.ts, docs/credentials.md): one row
    // per version, the value sealed under its own data key and the data key
    // under the deployment secret (envelope). `retires_at` is null for the
    // current version; a rotation sets it on the one it replaces (the grace
    // period). Scope: environment and tenant, '' for any. Times are epoch ms.
    sqlite: `
CREATE TABLE secrets (
  name TEXT NOT NULL,
  environment TEXT NOT NULL,
  tenant TEXT NOT NULL,
  version INTEGER NOT NULL CHECK (version > 0),
  sealed_key TEXT NOT NULL,
  sealed_value TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  created_by TEXT NOT NULL,
  retires_at INTEGER,
  last_used_at INTEGER,
  PRIMARY KEY (name, environment, tenant, version)
) STRICT;
CREATE TABLE secret_changes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  at INTEGER NOT NULL
) STRICT;
`,
    postgres: `
CREATE TABLE secrets (
  name text COLLATE "C" NOT NULL,
  environment text COLLATE "C" NOT NULL,
  tenant text COLLATE "C" NOT NULL,
  version integer NOT NULL CHECK (version > 0),
  sealed_key text NOT NULL,
  sealed_value text NOT NULL,
  created_at bigint NOT NULL,
  created_by text NOT NULL,
  retires_at bigint,
  last_used_at bigint,
  PRIMARY KEY (name, environment, tenant, version)
);
CREATE TABLE secret_changes (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name text NOT NULL,
  at bigint NOT NULL
);
`,
  },
  {
    version: 5,
    name: 'connections',
    // Per-user upstream connections (the `oauth` kind, src/store/
    // connections.ts, docs/credentials.md): one row per user, server and
    // tenant, the upstream's tokens sealed under a data key of their own and
    // the data key under the deployment secret. `revision` grows with each
    // refresh (compare-and-set between nodes). Every change also appends to
    // secret_changes (name 'connection:SERVER'): that table's highest seq is
    // the credentials plane's one change counter. Times are epoch ms.
    sqlite: `
CREATE TABLE connections (
  user_name TEXT NOT NULL,
  server TEXT NOT NULL,
  tenant TEXT NOT NULL,
  revision INTEGER NOT NULL CHECK (revision > 0),
  sealed_key TEXT NOT NULL,
  sealed_tokens TEXT NOT NULL,
  scope TEXT NOT NULL,
  expires_at INTEGER,
  created_at INTEGER NOT NULL,
  refreshed_at INTEGER,
  last_used_at INTEGER,
  PRIMARY KEY (user_name, server, tenant)
) STRICT;
`,
    postgres: `
CREATE TABLE connections (
  user_name text COLLATE "C" NOT NULL,
  server text COLLATE "C" NOT NULL,
  tenant text COLLATE "C" NOT NULL,
  revision integer NOT NULL CHECK (revision > 0),
  sealed_key text NOT NULL,
  sealed_tokens text NOT NULL,
  scope text NOT NULL,
  expires_at bigint,
  created_at bigint NOT NULL,
  refreshed_at bigint,
  last_used_at bigint,
  PRIMARY KEY (user_name, server, tenant)
);
`,
  },
  {
    version: 6,
    name: 'breakglass',
    // Emergency access grants (src/store/breakglass.ts, docs/breakglass.md):
    // one row per grant, `tools` a JSON list ([] for every tool of the
    // server). A review is a compare-and-set on reviewed_at IS NULL. Every
    // create, close and review appends to breakglass_changes, whose highest
    // seq gateway nodes poll. Times are epoch ms.
    sqlite: `
CREATE TABLE breakglass (
  id TEXT NOT NULL PRIMARY KEY,
  user_name TEXT NOT NULL,
  opened_by TEXT NOT NULL,
  server TEXT NOT NULL,
  tools TEXT NOT NULL,
  ticket TEXT NOT NULL,
  reason TEXT NOT NULL,
  opened_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL CHECK (expires_at > opened_at),
  closed_at INTEGER,
  closed_by TEXT,
  reviewed_by TEXT,
  reviewed_at INTEGER,
  outcome TEXT CHECK (outcome IN ('justified', 'unjustified')),
  review_reason TEXT
) STRICT;
CREATE INDEX breakglass_opened ON breakglass (opened_at);
CREATE INDEX breakglass_expires ON breakglass (expires_at);
CREATE TABLE breakglass_changes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL,
  at INTEGER NOT NULL
) STRICT;
`,
    postgres: `
CREATE TABLE breakglass (
  id text COLLATE "C" PRIMARY KEY,
  user_name text COLLATE "C" NOT NULL,
  opened_by text COLLATE "C" NOT NULL,
  server text COLLATE "C" NOT NULL,
  tools text NOT NULL,
  ticket text NOT NULL,
  reason text NOT NULL,
  opened_at bigint NOT NULL,
  expires_at bigint NOT NULL CHECK (expires_at > opened_at),
  closed_at bigint,
  closed_by text,
  reviewed_by text,
  reviewed_at bigint,
  outcome text CHECK (outcome IN ('justified', 'unjustified')),
  review_reason text
);
CREATE INDEX breakglass_opened ON breakglass (opened_at);
CREATE INDEX breakglass_expires ON breakglass (expires_at);
CREATE TABLE breakglass_changes (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id text NOT NULL,
  at bigint NOT NULL
);
`,
  },
  {
    version: 7,
    name: 'approvals',
    // Approvals of single calls (src/store/approvals.ts, docs/approvals.md):
    // one row per request, bound (`binding`, a SHA-256 hex the gateway
    // computes) to the caller, client, server, tool, arguments, policy set
    // and tool pin. `args` is the canonical arguments (at most 16 KiB), shown
    // to deciders; `group_names` and `policy_ids` are JSON lists. A decision
    // (pending -> approved|denied) and a use (approved -> used) are each a
    // compare-and-set on `status` while expires_at > now. Times are epoch ms.
    sqlite: `
CREATE TABLE approvals (
  id TEXT NOT NULL PRIMARY KEY,
  binding TEXT NOT NULL,
  requester TEXT NOT NULL,
  client_id TEXT NOT NULL,
  server TEXT NOT NULL,
  tool TEXT NOT NULL,
  args_hash TEXT NOT NULL,
  args TEXT NOT NULL,
  group_names TEXT NOT NULL,
  policy_ids TEXT NOT NULL,
  policy_set TEXT NOT NULL,
  pin TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'used')),
  requested_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL CHECK (expires_at > requested_at),
  decided_by TEXT,
  decided_at INTEGER,
  reason TEXT,
  used_at INTEGER
) STRICT;
CREATE INDEX approvals_binding ON approvals (binding, requested_at);
CREATE INDEX approvals_requested ON approvals (requested_at);
CREATE INDEX approvals_status ON approvals (status, requested_at);
`,
    postgres: `
CREATE TABLE approvals (
  id text COLLATE "C" PRIMARY KEY,
  binding text COLLATE "C" NOT NULL,
  requester text COLLATE "C" NOT NULL,
  client_id text COLLATE "C" NOT NULL,
  server text COLLATE "C" NOT NULL,
  tool text NOT NULL,
  args_hash text NOT NULL,
  args text NOT NULL,
  group_names text NOT NULL,
  policy_ids text NOT NULL,
  policy_set text NOT NULL,
  pin text NOT NULL,
  status text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'used')),
  requested_at bigint NOT NULL,
  expires_at bigint NOT NULL CHECK (expires_at > requested_at),
  decided_by text,
  decided_at bigint,
  reason text,
  used_at bigint
);
CREATE INDEX approvals_binding ON approvals (binding, requested_at);
CREATE INDEX approvals_requested ON approvals (requested_at);
CREATE INDEX approvals_status ON approvals (status, requested_at);
`,
  },
  {
    version: 8,
    name: 'tasks',
    // Tasks (src/store/tasks.ts, docs/tasks.md): one row per task, `tools` a
    // JSON list ([] for every tool of the server), `client_id` null for any
    // client of the user. Ending a task (open -> closed|revoked) and expiring
    // it (open -> expired) are each a compare-and-set on `status`; every
    // create and end appends to task_changes, whose highest seq gateway nodes
    // poll. Ending a task also writes a `task` revocation, so `revocations.kind`
    // is widened: SQLite cannot alter a CHECK, so the table is rebuilt (seqs
    // kept, and its AUTOINCREMENT sequence carried over, so a purged seq is
    // still never handed out again). Times are epoch ms.
    sqlite: `
CREATE TABLE tasks (
  id TEXT NOT NULL PRIMARY KEY,
  user_name TEXT NOT NULL,
  client_id TEXT,
  purpose TEXT NOT NULL CHECK (length(purpose) BETWEEN 1 AND 1000),
  ticket TEXT CHECK (length(ticket) BETWEEN 1 AND 200),
  server TEXT NOT NULL,
  tools TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('open', 'closed', 'expired', 'revoked')),
  opened_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL CHECK (expires_at > opened_at),
  ended_at INTEGER,
  ended_by TEXT
) STRICT;
CREATE INDEX tasks_opened ON tasks (opened_at);
CREATE INDEX tasks_user ON tasks (user_name, opened_at);
CREATE INDEX tasks_status ON tasks (status, expires_at);
CREATE TABLE task_changes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL,
  at INTEGER NOT NULL
) STRICT;
CREATE TABLE revocations_new (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL CHECK (kind IN ('jti', 'grant', 'client', 'user', 'consent', 'task')),
  value TEXT NOT NULL,
  revoked_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
) STRICT;
INSERT INTO revocations_new (seq, kind, value, revoked_at, expires_at)
  SELECT seq, kind, value, revoked_at, expires_at FROM revocations ORDER BY seq;
DELETE FROM sqlite_sequence WHERE name = 'revocations_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'revocations_new', max(seq) FROM (
  SELECT seq FROM sqlite_sequence WHERE name = 'revocations'
  UNION ALL SELECT max(seq) FROM revocations_new
) HAVING max(seq) IS NOT NULL;
DROP TABLE revocations;
ALTER TABLE revocations_new RENAME TO revocations;
CREATE INDEX revocations_expires ON revocations (expires_at);
`,
    postgres: `
CREATE TABLE tasks (
  id text COLLATE "C" PRIMARY KEY,
  user_name text COLLATE "C" NOT NULL,
  client_id text COLLATE "C",
  purpose text NOT NULL CHECK (length(purpose) BETWEEN 1 AND 1000),
  ticket text CHECK (length(ticket) BETWEEN 1 AND 200),
  server text COLLATE "C" NOT NULL,
  tools text NOT NULL,
  status text NOT NULL CHECK (status IN ('open', 'closed', 'expired', 'revoked')),
  opened_at bigint NOT NULL,
  expires_at bigint NOT NULL CHECK (expires_at > opened_at),
  ended_at bigint,
  ended_by text
);
CREATE INDEX tasks_opened ON tasks (opened_at);
CREATE INDEX tasks_user ON tasks (user_name, opened_at);
CREATE INDEX tasks_status ON tasks (status, expires_at);
CREATE TABLE task_changes (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id text NOT NULL,
  at bigint NOT NULL
);
ALTER TABLE revocations
  DROP CONSTRAINT revocations_kind_check,
  ADD CONSTRAINT revocations_kind_check CHECK (kind IN ('jti', 'grant', 'client', 'user', 'consent', 'task'));
`,
  },
];

/** How the applied migrations compare with this build's. */
export function compareSchema(applied: MigrationState[]): SchemaState {
  const done = new Set(applied.map((m) => m.version));
  const known = new Set(MIGRATIONS.map((m) => m.version));
  return {
    applied,
    pending: MIGRATIONS.filter((m) => !done.has(m.version)).map(({ version, name }) => ({ version, name })),
    unknown: applied.filter((m) => !known.has(m.version)),
  };
}

/** The newest version this build knows. */
export const LATEST_VERSION = Math.max(...MIGRATIONS.map((m) => m.version));

const versionOf = (state: SchemaState): number => Math.max(0, ...state.applied.map((m) => m.version));

/** Refuses a schema a newer build migrated: this build would misread it or undo nothing it knows of. */
export function refuseNewer(state: SchemaState, description: string): void {
  if (state.unknown.length === 0) return;
  throw new SchemaError(
    `${description}: the database schema is at version ${versionOf(state)}, newer than this build of Mandate knows ` +
      `(up to ${LATEST_VERSION}: unknown ${state.unknown.map((m) => `${m.version} ${m.name}`).join(', ')}); ` +
      'run a Mandate version that knows it (nothing was changed)',
  );
}

/** Refuses a schema that is behind: only `mandate migrate` (or `mandate up`) changes the schema. */
export function refuseBehind(state: SchemaState, description: string): void {
  refuseNewer(state, description);
  if (state.pending.length === 0) return;
  throw new SchemaError(
    `${description}: the database schema is at version ${versionOf(state)} and this build needs ${LATEST_VERSION} ` +
      `(pending: ${state.pending.map((m) => `${m.version} ${m.name}`).join(', ')}); ` +
      'run `mandate migrate` first, as a role that may change the schema (nothing was changed)',
  );
}
