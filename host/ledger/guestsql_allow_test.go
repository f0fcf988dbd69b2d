package ledger_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
)

// loadCatalog makes sure the allowlist knows the catalog's function names
// (GuestSQL loads them before its first query).
func loadCatalog(t *testing.T, b *testBundle) {
	t.Helper()
	_, err := b.ledger.GuestSQL(ctxT(t), ledger.Service("A", "kernel"), `SELECT 1`, nil, ledger.GuestLimits{})
	require.NoError(t, err)
}

// guestAccepted are queries the allowlist lets through.
var guestAccepted = []string{
	`SELECT 1`,
	`VALUES (1), (2)`,
	`TABLE ledger.latest`,
	`SELECT * FROM (SELECT * FROM ledger.heads) h`,
	`WITH x AS (SELECT 1 AS a) SELECT * FROM x`,
	`WITH a AS (SELECT 1 AS v), b AS (SELECT v FROM a) SELECT * FROM b`,
	`WITH a AS (SELECT 1 AS v) SELECT * FROM (WITH b AS (SELECT v FROM a) SELECT * FROM b) s`,
	`WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 5) SELECT sum(n) FROM t`,
	`WITH RECURSIVE a AS (SELECT * FROM b), b AS (SELECT 1 AS v) SELECT * FROM a`,
	`WITH pg_class AS (SELECT 1 AS reltuples) SELECT reltuples FROM pg_class`,
	`WITH x AS (SELECT 1 AS a) SELECT * FROM x UNION SELECT * FROM x`,
	`WITH x AS MATERIALIZED (SELECT 1 AS a) SELECT (SELECT a FROM x), EXISTS (SELECT FROM x)`,
	`SELECT id, seq, owner_id, visibility, name FROM ledger.active_policies ORDER BY id`,
	`SELECT e.key, e.value FROM ledger.universal_registry u, jsonb_each(u.metadata) e`,
	`SELECT (jsonb_each(metadata)).key FROM ledger.universal_registry`,
	`SELECT u.name, u.code, x.id FROM ledger.universal_registry u JOIN ledger.heads x USING (id)`,
	`SELECT ledger.universal_registry.id FROM ledger.universal_registry`,
	`SELECT u.* , h.schedule FROM ledger.open_requests u NATURAL LEFT JOIN ledger.heads h`,
	`SELECT count(*) FILTER (WHERE status = 'x'), string_agg(name, ',' ORDER BY name),
		percentile_cont(0.5) WITHIN GROUP (ORDER BY seq), count(DISTINCT tenant_id) FROM ledger.universal_registry`,
	`SELECT row_number() OVER w, lag(seq) OVER w, sum(seq) OVER (ORDER BY ord ROWS 2 PRECEDING)
		FROM ledger.heads WINDOW w AS (PARTITION BY tenant_id ORDER BY ord)`,
	`SELECT $1::jsonb ->> 'a', $2::int + 1, $3::uuid, $4::timestamptz, $5::xid8, $6::text[], $7::bigint[], $8::pg_catalog.int8`,
	`SELECT interval '1 day', date '2020-01-01', now() AT TIME ZONE 'UTC', extract(epoch FROM now()),
		CURRENT_TIMESTAMP, current_date, LOCALTIME, CURRENT_USER, date_trunc('day', now()), to_char(now(), 'YYYY')`,
	`SELECT trim(both 'x' FROM 'xax'), substring('abc' FROM 2 FOR 1), position('b' IN 'abc'),
		overlay('abc' PLACING 'x' FROM 2), 'a' LIKE 'b' ESCAPE '!', 'a' ILIKE 'b', 'a' SIMILAR TO 'b', 'a' ~ '^a'`,
	`SELECT coalesce(NULL, 1), nullif(1, 2), greatest(1, 2), least(1, 2), CASE WHEN true THEN 1 ELSE 2 END,
		1 IS DISTINCT FROM 2, true IS TRUE, NULL IS NULL, 1 BETWEEN 0 AND 2, 1 IN (1, 2), (ARRAY[1, 2])[1], ROW(1, 2),
		1 = ANY (ARRAY[1]), 1 = ANY (SELECT 1), ARRAY(SELECT 1)`,
	`SELECT x FROM jsonb_array_elements_text('["a"]') AS x`,
	`SELECT * FROM jsonb_to_recordset('[{"a":1}]') AS r(a int, b text)`,
	`SELECT * FROM generate_series(1, 3) WITH ORDINALITY AS g(v, i)`,
	`SELECT * FROM ROWS FROM (generate_series(1, 2), unnest(ARRAY['a', 'b'])) AS t(a, b)`,
	`SELECT g.generate_series FROM generate_series(1, 2) g`,
	`SELECT get_byte(uuid_send(gen_random_uuid()), 15) % 4`,
	`SELECT id FROM ledger.heads h WHERE EXISTS (SELECT 1 FROM ledger.open_requests o WHERE o.id = h.id)`,
	`SELECT tenant_id, GROUPING(tenant_id) FROM ledger.heads GROUP BY ROLLUP (tenant_id)`,
	`SELECT DISTINCT ON (id) id, seq FROM ledger.universal_registry ORDER BY id, seq DESC NULLS LAST`,
	`SELECT 1 AS x ORDER BY 1 USING <`,
	`SELECT 1 OPERATOR(pg_catalog.+) 1`,
	`SELECT 'a' COLLATE "C", 'a' < 'b' COLLATE pg_catalog."default"`,
	`SELECT current_setting('app.tenant_id')`,
	`SELECT tx_id < pg_snapshot_xmin(pg_current_snapshot()) FROM ledger.universal_registry`,
	`SELECT 1 -- trailing comment`,
	`/* leading comment */ SELECT 1`,
	`SELECT 1 AS "pg_advisory_lock"`,
	`SELECT pg_advisory_lock FROM (SELECT 1 AS pg_advisory_lock) s`,
	`SELECT s.n, (s).n FROM (SELECT 1 AS n) s`,
	`SELECT '{}'::int4[], '{}'::_text, 'x'::varchar(3), 1::double precision, '1'::"char", 1::numeric(10, 2),
		'1 day'::interval day, B'101'::bit(3), true::boolean, 'a'::character varying, '{}'::jsonb, now()::timestamp with time zone`,
	`SELECT * FROM ledger.heads h LEFT JOIN LATERAL (SELECT * FROM ledger.universal_registry u
		WHERE u.id = h.id ORDER BY seq DESC LIMIT 1) l ON true`,
	`SELECT (SELECT max(seq) FROM ledger.universal_registry)`,
	`(SELECT 1) UNION ALL SELECT 2 INTERSECT SELECT 2 EXCEPT SELECT 3`,
	`SELECT * FROM ledger.universal_registry OFFSET 1 FETCH FIRST 5 ROWS ONLY`,
	`SELECT '\' AS backslash, E'\'' AS quote, $$dollar$$ AS d, U&'\0041' AS u`,
	`SELECT jsonb_path_query_array('{"a":[1]}', '$.a[*] ? (@ > 0)'), jsonb_build_object('a', 1) || '{}'::jsonb`,
	`SELECT format('%s', 1), concat_ws(',', 1, 2), md5('x'), encode(sha256('x'), 'hex'), regexp_replace('a', 'a', 'b')`,
	`SELECT tenant_id, count(*)::int AS n FROM ledger.universal_registry WHERE entity_type = $1 GROUP BY tenant_id`,
	`SELECT * FROM ledger.visible_timeline WHERE id=$1 AND seq > $2 AND at < $3 LIMIT $4`,
	`SELECT $1 ~ '^x\d$'`,
	`SELECT '\xyz' || $1`,
	`SELECT id, seq, name FROM ledger.visible_timeline WHERE id = $1`,
	`SELECT 1 AS one, $1::text AS echo, $2::int AS n`,
}

