package span

// The implementations that the fast paths replaced, kept verbatim (renamed
// *Ref) as the reference the differential and fuzz tests hold the package
// to: the canonical form (json.Marshal of a map of the present fields, then
// jcs.Transform of the whole) and Validate (regexp and time.Parse for at,
// checkJSON's encoding/json walk for the jsonb fields).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

func textsRef(s *Span) []textField {
	return []textField{
		{"id", s.ID},
		{"entity_type", s.EntityType},
		{"who", s.Who},
		{"did", s.Did},
		{"this", s.This},
		{"at", s.At},
		{"parent_id", s.ParentID},
		{"owner_id", s.OwnerID},
		{"tenant_id", s.TenantID},
		{"visibility", s.Visibility},
		{"status", s.Status},
		{"name", s.Name},
		{"description", s.Description},
		{"code", s.Code},
		{"language", s.Language},
		{"runtime", s.Runtime},
		{"trace_id", s.TraceID},
		{"prev_hash", s.PrevHash},
		{"curr_hash", s.CurrHash},
		{"signature", s.Signature},
		{"public_key", s.PublicKey},
	}
}

func jsonsRef(s *Span) []jsonField {
	return []jsonField{
		{"input", s.Input},
		{"output", s.Output},
		{"error", s.Error},
		{"metadata", s.Metadata},
	}
}

func jsonPresentRef(v json.RawMessage) bool {
	return len(v) > 0 && !bytes.Equal(bytes.TrimSpace(v), []byte("null"))
}

// canonicalRef is the original Span.Canonical.
func canonicalRef(s *Span) ([]byte, error) {
	obj := make(map[string]any, 24)
	for _, f := range textsRef(s) {
		if f.val == "" || f.name == "curr_hash" || f.name == "signature" {
			continue
		}
		if !utf8.ValidString(f.val) {
			return nil, fmt.Errorf("error canonicalising span: %w", &FieldError{Field: f.name, Reason: "must be valid UTF-8"})
		}
		obj[f.name] = f.val
	}
	obj["seq"] = s.Seq
	obj["is_deleted"] = s.IsDeleted
	if s.RelatedTo != nil {
		for i, r := range s.RelatedTo {
			if !utf8.ValidString(r) {
				return nil, fmt.Errorf("error canonicalising span: %w", &FieldError{Field: fmt.Sprintf("related_to[%d]", i), Reason: "must be valid UTF-8"})
			}
		}
		obj["related_to"] = s.RelatedTo
	}
	if s.DurationMs != nil {
		obj["duration_ms"] = *s.DurationMs
	}
	for _, f := range jsonsRef(s) {
		if jsonPresentRef(f.val) {
			obj[f.name] = f.val
		}
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("error canonicalising span: %w", err)
	}
	out, err := jcs.Transform(raw)
	if err != nil {
		return nil, fmt.Errorf("error canonicalising span: %w", err)
	}
	return out, nil
}

var timeRERef = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$`)

// parseTimeRef is the original ParseTime.
func parseTimeRef(s string) (time.Time, error) {
	if !timeRERef.MatchString(s) {
		return time.Time{}, fmt.Errorf("must be UTC RFC 3339 with exactly six fractional digits (%s), got %q", TimeLayout, truncate(s, 40))
	}
	t, err := time.Parse(TimeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("is not a valid time: %q", s)
	}
	if t.Year() < 1 {
		return time.Time{}, fmt.Errorf("year must be >= 1, got %q", s)
	}
	return t, nil
}

// validateRef is the original validate.
func validateRef(s *Span) *FieldError {
	if fe := checkSizesRef(s); fe != nil {
		return fe
	}
	if s.ID != "" {
		if r := checkUUIDRef(s.ID); r != "" {
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
	for _, f := range []textField{{"who", s.Who}, {"this", s.This}} {
		if f.val == "" {
			return fieldErr(f.name, "is required")
		}
	}
	for _, f := range textsRef(s) {
		if f.val == "" {
			continue
		}
		if r := checkTextRef(f.name, f.val); r != "" {
			return fieldErr(f.name, "%s", r)
		}
	}
	if s.At != "" {
		if _, err := parseTimeRef(s.At); err != nil {
			return fieldErr("at", "%s", err.Error())
		}
	}
	if s.ParentID != "" {
		if r := checkUUIDRef(s.ParentID); r != "" {
			return fieldErr("parent_id", "%s", r)
		}
	}
	for i, r := range s.RelatedTo {
		if reason := checkUUIDRef(r); reason != "" {
			return fieldErr(fmt.Sprintf("related_to[%d]", i), "%s", reason)
		}
	}
	switch s.Visibility {
	case "", VisibilityPrivate, VisibilityTenant, VisibilityPublic:
	default:
		return fieldErr("visibility", "must be one of private, tenant, public; got %q", truncate(s.Visibility, 40))
	}
	for _, f := range jsonsRef(s) {
		if !jsonPresentRef(f.val) {
			continue
		}
		if r := checkJSON(f.name, f.val); r != "" {
			return fieldErr(f.name, "%s", r)
		}
	}
	if s.DurationMs != nil && *s.DurationMs < 0 {
		return fieldErr("duration_ms", "must be >= 0")
	}
	if s.EntityType == "policy" {
		if _, fe := judgesOf(s.Metadata); fe != nil {
			return fe
		}
	}
	for _, f := range []struct {
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

func checkSizesRef(s *Span) *FieldError {
	total := 0
	for _, f := range textsRef(s) {
		total += len(f.val)
		if r := checkLen(f.name, f.val); r != "" {
			return fieldErr(f.name, "%s", r)
		}
	}
	for _, r := range s.RelatedTo {
		total += len(r)
	}
	for _, f := range jsonsRef(s) {
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

func checkTextRef(name, v string) string {
	if !utf8.ValidString(v) {
		return "must be valid UTF-8"
	}
	if strings.IndexByte(v, 0) >= 0 {
		return "must not contain NUL bytes (Postgres text cannot store them)"
	}
	switch name {
	case "description", "code":
		return ""
	case "id", "at", "parent_id", "visibility", "prev_hash", "curr_hash", "signature", "public_key":
		return ""
	}
	for _, c := range v {
		if unicode.IsControl(c) {
			return "must not contain control characters, found " + strconv.QuoteRune(c)
		}
	}
	return ""
}

func checkUUIDRef(v string) string {
	bad := fmt.Sprintf("must be a UUID in lowercase 8-4-4-4-12 hex form, got %q", truncate(v, 40))
	if len(v) != 36 {
		return bad
	}
	upper := false
	for i := 0; i < 36; i++ {
		c := v[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return bad
			}
			continue
		}
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			upper = true
		default:
			return bad
		}
	}
	if upper {
		return fmt.Sprintf("must be lowercase (Postgres prints uuids in lowercase, so the hash would change), got %q", v)
	}
	return ""
}
