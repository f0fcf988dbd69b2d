package span

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on span fields. They are enforced by Validate so that a span that
// passes here is also accepted by Postgres and fits the host's memory budget.
const (
	// MaxSeq is the largest seq: the column is a Postgres integer.
	MaxSeq = math.MaxInt32
	// MaxEntityTypeLen bounds entity_type, which is matched by kernels and
	// indexed, so it stays a short identifier.
	MaxEntityTypeLen = 64
	// MaxShortText bounds the identifier-like text fields (who, did, this,
	// owner_id, tenant_id, status, name, language, runtime, trace_id): they
	// are labels that land in indexes and log lines, not content.
	MaxShortText = 256
	// MaxDescription bounds description: prose for humans, not payload.
	MaxDescription = 64 << 10
	// MaxCode bounds code, which carries whole modules and bundles.
	MaxCode = 16 << 20
	// MaxJSONBytes bounds each of input, output, error and metadata.
	MaxJSONBytes = 8 << 20
	// MaxSpanBytes bounds the sum of all field values of one span, so one
	// row, its canonical form and a copy in flight stay well inside memory
	// (and far below Postgres' 1 GB field limit).
	MaxSpanBytes = 32 << 20
	// MaxJSONDepth bounds nesting in JSON fields: deeper documents serve no
	// purpose and only exercise the recursion of every parser on the way.
	MaxJSONDepth = 512
	// MaxSafeInteger is the largest integer literal accepted in JSON fields:
	// the canonical form hashes numbers as IEEE doubles (RFC 8785), which
	// carry integers exactly only up to 2^53-1.
	MaxSafeInteger = 1<<53 - 1
)

// FieldError says which span field is wrong and why. Batch callers add the
// span's index or line themselves (Decode does, as *InputError).
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("span field %q: %s", e.Field, e.Reason)
}

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks every field that is present, and requires entity_type, who
// and this. It does not require the fields the ledger fills when it appends
// a span (id, at, visibility, prev_hash, curr_hash, signature, public_key);
// ValidateComplete does. The first problem is returned as a *FieldError.
//
// Rules: id, parent_id and related_to entries are lowercase canonical UUID
// text (Postgres prints uuids in lowercase, and the hash must survive the
// round trip); seq >= 0; entity_type is 1–64 chars of [a-z0-9_.:-]; at is
// exactly TimeLayout; visibility is private, tenant or public; short text
// fields are at most MaxShortText bytes without control characters; all text
// is valid UTF-8 without NUL (Postgres text refuses it); JSON fields are
// valid JSON of at most MaxJSONBytes, without duplicate keys, \u0000 or
// integers beyond MaxSafeInteger; hashes and keys are lowercase hex of the
// right length; signature needs public_key and curr_hash; duration_ms >= 0;
// the whole span is at most MaxSpanBytes; a policy's metadata.judges, when
// present, is a declaration (ParseJudges).
func (s *Span) Validate() error {
	if fe := s.validate(); fe != nil {
		return fe
	}
	return nil
}

// ValidateComplete is Validate plus the fields a stored span always has
// (id, at, visibility): the check to run before sealing a span for the
// ledger, so that it hashes the same once read back.
func (s *Span) ValidateComplete() error {
	if fe := s.validate(); fe != nil {
		return fe
	}
	for _, f := range []textField{{"id", s.ID}, {"at", s.At}, {"visibility", s.Visibility}} {
		if f.val == "" {
			return fieldErr(f.name, "is required in a complete span")
		}
	}
	return nil
}

func (s *Span) validate() *FieldError {
	st := getCanon()
	defer putCanon(st)
	return s.validateWith(st)
}