// refusal is a query the allowlist refuses, the error it wraps and words
// of its message.
type refusal struct {
	query string
	is    error
	says  string
}

func fnRefused(name string, queries ...string) []refusal {
	out := make([]refusal, 0, len(queries))
	for _, q := range queries {
		out = append(out, refusal{q, ledger.ErrForbidden, "function " + name + " is not allowed in guest SQL"})
	}
	return out
}

func relRefused(name string, queries ...string) []refusal {
	out := make([]refusal, 0, len(queries))
	for _, q := range queries {
		out = append(out, refusal{q, ledger.ErrForbidden, "relation " + name + " is not allowed in guest SQL"})
	}
	return out
}

func guestRefused() []refusal {
	var r []refusal
	add := func(rs ...refusal) { r = append(r, rs...) }
	forbidden := func(says string, queries ...string) {
		for _, q := range queries {
			add(refusal{q, ledger.ErrForbidden, says})
		}
	}
	invalid := func(says string, queries ...string) {
		for _, q := range queries {
			add(refusal{q, ledger.ErrInvalid, says})
		}
	}

	// Advisory locks, session and transaction level, exclusive and shared,
	// try or wait, one bigint key or two int keys; however the name is
	// written and wherever the call hides.
	for _, f := range []string{"pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock",
		"pg_try_advisory_lock_shared", "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared",
		"pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared", "pg_advisory_unlock",
		"pg_advisory_unlock_shared"} {
		add(fnRefused(f,
			`SELECT `+f+`(1)`,
			`SELECT `+f+`(1, 2)`,
			`SELECT `+strings.ToUpper(f)+`(1)`,
			`SELECT "`+f+`"(1)`,
			`SELECT pg_catalog.`+f+`(1)`,
			`SELECT "pg_catalog"."`+f+`"(42)`,
		)...)
	}
	const lock = "pg_try_advisory_xact_lock"
	add(fnRefused("pg_advisory_unlock_all", `SELECT pg_advisory_unlock_all()`)...)
	add(fnRefused(lock,
		`SELECT pg_try_advisory_xact_lock(hashtextextended('B/request_worker', 0))`,
		`SELECT * FROM ledger.universal_registry WHERE pg_try_advisory_xact_lock(1)`,
		`SELECT (SELECT pg_try_advisory_xact_lock(1))`,
		`SELECT 1 WHERE 1 IN (SELECT 1 WHERE pg_try_advisory_xact_lock(1))`,
		`WITH x AS (SELECT pg_try_advisory_xact_lock(1)) SELECT * FROM x`,
		`WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT n FROM x WHERE pg_try_advisory_xact_lock(n)) SELECT * FROM x`,
		`WITH a AS (SELECT 1) SELECT * FROM (WITH b AS (SELECT pg_try_advisory_xact_lock(1)) SELECT * FROM b) s`,
		`SELECT * FROM ledger.heads h, LATERAL (SELECT pg_try_advisory_xact_lock(h.ord)) l`,
		`SELECT * FROM ledger.heads h CROSS JOIN LATERAL pg_try_advisory_xact_lock(h.ord) l`,
		`SELECT * FROM pg_try_advisory_xact_lock(1)`,
		`SELECT * FROM ROWS FROM (generate_series(1, 2), pg_try_advisory_xact_lock(1)) t`,
		`SELECT CASE WHEN true THEN pg_try_advisory_xact_lock(1) END`,
		`SELECT CASE pg_try_advisory_xact_lock(1) WHEN true THEN 1 END`,
		`SELECT 1 ORDER BY pg_try_advisory_xact_lock(1)`,
		`SELECT 1 GROUP BY pg_try_advisory_xact_lock(1)`,
		`SELECT 1 HAVING pg_try_advisory_xact_lock(1)`,
		`SELECT 1 LIMIT pg_try_advisory_xact_lock(1)::int`,
		`SELECT count(*) FILTER (WHERE pg_try_advisory_xact_lock(1)) FROM ledger.heads`,
		`SELECT string_agg('x', ',' ORDER BY pg_try_advisory_xact_lock(1))`,
		`SELECT row_number() OVER (ORDER BY pg_try_advisory_xact_lock(1))`,
		`SELECT 1 WINDOW w AS (PARTITION BY pg_try_advisory_xact_lock(1))`,
		`VALUES (pg_try_advisory_xact_lock(1))`,
		`SELECT 1 UNION SELECT pg_try_advisory_xact_lock(1)::int`,
		`SELECT ARRAY(SELECT pg_try_advisory_xact_lock(1))`,
		`SELECT EXISTS (SELECT pg_try_advisory_xact_lock(1))`,
		`SELECT jsonb_build_object('a', pg_try_advisory_xact_lock(1))`,
		`SELECT coalesce(NULL, pg_try_advisory_xact_lock(1))`,
		`SELECT greatest(pg_try_advisory_xact_lock(1), true)`,
		`SELECT ROW(pg_try_advisory_xact_lock(1))`,
		`SELECT ARRAY[pg_try_advisory_xact_lock(1)]`,
		`SELECT (pg_try_advisory_xact_lock(1))::text`,
		`SELECT * FROM ledger.heads a JOIN ledger.heads b ON pg_try_advisory_xact_lock(a.ord)`,
		`SELECT DISTINCT ON (pg_try_advisory_xact_lock(1)) 1`,
		`SELECT * FROM jsonb_to_recordset('[]') AS r(a int) WHERE pg_try_advisory_xact_lock(r.a)`,
	)...)
	// x.f is f(x) when x has no column f.
	forbidden("field .pg_try_advisory_xact_lock is not allowed in guest SQL (x.pg_try_advisory_xact_lock can call the function pg_try_advisory_xact_lock(x))",
		`SELECT (1::bigint).pg_try_advisory_xact_lock`,
		`SELECT g.pg_try_advisory_xact_lock FROM generate_series(1::bigint, 1) g`,
		`SELECT (s.k).pg_try_advisory_xact_lock FROM (SELECT 1::bigint AS k) s`,
		`SELECT (s.k).pg_try_advisory_xact_lock FROM (SELECT 1::bigint AS k, 2 AS pg_try_advisory_xact_lock) s`,
		`SELECT ((SELECT 1::bigint)).pg_try_advisory_xact_lock`,
	)
	forbidden("field .txid_status", `SELECT (1::bigint).txid_status`)
	forbidden("field .pg_stat_get_live_tuples", `SELECT (16384::oid).pg_stat_get_live_tuples`)
	forbidden("field .pg_relation_size", `SELECT ('x'::text).pg_relation_size`)

	// Transaction ids.
	for _, f := range []string{"txid_current", "pg_current_xact_id", "txid_current_if_assigned",
		"pg_current_xact_id_if_assigned", "txid_current_snapshot"} {
		add(fnRefused(f, `SELECT `+f+`()`, `SELECT * FROM ledger.heads WHERE `+f+`() IS NOT NULL`)...)
	}
	add(fnRefused("pg_xact_status", `SELECT pg_xact_status('1'::xid8)`)...)
	add(fnRefused("txid_status", `SELECT txid_status(1)`)...)

	// Statistics, catalogs and sizes: they count every tenant's rows.
	for _, v := range []string{"pg_stat_user_tables", "pg_stat_all_tables", "pg_statio_user_tables",
		"pg_statio_all_indexes", "pg_stat_activity", "pg_stat_database", "pg_stat_user_indexes",
		"pg_locks", "pg_class", "pg_namespace", "pg_proc", "pg_stats", "pg_tables", "pg_roles", "pg_settings"} {
		add(relRefused(v, `SELECT * FROM `+v)...)
		add(relRefused("pg_catalog."+v, `SELECT * FROM pg_catalog.`+v)...)
	}
	forbidden("relation pg_catalog.pg_stat_user_tables is not allowed in guest SQL (allowed: ledger.universal_registry, ledger.visible_timeline",
		`SELECT n_live_tup FROM pg_catalog.pg_stat_user_tables WHERE relname = 'universal_registry'`)
	add(relRefused("pg_class",
		`SELECT reltuples FROM pg_class WHERE relname = 'universal_registry'`,
		`WITH pg_class AS (SELECT * FROM pg_class) SELECT * FROM pg_class`,
		`WITH a AS (SELECT 1), pg_class AS (SELECT * FROM pg_class) SELECT * FROM pg_class`,
		`SELECT * FROM (SELECT * FROM pg_class) s`,
		`SELECT (SELECT reltuples FROM pg_class LIMIT 1)`,
		`SELECT * FROM ledger.heads WHERE EXISTS (SELECT FROM pg_class)`,
		`SELECT * FROM ledger.heads, LATERAL (SELECT * FROM pg_class) c`,
		`SELECT * FROM ledger.heads JOIN pg_class ON true`,
	)...)
	add(relRefused("pg_catalog.pg_class", `WITH pg_class AS (SELECT 1) SELECT * FROM pg_catalog.pg_class`)...)
	add(relRefused("information_schema.tables", `SELECT * FROM information_schema.tables`)...)
	add(relRefused("information_schema.columns", `SELECT * FROM information_schema.columns`)...)
	// WITH scopes: a query sees only the WITH queries before it (all of
	// them under RECURSIVE), never those of a sibling or inner query.
	add(relRefused("b", `WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a`)...)
	add(relRefused("a", `WITH a AS (SELECT * FROM a) SELECT * FROM a`)...)
	add(relRefused("x",
		`SELECT * FROM (WITH x AS (SELECT 1) SELECT 1) s, x`,
		`(WITH x AS (SELECT 1 AS a) SELECT * FROM x) UNION SELECT * FROM x`,
		`SELECT (WITH x AS (SELECT 1) SELECT 1), (SELECT * FROM x)`,
	)...)
	add(relRefused("ledger.schema_version", `SELECT * FROM ledger.schema_version`)...)
	add(relRefused("universal_registry", `SELECT * FROM universal_registry`)...)
	add(relRefused("public.universal_registry", `SELECT * FROM public.universal_registry`)...)
	add(relRefused(`Ledger.universal_registry`, `SELECT * FROM "Ledger".universal_registry`)...)
	add(relRefused("app.settings", `SELECT * FROM app.settings`)...)
	forbidden("relation logline.ledger.universal_registry is not allowed in guest SQL (name it without the database)",
		`SELECT * FROM logline.ledger.universal_registry`)
	for _, f := range []string{"pg_relation_size", "pg_table_size", "pg_total_relation_size", "pg_database_size",
		"pg_stat_get_live_tuples", "pg_stat_get_tuples_inserted", "to_regclass", "pg_get_viewdef", "has_table_privilege",
		"pg_backend_pid", "pg_postmaster_start_time", "version", "inet_server_addr"} {
		add(fnRefused(f, `SELECT `+f+`('ledger.universal_registry')`)...)
	}
	// reg* types look names up in the catalogs; row types of relations
	// and types of other schemas are not data types of the allowlist.
	for _, ty := range []string{"regclass", "regproc", "regprocedure", "regoper", "regoperator", "regtype",
		"regnamespace", "regrole", "regconfig", "regdictionary", "regcollation"} {
		forbidden("type "+ty+" is not allowed in guest SQL (reg* types",
			`SELECT 'x'::`+ty,
			`SELECT 'x'::pg_catalog.`+ty,
			`SELECT CAST('x' AS `+ty+`)`,
			`SELECT `+ty+` 'x'`,
			`SELECT '{}'::`+ty+`[]`,
			`SELECT 1 FROM ledger.heads WHERE 'x'::`+ty+` IS NULL`,
		)
		forbidden("type _"+ty+" is not allowed in guest SQL (reg* types", `SELECT '{}'::_`+ty)
	}
	add(fnRefused("regclass", `SELECT TREAT('pg_class' AS regclass)`)...)
	forbidden("type ledger.universal_registry is not allowed in guest SQL (only built-in data types",
		`SELECT NULL::ledger.universal_registry`,
		`SELECT jsonb_populate_record(NULL::ledger.universal_registry, '{}')`)
	forbidden("type pg_class is not allowed", `SELECT jsonb_populate_record(NULL::pg_class, '{}')`)
	forbidden("type pg_authid is not allowed", `SELECT NULL::pg_catalog.pg_authid`)
	forbidden("type public.t is not allowed in guest SQL (only built-in", `SELECT * FROM jsonb_to_record('{}') AS r(a public.t)`)

	// Files, large objects, other databases, settings, notifications,
	// sleeping, sequences, other backends.
	for _, f := range []string{"pg_ls_dir", "pg_ls_waldir", "pg_ls_logdir", "pg_ls_tmpdir", "pg_read_file",
		"pg_read_binary_file", "pg_stat_file", "lo_import", "lo_export", "lo_get", "lo_open", "loread",
		"lo_from_bytea", "lo_put", "lo_create", "lo_unlink", "dblink", "dblink_exec", "dblink_connect",
		"set_config", "pg_notify", "pg_sleep", "pg_sleep_for", "pg_sleep_until", "nextval", "currval", "setval",
		"setseed", "pg_cancel_backend", "pg_terminate_backend", "pg_reload_conf", "query_to_xml",
		"query_to_xml_and_xmlschema", "cursor_to_xml", "table_to_xml", "database_to_xml", "ts_stat",
		"xpath", "pg_logical_emit_message", "txid_current"} {
		add(fnRefused(f, `SELECT `+f+`('.')`, `SELECT * FROM `+f+`('.', 'x') AS t`)...)
	}
	add(fnRefused("set_config",
		`SELECT set_config('app.tenant_id', 'B', true)`,
		`SELECT pg_catalog.set_config('role', 'logline_app', false)`)...)
	add(fnRefused("query_to_xml", `SELECT query_to_xml('SELECT pg_advisory_xact_lock(1)', true, true, '')`)...)
	forbidden("function public.dblink is not allowed in guest SQL (only built-in functions",
		`SELECT * FROM public.dblink('host=x', 'SELECT 1') AS t(a int)`)
	forbidden("function app.current_tenant_id is not allowed in guest SQL (only built-in functions", `SELECT app.current_tenant_id()`)
	forbidden("function ledger.before_insert is not allowed in guest SQL (only built-in functions", `SELECT ledger.before_insert()`)
	forbidden("operator public.+ is not allowed in guest SQL (only built-in", `SELECT 1 OPERATOR(public.+) 1`)
	forbidden("collation public.c is not allowed in guest SQL (only built-in", `SELECT 'a' COLLATE public.c`)
	forbidden("XmlExpr is not allowed", `SELECT xmlelement(name x)`)
	forbidden("RangeTableSample is not allowed", `SELECT * FROM ledger.heads TABLESAMPLE system (10)`)
	forbidden("RangeTableFunc is not allowed", `SELECT * FROM XMLTABLE('/a' PASSING '<a/>' COLUMNS x int)`)
	forbidden("a locking clause (FOR UPDATE/SHARE) is not allowed",
		`SELECT * FROM ledger.heads FOR UPDATE`,
		`SELECT * FROM ledger.heads FOR NO KEY UPDATE`,
		`SELECT * FROM ledger.heads FOR SHARE`,
		`SELECT * FROM ledger.heads FOR KEY SHARE SKIP LOCKED`,
		`SELECT * FROM (SELECT * FROM ledger.heads FOR UPDATE) s`,
		`WITH x AS (SELECT * FROM ledger.heads FOR SHARE) SELECT * FROM x`,
	)

	// Not one SELECT.
	invalid("SELECT INTO is not allowed", `SELECT * INTO stolen FROM ledger.universal_registry`)
	invalid("data-modifying WITH is not allowed",
		`WITH d AS (DELETE FROM ledger.universal_registry RETURNING 1) SELECT * FROM d`,
		`WITH d AS (INSERT INTO ledger.heads DEFAULT VALUES RETURNING 1) SELECT * FROM d`,
		`WITH d AS (UPDATE ledger.heads SET seq = 1 RETURNING 1) SELECT * FROM d`)
	invalid("must be exactly one statement", `SELECT 1; SELECT 2`, `SELECT 1; SELECT pg_advisory_xact_lock(1)`)
	invalid("must be a SELECT, not DeleteStmt", `DELETE FROM ledger.universal_registry`)
	invalid("must be a SELECT, not UpdateStmt", `UPDATE ledger.universal_registry SET status = 'x'`)
	invalid("must be a SELECT, not VariableSetStmt", `SET app.tenant_id = 'B'`)
	invalid("must be a SELECT, not ExplainStmt", `EXPLAIN SELECT 1`)
	invalid("must be a SELECT, not NotifyStmt", `NOTIFY logline_spans`)
	invalid("stands alone as a subquery", `SELECT 1;`)
	invalid("guest SQL: syntax error",
		`SELECT 1) AS q, (SELECT pg_advisory_xact_lock(1)`,
		`SELECT 1) AS q, LATERAL (SELECT pg_try_advisory_xact_lock(1)`,
		`SELECT 1) AS q; SELECT pg_advisory_xact_lock(1); SELECT (1`,
		`SELECT 1) AS q; SET app.tenant_id = 'B'; SELECT (1`,
		`SELECT (`,
		`SELEC 1`,
	)
	invalid("unterminated", `SELECT 1 /* no end`, `SELECT 'no end`)
	invalid("NUL byte", "SELECT 1\x00) AS q, (SELECT pg_advisory_xact_lock(1)")
	return r
}

