package ledger

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Guest SQL is checked against an allowlist before it reaches Postgres: the
// guest role's privileges alone cannot keep it out of what every role may
// use (advisory locks shared with the host's leases, transaction ids that
// hold back every tenant's listing horizon, statistics and catalogs that
// count every tenant's rows). The query is parsed by Postgres' own parser
// (pg_query) and every node of the tree must be of a kind this file knows,
// naming only the relations, functions and types listed here.

// guestRelations are the relations GuestRole may read (migrations/002 and
// 003), always written schema-qualified.
var guestRelations = []string{
	"ledger.universal_registry", "ledger.visible_timeline", "ledger.latest", "ledger.heads",
	"ledger.open_requests", "ledger.active_policies", "ledger.recurring_functions",
}

// guestColumns are the column names of guestRelations. A field selection
// x.name is a column or, failing that, a call of the function name(x), so
// these names are accepted as fields even where they also name a function
// (only name does, a harmless cast).
var guestColumns = setOf(
	"id", "seq", "entity_type", "who", "did", "this", "at", "parent_id", "related_to",
	"owner_id", "tenant_id", "visibility", "status", "is_deleted", "name", "description", "code",
	"language", "runtime", "input", "output", "error", "duration_ms", "trace_id", "prev_hash",
	"curr_hash", "signature", "public_key", "metadata", "tx_id", "ord", "when",
	"schedule", "expires_at", // ledger.heads
)

// guestFuncs are the built-in (pg_catalog) functions guest SQL may call:
// pure functions of their arguments, aggregates and window functions, and
// the clock and snapshot readers the stock kernels use. Nothing that takes a
// lock, assigns a transaction id, reads or writes settings other than by
// current_setting, runs a query given as text, touches files, large objects,
// sequences or other sessions, or reports on relations or the server.
var guestFuncs = setOf(
	// strings and bytes
	"length", "char_length", "character_length", "octet_length", "bit_length", "lower", "upper",
	"initcap", "btrim", "ltrim", "rtrim", "substring", "substr", "position", "strpos", "overlay",
	"replace", "translate", "concat", "concat_ws", "format", "left", "right", "lpad", "rpad",
	"repeat", "reverse", "split_part", "string_to_array", "array_to_string", "string_to_table",
	"regexp_match", "regexp_matches", "regexp_replace", "regexp_split_to_array",
	"regexp_split_to_table", "regexp_count", "regexp_instr", "regexp_like", "regexp_substr",
	"starts_with", "md5", "sha224", "sha256", "sha384", "sha512", "encode", "decode",
	"convert_from", "convert_to", "to_hex", "ascii", "chr", "quote_ident", "quote_literal",
	"quote_nullable", "unistr", "normalize", "is_normalized", "similar_to_escape", "similar_escape",
	"like_escape", "to_char",
	"to_number", "get_byte", "get_bit", "bit_count",
	// numbers
	"abs", "ceil", "ceiling", "floor", "round", "trunc", "sign", "sqrt", "cbrt", "exp", "ln",
	"log", "log10", "power", "mod", "div", "pi", "degrees", "radians", "sin", "cos", "tan", "cot",
	"asin", "acos", "atan", "atan2", "sind", "cosd", "tand", "cotd", "asind", "acosd", "atand",
	"atan2d", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "random", "random_normal",
	"width_bucket", "gcd", "lcm", "factorial", "scale", "min_scale", "trim_scale",
	// comparison
	"num_nulls", "num_nonnulls",
	// date and time
	"now", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday",
	"date_part", "date_trunc", "date_bin", "extract", "age", "make_date", "make_time",
	"make_timestamp", "make_timestamptz", "make_interval", "justify_days", "justify_hours",
	"justify_interval", "isfinite", "timezone", "overlaps", "to_date", "to_timestamp",
	"date_add", "date_subtract",
	// json and jsonb
	"to_json", "to_jsonb", "row_to_json", "array_to_json", "json_build_object",
	"jsonb_build_object", "json_build_array", "jsonb_build_array", "json_object", "jsonb_object",
	"json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "json_array_elements",
	"jsonb_array_elements", "json_array_elements_text", "jsonb_array_elements_text",
	"json_array_length", "jsonb_array_length", "json_each", "jsonb_each", "json_each_text",
	"jsonb_each_text", "json_extract_path", "jsonb_extract_path", "json_extract_path_text",
	"jsonb_extract_path_text", "json_object_keys", "jsonb_object_keys", "json_populate_record",
	"jsonb_populate_record", "json_populate_recordset", "jsonb_populate_recordset",
	"json_to_record", "jsonb_to_record", "json_to_recordset", "jsonb_to_recordset",
	"json_strip_nulls", "jsonb_strip_nulls", "jsonb_set", "jsonb_set_lax", "jsonb_insert",
	"jsonb_pretty", "json_typeof", "jsonb_typeof", "jsonb_path_exists", "jsonb_path_match",
	"jsonb_path_query", "jsonb_path_query_array", "jsonb_path_query_first", "jsonb_path_exists_tz",
	"jsonb_path_match_tz", "jsonb_path_query_tz", "jsonb_path_query_array_tz",
	"jsonb_path_query_first_tz",
	// arrays and sets
	"array_agg", "array_append", "array_prepend", "array_cat", "array_dims", "array_fill",
	"array_length", "array_lower", "array_upper", "array_ndims", "array_position",
	"array_positions", "array_remove", "array_replace", "cardinality", "unnest", "trim_array",
	"generate_series", "generate_subscripts",
	// ranges
	"isempty", "lower_inc", "upper_inc", "lower_inf", "upper_inf", "range_merge", "int4range",
	"int8range", "numrange", "tsrange", "tstzrange", "daterange",
	// uuid
	"gen_random_uuid", "uuid_send", "uuidv4", "uuidv7", "uuid_extract_timestamp",
	"uuid_extract_version",
	// aggregates
	"count", "sum", "avg", "min", "max", "bool_and", "bool_or", "every", "bit_and", "bit_or",
	"bit_xor", "string_agg", "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop",
	"var_samp", "corr", "covar_pop", "covar_samp", "regr_avgx", "regr_avgy", "regr_count",
	"regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy",
	"percentile_cont", "percentile_disc", "mode", "any_value",
	// window functions
	"row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
	"first_value", "last_value", "nth_value",
	// the commit-ordered listing horizon (reads the snapshot, assigns nothing)
	"pg_current_snapshot", "pg_snapshot_xmin", "pg_snapshot_xmax",
	// settings, read only (the principal and the read-only flag are the guest's own)
	"current_setting",
)