// validateWith is validate with the caller's scratch space: on success the
// jsonb fields are left parsed in st, so that Seal canonicalises them
// without parsing them again.
func (s *Span) validateWith(st *canonState) *FieldError {
	// Sizes first: they are cheap, and an oversized span should not be
	// walked byte by byte before being refused.
	if fe := s.checkSizes(); fe != nil {
		return fe
	}
	if s.ID != "" {
		if r := checkUUID(s.ID); r != "" {
			return fieldErr("id", "%s", r)
		}
	}
	if s.Seq < 0 {
		return fieldErr("seq", "must be >= 0")
	}
	if s.EntityType == "" {
		return fieldErr("entity_type", "is required")
	}
	if r := checkEntityType(s.EntityType); r != "" {
		return fieldErr("entity_type", "%s", r)
	}
	if s.Who == "" {
		return fieldErr("who", "is required")
	}
	if s.This == "" {
		return fieldErr("this", "is required")
	}
	ts := s.texts()
	for i := range ts {
		if ts[i].val == "" {
			continue
		}
		if r := checkText(ts[i].name, ts[i].val); r != "" {
			return fieldErr(ts[i].name, "%s", r)
		}
	}
	if s.At != "" {
		if r := checkTime(s.At); r != "" {
			return fieldErr("at", "%s", r)
		}
	}
	if s.ParentID != "" {
		if r := checkUUID(s.ParentID); r != "" {
			return fieldErr("parent_id", "%s", r)
		}
	}
	for i, r := range s.RelatedTo {
		if reason := checkUUID(r); reason != "" {
			return fieldErr(fmt.Sprintf("related_to[%d]", i), "%s", reason)
		}
	}
	switch s.Visibility {
	case "", VisibilityPrivate, VisibilityTenant, VisibilityPublic:
	default:
		return fieldErr("visibility", "must be one of private, tenant, public; got %q", truncate(s.Visibility, 40))
	}
	st.tree.reset()
	for i, f := range s.jsons() {
		if !jsonPresent(f.val) {
			continue
		}
		root, fast := st.tree.parse(f.val, true)
		if fast != "" {
			// The fast parse only says no; checkJSON says why, exactly as
			// before. It cannot accept what the fast parse refused (the
			// differential tests hold them to the same verdicts), but if
			// it did, the span is refused all the same.
			r := checkJSON(f.name, f.val)
			if r == "" {
				r = fast
			}
			return &FieldError{Field: f.name, Reason: r}
		}
		st.roots[i] = root
	}
	if s.DurationMs != nil && *s.DurationMs < 0 {
		return fieldErr("duration_ms", "must be >= 0")
	}
	if s.EntityType == "policy" {
		// What the policy declares it judges (judges.go): a bad
		// declaration would otherwise be read as none, "every span".
		if _, fe := judgesOf(s.Metadata); fe != nil {
			return fe
		}
	}
	for _, f := range [...]struct {
		name string
		val  string
		n    int
	}{
		{"prev_hash", s.PrevHash, 2 * HashSize},
		{"curr_hash", s.CurrHash, 2 * HashSize},
		{"public_key", s.PublicKey, 64},
		{"signature", s.Signature, 128},
	} {
		if f.val != "" && !isLowerHex(f.val, f.n) {
			return fieldErr(f.name, "must be %d lowercase hex characters", f.n)
		}
	}
	if s.Signature != "" {
		if s.PublicKey == "" {
			return fieldErr("signature", "requires public_key")
		}
		if s.CurrHash == "" {
			return fieldErr("signature", "requires curr_hash")
		}
	}
	return nil
}

// checkSizes applies the per-field byte limits and MaxSpanBytes, which is
// measured as the sum of the byte lengths of all field values.
func (s *Span) checkSizes() *FieldError {
	total := 0
	ts := s.texts()
	for i := range ts {
		total += len(ts[i].val)
		if r := checkLen(ts[i].name, ts[i].val); r != "" {
			return fieldErr(ts[i].name, "%s", r)
		}
	}
	for _, r := range s.RelatedTo {
		total += len(r)
	}
	for _, f := range s.jsons() {
		total += len(f.val)
		if len(f.val) > MaxJSONBytes {
			return fieldErr(f.name, "is %d bytes, more than the limit of %d", len(f.val), MaxJSONBytes)
		}
	}
	if total > MaxSpanBytes {
		return fieldErr("span", "is %d bytes, more than the limit of %d", total, MaxSpanBytes)
	}
	return nil
}

