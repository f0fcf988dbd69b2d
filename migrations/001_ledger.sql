-- 001: the span ledger. The seed's schema (Bluebook §1) with the fixes of the contract (RATIONALE.md §8):
-- ids-only NOTIFY, TRUNCATE blocked, seq = latest+1 enforced, forks impossible,
-- a service principal per tenant, a latest-version view, FORCE ROW LEVEL SECURITY,
-- and a serving role that is neither superuser, owner nor BYPASSRLS.

CREATE SCHEMA IF NOT EXISTS app;
CREATE SCHEMA IF NOT EXISTS ledger;

-- The serving role. Roles are cluster-wide, so several databases (tests, or
-- several installations on one server) share it; creating it races, hence the
-- exception handler.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'logline_app') THEN
    BEGIN
      CREATE ROLE logline_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END IF;
  -- The login that runs the host must be able to SET ROLE to it.
  IF NOT pg_has_role(current_user, 'logline_app', 'MEMBER') THEN
    EXECUTE format('GRANT logline_app TO %I', current_user);
  END IF;
END $$;

-- Principal accessors for RLS. The host sets these with set_config(..., true)
-- at the start of every transaction; an empty setting means "none".
CREATE OR REPLACE FUNCTION app.current_user_id() RETURNS text
LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('app.user_id', true), '') $$;

CREATE OR REPLACE FUNCTION app.current_tenant_id() RETURNS text
LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('app.tenant_id', true), '') $$;

