package span

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Span is one row of ledger.universal_registry. JSON names are the column
// names; the default encoding/json encoding of a Span is its wire form (every
// present field, curr_hash and signature included).
//
// Absence: a text field is absent when it is "" (an explicit "" is refused
// at decoding, so "" never has to be told apart from null); RelatedTo is
// absent when nil, while a non-nil empty slice is a present empty array;
// DurationMs is absent when nil; a JSON field is absent when empty or the
// literal null. Seq and IsDeleted are always present.
type Span struct {
	ID          string          `json:"id,omitempty"`
	Seq         int32           `json:"seq"`
	EntityType  string          `json:"entity_type,omitempty"`
	Who         string          `json:"who,omitempty"`
	Did         string          `json:"did,omitempty"`
	This        string          `json:"this,omitempty"`
	At          string          `json:"at,omitempty"` // exactly TimeLayout; the hashed form
	ParentID    string          `json:"parent_id,omitempty"`
	RelatedTo   []string        `json:"related_to,omitzero"`
	OwnerID     string          `json:"owner_id,omitempty"`
	TenantID    string          `json:"tenant_id,omitempty"`
	Visibility  string          `json:"visibility,omitempty"`
	Status      string          `json:"status,omitempty"`
	IsDeleted   bool            `json:"is_deleted"`
	Name        string          `json:"name,omitempty"`
	Description string          `json:"description,omitempty"`
	Code        string          `json:"code,omitempty"`
	Language    string          `json:"language,omitempty"`
	Runtime     string          `json:"runtime,omitempty"`
	Input       json.RawMessage `json:"input,omitempty"`
	Output      json.RawMessage `json:"output,omitempty"`
	Error       json.RawMessage `json:"error,omitempty"`
	DurationMs  *int32          `json:"duration_ms,omitempty"`
	TraceID     string          `json:"trace_id,omitempty"`
	PrevHash    string          `json:"prev_hash,omitempty"`
	CurrHash    string          `json:"curr_hash,omitempty"`
	Signature   string          `json:"signature,omitempty"`
	PublicKey   string          `json:"public_key,omitempty"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
}

// Visibility values accepted by the visibility column.
const (
	VisibilityPrivate = "private"
	VisibilityTenant  = "tenant"
	VisibilityPublic  = "public"

	// DefaultVisibility is the column default. The ledger must write it into
	// the span before sealing: a span hashed without visibility would hash
	// differently once read back with the default filled in.
	DefaultVisibility = VisibilityPrivate
)

// HashSize is the size in bytes of a span digest (BLAKE3-256).
const HashSize = 32

// textField is one text column, named for the canonical form and errors.
type textField struct {
	name string
	val  string
}

// numTexts is the number of text columns.
const numTexts = 21

// texts lists the span's text columns in column order, curr_hash and
// signature included (Canonical skips them). It returns an array, which
// stays on the caller's stack.
func (s *Span) texts() [numTexts]textField {
	return [numTexts]textField{
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

// jsonField is one jsonb column.
type jsonField struct {
	name string
	val  json.RawMessage
}

func (s *Span) jsons() [4]jsonField {
	return [4]jsonField{
		{"input", s.Input},
		{"output", s.Output},
		{"error", s.Error},
		{"metadata", s.Metadata},
	}
}

// jsonPresent reports whether a jsonb value counts as present: neither empty
// nor the literal null (top-level null is omitted from the canonical form).
// Whitespace alone is present, and invalid.
func jsonPresent(v json.RawMessage) bool {
	return len(v) > 0 && !bytes.Equal(bytes.TrimSpace(v), []byte("null"))
}

// Canonical returns the canonical form of the span: RFC 8785 (JCS) of every
// present field except curr_hash and signature. It does not run Validate, so
// a stored span that breaks today's rules can still be hashed and verified;
// it fails only when the span has no well-defined canonical form (invalid
// UTF-8, or JSON that JCS refuses).
func (s *Span) Canonical() ([]byte, error) {
	st := getCanon()
	defer putCanon(st)
	out, err := s.appendCanonical(st.out[:0], st, false)
	st.out = out
	if err != nil {
		return nil, fmt.Errorf("error canonicalising span: %w", err)
	}
	return bytes.Clone(out), nil
}

// digest returns the BLAKE3-256 digest of the canonical form.
func (s *Span) digest() ([HashSize]byte, error) {
	st := getCanon()
	defer putCanon(st)
	return s.digestWith(st, false)
}

// Hash returns the span's curr_hash: lowercase hex BLAKE3-256 of its
// canonical form. It neither reads nor sets CurrHash; an unsigned span is
// sealed by setting CurrHash to this value.
func (s *Span) Hash() (string, error) {
	d, err := s.digest()
	if err != nil {
		return "", err
	}
	return hexString(d[:]), nil
}
