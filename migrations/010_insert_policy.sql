-- 010: the write policy evaluates the principal once per statement.
--
-- 001's ur_insert called app.current_tenant_id(), app.current_kind() and
-- app.current_user_id() in its WITH CHECK, which Postgres evaluates for
-- every row: a 100-span Append (one INSERT since 009) read the settings
-- 300-400 times. Wrapped in sub-selects they become init plans, evaluated
-- once per statement, as ur_select's have been since 001. The rule is the
-- same: only into one's own tenant; users only as themselves, a tenant's
-- service principal on behalf of any owner in that tenant; the system
-- principal (and anyone else) writes nothing.
DROP POLICY IF EXISTS ur_insert ON ledger.universal_registry;
CREATE POLICY ur_insert ON ledger.universal_registry FOR INSERT WITH CHECK (
  tenant_id = (SELECT app.current_tenant_id())
  AND ((SELECT app.current_kind()) = 'user' AND owner_id = (SELECT app.current_user_id())
       OR (SELECT app.current_kind()) = 'service')
);