-- 'user' (a person, via a token or the CLI), 'service' (a tenant's kernels),
-- 'system' (the host reading across tenants: verify, engine discovery). Only
-- the host sets it; nothing a guest runs can (guest SQL is host-wrapped).
CREATE OR REPLACE FUNCTION app.current_kind() RETURNS text
LANGUAGE sql STABLE AS $$ SELECT coalesce(nullif(current_setting('app.kind', true), ''), 'none') $$;

CREATE TABLE IF NOT EXISTS ledger.universal_registry (
  id            uuid        NOT NULL,
  seq           integer     NOT NULL,
  entity_type   text        NOT NULL,
  who           text        NOT NULL,
  did           text,
  "this"        text        NOT NULL,
  at            timestamptz NOT NULL,

  parent_id     uuid,
  related_to    uuid[],

  owner_id      text        NOT NULL,
  tenant_id     text        NOT NULL,
  visibility    text        NOT NULL DEFAULT 'private',

  status        text,
  is_deleted    boolean     NOT NULL DEFAULT false,

  name          text,
  description   text,
  code          text,
  language      text,
  runtime       text,
  input         jsonb,
  output        jsonb,
  error         jsonb,

  duration_ms   integer,
  trace_id      text,

  prev_hash     text,
  curr_hash     text        NOT NULL,
  signature     text,
  public_key    text,

  metadata      jsonb,

  -- Storage-only columns, not part of a span or its hash. (tx_id, ord) is the
  -- commit-safe cursor: readers only return rows whose transaction is older
  -- than every transaction still running, so a row that commits late can
  -- never land behind a cursor that has already moved past it.
  tx_id         xid8        NOT NULL,
  ord           bigint      GENERATED ALWAYS AS IDENTITY,

  PRIMARY KEY (id, seq),
  CONSTRAINT ck_visibility CHECK (visibility IN ('private', 'tenant', 'public')),
  CONSTRAINT ck_seq CHECK (seq >= 0),
  CONSTRAINT ck_chain CHECK ((seq = 0) = (prev_hash IS NULL)),
  CONSTRAINT ck_curr_hash CHECK (curr_hash ~ '^[0-9a-f]{64}$'),
  CONSTRAINT ck_prev_hash CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
  CONSTRAINT ck_signature CHECK ((signature IS NULL) = (public_key IS NULL)),
  -- Forks are impossible: one row per (id, seq) (the key), one successor per
  -- version, and no two spans with one hash.
  CONSTRAINT ur_successor_key UNIQUE (id, prev_hash),
  CONSTRAINT ur_curr_hash_key UNIQUE (curr_hash)
);

CREATE INDEX IF NOT EXISTS ur_idx_cursor ON ledger.universal_registry (tx_id, ord);
CREATE INDEX IF NOT EXISTS ur_idx_tenant_cursor ON ledger.universal_registry (tenant_id, tx_id, ord);
CREATE INDEX IF NOT EXISTS ur_idx_tenant_entity ON ledger.universal_registry (tenant_id, entity_type, tx_id, ord);
CREATE INDEX IF NOT EXISTS ur_idx_at ON ledger.universal_registry (at);
CREATE INDEX IF NOT EXISTS ur_idx_trace ON ledger.universal_registry (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS ur_idx_parent ON ledger.universal_registry (parent_id) WHERE parent_id IS NOT NULL;

-- The head (latest seq and hash) of every id. Written only by the insert
-- trigger, never readable by the serving role. Its row lock serialises
-- concurrent appenders of one id, which is what makes seq = latest+1 and the
-- prev_hash chain race-free without scanning history.
CREATE TABLE IF NOT EXISTS ledger.heads (
  id        uuid    PRIMARY KEY,
  seq       integer NOT NULL,
  curr_hash text    NOT NULL,
  tenant_id text    NOT NULL,
  owner_id  text    NOT NULL
);
REVOKE ALL ON ledger.heads FROM PUBLIC;

-- Error codes (SQLSTATE class LL) that host/ledger maps to typed errors:
--   LL001 seq is not latest+1 for its id
--   LL002 prev_hash does not match the previous version's curr_hash
--   LL003 a new version changes tenant_id or owner_id
--   LL004 UPDATE, DELETE or TRUNCATE on the append-only ledger
-- SECURITY DEFINER so it can write ledger.heads, which the serving role cannot
-- touch. It names every relation with its schema instead of pinning
-- search_path with SET: a SET clause costs a GUC save/restore on every call,
-- which measured as 60 µs of a 160 µs insert.
CREATE OR REPLACE FUNCTION ledger.before_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
  n integer;
  h ledger.heads%ROWTYPE;
BEGIN
  NEW.tx_id := pg_catalog.pg_current_xact_id();
  IF NEW.seq = 0 THEN
    INSERT INTO ledger.heads (id, seq, curr_hash, tenant_id, owner_id)
    VALUES (NEW.id, 0, NEW.curr_hash, NEW.tenant_id, NEW.owner_id)
    ON CONFLICT (id) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
      RAISE EXCEPTION 'span % seq 0: the id already exists; a new version needs seq = latest+1', NEW.id
        USING ERRCODE = 'LL001';
    END IF;
    RETURN NEW;
  END IF;

  UPDATE ledger.heads
     SET seq = NEW.seq, curr_hash = NEW.curr_hash
   WHERE id = NEW.id AND seq = NEW.seq - 1 AND curr_hash = NEW.prev_hash
     AND tenant_id = NEW.tenant_id AND owner_id = NEW.owner_id;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n = 1 THEN
    RETURN NEW;
  END IF;

  -- Say precisely what was wrong, without revealing another tenant's id.
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

CREATE OR REPLACE FUNCTION ledger.forbid_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger.universal_registry is append-only: % is not allowed', TG_OP
    USING ERRCODE = 'LL004';
END $$;

-- NOTIFY carries ids only: a row can be megabytes (wasm modules) and
-- pg_notify fails above 8000 bytes, which would fail the INSERT itself.
CREATE OR REPLACE FUNCTION ledger.notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('logline_spans', NEW.id::text || '/' || NEW.seq::text);
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS ur_before_insert ON ledger.universal_registry;
CREATE TRIGGER ur_before_insert BEFORE INSERT ON ledger.universal_registry
  FOR EACH ROW EXECUTE FUNCTION ledger.before_insert();

-- Statement-level, so it fires even when RLS leaves no row to touch.
DROP TRIGGER IF EXISTS ur_no_change ON ledger.universal_registry;
CREATE TRIGGER ur_no_change BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger.universal_registry
  FOR EACH STATEMENT EXECUTE FUNCTION ledger.forbid_change();

DROP TRIGGER IF EXISTS ur_notify_insert ON ledger.universal_registry;
CREATE TRIGGER ur_notify_insert AFTER INSERT ON ledger.universal_registry
  FOR EACH ROW EXECUTE FUNCTION ledger.notify_insert();

-- Row-level security, forced so that it binds the table owner too.
ALTER TABLE ledger.universal_registry ENABLE ROW LEVEL SECURITY;
ALTER TABLE ledger.universal_registry FORCE ROW LEVEL SECURITY;

-- Read: public spans; in one's own tenant, tenant-visible spans and one's own
-- private spans (a tenant's service principal reads all of its tenant);
-- the system principal reads everything. The accessors are wrapped in
-- sub-selects so they are evaluated once per statement, not once per row.
DROP POLICY IF EXISTS ur_select ON ledger.universal_registry;
CREATE POLICY ur_select ON ledger.universal_registry FOR SELECT USING (
  visibility = 'public'
  OR (tenant_id = (SELECT app.current_tenant_id())
      AND (visibility = 'tenant'
           OR owner_id = (SELECT app.current_user_id())
           OR (SELECT app.current_kind()) = 'service'))
  OR (SELECT app.current_kind()) = 'system'
);

-- Write: only into one's own tenant; users only as themselves, a tenant's
-- service principal on behalf of any owner in that tenant. The system
-- principal is read-only.
DROP POLICY IF EXISTS ur_insert ON ledger.universal_registry;
CREATE POLICY ur_insert ON ledger.universal_registry FOR INSERT WITH CHECK (
  tenant_id = app.current_tenant_id()
  AND (app.current_kind() = 'user' AND owner_id = app.current_user_id()
       OR app.current_kind() = 'service')
);

-- Views run with the caller's rights (security_invoker), so RLS applies.
CREATE OR REPLACE VIEW ledger.visible_timeline WITH (security_invoker = true) AS
SELECT ur.*, ur.at AS "when"
FROM ledger.universal_registry ur
WHERE ur.is_deleted = false;

-- The latest version of every id the caller may read.
CREATE OR REPLACE VIEW ledger.latest WITH (security_invoker = true) AS
SELECT ur.*
FROM ledger.universal_registry ur
WHERE NOT EXISTS (
  SELECT 1 FROM ledger.universal_registry n WHERE n.id = ur.id AND n.seq = ur.seq + 1
);

GRANT USAGE ON SCHEMA app, ledger TO logline_app;
GRANT SELECT, INSERT ON ledger.universal_registry TO logline_app;
GRANT SELECT ON ledger.visible_timeline, ledger.latest TO logline_app;
