-- 002: the role guest SQL runs as (the sql capability of kernels).
--
-- Guest SQL is one read-only SELECT that the host wraps and runs under the
-- caller's principal. The principal lives in custom settings, which any SQL
-- can change with set_config(), so the guest role must not be able to call
-- it; nor take session-level advisory locks (they outlive the transaction on
-- a pooled connection), nor NOTIFY (fake notices), nor create temp tables.
-- Those functions are executable by PUBLIC by default and belong to the
-- bootstrap superuser, so only a superuser can revoke them: when migrate runs
-- as one it does; otherwise it warns, and the host refuses guest SQL until a
-- superuser has run this migration's REVOKEs (the host checks at run time).

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'logline_guest') THEN
    BEGIN
      CREATE ROLE logline_guest NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END IF;
  IF NOT pg_has_role(current_user, 'logline_guest', 'MEMBER') THEN
    EXECUTE format('GRANT logline_guest TO %I', current_user);
  END IF;
END $$;

GRANT USAGE ON SCHEMA ledger, app TO logline_guest;
GRANT SELECT ON ledger.universal_registry, ledger.visible_timeline, ledger.latest TO logline_guest;

DO $$
DECLARE
  f text;
BEGIN
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    RAISE WARNING 'logline: not a superuser, so set_config and friends stay executable by PUBLIC; '
      'guest SQL stays disabled until a superuser runs migrations/002_guest_sql.sql';
    RETURN;
  END IF;
  FOR f IN
    SELECT p.oid::regprocedure::text FROM pg_proc p
    WHERE p.pronamespace = 'pg_catalog'::regnamespace
      AND p.proname IN ('set_config', 'pg_advisory_lock', 'pg_advisory_lock_shared', 'pg_try_advisory_lock',
                        'pg_try_advisory_lock_shared', 'pg_advisory_unlock', 'pg_advisory_unlock_shared',
                        'pg_advisory_unlock_all', 'pg_notify', 'pg_sleep', 'pg_sleep_for', 'pg_sleep_until',
                        'lo_import', 'lo_export', 'lo_create', 'lo_creat', 'lo_unlink', 'lo_from_bytea', 'lo_put')
  LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I, logline_app', f, current_user);
  END LOOP;
  EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
  EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO %I, logline_app', current_database(), current_user);
END $$;
