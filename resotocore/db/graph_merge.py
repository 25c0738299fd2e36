"""The merge of one NDJSON batch into the SQLite graph, as set-based SQL inside one transaction.

Steps: stage raw lines → validate (first bad line wins) → split into nodes and edges → check edge
ends → walk containment edges from the batch's roots (ancestors: cloud, account, region; the
nearest node flagged ``metadata.replace``) → delete what vanished from replaced subtrees → upsert.
State of surviving nodes that the core owns (desired.clean, cleaned, event log) is kept.
"""

from __future__ import annotations

import sqlite3

from resotolib.graph import MergeResult


class MergeError(ValueError):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line


STAGE = """
CREATE TEMP TABLE IF NOT EXISTS stage_raw (n INTEGER PRIMARY KEY, line TEXT NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS stage_nodes (
    id TEXT PRIMARY KEY, n INTEGER, kind TEXT, rid TEXT, name TEXT, ctime TEXT, expires TEXT,
    is_replace INTEGER, protected INTEGER, reported TEXT, metadata TEXT
) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS stage_edges (from_id TEXT, to_id TEXT, edge_type TEXT, n INTEGER);
CREATE INDEX IF NOT EXISTS temp.stage_edges_from ON stage_edges (from_id, edge_type);
CREATE INDEX IF NOT EXISTS temp.stage_edges_to ON stage_edges (to_id, edge_type);
CREATE TEMP TABLE IF NOT EXISTS stage_walk (
    id TEXT PRIMARY KEY, cloud TEXT, account TEXT, region TEXT, replace_root TEXT
) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS stage_gone (id TEXT PRIMARY KEY) WITHOUT ROWID;
DELETE FROM stage_raw; DELETE FROM stage_nodes; DELETE FROM stage_edges; DELETE FROM stage_walk; DELETE FROM stage_gone;
"""

PROBLEM = """
SELECT n, CASE
    WHEN NOT json_valid(line) THEN 'not valid JSON'
    WHEN json_type(line) != 'object' THEN 'not a JSON object'
    WHEN json_type(line, '$.reported') IS NOT NULL THEN CASE
        WHEN json_type(line, '$.reported') != 'object' THEN 'reported must be an object'
        WHEN json_type(line, '$.id') IS NOT 'text' OR json_extract(line, '$.id') = ''
            THEN 'node id must be a non-empty string'
        WHEN json_type(line, '$.reported.kind') IS NOT 'text' THEN 'reported.kind must be a string'
        WHEN coalesce(json_type(line, '$.metadata'), 'object') != 'object' THEN 'metadata must be an object'
        END
    WHEN json_type(line, '$.from') IS NOT NULL OR json_type(line, '$.to') IS NOT NULL THEN CASE
        WHEN json_type(line, '$.from') IS NOT 'text' OR json_type(line, '$.to') IS NOT 'text'
            THEN 'edge from and to must be strings'
        WHEN coalesce(json_extract(line, '$.edge_type'), 'default') NOT IN ('default', 'delete')
            THEN 'edge_type must be default or delete'
        END
    ELSE 'neither a node (id, reported) nor an edge (from, to)'
END AS problem
FROM stage_raw WHERE problem IS NOT NULL ORDER BY n LIMIT 1
"""