func TestGuestSQLAllowlist(t *testing.T) {
	t.Parallel()
	loadCatalog(t, setup(t))
	for _, q := range guestAccepted {
		require.NoError(t, ledger.CheckGuestSQL(q), q)
	}
	for _, r := range guestRefused() {
		err := ledger.CheckGuestSQL(r.query)
		require.Error(t, err, r.query)
		require.ErrorIs(t, err, r.is, r.query)
		require.ErrorContains(t, err, r.says, r.query)
	}
	// The second check of a text is remembered; it must say the same.
	for _, q := range guestAccepted {
		require.NoError(t, ledger.CheckGuestSQL(q), q)
	}
	for _, r := range guestRefused()[:20] {
		require.ErrorContains(t, ledger.CheckGuestSQL(r.query), r.says, r.query)
	}
}

// stockQueries returns the SQL of the stock kernels and examples, with a
// tagged template's values as $1..$n and the columns they splice in.
func stockQueries(t *testing.T) map[string]string {
	t.Helper()
	root := filepath.Join("..", "..")
	lib, err := os.ReadFile(filepath.Join(root, "guests", "kernels", "lib.js"))
	require.NoError(t, err)
	m := regexp.MustCompile("const SPAN_COLUMNS = `([^`]*)`").FindSubmatch(lib)
	require.NotNil(t, m, "SPAN_COLUMNS in lib.js")
	columns := string(m[1])
	hole := regexp.MustCompile(`\$\{[^}]*\}`)
	tagged := regexp.MustCompile("\\bsql`([^`]*)`")
	plain := regexp.MustCompile("\\bsql\\(`([^`]*)`")
	goSQL := regexp.MustCompile("logline\\.SQL(?:Into)?\\([^`]*`([^`]*)`")
	out := map[string]string{}
	scan := func(name, src string) {
		for i, m := range tagged.FindAllStringSubmatch(src, -1) {
			n := 0
			out[fmt.Sprintf("%s tagged %d", name, i)] = hole.ReplaceAllStringFunc(m[1], func(string) string {
				n++
				return fmt.Sprintf("$%d", n)
			})
		}
		for i, m := range plain.FindAllStringSubmatch(src, -1) {
			// ${SPAN_COLUMNS} is the column list; any other hole is a
			// subquery built at run time (policy_agent's ranges), which
			// a representative one stands for here (the engine's tests
			// send the real ones through the same check).
			out[fmt.Sprintf("%s plain %d", name, i)] = hole.ReplaceAllStringFunc(m[1], func(h string) string {
				if h == "${SPAN_COLUMNS}" {
					return columns
				}
				return `(SELECT id, seq, entity_type, tx_id, ord, true AS wanted FROM ledger.universal_registry)`
			})
		}
		for i, m := range goSQL.FindAllStringSubmatch(src, -1) {
			out[fmt.Sprintf("%s go %d", name, i)] = m[1]
		}
	}
	for _, glob := range []string{"guests/kernels/*.js", "guests/policies/*.js", "guests/examples/*/*.go", "guests/examples/*/*.js"} {
		files, err := filepath.Glob(filepath.Join(root, glob))
		require.NoError(t, err)
		for _, f := range files {
			src, err := os.ReadFile(f)
			require.NoError(t, err)
			scan(filepath.Base(f), string(src))
		}
	}
	// The seeded kernels are what the engine boots.
	f, err := os.Open(filepath.Join(root, "seeds", "kernels.ndjson"))
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var s struct{ Name, Code string }
		require.NoError(t, json.Unmarshal(sc.Bytes(), &s))
		scan("seed "+s.Name, s.Code)
	}
	require.NoError(t, sc.Err())
	return out
}

