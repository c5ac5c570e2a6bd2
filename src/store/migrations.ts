/**
 * Versioned schema migrations, one SQL script per dialect. Versions only ever
 * grow: never edit a released migration, add the next one. Each store applies
 * them in order, one transaction per migration, under a lock (PostgreSQL:
 * advisory lock; SQLite: BEGIN IMMEDIATE), re-checking `schema_migrations`
 * inside the lock so concurrent starts apply each version exactly once.
 */

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
];
