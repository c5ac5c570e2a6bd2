/**
 * The catalog plane's store (migration 3, docs/catalog.md): entries, their
 * approved versions, proposals, the tool drift a gateway saw, and the
 * history of every change. Written once on the engine.
 *
 * Every change goes through `apply`: one transaction that checks the entry's
 * revision (compare-and-set, so two approvers racing on two nodes cannot both
 * win), closes the proposal it decides (only if still open), writes the entry
 * and its approved version, and appends the history. The service
 * (src/catalog/service.ts) decides what a change is; this file only keeps it.
 */
import type { JsonValue } from '../audit/events.ts';
import type { CatalogEntry, EntrySignature, Governance, ServerJson, ToolPin } from '../catalog/types.ts';
import type { Int } from './identity-rows.ts';
import { ConflictError, type Engine, type Statements } from './sql/engine.ts';

export type ProposalKind = 'new' | 'change';
export type ProposalStatus = 'open' | 'approved' | 'rejected';

/** What a proposal would make the entry: the server.json, the governance record and the signature, as proposed. */
export interface ProposalContent {
  serverJson: ServerJson;
  governance: Governance;
  signature: EntrySignature | null;
  /** What differs from the entry in force (empty for a new entry). */
  changes: string[];
}

export interface ProposalRecord {
  id: string;
  route: string;
  kind: ProposalKind;
  status: ProposalStatus;
  content: ProposalContent;
  proposedBy: string;
  proposedAt: string;
  reason: string | null;
  decidedBy: string | null;
  decidedAt: string | null;
  decisionReason: string | null;
}

export interface VersionRecord {
  route: string;
  name: string;
  version: string;
  serverJson: ServerJson;
  approvedBy: string;
  approvedAt: string;
}

export interface DriftRecord {
  route: string;
  tool: string;
  /** The live definition's pin hash. */
  hash: string;
  kind: 'changed' | 'new';
  definition: { [key: string]: JsonValue };
  diff: string;
  detectedAt: string;
}

export interface HistoryRecord {
  seq: number;
  route: string;
  at: string;
  actor: string;
  action: string;
  reason: string | null;
  data: { [key: string]: JsonValue };
}

/** One change, applied atomically. */
export interface CatalogChange {
  /** The entry as it is to be; null changes no entry (a rejected proposal). */
  entry: CatalogEntry | null;
  /** The revision the entry must have now (null: it must not exist yet). Ignored when `entry` is null. */
  expectRevision: number | null;
  /** Record this as an approved version (served by the sub-registry API). */
  version?: VersionRecord;
  /** A new proposal to store (open). */
  propose?: ProposalRecord;
  /** Close this open proposal. */
  decide?: { id: string; status: 'approved' | 'rejected'; by: string; at: string; reason: string };
  /** Tools whose drift is settled (approved pins): their drift rows go. */
  settleDrift?: string[];
  history: Omit<HistoryRecord, 'seq'>[];
}

/** The change lost a race or is no longer possible (the entry changed, the proposal was decided): nothing was written. */
export class CatalogConflictError extends ConflictError {
  override readonly name = 'CatalogConflictError';
}

/** True once a change is written; false when it lost a race (another node made it first, or the entry moved meanwhile). */
export async function wonRace(change: Promise<unknown>): Promise<boolean> {
  try {
    await change;
    return true;
  } catch (error) {
    if (error instanceof CatalogConflictError) return false;
    throw error;
  }
}

interface EntryRow {
  route: string;
  name: string;
  version: string;
  status: string;
  source: string;
  server_json: string;
  governance: string;
  signature: string | null;
  pins: string;
  expires_at: string | null;
  revision: Int;
  created_at: string;
  updated_at: string;
  approved_by: string | null;
  approved_at: string | null;
  seal: string | null;
}

interface ProposalRow {
  id: string;
  route: string;
  kind: string;
  status: string;
  content: string;
  proposed_by: string;
  proposed_at: string;
  reason: string | null;
  decided_by: string | null;
  decided_at: string | null;
  decision_reason: string | null;
}

const ENTRY_COLUMNS =
  'route, name, version, status, source, server_json, governance, signature, pins, expires_at, revision, created_at, updated_at, approved_by, approved_at, seal';
const PROPOSAL_COLUMNS = 'id, route, kind, status, content, proposed_by, proposed_at, reason, decided_by, decided_at, decision_reason';

function toEntry(row: EntryRow): CatalogEntry {
  return {
    serverJson: JSON.parse(row.server_json) as ServerJson,
    governance: JSON.parse(row.governance) as Governance,
    signature: row.signature === null ? null : (JSON.parse(row.signature) as EntrySignature),
    pins: JSON.parse(row.pins) as ToolPin[],
    revision: Number(row.revision),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    approvedBy: row.approved_by,
    approvedAt: row.approved_at,
    seal: row.seal,
  };
}