// checkLen applies the byte limit of one text field.
func checkLen(name, v string) string {
	limit := MaxShortText
	switch name {
	case "description":
		limit = MaxDescription
	case "code":
		limit = MaxCode
	case "entity_type":
		limit = MaxEntityTypeLen
	case "id", "at", "parent_id", "visibility", "prev_hash", "curr_hash", "signature", "public_key":
		return "" // fixed formats, checked on their own
	}
	if len(v) > limit {
		return fmt.Sprintf("is %d bytes, more than the limit of %d", len(v), limit)
	}
	return ""
}

// checkText applies the per-field text rules (encoding, NUL, control
// characters in short fields) and returns a reason or "".
func checkText(name, v string) string {
	if !utf8.ValidString(v) {
		return "must be valid UTF-8"
	}
	if strings.IndexByte(v, 0) >= 0 {
		return "must not contain NUL bytes (Postgres text cannot store them)"
	}
	switch name {
	case "description", "code": // prose and source: newlines and tabs belong
		return ""
	case "id", "at", "parent_id", "visibility", "prev_hash", "curr_hash", "signature", "public_key":
		return "" // fixed formats, checked on their own
	}
	for i := 0; i < len(v); {
		c := v[i]
		if c >= 0x20 && c < 0x7f { // printable ASCII, the common case
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(v[i:])
		if unicode.IsControl(r) {
			return "must not contain control characters, found " + strconv.QuoteRune(r)
		}
		i += n
	}
	return ""
}

func checkEntityType(v string) string {
	if len(v) > MaxEntityTypeLen {
		return fmt.Sprintf("is %d bytes, more than the limit of %d", len(v), MaxEntityTypeLen)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return fmt.Sprintf("must be 1-%d characters of [a-z0-9_.:-], got %q", MaxEntityTypeLen, truncate(v, 70))
		}
	}
	return ""
}

// checkUUID accepts only the form Postgres prints: 8-4-4-4-12 lowercase hex.
func checkUUID(v string) string {
	bad := func() string {
		return fmt.Sprintf("must be a UUID in lowercase 8-4-4-4-12 hex form, got %q", truncate(v, 40))
	}
	if len(v) != 36 {
		return bad()
	}
	upper := false
	for i := 0; i < 36; i++ {
		c := v[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return bad()
			}
			continue
		}
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			upper = true
		default:
			return bad()
		}
	}
	if upper {
		return fmt.Sprintf("must be lowercase (Postgres prints uuids in lowercase, so the hash would change), got %q", v)
	}
	return ""
}

func isLowerHex(v string, n int) bool {
	if len(v) != n {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// CheckJSON reports whether raw can be stored as a jsonb field of a span
// (input, output, error, metadata) exactly as Validate would accept it there:
// it is the check for JSON a guest hands back, made before the host builds
// a span around it, so that an unstorable value fails the one run that made
// it rather than the append of a whole batch. The error is a *FieldError
// naming field.
func CheckJSON(field string, raw []byte) error {
	st := getCanon()
	defer putCanon(st)
	st.tree.reset()
	if _, fast := st.tree.parse(raw, true); fast != "" {
		r := checkJSON(field, raw)
		if r == "" {
			r = fast
		}
		return &FieldError{Field: field, Reason: r}
	}
	return nil
}

// CleanText makes s storable as span text (valid UTF-8 without NUL),
// replacing what is not with U+FFFD: for messages the host writes that
// carry a guest's words (a thrown error, a log line).
func CleanText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// CheckStorable reports whether JSON text could be stored anywhere in the
// ledger once decoded, whatever its shape: valid UTF-8, valid JSON, no
// \u0000 and no unpaired surrogate escape in any string or key (Postgres
// text and jsonb refuse them), nested at most MaxJSONDepth+1 levels (a span
// object around its jsonb fields). What it refuses no span built from it
// can hold; what it accepts may still be an invalid span, for Validate to
// say.
func CheckStorable(raw []byte) error {
	if !utf8.Valid(raw) {
		return fmt.Errorf("is not valid UTF-8")
	}
	if !json.Valid(raw) {
		return fmt.Errorf("is not valid JSON")
	}
	if r := checkEscapes(raw, false); r != "" {
		return fmt.Errorf("%s", r)
	}
	depth, inString := 0, false
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			if depth++; depth > MaxJSONDepth+1 {
				return fmt.Errorf("nests deeper than %d levels", MaxJSONDepth+1)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}
