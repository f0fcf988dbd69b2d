package span

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// InputError is a problem with user-supplied spans, located in the input.
// The CLI maps it to exit code 2 (bad input).
type InputError struct {
	Span   int    // 1-based index of the span in the input; 0 when about the input as a whole
	Line   int    // 1-based line of the problem (the field's key, the JSON error, or the span's start); 0 if unknown
	Field  string // the span field at fault; "" when the problem is not one field
	Reason string
}

func (e *InputError) Error() string {
	var b strings.Builder
	switch {
	case e.Span > 0 && e.Line > 0:
		fmt.Fprintf(&b, "span %d (line %d)", e.Span, e.Line)
	case e.Span > 0:
		fmt.Fprintf(&b, "span %d", e.Span)
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d", e.Line)
	default:
		b.WriteString("input")
	}
	if e.Field != "" {
		fmt.Fprintf(&b, " field %q", e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap exposes the field problem as a *FieldError, for callers that only
// look for that.
func (e *InputError) Unwrap() error {
	if e.Field == "" {
		return nil
	}
	return &FieldError{Field: e.Field, Reason: e.Reason}
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// Decode reads user-supplied spans: one JSON object (pretty-printed or not),
// or NDJSON (one object per line, blank lines ignored); more generally any
// sequence of JSON objects separated by whitespace, such as jq's output.
// Every span is decoded strictly (unknown fields, wrong types, duplicate
// keys, explicit "" and malformed JSON are refused; null means absent) and
// then Validate()d. The first problem is returned as an *InputError naming
// the span, the line and the field; a failure to read r is returned as is.
// Decode reads r to its end: callers bound r when the source is untrusted.
func Decode(r io.Reader) ([]Span, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("error reading spans: %w", err)
	}
	data = bytes.TrimPrefix(data, utf8BOM)
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &InputError{Reason: "empty input; expected a JSON object, or NDJSON with one object per line"}
	}
	lines := lineCounter{data: data}
	dec := json.NewDecoder(bytes.NewReader(data))
	var spans []Span
	for i := 1; ; i++ {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return spans, nil
		}
		if err != nil {
			start := skipSpace(data, int(dec.InputOffset()))
			ie := &InputError{Span: i, Line: lines.at(start)}
			var se *json.SyntaxError
			switch {
			case errors.As(err, &se) && se.Offset > 0:
				off := int(se.Offset) - 1
				ie.Reason = fmt.Sprintf("invalid JSON at line %d, column %d: %s", lines.at(off), lines.column(off), errText(err))
			case errors.Is(err, io.ErrUnexpectedEOF):
				ie.Reason = "invalid JSON: unexpected end of input (unclosed object or string?)"
			default:
				ie.Reason = "invalid JSON: " + errText(err)
			}
			return nil, ie
		}
		start := int(dec.InputOffset()) - len(raw)
		s, keys, pe := decodeObject(raw)
		if pe == nil {
			if fe := s.validate(); fe != nil {
				pe = &posError{field: fe.Field, reason: fe.Reason, off: -1}
				if off, ok := keys[baseField(fe.Field)]; ok {
					pe.off = off
				}
			}
		}
		if pe != nil {
			off := start
			if pe.off >= 0 {
				off = start + pe.off
			}
			return nil, &InputError{Span: i, Line: lines.at(off), Field: pe.field, Reason: pe.reason}
		}
		spans = append(spans, s)
	}
}

// UnmarshalJSON decodes one span as strictly as Decode (unknown fields,
// wrong types, duplicate keys and explicit "" are refused; null means
// absent) but does not run Validate. Errors are *FieldError.
func (s *Span) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return nil // encoding/json convention: null leaves the value alone
	}
	d, _, pe := decodeObject(b)
	if pe != nil {
		if pe.field == "" {
			pe.field = "span"
		}
		return &FieldError{Field: pe.field, Reason: pe.reason}
	}
	*s = d
	return nil
}

// posError is a field problem with the offset of its key in the object, or
// -1 when there is none.
type posError struct {
	field, reason string
	off           int
}

// baseField maps a Validate field name such as related_to[2] to its key.
func baseField(f string) string {
	if i := strings.IndexByte(f, '['); i >= 0 {
		return f[:i]
	}
	return f
}

