-- 009: the append path's work once per statement, not once per row.
--
-- Until now every row ran three plpgsql functions: ledger.before_insert
-- (stamp tx_id, keep ledger.heads), ledger.before_insert_ttl (the expiry of
-- 007) and ledger.notify_insert (one NOTIFY per row). A 100-span Append is
-- one INSERT of 100 rows (host/ledger/append.go), so here the same work is
-- one AFTER INSERT ... FOR EACH STATEMENT trigger over the statement's
-- transition table: one validation query, one upsert of the heads, and one
-- NOTIFY per 150 rows naming them. The rules are exactly those of 001-007:
--
--   * tx_id is the inserting transaction's: a column DEFAULT now, which the
--     serving role cannot override (it may insert every column but tx_id and
--     ord), and which the trigger checks for everyone else;
--   * seq = latest + 1 and no forks: the primary key (id, seq) admits one
--     row per version, so a concurrent appender of the same version waits
--     for the first and fails with a unique violation (mapped to
--     ErrSeqConflict); a seq n > 0 row must follow seq n-1 of its id — in
--     the same statement, or the id's head — with prev_hash equal to its
--     curr_hash, in the same tenant and owner (LL001-LL003, the messages of
--     001). A head is only moved by the statement that inserted the version
--     after it, under the primary key's guard, so reading it unlocked and
--     then upserting cannot race;
--   * heads keep the latest version's entity_type, status, schedule, ord and
--     expiry (a version without metadata.ttl_minutes leaves the earlier
--     expiry in place, as in 007).
--
-- Two of 001's unique indexes go: every append maintained them and no query
-- reads them, and the rules above already imply them. UNIQUE (id,
-- prev_hash) — one successor per version — follows from the key (id, seq)
-- and the chain rule (a successor of seq n is seq n+1, and there is one row
-- at seq n+1). UNIQUE (curr_hash) follows from the key too: the hash covers
-- the canonical span, id and seq included (host/span), so two rows with one
-- hash would be one (id, seq) twice, barring a BLAKE3 collision. The curr_hash
-- index was the costliest of the table's (a random 64-character key).

ALTER TABLE ledger.universal_registry DROP CONSTRAINT IF EXISTS ur_successor_key;
ALTER TABLE ledger.universal_registry DROP CONSTRAINT IF EXISTS ur_curr_hash_key;

-- 001's hash checks, '^[0-9a-f]{64}$', cost 8 us a row (the regex engine
-- expands the bounded repetition); these say the same — 64 characters, none
-- outside 0-9a-f — for about 1 us.
ALTER TABLE ledger.universal_registry
  DROP CONSTRAINT IF EXISTS ck_curr_hash,
  DROP CONSTRAINT IF EXISTS ck_prev_hash,
  ADD CONSTRAINT ck_curr_hash CHECK (length(curr_hash) = 64 AND curr_hash !~ '[^0-9a-f]'),
  ADD CONSTRAINT ck_prev_hash CHECK (length(prev_hash) = 64 AND prev_hash !~ '[^0-9a-f]');

ALTER TABLE ledger.universal_registry ALTER COLUMN tx_id SET DEFAULT pg_catalog.pg_current_xact_id();

REVOKE INSERT ON ledger.universal_registry FROM logline_app;
GRANT INSERT (id, seq, entity_type, who, did, "this", at, parent_id, related_to, owner_id, tenant_id, visibility,
  status, is_deleted, name, description, code, language, runtime, input, output, error, duration_ms, trace_id,
  prev_hash, curr_hash, signature, public_key, metadata) ON ledger.universal_registry TO logline_app;