// Every query the stock kernels send passes the allowlist.
func TestGuestSQLAllowsStockKernels(t *testing.T) {
	t.Parallel()
	loadCatalog(t, setup(t))
	qs := stockQueries(t)
	require.GreaterOrEqual(t, len(qs), 8, "found the kernels' queries")
	for name, q := range qs {
		require.NoError(t, ledger.CheckGuestSQL(q), "%s: %s", name, q)
	}
}

// The column list of the allowlist is the database's, and of those only
// name is also a function (a harmless cast) that x.name could call.
func TestGuestSQLColumnsMatchSchema(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	loadCatalog(t, b)
	rows, err := b.admin.Query(ctx, `SELECT DISTINCT a.attname::text, EXISTS (SELECT 1 FROM pg_proc p
			WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = a.attname)
		FROM pg_attribute a WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attrelid IN (
			'ledger.universal_registry'::regclass, 'ledger.visible_timeline'::regclass, 'ledger.latest'::regclass,
			'ledger.heads'::regclass, 'ledger.open_requests'::regclass, 'ledger.active_policies'::regclass,
			'ledger.recurring_functions'::regclass)`)
	require.NoError(t, err)
	var fnCols []string
	for rows.Next() {
		var col string
		var isFn bool
		require.NoError(t, rows.Scan(&col, &isFn))
		if isFn {
			fnCols = append(fnCols, col)
		}
		// Each column is a field the allowlist takes from any row.
		q := fmt.Sprintf(`SELECT (s).%s FROM (SELECT 1 AS %s) s`, pgIdent(col), pgIdent(col))
		require.NoError(t, ledger.CheckGuestSQL(q), q)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"name"}, fnCols)
}

func pgIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// End to end, as the guest role: nothing shared is reachable, and the
// tenant's own data is.
func TestGuestSQLSharesNothing(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	_, err := b.ledger.Append(ctx, ledger.User("A", "alice"), fn("a"))
	require.NoError(t, err)
	_, err = b.ledger.Append(ctx, ledger.User("B", "bob"), fn("b"))
	require.NoError(t, err)
	kernelA := ledger.Service("A", "kernel")
	q := func(sql string, params ...any) (ledger.GuestRows, error) {
		return b.ledger.GuestSQL(ctx, kernelA, sql, params, ledger.GuestLimits{Timeout: time.Second})
	}

	// B's request_worker lease is B's alone: A's kernel cannot take it,
	// by any lock function.
	lease, ok, err := b.ledger.TryLock(ctx, ledger.Service("B", "kernel"), "request_worker")
	require.NoError(t, err)
	require.True(t, ok)
	lease.Release(ctx)
	for _, sql := range []string{
		`SELECT pg_try_advisory_xact_lock(hashtextextended('B' || '/' || 'request_worker', 0))`,
		`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`,
		`SELECT pg_advisory_xact_lock_shared(1)`,
		`SELECT pg_try_advisory_lock(1)`,
		`SELECT g.pg_try_advisory_xact_lock FROM generate_series(1::bigint, 1) g`,
	} {
		_, err := q(sql, "B/request_worker")
		require.ErrorIs(t, err, ledger.ErrForbidden, sql)
		require.ErrorContains(t, err, "pg_", sql)
	}
	lease, ok, err = b.ledger.TryLock(ctx, ledger.Service("B", "kernel"), "request_worker")
	require.NoError(t, err)
	require.True(t, ok, "B's lease is free")
	lease.Release(ctx)

	for _, sql := range []string{
		`SELECT pg_current_xact_id()`,
		`SELECT txid_current()`,
		`SELECT n_live_tup FROM pg_stat_user_tables`,
		`SELECT reltuples FROM pg_catalog.pg_class`,
		`SELECT 'ledger.universal_registry'::regclass::oid`,
		`SELECT pg_relation_size('ledger.universal_registry')`,
		`SELECT pg_read_file('/etc/passwd')`,
	} {
		_, err := q(sql)
		require.ErrorIs(t, err, ledger.ErrForbidden, sql)
	}
	_, err = q(`SELECT 1) AS q, (SELECT pg_advisory_xact_lock(1)`)
	require.ErrorIs(t, err, ledger.ErrInvalid)

	// A WITH query named like a catalog is the WITH query.
	res, err := q(`WITH pg_class AS (SELECT 7 AS reltuples) SELECT reltuples FROM pg_class`)
	require.NoError(t, err)
	require.Equal(t, []json.RawMessage{json.RawMessage(`{"reltuples": 7}`)}, res.Rows)

	// The tenant's own data, as before.
	res, err = q(`SELECT name FROM ledger.universal_registry WHERE tenant_id = $1 ORDER BY name`, "A")
	require.NoError(t, err)
	require.Len(t, res.Rows, 1)
	require.JSONEq(t, `{"name":"a"}`, string(res.Rows[0]))
	res, err = q(`SELECT tenant_id FROM ledger.heads`)
	require.NoError(t, err)
	require.Len(t, res.Rows, 1)
	require.JSONEq(t, `{"tenant_id":"A"}`, string(res.Rows[0]))

	// search_path is pg_catalog alone inside the guest's transaction, and
	// strings are standard.
	res, err = q(`SELECT current_setting('search_path') AS p, current_setting('standard_conforming_strings') AS s, '\' AS b`)
	require.NoError(t, err)
	require.JSONEq(t, `{"p":"pg_catalog","s":"on","b":"\\"}`, string(res.Rows[0]))

	// Even where the database's default is off: Postgres reads the
	// guest's text as the allowlist's parser did.
	_, err = b.admin.Exec(ctx, `DO $$ BEGIN
		EXECUTE format('ALTER DATABASE %I SET standard_conforming_strings = off', current_database()); END $$`)
	require.NoError(t, err)
	l, err := ledger.Open(ctx, b.url)
	require.NoError(t, err)
	defer l.Close()
	var scs string
	require.NoError(t, l.Pool().QueryRow(ctx, `SHOW standard_conforming_strings`).Scan(&scs))
	require.Equal(t, "off", scs)
	res, err = l.GuestSQL(ctx, kernelA, `SELECT '\' AS a, ' , 1 AS b, ' AS c`, nil, ledger.GuestLimits{})
	require.NoError(t, err)
	require.JSONEq(t, `{"a":"\\","c":" , 1 AS b, "}`, string(res.Rows[0]))
}

