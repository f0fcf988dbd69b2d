package ledger

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/logline/logline/host/span"
)

// The span columns, in one order shared by INSERT and SELECT, then the
// commit-safe cursor (storage only, never part of a span).
var (
	spanCols = []string{"id", "seq", "entity_type", "who", "did", `"this"`, "at", "parent_id", "related_to",
		"owner_id", "tenant_id", "visibility", "status", "is_deleted", "name", "description", "code", "language",
		"runtime", "input", "output", "error", "duration_ms", "trace_id", "prev_hash", "curr_hash", "signature",
		"public_key", "metadata"}
	// The text form of tx_id gets its own name: left as "tx_id", it would be
	// what "ORDER BY tx_id" sorts by (an output column wins over a table
	// column), and "999" sorts after "1000" as text.
	selectCols = append(append([]string{}, spanCols...), "tx_id::text AS tx_text", "ord")

	selectColumns = strings.Join(selectCols, ", ")
	insertSpan    = `INSERT INTO ledger.universal_registry (` + strings.Join(spanCols, ", ") + `) VALUES (` + placeholders(len(spanCols)) + `)`
	// insertSpans inserts many spans in one statement: one text[] per
	// column (columnArrays), each element cast to its column's type as the
	// single-row INSERT's text parameters are. (Arrays of the columns' own
	// types would not do: unnest flattens related_to's uuid[][].)
	insertSpans = `INSERT INTO ledger.universal_registry (` + strings.Join(spanCols, ", ") + `) SELECT ` + columnCasts() +
		` FROM unnest(` + arrayPlaceholders(len(spanCols)) + `) AS u(` + unnestNames(len(spanCols)) + `)`
)

// numSpanCols is len(spanCols) (textArgs returns an array, not a slice).
const numSpanCols = 29

func init() {
	if len(spanCols) != numSpanCols {
		panic("ledger: numSpanCols does not match spanCols")
	}
}

// spanColTypes are spanCols' SQL types, in order.
var spanColTypes = []string{"uuid", "int", "text", "text", "text", "text", "timestamptz", "uuid", "uuid[]",
	"text", "text", "text", "text", "boolean", "text", "text", "text", "text",
	"text", "jsonb", "jsonb", "jsonb", "int", "text", "text", "text", "text",
	"text", "jsonb"}

func columnCasts() string {
	c := make([]string, len(spanColTypes))
	for i, t := range spanColTypes {
		c[i] = "c" + strconv.Itoa(i+1) + "::" + t
	}
	return strings.Join(c, ", ")
}

func arrayPlaceholders(n int) string {
	p := make([]string, n)
	for i := range p {
		p[i] = "$" + strconv.Itoa(i+1) + "::text[]"
	}
	return strings.Join(p, ", ")
}

func unnestNames(n int) string {
	p := make([]string, n)
	for i := range p {
		p[i] = "c" + strconv.Itoa(i+1)
	}
	return strings.Join(p, ", ")
}

// columnArrays lists spans' values column by column (insertSpans' text[]
// parameters), in textArgs' text format.
func columnArrays(spans []span.Span) []any {
	cols := make([]textColumn, len(spanCols))
	for c := range cols {
		cols[c] = make(textColumn, len(spans))
	}
	for i := range spans {
		v := textArgs(&spans[i])
		for c := range cols {
			cols[c][i] = textElem(v[c])
		}
	}
	out := make([]any, len(cols))
	for c := range cols {
		out[c] = cols[c]
	}
	return out
}

// textColumn is one text[] parameter of insertSpans ("" is NULL, as in
// textArgs). It is a pgtype.ArrayGetter whose elements pgx encodes without
// reflection or copies: a plain []*string went through pgx's reflection
// wrapper element by element, ~5% of a 100-span Append's CPU (issue 15).
type textColumn []textElem

func (c textColumn) Dimensions() []pgtype.ArrayDimension {
	return []pgtype.ArrayDimension{{Length: int32(len(c)), LowerBound: 1}}
}