-- The expiry 007 keeps: at + metadata.ttl_minutes for a positive JSON number
-- of at most 10^8 minutes expiring before the year 10000, else NULL.
CREATE OR REPLACE FUNCTION ledger.ttl_expiry(at timestamptz, metadata jsonb) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN pg_catalog.jsonb_typeof(metadata -> 'ttl_minutes') = 'number'
               AND (metadata -> 'ttl_minutes')::numeric > 0 AND (metadata -> 'ttl_minutes')::numeric <= 100000000
               AND at + (metadata ->> 'ttl_minutes')::float8 * interval '1 minute' < '10000-01-01T00:00:00Z'::timestamptz
              THEN at + (metadata ->> 'ttl_minutes')::float8 * interval '1 minute' END
$$;

-- SECURITY DEFINER so it can write ledger.heads, which the serving role
-- cannot; every relation named with its schema (no SET search_path: see
-- 001 for what that cost).
CREATE OR REPLACE FUNCTION ledger.after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
  rows bigint;
  ids bigint;
  firsts bigint;
  own boolean;
  payload text;
  moved bigint := 0;
  added bigint := 0;
  b record;
  one record;
BEGIN
  -- A single row (every single-span Append): the rule of 001 on that row,
  -- with no aggregation over the transition table.
  SELECT n.*, count(*) OVER () AS n_rows INTO one FROM new_rows n LIMIT 1;
  IF NOT FOUND THEN
    RETURN NULL;
  ELSIF one.n_rows = 1 THEN
    IF one.tx_id <> pg_catalog.pg_current_xact_id() THEN
      RAISE EXCEPTION 'span % seq %: tx_id must be the inserting transaction''s', one.id, one.seq
        USING ERRCODE = 'LL004';
    END IF;
    IF one.seq = 0 THEN
      INSERT INTO ledger.heads (id, seq, curr_hash, tenant_id, owner_id, entity_type, status, schedule, ord, expires_at)
      VALUES (one.id, 0, one.curr_hash, one.tenant_id, one.owner_id, one.entity_type, one.status, one.metadata ->> 'schedule', one.ord,
              CASE WHEN one.metadata ? 'ttl_minutes' THEN ledger.ttl_expiry(one.at, one.metadata) END)
      ON CONFLICT (id) DO NOTHING;
    ELSE
      UPDATE ledger.heads h
         SET seq = one.seq, curr_hash = one.curr_hash, entity_type = one.entity_type, status = one.status,
             schedule = one.metadata ->> 'schedule', ord = one.ord,
             expires_at = CASE WHEN one.metadata ? 'ttl_minutes' THEN ledger.ttl_expiry(one.at, one.metadata) ELSE h.expires_at END
       WHERE h.id = one.id AND h.seq = one.seq - 1 AND h.curr_hash = one.prev_hash
         AND h.tenant_id = one.tenant_id AND h.owner_id = one.owner_id;
    END IF;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved = 1 THEN
      PERFORM pg_catalog.pg_notify('logline_spans', one.id::text || '/' || one.seq::text);
      RETURN NULL;
    END IF;
    -- At fault: the general path below names why.
  END IF;

  -- Several rows: one pass for everything the common case needs.
  SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE seq = 0),
         bool_and(tx_id = pg_catalog.pg_current_xact_id()),
         CASE WHEN count(*) <= 150 THEN string_agg(id::text || '/' || seq::text, ' ' ORDER BY ord) END
    INTO rows, ids, firsts, own, payload
    FROM new_rows;

  IF own AND ids = rows AND rows > 1 THEN
    -- Each id once (every single-row INSERT, most batches): a seq 0 makes
    -- its id's head, a seq n moves a head that is exactly seq n-1 with
    -- prev_hash as its curr_hash, in the same tenant and owner. Fewer heads
    -- made or moved than rows: some row is at fault, which the query below
    -- names.
    IF firsts > 0 THEN
      INSERT INTO ledger.heads (id, seq, curr_hash, tenant_id, owner_id, entity_type, status, schedule, ord, expires_at)
      SELECT id, 0, curr_hash, tenant_id, owner_id, entity_type, status, metadata ->> 'schedule', ord,
             CASE WHEN metadata ? 'ttl_minutes' THEN ledger.ttl_expiry(at, metadata) END
        FROM new_rows WHERE seq = 0
      ON CONFLICT (id) DO NOTHING;
      GET DIAGNOSTICS added = ROW_COUNT;
    END IF;
    IF firsts < rows THEN
      UPDATE ledger.heads h
         SET seq = r.seq, curr_hash = r.curr_hash, entity_type = r.entity_type, status = r.status,
             schedule = r.metadata ->> 'schedule', ord = r.ord,
             expires_at = CASE WHEN r.metadata ? 'ttl_minutes' THEN ledger.ttl_expiry(r.at, r.metadata) ELSE h.expires_at END
        FROM new_rows r
       WHERE r.seq > 0 AND h.id = r.id AND h.seq = r.seq - 1 AND h.curr_hash = r.prev_hash
         AND h.tenant_id = r.tenant_id AND h.owner_id = r.owner_id;
      GET DIAGNOSTICS moved = ROW_COUNT;
    END IF;
  END IF;

  IF NOT own OR ids <> rows OR added + moved <> rows THEN
    -- Several versions of one id, or a row at fault: the general rule, and
    -- the first row at fault, in insertion order, named precisely without
    -- revealing another tenant's data. Rows whose head is already theirs
    -- (made or moved above, before another row failed) passed; whatever
    -- was written is undone with the statement that fails.
    SELECT r.id, r.seq, r.tenant_id, r.prev_hash, (r.tx_id = pg_catalog.pg_current_xact_id()) AS own_tx,
           coalesce(p.curr_hash, h.curr_hash) AS p_hash, coalesce(p.tenant_id, h.tenant_id) AS p_tenant,
           coalesce(p.owner_id, h.owner_id) AS p_owner, coalesce(p.seq, h.seq) AS p_seq, h.id IS NOT NULL AS has_head
      INTO b
      FROM new_rows r
      LEFT JOIN new_rows p ON r.seq > 0 AND p.id = r.id AND p.seq = r.seq - 1
      LEFT JOIN ledger.heads h ON h.id = r.id AND (r.seq = 0 OR p.id IS NULL)
     WHERE r.tx_id <> pg_catalog.pg_current_xact_id()
        OR (h.ord IS DISTINCT FROM r.ord AND r.seq = 0 AND h.id IS NOT NULL AND ids = rows)
        OR (h.ord IS DISTINCT FROM r.ord AND r.seq > 0 AND (coalesce(p.tenant_id, h.tenant_id) IS DISTINCT FROM r.tenant_id
                           OR coalesce(p.seq, h.seq) <> r.seq - 1
                           OR coalesce(p.curr_hash, h.curr_hash) <> r.prev_hash
                           OR coalesce(p.owner_id, h.owner_id) <> r.owner_id))
     ORDER BY r.ord
     LIMIT 1;
    IF FOUND THEN
      IF NOT b.own_tx THEN
        RAISE EXCEPTION 'span % seq %: tx_id must be the inserting transaction''s', b.id, b.seq
          USING ERRCODE = 'LL004';
      ELSIF b.seq = 0 THEN
        RAISE EXCEPTION 'span % seq 0: the id already exists; a new version needs seq = latest+1', b.id
          USING ERRCODE = 'LL001';
      ELSIF b.p_tenant IS NULL OR b.p_tenant <> b.tenant_id THEN
        RAISE EXCEPTION 'span % seq %: no earlier version of this id in tenant %', b.id, b.seq, b.tenant_id
          USING ERRCODE = 'LL001';
      ELSIF b.p_seq <> b.seq - 1 THEN
        RAISE EXCEPTION 'span % seq %: seq must be latest+1 (latest is %)', b.id, b.seq, b.p_seq
          USING ERRCODE = 'LL001';
      ELSIF b.p_hash <> b.prev_hash THEN
        RAISE EXCEPTION 'span % seq %: prev_hash % does not match curr_hash % of seq %', b.id, b.seq, b.prev_hash, b.p_hash, b.p_seq
          USING ERRCODE = 'LL002';
      ELSE
        RAISE EXCEPTION 'span % seq %: a new version must keep tenant_id and owner_id (owner is %)', b.id, b.seq, b.p_owner
          USING ERRCODE = 'LL003';
      END IF;
    ELSIF ids = rows THEN
      RAISE EXCEPTION 'a new version needs seq = latest+1: a head moved meanwhile' USING ERRCODE = 'LL001';
    END IF;

    -- Several versions of one id, all in order: one head per id, its latest
    -- version here. An id whose first version here is seq 0 gets a new
    -- head; the others move theirs. The expiry comes from the latest version
    -- here that carries ttl_minutes; '-infinity' (never an expiry) stands
    -- for "keep the head's".
    INSERT INTO ledger.heads AS h (id, seq, curr_hash, tenant_id, owner_id, entity_type, status, schedule, ord, expires_at)
    SELECT l.id, l.seq, l.curr_hash, l.tenant_id, l.owner_id, l.entity_type, l.status, l.metadata ->> 'schedule', l.ord,
           CASE WHEN t.id IS NOT NULL THEN t.expiry WHEN l.first = 0 THEN NULL ELSE '-infinity'::timestamptz END
      FROM (SELECT DISTINCT ON (id) *, min(seq) OVER (PARTITION BY id) AS first FROM new_rows ORDER BY id, seq DESC) l
      LEFT JOIN (SELECT DISTINCT ON (id) id, ledger.ttl_expiry(at, metadata) AS expiry
                   FROM new_rows WHERE metadata ? 'ttl_minutes' ORDER BY id, seq DESC) t ON t.id = l.id
    ON CONFLICT (id) DO UPDATE
       SET seq = EXCLUDED.seq, curr_hash = EXCLUDED.curr_hash, entity_type = EXCLUDED.entity_type,
           status = EXCLUDED.status, schedule = EXCLUDED.schedule, ord = EXCLUDED.ord,
           expires_at = CASE WHEN EXCLUDED.expires_at = '-infinity' THEN h.expires_at ELSE EXCLUDED.expires_at END
     WHERE h.seq < EXCLUDED.seq AND h.tenant_id = EXCLUDED.tenant_id AND h.owner_id = EXCLUDED.owner_id;
    GET DIAGNOSTICS moved = ROW_COUNT;
    IF moved <> ids THEN
      RAISE EXCEPTION 'a new version needs seq = latest+1: % of the statement''s ids have a head that is not their previous version',
        ids - moved USING ERRCODE = 'LL001';
    END IF;
  END IF;

  -- NOTIFY carries ids only (a row can be megabytes; pg_notify fails above
  -- 8000 bytes): "<id>/<seq>" separated by spaces, at most 150 a payload.
  IF payload IS NOT NULL THEN
    PERFORM pg_catalog.pg_notify('logline_spans', payload);
  ELSE
    FOR payload IN
      SELECT string_agg(id::text || '/' || seq::text, ' ' ORDER BY ord)
        FROM (SELECT id, seq, ord, (row_number() OVER (ORDER BY ord) - 1) / 150 AS chunk FROM new_rows) c
       GROUP BY chunk ORDER BY chunk
    LOOP
      PERFORM pg_catalog.pg_notify('logline_spans', payload);
    END LOOP;
  END IF;
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS ur_before_insert ON ledger.universal_registry;
DROP TRIGGER IF EXISTS ur_before_insert_ttl ON ledger.universal_registry;
DROP TRIGGER IF EXISTS ur_notify_insert ON ledger.universal_registry;
DROP FUNCTION IF EXISTS ledger.before_insert();
DROP FUNCTION IF EXISTS ledger.before_insert_ttl();
DROP FUNCTION IF EXISTS ledger.notify_insert();

DROP TRIGGER IF EXISTS ur_after_insert ON ledger.universal_registry;
CREATE TRIGGER ur_after_insert AFTER INSERT ON ledger.universal_registry
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION ledger.after_insert();