SPLIT_NODES = """
INSERT INTO stage_nodes (id, n, kind, rid, name, ctime, expires, is_replace, protected, reported, metadata)
WITH parts AS MATERIALIZED (
    SELECT n, json_extract(line, '$.id') AS id, json_extract(line, '$.reported') AS r,
        coalesce(json_extract(line, '$.metadata'), '{}') AS m
    FROM stage_raw WHERE json_type(line, '$.reported') = 'object'
)
SELECT id, n, json_extract(r, '$.kind'), CAST(json_extract(r, '$.id') AS TEXT),
    CAST(json_extract(r, '$.name') AS TEXT), CAST(json_extract(r, '$.ctime') AS TEXT),
    CASE WHEN instr(r, 'xpir') THEN resoto_expires(
        json_extract(r, '$.tags."resoto:expires"'),
        json_extract(r, '$.tags."resoto:expiration"'),
        json_extract(r, '$.tags.expiration'),
        json_extract(r, '$.ctime')) END,
    CASE WHEN instr(m, 'replace') THEN coalesce(json_extract(m, '$.replace') IS 1, 0) ELSE 0 END,
    CASE WHEN instr(m, 'protected') THEN coalesce(json_extract(m, '$.protected') IS 1, 0) ELSE 0 END,
    r,
    CASE WHEN m = '{}' THEN m ELSE json_remove(m,
        '$.replace', '$.expires', '$.protected', '$.cleaned', '$.clean_reason', '$.event_log', '$.ancestors') END
FROM parts ORDER BY n
"""

DUPLICATE = """
SELECT n, id FROM (
    SELECT n, json_extract(line, '$.id') AS id,
        row_number() OVER (PARTITION BY json_extract(line, '$.id') ORDER BY n) AS k
    FROM stage_raw WHERE json_type(line, '$.reported') = 'object'
) WHERE k = 2 ORDER BY n LIMIT 1
"""

SPLIT_EDGES = """
INSERT INTO stage_edges (from_id, to_id, edge_type, n)
SELECT json_extract(line, '$.from'), json_extract(line, '$.to'),
    coalesce(json_extract(line, '$.edge_type'), 'default'), n
FROM stage_raw WHERE json_type(line, '$.reported') IS NULL
"""

DANGLING = """
SELECT e.n, CASE WHEN f.id IS NULL AND fn.id IS NULL THEN e.from_id ELSE e.to_id END FROM stage_edges e
LEFT JOIN stage_nodes f ON f.id = e.from_id LEFT JOIN nodes fn ON fn.graph = ?1 AND fn.id = e.from_id
LEFT JOIN stage_nodes t ON t.id = e.to_id LEFT JOIN nodes tn ON tn.graph = ?1 AND tn.id = e.to_id
WHERE (f.id IS NULL AND fn.id IS NULL) OR (t.id IS NULL AND tn.id IS NULL)
ORDER BY e.n LIMIT 1
"""

WALK = """
INSERT INTO stage_walk (id, cloud, account, region, replace_root)
WITH RECURSIVE walk(id, cloud, account, region, replace_root, depth) AS (
    SELECT s.id,
        CASE WHEN s.kind = 'cloud' THEN s.rid ELSE n.cloud END,
        CASE WHEN s.kind = 'account' THEN s.rid ELSE n.account END,
        CASE WHEN s.kind = 'region' THEN s.rid ELSE n.region END,
        CASE WHEN s.is_replace THEN s.id ELSE n.replace_root END,
        0
    FROM stage_nodes s LEFT JOIN nodes n ON n.graph = ?1 AND n.id = s.id
    WHERE NOT EXISTS (SELECT 1 FROM stage_edges e WHERE e.to_id = s.id AND e.edge_type = 'default')
    UNION ALL
    SELECT c.id,
        CASE WHEN c.kind = 'cloud' THEN c.rid ELSE w.cloud END,
        CASE WHEN c.kind = 'account' THEN c.rid ELSE w.account END,
        CASE WHEN c.kind = 'region' THEN c.rid ELSE w.region END,
        CASE WHEN c.is_replace THEN c.id ELSE w.replace_root END,
        w.depth + 1
    FROM walk w
    JOIN stage_edges e ON e.from_id = w.id AND e.edge_type = 'default'
    JOIN stage_nodes c ON c.id = e.to_id
    WHERE w.depth < 64
)
SELECT id, max(cloud), max(account), max(region), max(replace_root) FROM walk GROUP BY id
"""

GONE = """
INSERT INTO stage_gone (id)
SELECT n.id FROM nodes n
WHERE n.graph = ?1 AND n.replace_root IN (SELECT id FROM stage_nodes WHERE is_replace)
AND NOT EXISTS (SELECT 1 FROM stage_nodes s WHERE s.id = n.id)
"""