// guestTypes are the types guest SQL may cast to or declare (their array
// types too, _name): data types whose input reads nothing but its text. Not
// the reg* types, whose input looks names up in the catalogs, nor any row
// type of a relation.
var guestTypes = setOf(
	"bool", "int2", "int4", "int8", "float4", "float8", "numeric", "text", "varchar", "bpchar",
	"char", "name", "bytea", "date", "time", "timetz", "timestamp", "timestamptz", "interval",
	"json", "jsonb", "jsonpath", "uuid", "xid8", "xid", "oid", "bit", "varbit", "inet", "cidr",
	"macaddr", "macaddr8", "money", "point", "line", "lseg", "box", "path", "polygon", "circle",
	"int4range", "int8range", "numrange", "tsrange", "tstzrange", "daterange", "int4multirange",
	"int8multirange", "nummultirange", "tsmultirange", "tstzmultirange", "datemultirange",
	"record", "pg_snapshot", "pg_lsn",
)

// guestNodes are the kinds of parse-tree node a guest SELECT may contain
// besides those checkNode looks into (SelectStmt, RangeVar, FuncCall,
// TypeName, ColumnRef, A_Indirection, A_Expr, SortBy, SubLink,
// CollateClause). Anything else (XML, TABLESAMPLE, JSON_TABLE, …) is
// refused: a kind this file does not know is a kind it has not judged.
var guestNodes = setOf(
	"Node", "List", "String", "Integer", "Float", "Boolean", "BitString", "A_Const", "A_Star",
	"ResTarget", "ParamRef", "BoolExpr", "CaseExpr", "CaseWhen", "CoalesceExpr", "MinMaxExpr",
	"NullTest", "BooleanTest", "A_ArrayExpr", "A_Indices", "RowExpr", "TypeCast", "NamedArgExpr",
	"WindowDef", "Alias", "RangeSubselect", "RangeFunction", "JoinExpr", "GroupingSet",
	"GroupingFunc", "SQLValueFunction", "ColumnDef", "CTESearchClause", "CTECycleClause",
)

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

var guestRelationSet = setOf(guestRelations...)

// catalogFieldFuncs holds the names of the pg_catalog functions that take
// arguments, in every database this process has checked (a union:
// more names only refuse more). Postgres reads x.f as f(x) when x has no
// column f, so a field name can be a function call; checkGuestRole loads
// these names before any guest SQL runs. Nil means none loaded yet: then
// every field name that is not a column or an allowed function is refused.
var (
	catalogFieldFuncs   atomic.Pointer[map[string]bool]
	catalogFieldFuncsMu sync.Mutex
)

