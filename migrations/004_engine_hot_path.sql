-- 004: the engine's hot path in time proportional to a pass, not to the
-- backlog.
--
-- ledger.heads also keeps the latest version's ord (its position in commit
-- order), so a tenant's oldest open requests are the first entries of one
-- partial index: the request worker used to join and sort every open
-- request of the tenant to take the oldest few (with a backlog of thousands,
-- most of a pass's SQL time). The identity column's value is already set
-- when the BEFORE trigger runs.

ALTER TABLE ledger.heads ADD COLUMN IF NOT EXISTS ord bigint;

UPDATE ledger.heads h
   SET ord = ur.ord
  FROM ledger.universal_registry ur
 WHERE ur.id = h.id AND ur.seq = h.seq AND h.ord IS NULL;

-- The trigger of 003, now also keeping ord.
CREATE OR REPLACE FUNCTION ledger.before_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
  n integer;
  h ledger.heads%ROWTYPE;
BEGIN
  NEW.tx_id := pg_catalog.pg_current_xact_id();
  IF NEW.seq = 0 THEN
    INSERT INTO ledger.heads (id, seq, curr_hash, tenant_id, owner_id, entity_type, status, schedule, ord)
    VALUES (NEW.id, 0, NEW.curr_hash, NEW.tenant_id, NEW.owner_id, NEW.entity_type, NEW.status, NEW.metadata ->> 'schedule', NEW.ord)
    ON CONFLICT (id) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
      RAISE EXCEPTION 'span % seq 0: the id already exists; a new version needs seq = latest+1', NEW.id
        USING ERRCODE = 'LL001';
    END IF;
    RETURN NEW;
  END IF;

  UPDATE ledger.heads
     SET seq = NEW.seq, curr_hash = NEW.curr_hash,
         entity_type = NEW.entity_type, status = NEW.status, schedule = NEW.metadata ->> 'schedule',
         ord = NEW.ord
   WHERE id = NEW.id AND seq = NEW.seq - 1 AND curr_hash = NEW.prev_hash
     AND tenant_id = NEW.tenant_id AND owner_id = NEW.owner_id;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n = 1 THEN
    RETURN NEW;
  END IF;

  SELECT * INTO h FROM ledger.heads WHERE id = NEW.id;
  IF NOT FOUND OR h.tenant_id <> NEW.tenant_id THEN
    RAISE EXCEPTION 'span % seq %: no earlier version of this id in tenant %', NEW.id, NEW.seq, NEW.tenant_id
      USING ERRCODE = 'LL001';
  ELSIF h.seq <> NEW.seq - 1 THEN
    RAISE EXCEPTION 'span % seq %: seq must be latest+1 (latest is %)', NEW.id, NEW.seq, h.seq
      USING ERRCODE = 'LL001';
  ELSIF h.curr_hash <> NEW.prev_hash THEN
    RAISE EXCEPTION 'span % seq %: prev_hash % does not match curr_hash % of seq %', NEW.id, NEW.seq, NEW.prev_hash, h.curr_hash, h.seq
      USING ERRCODE = 'LL002';
  ELSE
    RAISE EXCEPTION 'span % seq %: a new version must keep tenant_id and owner_id (owner is %)', NEW.id, NEW.seq, h.owner_id
      USING ERRCODE = 'LL003';
  END IF;
END $$;

CREATE INDEX IF NOT EXISTS heads_open_requests_ord ON ledger.heads (tenant_id, ord)
  WHERE entity_type = 'request' AND status = 'scheduled';
-- Superseded by heads_open_requests_ord (same rows, tenant_id its prefix).
DROP INDEX IF EXISTS ledger.heads_open_requests;

-- 003's ur_idx_tenant_tx duplicates 001's ur_idx_tenant_cursor (tenant_id,
-- tx_id, ord): every append maintained the same index twice.
DROP INDEX IF EXISTS ledger.ur_idx_tenant_tx;