DELETE_EDGES = """
DELETE FROM edges WHERE graph = ?1 AND (
    from_id IN (SELECT id FROM stage_gone) OR to_id IN (SELECT id FROM stage_gone)
    OR from_id IN (SELECT id FROM stage_walk WHERE replace_root IS NOT NULL))
"""

UPSERT = """
INSERT INTO nodes (graph, id, kind, cloud, account, region, name, ctime, expires, protected, replace_root,
    reported, metadata)
SELECT ?1, s.id, s.kind, w.cloud, w.account, w.region, s.name, s.ctime, s.expires, s.protected, w.replace_root,
    s.reported, s.metadata
FROM stage_nodes s LEFT JOIN stage_walk w ON w.id = s.id WHERE true
ON CONFLICT (graph, id) DO UPDATE SET
    kind = excluded.kind, cloud = excluded.cloud, account = excluded.account, region = excluded.region,
    name = excluded.name, ctime = excluded.ctime, expires = excluded.expires, protected = excluded.protected,
    replace_root = excluded.replace_root, reported = excluded.reported, metadata = excluded.metadata
WHERE nodes.reported IS NOT excluded.reported OR nodes.metadata IS NOT excluded.metadata
    OR nodes.protected IS NOT excluded.protected OR nodes.expires IS NOT excluded.expires
    OR nodes.cloud IS NOT excluded.cloud OR nodes.account IS NOT excluded.account
    OR nodes.region IS NOT excluded.region OR nodes.replace_root IS NOT excluded.replace_root
"""

INSERT_EDGES = """
INSERT OR IGNORE INTO edges (graph, from_id, to_id, edge_type) SELECT ?1, from_id, to_id, edge_type FROM stage_edges
"""

CREATED = (
    "SELECT count(*) FROM stage_nodes s WHERE NOT EXISTS (SELECT 1 FROM nodes n WHERE n.graph = ?1 AND n.id = s.id)"
)


def begin_merge(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    for statement in STAGE.split(";"):
        if statement.strip():
            db.execute(statement)


def stage_lines(db: sqlite3.Connection, lines: list[tuple[int, str]]) -> None:
    db.executemany("INSERT INTO stage_raw (n, line) VALUES (?, ?)", lines)


def apply_merge(db: sqlite3.Connection, graph: str) -> MergeResult:
    """Validate and apply the staged batch, then commit; raises MergeError (the caller rolls back)."""
    if (problem := db.execute(PROBLEM).fetchone()) is not None:
        raise MergeError(problem[0], problem[1])
    try:
        db.execute(SPLIT_NODES)
    except sqlite3.IntegrityError:
        number, node = db.execute(DUPLICATE).fetchone()
        raise MergeError(number, f"duplicate node id {node!r}") from None
    db.execute(SPLIT_EDGES)
    if (dangling := db.execute(DANGLING, (graph,)).fetchone()) is not None:
        raise MergeError(dangling[0], f"edge refers to unknown node {dangling[1]!r}")
    db.execute(WALK, (graph,))
    db.execute(GONE, (graph,))
    (staged,) = db.execute("SELECT count(*) FROM stage_nodes").fetchone()
    (created,) = db.execute(CREATED, (graph,)).fetchone()
    deleted = db.execute("DELETE FROM nodes WHERE graph = ? AND id IN (SELECT id FROM stage_gone)", (graph,)).rowcount
    db.execute(DELETE_EDGES, (graph,))
    changed = db.execute(UPSERT, (graph,)).rowcount
    db.execute(INSERT_EDGES, (graph,))
    for table in ("stage_raw", "stage_nodes", "stage_edges", "stage_walk", "stage_gone"):
        db.execute(f"DELETE FROM {table}")
    db.execute("COMMIT")
    updated = changed - created
    return MergeResult(created=created, updated=updated, deleted=deleted, unchanged=staged - created - updated)