// decodeObject decodes one JSON object into a Span and returns the offset
// of each key (the byte after it) for locating later errors. raw must be one
// valid JSON value, as cut by json.Decoder.
func decodeObject(raw []byte) (Span, map[string]int, *posError) {
	var s Span
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return s, nil, &posError{reason: "must be a JSON object, got " + jsonKind(raw), off: -1}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return s, nil, &posError{reason: "invalid JSON: " + errText(err), off: -1}
	}
	keys := make(map[string]int, 24)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return s, nil, &posError{reason: "invalid JSON: " + errText(err), off: -1}
		}
		key, _ := tok.(string)
		off := int(dec.InputOffset())
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return s, nil, &posError{field: key, reason: "invalid JSON: " + errText(err), off: off}
		}
		if _, dup := keys[key]; dup {
			return s, nil, &posError{field: key, reason: "appears more than once", off: off}
		}
		keys[key] = off
		set, ok := fieldSetters[key]
		if !ok {
			return s, nil, &posError{field: key, reason: unknownField(key), off: off}
		}
		if reason := set(&s, v); reason != "" {
			return s, nil, &posError{field: key, reason: reason, off: off}
		}
	}
	// The closing brace, then nothing: UnmarshalJSON may be called directly
	// on bytes that encoding/json has not checked.
	if _, err := dec.Token(); err != nil {
		return s, nil, &posError{reason: "invalid JSON: " + errText(err), off: -1}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return s, nil, &posError{reason: "invalid JSON: trailing data after the object", off: -1}
	}
	return s, keys, nil
}

// unknownField explains an unknown key, suggesting the column it probably
// meant (encoding/json would have matched case-insensitively; we do not).
func unknownField(key string) string {
	for name := range fieldSetters {
		if strings.EqualFold(name, key) || strings.EqualFold(strings.ReplaceAll(name, "_", ""), key) {
			return fmt.Sprintf("unknown field (did you mean %q?)", name)
		}
	}
	names := make([]string, 0, len(fieldSetters))
	for name := range fieldSetters {
		names = append(names, name)
	}
	sort.Strings(names)
	return "unknown field; known fields: " + strings.Join(names, ", ")
}

func jsonKind(v []byte) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

func isNull(v []byte) bool { return bytes.Equal(v, []byte("null")) }

// fieldSetters decodes each column from its raw JSON value and returns a
// reason when the value has the wrong type. JSON null leaves the field
// absent.
var fieldSetters = map[string]func(*Span, json.RawMessage) string{
	"id":          textSetter(func(s *Span) *string { return &s.ID }),
	"seq":         func(s *Span, v json.RawMessage) string { return decInt32(v, &s.Seq) },
	"entity_type": textSetter(func(s *Span) *string { return &s.EntityType }),
	"who":         textSetter(func(s *Span) *string { return &s.Who }),
	"did":         textSetter(func(s *Span) *string { return &s.Did }),
	"this":        textSetter(func(s *Span) *string { return &s.This }),
	"at":          textSetter(func(s *Span) *string { return &s.At }),
	"parent_id":   textSetter(func(s *Span) *string { return &s.ParentID }),
	"related_to":  decRelatedTo,
	"owner_id":    textSetter(func(s *Span) *string { return &s.OwnerID }),
	"tenant_id":   textSetter(func(s *Span) *string { return &s.TenantID }),
	"visibility":  textSetter(func(s *Span) *string { return &s.Visibility }),
	"status":      textSetter(func(s *Span) *string { return &s.Status }),
	"is_deleted":  decBool,
	"name":        textSetter(func(s *Span) *string { return &s.Name }),
	"description": textSetter(func(s *Span) *string { return &s.Description }),
	"code":        textSetter(func(s *Span) *string { return &s.Code }),
	"language":    textSetter(func(s *Span) *string { return &s.Language }),
	"runtime":     textSetter(func(s *Span) *string { return &s.Runtime }),
	"input":       jsonSetter(func(s *Span) *json.RawMessage { return &s.Input }),
	"output":      jsonSetter(func(s *Span) *json.RawMessage { return &s.Output }),
	"error":       jsonSetter(func(s *Span) *json.RawMessage { return &s.Error }),
	"duration_ms": decDuration,
	"trace_id":    textSetter(func(s *Span) *string { return &s.TraceID }),
	"prev_hash":   textSetter(func(s *Span) *string { return &s.PrevHash }),
	"curr_hash":   textSetter(func(s *Span) *string { return &s.CurrHash }),
	"signature":   textSetter(func(s *Span) *string { return &s.Signature }),
	"public_key":  textSetter(func(s *Span) *string { return &s.PublicKey }),
	"metadata":    jsonSetter(func(s *Span) *json.RawMessage { return &s.Metadata }),
}

