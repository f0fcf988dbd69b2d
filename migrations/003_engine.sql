-- 003: what the engine needs to find open work in time proportional to the
-- open work, not to the ledger's history.
--
-- ledger.heads already holds the latest seq of every id (the insert trigger
-- keeps it). It now also keeps the latest version's entity_type, status and
-- metadata.schedule, so "requests still scheduled", "active policies" and
-- "recurring functions" are partial-index lookups on heads: a request
-- leaves the index when its next version (status complete or error) is
-- appended. Heads are readable by the serving and guest roles under a
-- row-level policy (own tenant, or a system principal); the views below
-- join them to the spans, whose own RLS then applies.

ALTER TABLE ledger.heads
  ADD COLUMN IF NOT EXISTS entity_type text,
  ADD COLUMN IF NOT EXISTS status      text,
  ADD COLUMN IF NOT EXISTS schedule    text;

UPDATE ledger.heads h
   SET entity_type = ur.entity_type, status = ur.status, schedule = ur.metadata ->> 'schedule'
  FROM ledger.universal_registry ur
 WHERE ur.id = h.id AND ur.seq = h.seq AND h.entity_type IS NULL;

-- The trigger of 001, now also keeping entity_type, status and schedule. (No
-- SET search_path, for the cost measured in 001: every relation is named
-- with its schema.)
CREATE OR REPLACE FUNCTION ledger.before_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
  n integer;
  h ledger.heads%ROWTYPE;
BEGIN
  NEW.tx_id := pg_catalog.pg_current_xact_id();
  IF NEW.seq = 0 THEN
    INSERT INTO ledger.heads (id, seq, curr_hash, tenant_id, owner_id, entity_type, status, schedule)
    VALUES (NEW.id, 0, NEW.curr_hash, NEW.tenant_id, NEW.owner_id, NEW.entity_type, NEW.status, NEW.metadata ->> 'schedule')
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
         entity_type = NEW.entity_type, status = NEW.status, schedule = NEW.metadata ->> 'schedule'
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

CREATE INDEX IF NOT EXISTS heads_open_requests ON ledger.heads (tenant_id)
  WHERE entity_type = 'request' AND status = 'scheduled';
CREATE INDEX IF NOT EXISTS heads_active_policies ON ledger.heads (tenant_id)
  WHERE entity_type = 'policy' AND status = 'active';
CREATE INDEX IF NOT EXISTS heads_recurring ON ledger.heads (tenant_id)
  WHERE entity_type = 'function' AND status = 'scheduled' AND schedule IS NOT NULL;
-- The tenants (a loose index scan over it lists them in O(tenants)).
CREATE INDEX IF NOT EXISTS heads_tenant ON ledger.heads (tenant_id);
-- Cursors over everything a tenant appended (the policy agent's candidates).
CREATE INDEX IF NOT EXISTS ur_idx_tenant_tx ON ledger.universal_registry (tenant_id, tx_id, ord);

-- Not FORCEd: the owner (the insert trigger, SECURITY DEFINER) writes heads;
-- the serving and guest roles only read their tenant's rows.
ALTER TABLE ledger.heads ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS heads_select ON ledger.heads;
CREATE POLICY heads_select ON ledger.heads FOR SELECT USING (
  tenant_id = (SELECT app.current_tenant_id()) OR (SELECT app.current_kind()) = 'system'
);

CREATE OR REPLACE VIEW ledger.open_requests WITH (security_invoker = true) AS
SELECT ur.*, ur.at AS "when"
FROM ledger.heads h JOIN ledger.universal_registry ur ON ur.id = h.id AND ur.seq = h.seq
WHERE h.entity_type = 'request' AND h.status = 'scheduled';

CREATE OR REPLACE VIEW ledger.active_policies WITH (security_invoker = true) AS
SELECT ur.*, ur.at AS "when"
FROM ledger.heads h JOIN ledger.universal_registry ur ON ur.id = h.id AND ur.seq = h.seq
WHERE h.entity_type = 'policy' AND h.status = 'active';

CREATE OR REPLACE VIEW ledger.recurring_functions WITH (security_invoker = true) AS
SELECT ur.*, ur.at AS "when"
FROM ledger.heads h JOIN ledger.universal_registry ur ON ur.id = h.id AND ur.seq = h.seq
WHERE h.entity_type = 'function' AND h.status = 'scheduled' AND h.schedule IS NOT NULL;

GRANT SELECT ON ledger.heads, ledger.open_requests, ledger.active_policies, ledger.recurring_functions
  TO logline_app, logline_guest;