// Index is a pointer into the column, so boxing it allocates nothing.
func (c textColumn) Index(i int) any {
	if c[i] == "" {
		return nil
	}
	return &c[i]
}

func (c textColumn) IndexType() any { return new(textElem) }

// textElem is one text value; as a pgtype.TextValuer pgx writes it as is.
type textElem string

func (e *textElem) TextValue() (pgtype.Text, error) {
	return pgtype.Text{String: string(*e), Valid: true}, nil
}

// prefixed qualifies the select columns with a table alias.
func prefixed(alias string) string {
	return alias + strings.Join(selectCols, ", "+alias)
}

func placeholders(n int) string {
	p := make([]string, n)
	for i := range p {
		p[i] = "$" + strconv.Itoa(i+1)
	}
	return strings.Join(p, ", ")
}

// textArgs lists s's values in spanCols order in Postgres text format;
// "" is NULL (an absent optional field: no column's text form is empty
// otherwise — an empty related_to list is '{}').
func textArgs(s *span.Span) [numSpanCols]string {
	related := ""
	if s.RelatedTo != nil {
		related = "{" + strings.Join(s.RelatedTo, ",") + "}"
	}
	dur := ""
	if s.DurationMs != nil {
		dur = strconv.Itoa(int(*s.DurationMs))
	}
	deleted := "f"
	if s.IsDeleted {
		deleted = "t"
	}
	return [numSpanCols]string{
		s.ID, strconv.Itoa(int(s.Seq)), s.EntityType, s.Who, s.Did, s.This,
		s.At, s.ParentID, related, s.OwnerID, s.TenantID, s.Visibility, s.Status,
		deleted, s.Name, s.Description, s.Code, s.Language, s.Runtime, string(s.Input), string(s.Output),
		string(s.Error), dur, s.TraceID, s.PrevHash, s.CurrHash, s.Signature, s.PublicKey, string(s.Metadata),
	}
}

// textParams is textArgs for pgx: text-format values (nil for NULL) that
// Postgres parses by the columns' types, as in the pipelined path.
func textParams(s *span.Span) []any {
	v := textArgs(s)
	out := make([]any, len(v))
	for i := range v {
		if v[i] != "" {
			out[i] = v[i]
		}
	}
	return out
}

// Item is a stored span with its position in the ledger.
type Item struct {
	Span   span.Span
	Cursor Cursor
}

// scanItem reads one row of selectColumns.
func scanItem(row pgx.Row) (Item, error) {
	var (
		it                                                   Item
		s                                                    = &it.Span
		did, parent, owner, tenant, status, name, desc, code *string
		lang, runtime, trace, prev, sig, pub                 *string
		input, output, errv, meta                            []byte
		at                                                   time.Time
		txid                                                 string
	)
	err := row.Scan(&s.ID, &s.Seq, &s.EntityType, &s.Who, &did, &s.This, &at, &parent, &s.RelatedTo,
		&owner, &tenant, &s.Visibility, &status, &s.IsDeleted, &name, &desc, &code, &lang, &runtime,
		&input, &output, &errv, &s.DurationMs, &trace, &prev, &s.CurrHash, &sig, &pub, &meta,
		&txid, &it.Cursor.Ord)
	if err != nil {
		return it, err
	}
	s.At = span.FormatTime(at)
	s.Did, s.ParentID, s.OwnerID, s.TenantID = deref(did), deref(parent), deref(owner), deref(tenant)
	s.Status, s.Name, s.Description, s.Code = deref(status), deref(name), deref(desc), deref(code)
	s.Language, s.Runtime, s.TraceID = deref(lang), deref(runtime), deref(trace)
	s.PrevHash, s.Signature, s.PublicKey = deref(prev), deref(sig), deref(pub)
	s.Input, s.Output, s.Error, s.Metadata = rawOrNil(input), rawOrNil(output), rawOrNil(errv), rawOrNil(meta)
	it.Cursor.Tx, err = parseUint(txid)
	return it, err
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func rawOrNil(b []byte) json.RawMessage {
	if b == nil {
		return nil
	}
	return json.RawMessage(b)
}