function toProposal(row: ProposalRow): ProposalRecord {
  return {
    id: row.id,
    route: row.route,
    kind: row.kind as ProposalKind,
    status: row.status as ProposalStatus,
    content: JSON.parse(row.content) as ProposalContent,
    proposedBy: row.proposed_by,
    proposedAt: row.proposed_at,
    reason: row.reason,
    decidedBy: row.decided_by,
    decidedAt: row.decided_at,
    decisionReason: row.decision_reason,
  };
}

function entryValues(entry: CatalogEntry): (string | number | null)[] {
  const { governance: g } = entry;
  return [
    g.route,
    entry.serverJson.name,
    entry.serverJson.version,
    g.status,
    g.source,
    JSON.stringify(entry.serverJson),
    JSON.stringify(g),
    entry.signature === null ? null : JSON.stringify(entry.signature),
    JSON.stringify(entry.pins),
    g.expiresAt,
    entry.revision,
    entry.createdAt,
    entry.updatedAt,
    entry.approvedBy,
    entry.approvedAt,
    entry.seal ?? null,
  ];
}

export class SqlCatalogStore {
  private readonly engine: Engine;

  constructor(engine: Engine) {
    this.engine = engine;
  }

  async getEntry(route: string): Promise<CatalogEntry | null> {
    const row = await this.engine.get<EntryRow>('read catalog entry', `SELECT ${ENTRY_COLUMNS} FROM catalog_entries WHERE route = ?`, [route]);
    return row ? toEntry(row) : null;
  }

  /** Every entry, by route. */
  async listEntries(): Promise<CatalogEntry[]> {
    const rows = await this.engine.all<EntryRow>('list catalog entries', `SELECT ${ENTRY_COLUMNS} FROM catalog_entries ORDER BY route`);
    return rows.map(toEntry);
  }

  /** Every approved version of every route, oldest approval first. */
  async listVersions(): Promise<VersionRecord[]> {
    const rows = await this.engine.all<{ route: string; version: string; name: string; server_json: string; approved_by: string; approved_at: string }>(
      'list catalog versions',
      'SELECT route, version, name, server_json, approved_by, approved_at FROM catalog_versions ORDER BY approved_at, route, version',
    );
    return rows.map((r) => ({ route: r.route, name: r.name, version: r.version, serverJson: JSON.parse(r.server_json) as ServerJson, approvedBy: r.approved_by, approvedAt: r.approved_at }));
  }

  async getProposal(id: string): Promise<ProposalRecord | null> {
    const row = await this.engine.get<ProposalRow>('read catalog proposal', `SELECT ${PROPOSAL_COLUMNS} FROM catalog_proposals WHERE id = ?`, [id]);
    return row ? toProposal(row) : null;
  }

  /** The route's open proposal, if any. */
  async openProposal(route: string): Promise<ProposalRecord | null> {
    const row = await this.engine.get<ProposalRow>('read open catalog proposal', `SELECT ${PROPOSAL_COLUMNS} FROM catalog_proposals WHERE route = ? AND status = 'open'`, [route]);
    return row ? toProposal(row) : null;
  }

  /** Proposals, newest first; of one route if given. */
  async listProposals(route?: string): Promise<ProposalRecord[]> {
    const rows = route === undefined
      ? await this.engine.all<ProposalRow>('list catalog proposals', `SELECT ${PROPOSAL_COLUMNS} FROM catalog_proposals ORDER BY proposed_at DESC, id`)
      : await this.engine.all<ProposalRow>('list catalog proposals', `SELECT ${PROPOSAL_COLUMNS} FROM catalog_proposals WHERE route = ? ORDER BY proposed_at DESC, id`, [route]);
    return rows.map(toProposal);
  }

  /** The history of one route, oldest first. */
  async history(route: string): Promise<HistoryRecord[]> {
    const rows = await this.engine.all<{ seq: Int; route: string; at: string; actor: string; action: string; reason: string | null; data: string }>(
      'read catalog history',
      'SELECT seq, route, at, actor, action, reason, data FROM catalog_history WHERE route = ? ORDER BY seq',
      [route],
    );
    return rows.map((r) => ({ seq: Number(r.seq), route: r.route, at: r.at, actor: r.actor, action: r.action, reason: r.reason, data: JSON.parse(r.data) as HistoryRecord['data'] }));
  }

  /** The newest history seq (0 when the catalog never changed): a node polls it to learn of changes made elsewhere. */
  async lastChange(): Promise<number> {
    const row = await this.engine.get<{ n: Int | null }>('read catalog change', 'SELECT max(seq) AS n FROM catalog_history');
    return Number(row?.n ?? 0);
  }

  /** The quarantined tools of a route, by name. */
  async listDrift(route: string): Promise<DriftRecord[]> {
    const rows = await this.engine.all<{ route: string; tool: string; hash: string; kind: string; definition: string; diff: string; detected_at: string }>(
      'read tool drift',
      'SELECT route, tool, hash, kind, definition, diff, detected_at FROM catalog_drift WHERE route = ? ORDER BY tool',
      [route],
    );
    return rows.map((r) => ({ route: r.route, tool: r.tool, hash: r.hash, kind: r.kind as DriftRecord['kind'], definition: JSON.parse(r.definition) as DriftRecord['definition'], diff: r.diff, detectedAt: r.detected_at }));
  }