// Defence in depth: with the allowlist bypassed, Postgres itself refuses
// the guest role every lock and transaction-id function (migrations/005),
// while the host's own roles keep what its leases and trigger use.
func TestGuestSQLLocksRevoked(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	kernelA := ledger.Service("A", "kernel")
	for _, sql := range []string{
		`SELECT pg_advisory_xact_lock(1)`,
		`SELECT pg_advisory_xact_lock(1, 2)`,
		`SELECT pg_advisory_xact_lock_shared(1)`,
		`SELECT pg_advisory_xact_lock_shared(1, 2)`,
		`SELECT pg_try_advisory_xact_lock(hashtextextended('B/request_worker', 0))`,
		`SELECT pg_try_advisory_xact_lock(1, 2)`,
		`SELECT pg_try_advisory_xact_lock_shared(1)`,
		`SELECT pg_try_advisory_xact_lock_shared(1, 2)`,
		`SELECT pg_advisory_lock(1)`,
		`SELECT pg_try_advisory_lock_shared(1, 2)`,
		`SELECT pg_advisory_unlock_all()`,
		`SELECT pg_current_xact_id()`,
		`SELECT pg_current_xact_id_if_assigned()`,
		`SELECT txid_current()`,
		`SELECT txid_current_if_assigned()`,
		`SELECT pg_xact_status('3'::xid8)`,
		`SELECT txid_status(3)`,
		`SELECT (1::bigint).pg_try_advisory_xact_lock`,
	} {
		_, err := b.ledger.GuestSQLUnchecked(ctx, kernelA, sql, nil, ledger.GuestLimits{})
		require.ErrorIs(t, err, ledger.ErrForbidden, sql)
		require.ErrorContains(t, err, "permission denied for function", sql)
	}
	// The hook really bypasses the allowlist only.
	res, err := b.ledger.GuestSQLUnchecked(ctx, kernelA, `SELECT 1 AS one`, nil, ledger.GuestLimits{})
	require.NoError(t, err)
	require.JSONEq(t, `{"one":1}`, string(res.Rows[0]))

	var owner string
	require.NoError(t, b.admin.QueryRow(ctx, `SELECT proowner::regrole::text FROM pg_proc WHERE oid = 'ledger.after_insert()'::regprocedure`).Scan(&owner))
	rows, err := b.admin.Query(ctx, `SELECT p.oid::regprocedure::text,
			has_function_privilege('logline_guest', p.oid, 'EXECUTE'),
			has_function_privilege('logline_app', p.oid, 'EXECUTE'),
			has_function_privilege(current_user, p.oid, 'EXECUTE'),
			has_function_privilege($1, p.oid, 'EXECUTE')
		FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace
		  AND (p.proname ~ '^pg_(try_)?advisory_' OR p.proname IN ('pg_current_xact_id', 'pg_current_xact_id_if_assigned',
		       'txid_current', 'txid_current_if_assigned', 'pg_xact_status', 'txid_status', 'set_config'))`, owner)
	require.NoError(t, err)
	var n int
	for rows.Next() {
		var f string
		var guest, app, login, trigger bool
		require.NoError(t, rows.Scan(&f, &guest, &app, &login, &trigger))
		require.False(t, guest, "%s executable by the guest role", f)
		require.True(t, app && login && trigger, "%s: logline_app %v, login %v, trigger owner %v", f, app, login, trigger)
		n++
	}
	require.NoError(t, rows.Err())
	require.GreaterOrEqual(t, n, 19, "every overload")

	// The host still takes and releases its leases, and still appends (the
	// trigger stamps tx_id with pg_current_xact_id).
	lease, ok, err := b.ledger.TryLock(ctx, ledger.Service("B", "kernel"), "request_worker")
	require.NoError(t, err)
	require.True(t, ok)
	lease.Release(ctx)
	_, err = b.ledger.Append(ctx, ledger.User("A", "alice"), fn("still appends"))
	require.NoError(t, err)
}