// addCatalogFieldFuncs merges names into catalogFieldFuncs.
func addCatalogFieldFuncs(names []string) {
	catalogFieldFuncsMu.Lock()
	defer catalogFieldFuncsMu.Unlock()
	old := catalogFieldFuncs.Load()
	if old != nil && !slices.ContainsFunc(names, func(n string) bool { return !(*old)[n] }) {
		return
	}
	m := make(map[string]bool, len(names))
	if old != nil {
		for n := range *old {
			m[n] = true
		}
	}
	for _, n := range names {
		m[n] = true
	}
	catalogFieldFuncs.Store(&m)
}

// The guest's text is parsed inside the same parentheses GuestSQL wraps it
// in, so text that closes them early (`SELECT 1) AS q, (SELECT …`) shows up
// as a statement of another shape than this probe's.
const (
	probePrefix = "SELECT * FROM (\n"
	probeSuffix = "\n) AS q"
)

var probeShell = sync.OnceValues(func() (*pg_query.SelectStmt, error) {
	sel, _, err := parseProbe("SELECT")
	return sel, err
})

// parseProbe parses query inside the probe and returns the probe's
// statement with its subquery cut out, and the subquery.
func parseProbe(query string) (*pg_query.SelectStmt, *pg_query.Node, error) {
	res, err := pg_query.Parse(probePrefix + query + probeSuffix)
	if err != nil {
		return nil, nil, err
	}
	if len(res.Stmts) != 1 {
		return nil, nil, fmt.Errorf("%d statements", len(res.Stmts))
	}
	sel := res.Stmts[0].GetStmt().GetSelectStmt()
	if sel == nil || len(sel.FromClause) != 1 || sel.FromClause[0].GetRangeSubselect() == nil {
		return nil, nil, fmt.Errorf("not one subquery")
	}
	rs := sel.FromClause[0].GetRangeSubselect()
	sub := rs.Subquery
	rs.Subquery = nil
	return sel, sub, nil
}

// checkGuestSQL refuses guest SQL that is not one plain SELECT over
// guestRelations using only guestFuncs, guestTypes and guestNodes: the
// error wraps ErrInvalid (not a single SELECT) or ErrForbidden (it names
// something not allowed) and says what.
func checkGuestSQL(query string) error {
	if strings.IndexByte(query, 0) >= 0 {
		// The parser reads a C string: it would stop where Postgres does
		// not necessarily.
		return fmt.Errorf("%w: guest SQL contains a NUL byte", ErrInvalid)
	}
	funcs := catalogFieldFuncs.Load()
	if guestAccepted.has(query, funcs) {
		return nil
	}
	shell, err := probeShell()
	if err != nil {
		return fmt.Errorf("error preparing the guest SQL check: %w", err)
	}
	sel, sub, err := parseProbe(query)
	if err != nil || !proto.Equal(sel, shell) || sub.GetSelectStmt() == nil {
		return notOneSelect(query)
	}
	c := &guestChecker{fieldFuncs: funcs}
	if err := c.node(sub.ProtoReflect(), nil); err != nil {
		return err
	}
	guestAccepted.add(query, funcs)
	return nil
}

// acceptedCache remembers query texts that passed the check: kernels send
// the same few texts again and again (values travel as parameters), and a
// parse costs more than the rest of a small query's host time. An entry
// holds for the catalog names it was checked against.
type acceptedCache struct {
	mu sync.Mutex
	m  map[string]*map[string]bool
}

const (
	acceptedCacheEntries = 512
	acceptedCacheMaxText = 8 << 10
)

var guestAccepted acceptedCache

func (a *acceptedCache) has(query string, funcs *map[string]bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	f, ok := a.m[query]
	return ok && f == funcs
}

