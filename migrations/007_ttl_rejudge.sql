-- 007: spans with a TTL are judged again at expiry (guests/kernels/
-- policy_agent.js): the policy agent asks "which spans of this tenant
-- expired since I last looked?" on every pass, in time proportional to the
-- answer, never to the ledger's history.
--
-- The expiry is kept where 003 keeps open work: on ledger.heads, as a plain
-- column with a partial index. An index over the spans themselves (an
-- expression over metadata, or (tenant_id, at) WHERE metadata ? 'ttl_minutes')
-- cannot serve the window: guest SQL runs under row-level security, and
-- Postgres uses a condition as an index condition ahead of the RLS policy
-- only when every function in it is leakproof — jsonb operators and casts
-- are not, so a range over at + ttl_minutes became a filter over every TTL
-- span of the tenant. A comparison of a plain timestamptz column is
-- leakproof, so on heads the window is an index range.
--
-- heads.expires_at is the latest version's at + metadata.ttl_minutes when
-- that is a positive JSON number (at most 10^8 minutes, expiring before
-- the year 10000), else NULL. A trigger of its own keeps it, fired only by
-- rows that carry the key (WHEN: no function call for any other row), after
-- ledger.before_insert (triggers fire in name order) has made or moved the
-- head. A later version without the key leaves the earlier expiry in place;
-- the agent reads the head's version and ignores a version without a TTL.

ALTER TABLE ledger.heads ADD COLUMN IF NOT EXISTS expires_at timestamptz;

-- (No SET search_path, as in 001: every relation is named with its schema.)
CREATE OR REPLACE FUNCTION ledger.before_insert_ttl() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
  ttl numeric;
  expires timestamptz;
BEGIN
  IF pg_catalog.jsonb_typeof(NEW.metadata -> 'ttl_minutes') = 'number' THEN
    ttl := (NEW.metadata -> 'ttl_minutes')::numeric;
    IF ttl > 0 AND ttl <= 100000000 THEN
      expires := NEW.at + (NEW.metadata ->> 'ttl_minutes')::float8 * interval '1 minute';
      IF expires >= '10000-01-01T00:00:00Z'::timestamptz THEN
        expires := NULL;
      END IF;
    END IF;
  END IF;
  UPDATE ledger.heads SET expires_at = expires WHERE id = NEW.id;
  RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS ur_before_insert_ttl ON ledger.universal_registry;
CREATE TRIGGER ur_before_insert_ttl BEFORE INSERT ON ledger.universal_registry
  FOR EACH ROW WHEN (NEW.metadata ? 'ttl_minutes') EXECUTE FUNCTION ledger.before_insert_ttl();

-- The heads of spans appended before this migration.
UPDATE ledger.heads h
   SET expires_at = CASE WHEN ur.at + (ur.metadata ->> 'ttl_minutes')::float8 * interval '1 minute'
                              < '10000-01-01T00:00:00Z'::timestamptz
                         THEN ur.at + (ur.metadata ->> 'ttl_minutes')::float8 * interval '1 minute' END
  FROM ledger.universal_registry ur
 WHERE ur.id = h.id AND ur.seq = h.seq AND h.expires_at IS NULL
   AND ur.metadata ? 'ttl_minutes'
   AND CASE WHEN pg_catalog.jsonb_typeof(ur.metadata -> 'ttl_minutes') = 'number'
            THEN (ur.metadata -> 'ttl_minutes')::numeric > 0 AND (ur.metadata -> 'ttl_minutes')::numeric <= 100000000
            ELSE false END;

-- The agent's window: a tenant's expiries in order, ties by id.
CREATE INDEX IF NOT EXISTS heads_ttl_expiry ON ledger.heads (tenant_id, expires_at, id)
  WHERE expires_at IS NOT NULL;