// The host refuses guest SQL on a database where the guest role can take
// an advisory lock, and runs it again once that is revoked.
func TestGuestSQLRefusedWhileLocksGranted(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	_, err := b.admin.Exec(ctx, `GRANT EXECUTE ON FUNCTION pg_catalog.pg_advisory_xact_lock(bigint) TO logline_guest`)
	require.NoError(t, err)
	l, err := ledger.Open(ctx, b.url)
	require.NoError(t, err)
	defer l.Close()
	_, err = l.GuestSQL(ctx, ledger.Service("A", "k"), `SELECT 1`, nil, ledger.GuestLimits{})
	require.ErrorIs(t, err, ledger.ErrGuestSQLUnavailable)
	_, err = b.admin.Exec(ctx, `REVOKE EXECUTE ON FUNCTION pg_catalog.pg_advisory_xact_lock(bigint) FROM logline_guest`)
	require.NoError(t, err)
	_, err = l.GuestSQL(ctx, ledger.Service("A", "k"), `SELECT 1`, nil, ledger.GuestLimits{})
	require.NoError(t, err)
}

// The byte cap bounds what the host receives: Postgres sends NULL in place
// of a row that would pass the cap, so a 20 MB row never reaches the host.
// Not parallel: it measures the process' allocations.
func TestGuestSQLByteCapBoundsHostMemory(t *testing.T) {
	b, ctx := setup(t), ctxT(t)
	kernelA := ledger.Service("A", "kernel")
	const big = `SELECT repeat('x', 20 << 20) AS s`
	run := func(query string, lim ledger.GuestLimits) (ledger.GuestRows, uint64) {
		_, err := b.ledger.GuestSQL(ctx, kernelA, `SELECT 1`, nil, ledger.GuestLimits{}) // warm the pool
		require.NoError(t, err)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		res, err := b.ledger.GuestSQL(ctx, kernelA, query, nil, lim)
		runtime.ReadMemStats(&after)
		require.NoError(t, err)
		return res, after.TotalAlloc - before.TotalAlloc
	}
	res, alloc := run(big, ledger.GuestLimits{Bytes: 1 << 20, Timeout: 10 * time.Second})
	require.True(t, res.Truncated)
	require.Empty(t, res.Rows)
	require.Less(t, alloc, uint64(4<<20), "the host allocated %d bytes for a row it dropped", alloc)

	// The running total counts: two 600 kB rows do not fit in 1 MiB.
	res, alloc = run(`SELECT repeat('x', 600000) AS s FROM generate_series(1, 50)`, ledger.GuestLimits{Bytes: 1 << 20, Timeout: 10 * time.Second})
	require.True(t, res.Truncated)
	require.Len(t, res.Rows, 1)
	require.Less(t, alloc, uint64(4<<20), "allocated %d bytes", alloc)

	// The measure sees a row the host keeps.
	res, alloc = run(big, ledger.GuestLimits{Bytes: 32 << 20, Timeout: 10 * time.Second})
	require.False(t, res.Truncated)
	require.Len(t, res.Rows, 1)
	require.Greater(t, alloc, uint64(20<<20))
}

