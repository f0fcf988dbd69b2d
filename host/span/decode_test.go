package span

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const okLine = `{"entity_type":"note","who":"u","this":"x"}`

func TestDecodeForms(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		n    int
	}{
		{"one object", okLine, 1},
		{"one object with newline", okLine + "\n", 1},
		{"pretty object", "{\n  \"entity_type\": \"note\",\n  \"who\": \"u\",\n  \"this\": \"x\"\n}\n", 1},
		{"ndjson", okLine + "\n" + okLine + "\n" + okLine, 3},
		{"ndjson with blank lines and CRLF", "\r\n" + okLine + "\r\n\r\n  \n" + okLine + "\r\n", 2},
		{"concatenated pretty objects", "{\n\"entity_type\":\"a\",\"who\":\"u\",\"this\":\"x\"\n}\n{\n\"entity_type\":\"b\",\"who\":\"u\",\"this\":\"x\"\n}", 2},
		{"utf-8 BOM", "\ufeff" + okLine, 1},
	} {
		spans, err := Decode(strings.NewReader(tc.in))
		require.NoError(t, err, tc.name)
		require.Len(t, spans, tc.n, tc.name)
	}
}

func TestDecodeValues(t *testing.T) {
	t.Parallel()
	in := `{"id":"00000000-0000-4000-8000-000000000001","seq":3,"entity_type":"e","who":"w","this":"t",` +
		`"related_to":[],"is_deleted":true,"duration_ms":0,"input":{"a":[1,{"b":null}]},"output":null,` +
		`"name":null,"seq":3}`
	_, err := Decode(strings.NewReader(in))
	var ie *InputError
	require.ErrorAs(t, err, &ie) // seq twice
	require.Equal(t, "seq", ie.Field)
	require.Contains(t, ie.Reason, "more than once")

	in = strings.Replace(in, `,"seq":3}`, `}`, 1)
	spans, err := Decode(strings.NewReader(in))
	require.NoError(t, err)
	s := spans[0]
	require.Equal(t, int32(3), s.Seq)
	require.True(t, s.IsDeleted)
	require.NotNil(t, s.RelatedTo)
	require.Empty(t, s.RelatedTo)
	require.NotNil(t, s.DurationMs)
	require.Equal(t, int32(0), *s.DurationMs)
	require.JSONEq(t, `{"a":[1,{"b":null}]}`, string(s.Input))
	require.Nil(t, s.Output, "null means absent")
	require.Empty(t, s.Name)
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	two := okLine + "\n" + okLine + "\n"
	for _, tc := range []struct {
		name  string
		in    string
		span  int
		line  int
		field string
		msg   string // the whole Error(), or a substring when it ends with "…"
	}{
		{"empty", "", 0, 0, "", "input: empty input; expected a JSON object, or NDJSON with one object per line"},
		{"blank", " \n\t\n", 0, 0, "", "input: empty input…"},
		{"top-level null", "null", 1, 1, "", "span 1 (line 1): must be a JSON object, got null"},
		{"null line in ndjson", two + "null\n", 3, 3, "", "span 3 (line 3): must be a JSON object, got null"},
		{"array", "[" + okLine + "]", 1, 1, "", "span 1 (line 1): must be a JSON object, got an array"},
		{"trailing garbage", okLine + " garbage", 2, 1, "", "span 2 (line 1): invalid JSON at line 1, column 45: invalid character 'g' looking for beginning of value"},
		{"trailing brace", okLine + "}", 2, 1, "", "span 2 (line 1): invalid JSON at line 1, column 44: invalid character '}' looking for beginning of value"},
		{"malformed line 3", two + `{"who":}` + "\n" + okLine, 3, 3, "", "span 3 (line 3): invalid JSON at line 3, column 8: …"},
		{"truncated last line", two + `{"who":"u"`, 3, 3, "", "span 3 (line 3): invalid JSON: unexpected end of input…"},
		{"unknown field", two + `{"entity_type":"e","who":"u","this":"x","colour":1}`, 3, 3, "colour", `span 3 (line 3) field "colour": unknown field; known fields: …`},
		{"unknown field near miss", `{"entity_type":"e","who":"u","this":"x","ID":"x"}`, 1, 1, "ID", `span 1 (line 1) field "ID": unknown field (did you mean "id"?)`},
		{"seq string", "\n\n" + `{"entity_type":"e","who":"u","this":"x","seq":"1"}`, 1, 3, "seq", `span 1 (line 3) field "seq": must be an integer, got a string`},
		{"seq float", `{"entity_type":"e","who":"u","this":"x","seq":1.5}`, 1, 1, "seq", `span 1 (line 1) field "seq": must be an integer, got 1.5`},
		{"seq exponent", `{"entity_type":"e","who":"u","this":"x","seq":1e3}`, 1, 1, "seq", `… must be an integer, got 1e3`},
		{"seq too big", `{"entity_type":"e","who":"u","this":"x","seq":2147483648}`, 1, 1, "seq", `span 1 (line 1) field "seq": must be <= 2147483647 (a Postgres integer)`},
		{"seq huge", `{"entity_type":"e","who":"u","this":"x","seq":99999999999999999999999}`, 1, 1, "seq", `… must be <= 2147483647…`},
		{"seq negative", `{"entity_type":"e","who":"u","this":"x","seq":-1}`, 1, 1, "seq", `span 1 (line 1) field "seq": must be >= 0`},
		{"seq very negative", `{"entity_type":"e","who":"u","this":"x","seq":-99999999999}`, 1, 1, "seq", `… must be >= 0`},
		{"who number", `{"entity_type":"e","who":5,"this":"x"}`, 1, 1, "who", `span 1 (line 1) field "who": must be a string, got a number`},
		{"empty string", `{"entity_type":"e","who":"u","this":"x","name":""}`, 1, 1, "name", `… must be absent or non-empty…`},
		{"is_deleted string", `{"entity_type":"e","who":"u","this":"x","is_deleted":"false"}`, 1, 1, "is_deleted", `… must be a boolean, got a string`},
		{"duration float", `{"entity_type":"e","who":"u","this":"x","duration_ms":1.5}`, 1, 1, "duration_ms", `… must be an integer…`},
		{"duration negative", `{"entity_type":"e","who":"u","this":"x","duration_ms":-1}`, 1, 1, "duration_ms", `… must be >= 0`},
		{"related_to string", `{"entity_type":"e","who":"u","this":"x","related_to":"x"}`, 1, 1, "related_to", `… must be an array of UUID strings, got a string`},
		{"related_to number entry", `{"entity_type":"e","who":"u","this":"x","related_to":[1]}`, 1, 1, "related_to", `… element 0 must be a string, got a number`},
		{"related_to null entry", `{"entity_type":"e","who":"u","this":"x","related_to":[null]}`, 1, 1, "related_to", `… element 0 must be a string, got null`},
		{"related_to bad uuid", `{"entity_type":"e","who":"u","this":"x","related_to":["x"]}`, 1, 1, "related_to[0]", `… must be a UUID…`},
		{"lone surrogate in text", `{"entity_type":"e","who":"\udc00","this":"x"}`, 1, 1, "who", `… unpaired UTF-16 surrogate…`},
		{"invalid utf-8 in text", "{\"entity_type\":\"e\",\"who\":\"\xff\",\"this\":\"x\"}", 1, 1, "who", `… must be valid UTF-8`},
		{"NUL escape in text", `{"entity_type":"e","who":"a\u0000","this":"x"}`, 1, 1, "who", `… must not contain NUL bytes…`},
		{"missing who", `{"entity_type":"e","this":"x"}`, 1, 1, "who", `span 1 (line 1) field "who": is required`},
		{"nested duplicate key", `{"entity_type":"e","who":"u","this":"x","metadata":{"a":{"b":1,"b":2}}}`, 1, 1, "metadata", `… duplicate key "b" in metadata.a`},
		{"bad uuid on its key's line", "{\n\"entity_type\":\"e\",\n\"who\":\"u\",\n\"this\":\"x\",\n\"id\":\"X\"\n}", 1, 5, "id", `span 1 (line 5) field "id": must be a UUID…`},
		{"upper-case uuid", `{"entity_type":"e","who":"u","this":"x","parent_id":"00000000-0000-4000-8000-00000000000A"}`, 1, 1, "parent_id", `… must be lowercase…`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			spans, err := Decode(strings.NewReader(tc.in))
			require.Nil(t, spans)
			var ie *InputError
			require.ErrorAs(t, err, &ie)
			require.Equal(t, tc.span, ie.Span, err.Error())
			require.Equal(t, tc.line, ie.Line, err.Error())
			require.Equal(t, tc.field, ie.Field, err.Error())
			switch {
			case strings.HasPrefix(tc.msg, "…"):
				require.Contains(t, err.Error(), strings.Trim(tc.msg, "…"))
			case strings.HasSuffix(tc.msg, "…"):
				require.True(t, strings.HasPrefix(err.Error(), strings.TrimSuffix(tc.msg, "…")), err.Error())
			default:
				require.Equal(t, tc.msg, err.Error())
			}
			if tc.field != "" {
				var fe *FieldError
				require.ErrorAs(t, err, &fe, "an InputError about a field unwraps to a FieldError")
				require.Equal(t, tc.field, fe.Field)
			}
		})
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestDecodeReadError(t *testing.T) {
	t.Parallel()
	_, err := Decode(failingReader{})
	require.ErrorContains(t, err, "disk on fire")
	var ie *InputError
	require.False(t, errors.As(err, &ie), "a read failure is not bad input")
}
