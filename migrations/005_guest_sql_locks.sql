-- 005: guest SQL shares no lock space and no transaction horizon.
--
-- The host's leases are session-level advisory locks (host/ledger/lock.go),
-- and advisory locks of every kind, session or transaction, share one lock
-- space: a guest that could call pg_advisory_xact_lock could hold another
-- tenant's lease keys. A guest that could assign itself a transaction id
-- (pg_current_xact_id, txid_current) would hold back the commit-ordered
-- listing horizon of every tenant for as long as its statement runs, and
-- the status functions tell whether other tenants' transactions committed.
-- The host refuses guest SQL that names any of these (guestsql_allow.go);
-- this takes them from PUBLIC as well, so Postgres refuses them too.
--
-- As in 002, only a superuser can revoke them: otherwise this warns, and the
-- host refuses guest SQL while the guest role can still take an advisory
-- lock. What the host itself uses stays granted: to the migrating user,
-- logline_app, and the owner of ledger.before_insert (the SECURITY DEFINER
-- trigger that stamps tx_id with pg_current_xact_id).

DO $$
DECLARE
  f text;
  owner text;
BEGIN
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    RAISE WARNING 'logline: not a superuser, so advisory locks and transaction ids stay executable by PUBLIC; '
      'guest SQL stays disabled until a superuser runs migrations/005_guest_sql_locks.sql';
    RETURN;
  END IF;
  SELECT p.proowner::regrole::text INTO owner FROM pg_proc p
  WHERE p.oid = to_regprocedure('ledger.before_insert()');
  FOR f IN
    SELECT p.oid::regprocedure::text FROM pg_proc p
    WHERE p.pronamespace = 'pg_catalog'::regnamespace
      AND (p.proname ~ '^pg_(try_)?advisory_'
           OR p.proname IN ('pg_current_xact_id', 'pg_current_xact_id_if_assigned', 'txid_current',
                            'txid_current_if_assigned', 'pg_xact_status', 'txid_status',
                            'pg_xact_commit_timestamp', 'pg_xact_commit_timestamp_origin',
                            'pg_last_committed_xact'))
  LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I, logline_app', f, current_user);
    IF owner IS NOT NULL THEN
      EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', f, owner);
    END IF;
  END LOOP;
END $$;