func textSetter(field func(*Span) *string) func(*Span, json.RawMessage) string {
	return func(s *Span, v json.RawMessage) string {
		if isNull(v) {
			return ""
		}
		str, reason := decString(v)
		if reason != "" {
			return reason
		}
		if str == "" {
			return "must be absent or non-empty (omit the field or use null instead of \"\")"
		}
		*field(s) = str
		return ""
	}
}

// decString decodes a JSON string, refusing what encoding/json would
// silently replace with U+FFFD (invalid UTF-8, unpaired surrogate escapes):
// the stored text must be exactly what was sent and signed.
func decString(v json.RawMessage) (string, string) {
	if len(v) == 0 || v[0] != '"' {
		return "", "must be a string, got " + jsonKind(v)
	}
	if !utf8.Valid(v) {
		return "", "must be valid UTF-8"
	}
	if r := checkEscapes(v, true); r != "" {
		return "", r
	}
	var str string
	if err := json.Unmarshal(v, &str); err != nil {
		return "", "must be a string"
	}
	return str, ""
}

func jsonSetter(field func(*Span) *json.RawMessage) func(*Span, json.RawMessage) string {
	return func(s *Span, v json.RawMessage) string {
		if !isNull(v) {
			*field(s) = v
		}
		return ""
	}
}

func decRelatedTo(s *Span, v json.RawMessage) string {
	if isNull(v) {
		return ""
	}
	const want = "must be an array of UUID strings"
	if v[0] != '[' {
		return want + ", got " + jsonKind(v)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(v, &items); err != nil {
		return want
	}
	out := make([]string, 0, len(items)) // non-nil: [] is a present empty array
	for i, it := range items {
		str, reason := decString(it)
		if reason != "" {
			return fmt.Sprintf("element %d %s", i, reason)
		}
		out = append(out, str)
	}
	s.RelatedTo = out
	return ""
}

func decBool(s *Span, v json.RawMessage) string {
	switch string(v) {
	case "null":
	case "true":
		s.IsDeleted = true
	case "false":
		s.IsDeleted = false
	default:
		return "must be a boolean, got " + jsonKind(v)
	}
	return ""
}

func decDuration(s *Span, v json.RawMessage) string {
	if isNull(v) {
		return ""
	}
	var n int32
	if reason := decInt32(v, &n); reason != "" {
		return reason
	}
	s.DurationMs = &n
	return ""
}

// decInt32 decodes an integer literal within the Postgres integer range.
// Fractions and exponents are refused even when integral (1.0, 1e3): the
// producer meant a float.
func decInt32(v json.RawMessage, dst *int32) string {
	if isNull(v) {
		return ""
	}
	if len(v) == 0 || !(v[0] == '-' || v[0] >= '0' && v[0] <= '9') {
		return "must be an integer, got " + jsonKind(v)
	}
	if bytes.ContainsAny(v, ".eE") {
		return "must be an integer, got " + truncate(string(v), 40)
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	switch {
	case (err != nil || n > math.MaxInt32) && v[0] != '-':
		return "must be <= 2147483647 (a Postgres integer)"
	case err != nil || n < math.MinInt32:
		return "must be >= 0"
	}
	*dst = int32(n)
	return ""
}

// lineCounter turns byte offsets into 1-based lines and columns, counting
// forward from the last position asked so NDJSON stays linear.
type lineCounter struct {
	data      []byte
	off, line int // line (0-based count of newlines) before data[off]
}

func (c *lineCounter) at(off int) int {
	off = min(max(off, 0), len(c.data))
	if off < c.off {
		c.off, c.line = 0, 0
	}
	c.line += bytes.Count(c.data[c.off:off], []byte("\n"))
	c.off = off
	return c.line + 1
}

func (c *lineCounter) column(off int) int {
	off = min(max(off, 0), len(c.data))
	return off - (bytes.LastIndexByte(c.data[:off], '\n') + 1) + 1
}

func skipSpace(data []byte, off int) int {
	for off < len(data) && (data[off] == ' ' || data[off] == '\t' || data[off] == '\n' || data[off] == '\r') {
		off++
	}
	return off
}