  /**
   * Records what a gateway saw: each tool's live definition, replacing what
   * was kept for it. True when something new was kept (a tool not reported
   * before, or a definition changed again), so callers report drift once.
   */
  async noteDrift(drift: DriftRecord): Promise<boolean> {
    const changed = await this.engine.run(
      'record tool drift',
      `INSERT INTO catalog_drift (route, tool, hash, kind, definition, diff, detected_at) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (route, tool) DO UPDATE SET hash = excluded.hash, kind = excluded.kind, definition = excluded.definition,
         diff = excluded.diff, detected_at = excluded.detected_at
       WHERE catalog_drift.hash <> excluded.hash`,
      [drift.route, drift.tool, drift.hash, drift.kind, JSON.stringify(drift.definition), drift.diff, drift.detectedAt],
    );
    return changed === 1;
  }

  /** Forgets a tool's kept drift: its live definition is the reviewed one again. */
  async clearDrift(route: string, tool: string): Promise<void> {
    await this.engine.run('clear tool drift', 'DELETE FROM catalog_drift WHERE route = ? AND tool = ?', [route, tool]);
  }

  /** Applies one change atomically; CatalogConflictError if the entry or the proposal moved meanwhile. */
  async apply(change: CatalogChange): Promise<void> {
    await this.engine.transaction('change catalog', async (tx) => {
      if (change.decide !== undefined) {
        const { id, status, by, at, reason } = change.decide;
        const closed = await tx.run(
          "UPDATE catalog_proposals SET status = ?, decided_by = ?, decided_at = ?, decision_reason = ? WHERE id = ? AND status = 'open'",
          [status, by, at, reason, id],
        );
        if (closed !== 1) throw new CatalogConflictError(`proposal ${id} is no longer open`);
      }
      if (change.propose !== undefined) await this.insertProposal(tx, change.propose);
      if (change.entry !== null) await this.writeEntry(tx, change.entry, change.expectRevision);
      if (change.version !== undefined) {
        const v = change.version;
        await tx.run(
          `INSERT INTO catalog_versions (route, version, name, server_json, approved_by, approved_at) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (route, version) DO UPDATE SET name = excluded.name, server_json = excluded.server_json,
             approved_by = excluded.approved_by, approved_at = excluded.approved_at`,
          [v.route, v.version, v.name, JSON.stringify(v.serverJson), v.approvedBy, v.approvedAt],
        );
      }
      const route = change.entry?.governance.route ?? change.propose?.route;
      for (const tool of change.settleDrift ?? []) {
        if (route !== undefined) await tx.run('DELETE FROM catalog_drift WHERE route = ? AND tool = ?', [route, tool]);
      }
      for (const item of change.history) {
        await tx.run('INSERT INTO catalog_history (route, at, actor, action, reason, data) VALUES (?, ?, ?, ?, ?, ?)', [
          item.route,
          item.at,
          item.actor,
          item.action,
          item.reason,
          JSON.stringify(item.data),
        ]);
      }
    });
  }

  private async insertProposal(tx: Statements, p: ProposalRecord): Promise<void> {
    const existing = await tx.get<{ id: string }>("SELECT id FROM catalog_proposals WHERE route = ? AND status = 'open'", [p.route]);
    if (existing) throw new CatalogConflictError(`proposal ${existing.id} for "${p.route}" is still open: approve or reject it first`);
    await tx.run(`INSERT INTO catalog_proposals (${PROPOSAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
      p.id,
      p.route,
      p.kind,
      p.status,
      JSON.stringify(p.content),
      p.proposedBy,
      p.proposedAt,
      p.reason,
      p.decidedBy,
      p.decidedAt,
      p.decisionReason,
    ]);
  }

  private async writeEntry(tx: Statements, entry: CatalogEntry, expectRevision: number | null): Promise<void> {
    const values = entryValues(entry);
    if (expectRevision === null) {
      const inserted = await tx.run(`INSERT INTO catalog_entries (${ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (route) DO NOTHING`, values);
      if (inserted !== 1) throw new CatalogConflictError(`a server "${entry.governance.route}" already exists`);
      return;
    }
    const [route, ...rest] = values;
    const updated = await tx.run(
      `UPDATE catalog_entries SET name = ?, version = ?, status = ?, source = ?, server_json = ?, governance = ?, signature = ?, pins = ?,
         expires_at = ?, revision = ?, created_at = ?, updated_at = ?, approved_by = ?, approved_at = ?, seal = ?
       WHERE route = ? AND revision = ?`,
      [...rest, route ?? null, expectRevision],
    );
    if (updated !== 1) throw new CatalogConflictError(`server "${entry.governance.route}" changed meanwhile; look again and retry`);
  }
}