func (a *acceptedCache) add(query string, funcs *map[string]bool) {
	if len(query) > acceptedCacheMaxText {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil || len(a.m) >= acceptedCacheEntries {
		// Starting over is rare (a few texts per kernel) and keeps the
		// memory bounded.
		a.m = make(map[string]*map[string]bool)
	}
	a.m[query] = funcs
}

// notOneSelect says why query is not one SELECT that fits the wrapper.
func notOneSelect(query string) error {
	res, err := pg_query.Parse(query)
	switch {
	case err != nil:
		return fmt.Errorf("%w: guest SQL: %v", ErrInvalid, err)
	case len(res.Stmts) != 1:
		return fmt.Errorf("%w: guest SQL must be exactly one statement, not %d", ErrInvalid, len(res.Stmts))
	case res.Stmts[0].GetStmt().GetSelectStmt() == nil:
		return fmt.Errorf("%w: guest SQL must be a SELECT, not %s", ErrInvalid, nodeName(res.Stmts[0].GetStmt().ProtoReflect()))
	}
	return fmt.Errorf("%w: guest SQL must be one SELECT that stands alone as a subquery (no trailing semicolon, no unbalanced parenthesis)", ErrInvalid)
}

// nodeName is the kind of a Node (its one set field), or of any message.
func nodeName(m protoreflect.Message) string {
	if n, ok := m.Interface().(*pg_query.Node); ok && n.GetNode() != nil {
		m = m.Get(m.WhichOneof(m.Descriptor().Oneofs().Get(0))).Message()
	}
	return string(m.Descriptor().Name())
}

// cteScope is the WITH queries visible at a point of the query, innermost
// first.
type cteScope struct {
	names  []string
	parent *cteScope
}

func (s *cteScope) has(name string) bool {
	for ; s != nil; s = s.parent {
		if slices.Contains(s.names, name) {
			return true
		}
	}
	return false
}

type guestChecker struct {
	fieldFuncs *map[string]bool
}

// forbidden is the refusal of what, with why in parentheses if not empty.
func forbidden(what, why string) error {
	if why != "" {
		return fmt.Errorf("%w: %s is not allowed in guest SQL (%s)", ErrForbidden, what, why)
	}
	return fmt.Errorf("%w: %s is not allowed in guest SQL", ErrForbidden, what)
}

// node checks one node and, unless it handles them itself, its children.
func (c *guestChecker) node(m protoreflect.Message, scope *cteScope) error {
	switch n := m.Interface().(type) {
	case *pg_query.SelectStmt:
		return c.selectStmt(n, scope)
	case *pg_query.RangeVar:
		return c.rangeVar(n, scope)
	case *pg_query.FuncCall:
		if err := c.funcCall(n); err != nil {
			return err
		}
	case *pg_query.TypeName:
		if err := c.typeName(n); err != nil {
			return err
		}
	case *pg_query.ColumnRef:
		// The first name is a relation, a column or a schema; a later
		// one can be f in x.f, which Postgres may read as f(x).
		for _, f := range n.Fields[min(1, len(n.Fields)):] {
			if s := f.GetString_(); s != nil {
				if err := c.field(s.Sval); err != nil {
					return err
				}
			}
		}
	case *pg_query.A_Indirection:
		for _, f := range n.Indirection {
			if s := f.GetString_(); s != nil {
				if err := c.field(s.Sval); err != nil {
					return err
				}
			}
		}
	case *pg_query.A_Expr:
		if err := c.qualified("operator", n.Name); err != nil {
			return err
		}
	case *pg_query.SortBy:
		if err := c.qualified("operator", n.UseOp); err != nil {
			return err
		}
	case *pg_query.SubLink:
		if err := c.qualified("operator", n.OperName); err != nil {
			return err
		}
	case *pg_query.CollateClause:
		if err := c.qualified("collation", n.Collname); err != nil {
			return err
		}
	case *pg_query.IntoClause:
		return fmt.Errorf("%w: SELECT INTO is not allowed in guest SQL", ErrInvalid)
	case *pg_query.LockingClause:
		return forbidden("a locking clause (FOR UPDATE/SHARE)", "")
	case *pg_query.WithClause, *pg_query.CommonTableExpr:
		// Only selectStmt may walk a WITH: it knows the scopes.
		return forbidden("WITH here", "")
	default:
		if !guestNodes[string(m.Descriptor().Name())] {
			return forbidden(string(m.Descriptor().Name()), "")
		}
	}
	return c.children(m, scope, "")
}

// children checks every message-valued field of m but skip.
func (c *guestChecker) children(m protoreflect.Message, scope *cteScope, skip protoreflect.Name) error {
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil || fd.Name() == skip {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = c.node(l.Get(i).Message(), scope)
			}
		} else {
			err = c.node(v.Message(), scope)
		}
		return err == nil
	})
	return err
}

