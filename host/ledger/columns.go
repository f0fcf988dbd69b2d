package ledger

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

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
// parameters), in textArgs' text format; NULL is nil.
func columnArrays(spans []span.Span) []any {
	cols := make([][]*string, len(spanCols))
	for c := range cols {
		cols[c] = make([]*string, len(spans))
	}
	for i := range spans {
		for c, v := range textArgs(&spans[i]) {
			if v != nil {
				s := string(v)
				cols[c][i] = &s
			}
		}
	}
	out := make([]any, len(cols))
	for c := range cols {
		out[c] = cols[c]
	}
	return out
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

// textArgs lists s's values in spanColumns order in Postgres text format;
// absent optional fields are NULL (nil).
func textArgs(s *span.Span) [][]byte {
	var related []byte
	if s.RelatedTo != nil {
		related = append(append([]byte("{"), strings.Join(s.RelatedTo, ",")...), '}')
	}
	var dur []byte
	if s.DurationMs != nil {
		dur = strconv.AppendInt(nil, int64(*s.DurationMs), 10)
	}
	deleted := []byte("f")
	if s.IsDeleted {
		deleted = []byte("t")
	}
	return [][]byte{
		txt(s.ID), strconv.AppendInt(nil, int64(s.Seq), 10), txt(s.EntityType), txt(s.Who), txt(s.Did), txt(s.This),
		txt(s.At), txt(s.ParentID), related, txt(s.OwnerID), txt(s.TenantID), txt(s.Visibility), txt(s.Status),
		deleted, txt(s.Name), txt(s.Description), txt(s.Code), txt(s.Language), txt(s.Runtime), s.Input, s.Output,
		s.Error, dur, txt(s.TraceID), txt(s.PrevHash), txt(s.CurrHash), txt(s.Signature), txt(s.PublicKey), s.Metadata,
	}
}

// textParams is textArgs for pgx: text-format values (nil for NULL) that
// Postgres parses by the columns' types, as in the pipelined path.
func textParams(s *span.Span) []any {
	raw := textArgs(s)
	out := make([]any, len(raw))
	for i, v := range raw {
		if v != nil {
			out[i] = string(v)
		}
	}
	return out
}

// txt is a text parameter; "" (absent) is NULL.
func txt(v string) []byte {
	if v == "" {
		return nil
	}
	return []byte(v)
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