// The row cap stops Postgres too: it produces rows+1 rows, not all of them
// (a billion would run past the timeout), and a result of exactly the caps
// is not truncated.
func TestGuestSQLRowCapStopsTheQuery(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	kernelA := ledger.Service("A", "kernel")
	res, err := b.ledger.GuestSQL(ctx, kernelA, `SELECT generate_series(1, 1000000000) AS g`, nil,
		ledger.GuestLimits{Rows: 10, Timeout: 2 * time.Second})
	require.NoError(t, err)
	require.Len(t, res.Rows, 10)
	require.True(t, res.Truncated)
	require.JSONEq(t, `{"g":10}`, string(res.Rows[9]), "in the query's order")

	res, err = b.ledger.GuestSQL(ctx, kernelA, `SELECT g FROM generate_series(1, 10) g ORDER BY g DESC`, nil, ledger.GuestLimits{Rows: 10})
	require.NoError(t, err)
	require.Len(t, res.Rows, 10)
	require.False(t, res.Truncated)
	require.JSONEq(t, `{"g":10}`, string(res.Rows[0]))
	require.JSONEq(t, `{"g":1}`, string(res.Rows[9]))

	// {"s": "xxxx"} is 13 bytes: three rows fit 39 bytes exactly.
	res, err = b.ledger.GuestSQL(ctx, kernelA, `SELECT 'xxxx' AS s FROM generate_series(1, 3)`, nil, ledger.GuestLimits{Bytes: 39})
	require.NoError(t, err)
	require.Len(t, res.Rows, 3)
	require.False(t, res.Truncated)
	res, err = b.ledger.GuestSQL(ctx, kernelA, `SELECT 'xxxx' AS s FROM generate_series(1, 3)`, nil, ledger.GuestLimits{Bytes: 38})
	require.NoError(t, err)
	require.Len(t, res.Rows, 2)
	require.True(t, res.Truncated)
}

// BenchmarkGuestSQL is one small kernel query, the allowlist included.
func BenchmarkGuestSQL(b *testing.B) {
	tb := setup(b)
	ctx := context.Background()
	kernelA := ledger.Service("A", "kernel")
	const q = `SELECT id, seq, name FROM ledger.universal_registry WHERE tenant_id = $1 ORDER BY ord LIMIT 25`
	for b.Loop() {
		if _, err := tb.ledger.GuestSQL(ctx, kernelA, q, []any{"A"}, ledger.GuestLimits{}); err != nil {
			b.Fatal(err)
		}
	}
}