// selectStmt checks a SELECT (or VALUES, or a set operation), giving each
// of its WITH queries the scope Postgres gives it: in a plain WITH the
// queries before it, in WITH RECURSIVE all of them, and the body all of
// them, each on top of the enclosing scopes.
func (c *guestChecker) selectStmt(s *pg_query.SelectStmt, scope *cteScope) error {
	if s.IntoClause != nil {
		return fmt.Errorf("%w: SELECT INTO is not allowed in guest SQL", ErrInvalid)
	}
	if len(s.LockingClause) > 0 {
		return forbidden("a locking clause (FOR UPDATE/SHARE)", "")
	}
	body := scope
	if w := s.WithClause; w != nil {
		cteNames := make([]string, 0, len(w.Ctes))
		for _, n := range w.Ctes {
			cteNames = append(cteNames, n.GetCommonTableExpr().GetCtename())
		}
		for i, n := range w.Ctes {
			cte := n.GetCommonTableExpr()
			if cte == nil {
				return forbidden(nodeName(n.ProtoReflect())+" in WITH", "")
			}
			if cte.Ctequery.GetSelectStmt() == nil {
				return fmt.Errorf("%w: WITH query %s must be a SELECT, not %s (data-modifying WITH is not allowed in guest SQL)",
					ErrInvalid, cte.Ctename, nodeName(cte.Ctequery.ProtoReflect()))
			}
			visible := cteNames[:i]
			if w.Recursive {
				visible = cteNames
			}
			if err := c.node(cte.Ctequery.ProtoReflect(), &cteScope{names: visible, parent: scope}); err != nil {
				return err
			}
			if err := c.children(cte.ProtoReflect(), scope, "ctequery"); err != nil {
				return err
			}
		}
		body = &cteScope{names: cteNames, parent: scope}
	}
	return c.children(s.ProtoReflect(), body, "with_clause")
}

func (c *guestChecker) rangeVar(r *pg_query.RangeVar, scope *cteScope) error {
	allowed := func() string { return strings.Join(guestRelations, ", ") }
	switch {
	case r.Catalogname != "":
		return forbidden("relation "+r.Catalogname+"."+r.Schemaname+"."+r.Relname, "name it without the database")
	case r.Schemaname == "" && scope.has(r.Relname):
		return c.children(r.ProtoReflect(), scope, "")
	case r.Schemaname == "":
		return forbidden("relation "+r.Relname, "allowed: "+allowed()+", written with their schema, and WITH queries in scope")
	case !guestRelationSet[r.Schemaname+"."+r.Relname]:
		return forbidden("relation "+r.Schemaname+"."+r.Relname, "allowed: "+allowed())
	}
	return c.children(r.ProtoReflect(), scope, "")
}

// names returns the strings of a name list.
func names(list []*pg_query.Node) []string {
	out := make([]string, 0, len(list))
	for _, n := range list {
		if s := n.GetString_(); s != nil {
			out = append(out, s.Sval)
		} else {
			out = append(out, "("+nodeName(n.ProtoReflect())+")")
		}
	}
	return out
}

// unqualified returns the last name of list if the others are at most
// pg_catalog (unqualified names resolve in pg_catalog: GuestSQL sets
// search_path to it).
func unqualified(list []*pg_query.Node) (string, bool) {
	ns := names(list)
	switch {
	case len(ns) == 1:
		return ns[0], true
	case len(ns) == 2 && ns[0] == "pg_catalog":
		return ns[1], true
	}
	return strings.Join(ns, "."), false
}

func (c *guestChecker) funcCall(f *pg_query.FuncCall) error {
	name, ok := unqualified(f.Funcname)
	if !ok {
		return forbidden("function "+name, "only built-in functions, unqualified or in pg_catalog")
	}
	if !guestFuncs[name] {
		return forbidden("function "+name, "")
	}
	return nil
}

// qualified refuses an operator or collation named in a schema other than
// pg_catalog.
func (c *guestChecker) qualified(what string, list []*pg_query.Node) error {
	if len(list) == 0 {
		return nil
	}
	if name, ok := unqualified(list); !ok {
		return forbidden(what+" "+name, "only built-in ones, unqualified or in pg_catalog")
	}
	return nil
}

func (c *guestChecker) typeName(t *pg_query.TypeName) error {
	name, ok := unqualified(t.Names)
	switch {
	case t.PctType:
		return forbidden("type "+name+"%TYPE", "")
	case t.Setof:
		return forbidden("type SETOF "+name, "")
	case !ok:
		return forbidden("type "+name, "only built-in data types, unqualified or in pg_catalog")
	case strings.HasPrefix(strings.TrimPrefix(name, "_"), "reg"):
		return forbidden("type "+name, "reg* types look names up in the catalogs")
	case !guestTypes[name] && !(strings.HasPrefix(name, "_") && guestTypes[name[1:]]):
		return forbidden("type "+name, "")
	}
	return nil
}

// field refuses a field name that could be a call, x.f read as f(x), of a
// function guest SQL may not call.
func (c *guestChecker) field(name string) error {
	if guestFuncs[name] || guestColumns[name] {
		return nil
	}
	if c.fieldFuncs == nil || (*c.fieldFuncs)[name] {
		return forbidden("field ."+name, "x."+name+" can call the function "+name+"(x)")
	}
	return nil
}
