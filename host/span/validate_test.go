package span

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		name   string
		mutate func(*Span)
		field  string // "" = valid
		reason string // substring of the reason
	}{
		{"full span", func(*Span) {}, "", ""},
		{"minimal span", func(s *Span) { *s = Span{EntityType: "e", Who: "w", This: "t"} }, "", ""},
		{"nil uuid", func(s *Span) { s.ID = "00000000-0000-0000-0000-000000000000" }, "", ""},
		{"empty related_to", func(s *Span) { s.RelatedTo = []string{} }, "", ""},
		{"unicode in short field", func(s *Span) { s.Who = "olá — ✓ 🚀" }, "", ""},
		{"short field at limit", func(s *Span) { s.Name = long(MaxShortText) }, "", ""},
		{"entity_type at limit", func(s *Span) { s.EntityType = long(MaxEntityTypeLen) }, "", ""},
		{"entity_type charset", func(s *Span) { s.EntityType = "a-z_0.9:x" }, "", ""},
		{"code with tabs and newlines", func(s *Span) { s.Code = "a\tb\r\nc" }, "", ""},
		{"max seq", func(s *Span) { s.Seq = MaxSeq }, "", ""},
		{"max safe integer", func(s *Span) { s.Metadata = json.RawMessage(`{"n":9007199254740991,"m":-9007199254740991}`) }, "", ""},
		{"big float", func(s *Span) { s.Metadata = json.RawMessage(`{"n":1e+300}`) }, "", ""},
		{"paired surrogates", func(s *Span) { s.Metadata = json.RawMessage(`{"e":"\ud83d\ude80"}`) }, "", ""},
		{"escaped backslash before u0000", func(s *Span) { s.Metadata = json.RawMessage(`{"e":"\\u0000"}`) }, "", ""},
		{"json scalar", func(s *Span) { s.Output = json.RawMessage(`42`) }, "", ""},

		{"id not uuid", func(s *Span) { s.ID = "not-a-uuid" }, "id", "UUID"},
		{"id seed style", func(s *Span) { s.ID = "00000000-0000-4000-8000-bldp00000001" }, "id", "UUID"},
		{"id uppercase", func(s *Span) { s.ID = "0190A4C2-7B1E-7CC0-9A55-3F1D2E4B5A60" }, "id", "lowercase"},
		{"id braces", func(s *Span) { s.ID = "{0190a4c2-7b1e-7cc0-9a55-3f1d2e4b5a6}" }, "id", "UUID"},
		{"id no hyphens", func(s *Span) { s.ID = "0190a4c27b1e7cc09a553f1d2e4b5a60" }, "id", "UUID"},
		{"seq negative", func(s *Span) { s.Seq = -1 }, "seq", "must be >= 0"},
		{"entity_type missing", func(s *Span) { s.EntityType = "" }, "entity_type", "required"},
		{"entity_type uppercase", func(s *Span) { s.EntityType = "Function" }, "entity_type", "[a-z0-9_.:-]"},
		{"entity_type space", func(s *Span) { s.EntityType = "a b" }, "entity_type", "[a-z0-9_.:-]"},
		{"entity_type too long", func(s *Span) { s.EntityType = long(MaxEntityTypeLen + 1) }, "entity_type", "limit"},
		{"who missing", func(s *Span) { s.Who = "" }, "who", "required"},
		{"this missing", func(s *Span) { s.This = "" }, "this", "required"},
		{"who too long", func(s *Span) { s.Who = long(MaxShortText + 1) }, "who", "limit"},
		{"did control char", func(s *Span) { s.Did = "a\nb" }, "did", "control"},
		{"this DEL", func(s *Span) { s.This = "a\x7fb" }, "this", "control"},
		{"owner_id NUL", func(s *Span) { s.OwnerID = "a\x00b" }, "owner_id", "NUL"},
		{"tenant_id invalid utf8", func(s *Span) { s.TenantID = "a\xffb" }, "tenant_id", "UTF-8"},
		{"status too long", func(s *Span) { s.Status = long(MaxShortText + 1) }, "status", "limit"},
		{"name C1 control", func(s *Span) { s.Name = "a\u0085b" }, "name", "control"},
		{"language too long", func(s *Span) { s.Language = long(MaxShortText + 1) }, "language", "limit"},
		{"runtime tab", func(s *Span) { s.Runtime = "quick\tjs" }, "runtime", "control"},
		{"trace_id too long", func(s *Span) { s.TraceID = long(MaxShortText + 1) }, "trace_id", "limit"},
		{"description too long", func(s *Span) { s.Description = long(MaxDescription + 1) }, "description", "limit"},
		{"description NUL", func(s *Span) { s.Description = "a\x00" }, "description", "NUL"},
		{"code too long", func(s *Span) { s.Code = long(MaxCode + 1) }, "code", "limit"},
		{"code NUL", func(s *Span) { s.Code = "\x00asm" }, "code", "NUL"},
		{"code invalid utf8", func(s *Span) { s.Code = "\xc3\x28" }, "code", "UTF-8"},
		{"at wrong precision", func(s *Span) { s.At = "2026-11-26T12:00:00Z" }, "at", "six fractional digits"},
		{"at offset", func(s *Span) { s.At = "2026-11-26T12:00:00.000000+01:00" }, "at", "six fractional digits"},
		{"at impossible date", func(s *Span) { s.At = "2026-02-30T12:00:00.000000Z" }, "at", "not a valid time"},
		{"parent_id not uuid", func(s *Span) { s.ParentID = "x" }, "parent_id", "UUID"},
		{"parent_id uppercase", func(s *Span) { s.ParentID = "00000000-0000-4000-8000-00000000000A" }, "parent_id", "lowercase"},
		{"related_to entry", func(s *Span) { s.RelatedTo = []string{s.ParentID, "nope"} }, "related_to[1]", "UUID"},
		{"related_to empty entry", func(s *Span) { s.RelatedTo = []string{""} }, "related_to[0]", "UUID"},
		{"visibility", func(s *Span) { s.Visibility = "everyone" }, "visibility", "private, tenant, public"},
		{"visibility case", func(s *Span) { s.Visibility = "Public" }, "visibility", "private, tenant, public"},
		{"input invalid json", func(s *Span) { s.Input = json.RawMessage(`{"a":}`) }, "input", "not valid JSON"},
		{"input whitespace only", func(s *Span) { s.Input = json.RawMessage(`  `) }, "input", "not valid JSON"},
		{"input trailing data", func(s *Span) { s.Input = json.RawMessage(`{} {}`) }, "input", "not valid JSON"},
		{"output duplicate key", func(s *Span) { s.Output = json.RawMessage(`{"a":1,"a":2}`) }, "output", `duplicate key "a" in output`},
		{"metadata deep duplicate", func(s *Span) { s.Metadata = json.RawMessage(`{"x":[{"y":{"k":1,"k":1}}]}`) }, "metadata", `duplicate key "k" in metadata.x[0].y`},
		{"error NUL escape", func(s *Span) { s.Error = json.RawMessage(`{"m":"a\u0000b"}`) }, "error", `\u0000`},
		{"metadata NUL in key", func(s *Span) { s.Metadata = json.RawMessage(`{"\u0000":1}`) }, "metadata", `\u0000`},
		{"metadata lone high surrogate", func(s *Span) { s.Metadata = json.RawMessage(`{"m":"\ud800x"}`) }, "metadata", "surrogate"},
		{"metadata lone low surrogate", func(s *Span) { s.Metadata = json.RawMessage(`{"m":"\udc00"}`) }, "metadata", "surrogate"},
		{"metadata invalid utf8", func(s *Span) { s.Metadata = json.RawMessage("{\"m\":\"\xff\"}") }, "metadata", "UTF-8"},
		{"metadata unsafe integer", func(s *Span) { s.Metadata = json.RawMessage(`{"n":9007199254740993}`) }, "metadata", "2^53"},
		{"metadata huge integer", func(s *Span) { s.Metadata = json.RawMessage(`{"n":-123456789012345678901234567890}`) }, "metadata", "2^53"},
		{"metadata number out of range", func(s *Span) { s.Metadata = json.RawMessage(`[1e400]`) }, "metadata", "double range"},
		{"metadata too deep", func(s *Span) {
			s.Metadata = json.RawMessage(strings.Repeat("[", MaxJSONDepth+1) + strings.Repeat("]", MaxJSONDepth+1))
		}, "metadata", "deeper"},
		{"metadata too large", func(s *Span) { s.Metadata = json.RawMessage(`"` + long(MaxJSONBytes) + `"`) }, "metadata", "limit"},
		{"duration_ms negative", func(s *Span) { s.DurationMs = ptr(int32(-1)) }, "duration_ms", ">= 0"},
		{"prev_hash short", func(s *Span) { s.PrevHash = "abc" }, "prev_hash", "64 lowercase hex"},
		{"prev_hash uppercase", func(s *Span) { s.PrevHash = strings.Repeat("AB", 32) }, "prev_hash", "64 lowercase hex"},
		{"curr_hash not hex", func(s *Span) { s.CurrHash = strings.Repeat("zz", 32) }, "curr_hash", "64 lowercase hex"},
		{"public_key length", func(s *Span) { s.PublicKey = strings.Repeat("a", 63) }, "public_key", "64 lowercase hex"},
		{"signature length", func(s *Span) {
			s.CurrHash, s.PublicKey, s.Signature = strings.Repeat("a", 64), strings.Repeat("a", 64), strings.Repeat("a", 64)
		}, "signature", "128 lowercase hex"},
		{"signature without public_key", func(s *Span) {
			s.CurrHash, s.Signature = strings.Repeat("a", 64), strings.Repeat("a", 128)
		}, "signature", "requires public_key"},
		{"signature without curr_hash", func(s *Span) {
			s.PublicKey, s.Signature = strings.Repeat("a", 64), strings.Repeat("a", 128)
		}, "signature", "requires curr_hash"},
		{"whole span too large", func(s *Span) {
			s.Code = long(MaxCode)
			s.Input = json.RawMessage(`"` + long(MaxJSONBytes-2) + `"`)
			s.Output = json.RawMessage(`"` + long(MaxJSONBytes-2) + `"`)
		}, "span", "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := fullSpan()
			tc.mutate(&s)
			err := s.Validate()
			if tc.field == "" {
				require.NoError(t, err)
				return
			}
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, tc.field, fe.Field, fe.Error())
			require.Contains(t, fe.Reason, tc.reason)
			require.Contains(t, err.Error(), `span field "`+tc.field+`": `)
		})
	}
}

func TestValidateComplete(t *testing.T) {
	t.Parallel()
	s := fullSpan()
	require.NoError(t, s.ValidateComplete())
	for _, f := range []string{"id", "at", "visibility"} {
		c := fullSpan()
		switch f {
		case "id":
			c.ID = ""
		case "at":
			c.At = ""
		case "visibility":
			c.Visibility = ""
		}
		require.NoError(t, c.Validate(), f)
		err := c.ValidateComplete()
		var fe *FieldError
		require.ErrorAs(t, err, &fe, f)
		require.Equal(t, f, fe.Field)
	}
	c := fullSpan()
	c.Seq = -5
	require.Error(t, c.ValidateComplete())
}

func TestFieldErrorMessage(t *testing.T) {
	t.Parallel()
	require.Equal(t, `span field "seq": must be >= 0`, (&FieldError{Field: "seq", Reason: "must be >= 0"}).Error())
}
