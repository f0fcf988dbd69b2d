package span

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
	"github.com/stretchr/testify/require"
	"lukechampine.com/blake3"
)

// gen produces random spans, strings and JSON documents that lean on what
// canonicalisation gets wrong: control characters, U+2028/U+2029, HTML
// characters, quotes and backslashes, non-BMP characters and keys whose
// UTF-16 order differs from their code point order, every kind of escape,
// and numbers whose ES6 form differs from their literal.
type gen struct {
	r *rand.Rand
	// bad is the chance (in 1/1000) of each kind of defect.
	bad int
}

func newGen(seed uint64, bad int) *gen {
	return &gen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), bad: bad}
}

func (g *gen) chance(perMille int) bool { return g.r.IntN(1000) < perMille }

// interesting runes.
var genRunes = []rune{
	0, 1, '\b', '\t', '\n', 0x0b, '\f', '\r', 0x1b, 0x1f, ' ', '"', '\\', '/', '<', '>', '&', '\'', 0x7f,
	0x80, 0x85, 0x9f, 0xa0, 0xe9, 0xff, 0x100, 0x7ff, 0x800, 0x2028, 0x2029, 0xd7ff, 0xe000, 0xfeff,
	0xfffd, 0xfffe, 0xffff, 0x10000, 0x1f600, 0x1f680, 0x10ffff, '中', 'a', 'z', 'A', 'Z', '0', '9',
}

func (g *gen) rune() rune {
	switch g.r.IntN(6) {
	case 0, 1:
		return genRunes[g.r.IntN(len(genRunes))]
	case 2:
		return rune(0x20 + g.r.IntN(0x5f)) // printable ASCII
	case 3:
		return rune(g.r.IntN(0x80))
	case 4:
		for {
			if r := rune(g.r.IntN(0x10000)); !utf16.IsSurrogate(r) {
				return r
			}
		}
	default:
		return rune(0x10000 + g.r.IntN(0x100000))
	}
}

// text returns a random Go string, invalid UTF-8 now and then.
func (g *gen) text(maxRunes int) string {
	var b strings.Builder
	n := g.r.IntN(maxRunes + 1)
	for range n {
		b.WriteRune(g.rune())
	}
	s := b.String()
	if g.chance(g.bad) && len(s) > 0 {
		bad := [...]string{"\xff", "\xc3", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80", "\xe2\x80"}
		i := g.r.IntN(len(s) + 1)
		for i < len(s) && !utf8.RuneStart(s[i]) {
			i++
		}
		s = s[:i] + bad[g.r.IntN(len(bad))] + s[i:]
	}
	return s
}

// nonEmptyText returns a text of at least one byte.
func (g *gen) nonEmptyText(maxRunes int) string {
	for {
		if s := g.text(maxRunes); s != "" {
			return s
		}
	}
}

func (g *gen) ws() string {
	if g.r.IntN(4) != 0 {
		return ""
	}
	return [...]string{" ", "\n", "\t", "\r\n", "  \t "}[g.r.IntN(5)]
}

var shortEscapes = map[rune]string{'"': `\"`, '\\': `\\`, '/': `\/`, '\b': `\b`, '\f': `\f`, '\n': `\n`, '\r': `\r`, '\t': `\t`}

// jsonString returns a JSON string literal holding s, each character
// written raw or escaped in one of its valid forms.
func (g *gen) jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		short := shortEscapes[r]
		mustEscape := r < 0x20 || r == '"' || r == '\\'
		switch {
		case short != "" && (mustEscape || g.r.IntN(3) == 0) && g.r.IntN(2) == 0:
			b.WriteString(short)
		case mustEscape || g.r.IntN(8) == 0:
			hexFmt := "\\u%04x"
			if g.r.IntN(2) == 0 {
				hexFmt = "\\u%04X"
			}
			if r >= 0x10000 {
				hi, lo := utf16.EncodeRune(r)
				fmt.Fprintf(&b, hexFmt+hexFmt, hi, lo)
			} else {
				fmt.Fprintf(&b, hexFmt, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	out := b.String()
	if g.chance(g.bad) {
		defects := [...]string{`\ud800`, `\udc00`, `\ud800\u0041`, `\ud83d\n`, "\x01", "\xff", `\u12`, `\u0000`, "\xed\xa0\x80",
			`\` + string(rune(0x20+g.r.IntN(0x5f))), `\ud83d\` + string(rune(0x20+g.r.IntN(0x5f)))}
		out = out[:1] + defects[g.r.IntN(len(defects))] + out[1:]
	}
	return out
}

var genNumbers = []string{
	"0", "-0", "1", "-1", "0.1", "-0.1", "1e21", "1e+21", "1E21", "1e20", "1e-6", "1e-7", "0.000001", "0.0000001",
	"100000000000000000000", "1000000000000000000000", "-0.0", "0e0", "0E-0", "-0e+5", "1e0", "1.0", "10.50",
	"1.5e-7", "4999950000", "9007199254740991", "-9007199254740991", "9007199254740992", "9007199254740993",
	"-9007199254740993", "123456789012345678901234567890", "1e400", "-1e400", "1e-400", "5e-324", "2.5e-324",
	"1.7976931348623157e308", "1.7976931348623159e308", "2.5", "3.141592653589793238462643383279", "999999999999999",
	"1000000000000000", "123456789012345", "-123456789012345", "1234567890123456", "99999999999999999999",
	"0.30000000000000004", "1e23", "9.999999999999999e22", "2e-7", "123e-20", "-5E+3", "0.5e1", "12345678901234567e-5",
}

func (g *gen) number() string {
	switch g.r.IntN(4) {
	case 0, 1:
		return genNumbers[g.r.IntN(len(genNumbers))]
	case 2:
		return strconv.FormatInt(g.r.Int64N(1<<62)>>g.r.IntN(62)*int64(1-2*g.r.IntN(2)), 10)
	default:
		f := math.Float64frombits(g.r.Uint64())
		if math.IsNaN(f) || math.IsInf(f, 0) {
			f = g.r.NormFloat64() * math.Pow(10, float64(g.r.IntN(40)-20))
		}
		return strconv.FormatFloat(f, "eEfg"[g.r.IntN(4)], g.r.IntN(20)-1, 64)
	}
}

// genKeys are object keys, among them keys whose UTF-16 order differs from
// their code point order (U+E000 and up against supplementary characters).
var genKeys = []string{
	"a", "b", "A", "", "aa", "ab", "a\x00", "\n", "\"", "\\", "<", "é", "\u00e9", "😀", "\U0001F600", "\uFFFD",
	"\ue000", "\uffff", "\U00010000", "\U0010FFFF", "\u2028", "中", "key", "Key", "k\u0301", "ı", "\x7f", "1", "10", "9",
}

func (g *gen) key() string {
	if g.r.IntN(4) == 0 {
		return g.text(4)
	}
	return genKeys[g.r.IntN(len(genKeys))]
}

// json returns a random JSON text.
func (g *gen) json(depth int) string {
	k := g.r.IntN(10)
	if depth >= 5 {
		k = g.r.IntN(6)
	}
	switch {
	case k < 2:
		return g.number()
	case k < 4:
		return g.jsonString(g.text(8))
	case k < 5:
		return [...]string{"true", "false", "null"}[g.r.IntN(3)]
	case k < 6:
		return g.number()
	case k < 8:
		var b strings.Builder
		b.WriteString("[" + g.ws())
		for i := range g.r.IntN(5) {
			if i > 0 {
				b.WriteString(g.ws() + "," + g.ws())
			}
			b.WriteString(g.json(depth + 1))
		}
		b.WriteString(g.ws() + "]")
		return b.String()
	default:
		var b strings.Builder
		b.WriteString("{" + g.ws())
		seen := map[string]bool{}
		n := g.r.IntN(7)
		if g.r.IntN(20) == 0 {
			n = 10 + g.r.IntN(30) // past the insertion sort
		}
		for i := range n {
			key := g.key()
			if seen[key] && !g.chance(g.bad) {
				continue
			}
			seen[key] = true
			if i > 0 && b.Len() > 1 {
				b.WriteString(g.ws() + "," + g.ws())
			}
			b.WriteString(g.jsonString(key) + g.ws() + ":" + g.ws() + g.json(depth+1))
		}
		b.WriteString(g.ws() + "}")
		return b.String()
	}
}

// rawJSON returns a jsonb field value: a document, with defects now and then.
func (g *gen) rawJSON() json.RawMessage {
	doc := g.ws() + g.json(0) + g.ws()
	if g.chance(g.bad) {
		switch g.r.IntN(8) {
		case 0:
			doc = doc[:g.r.IntN(len(doc)+1)]
		case 1:
			doc += [...]string{",", "}", "]", " 1", "x"}[g.r.IntN(5)]
		case 2:
			doc = [...]string{"01", "1.", ".5", "+1", "tru", "nul", "[1,]", `{"a"}`, `{"a":1,}`, "NaN", "Infinity",
				"  ", "\ufeff{}", "[\"\x01\"]", "-", "1e", "1e+", "[1 2]", `{"a" 1}`, "\xff"}[g.r.IntN(20)]
		case 3:
			i := g.r.IntN(len(doc) + 1)
			doc = doc[:i] + string(rune(g.r.IntN(0x80))) + doc[i:]
		case 4:
			doc = strings.Repeat("[", 600) + strings.Repeat("]", 600)
		default:
			doc = `{"dup":1,"d\u0075p":2}`
		}
	}
	return json.RawMessage(doc)
}

func (g *gen) uuid() string {
	const hexChars = "0123456789abcdef"
	b := []byte("00000000-0000-0000-0000-000000000000")
	for i := range b {
		if b[i] != '-' {
			b[i] = hexChars[g.r.IntN(16)]
		}
	}
	if g.chance(g.bad) {
		b[g.r.IntN(len(b))] = "gG-xA0"[g.r.IntN(6)]
	}
	return string(b)
}

func (g *gen) at() string {
	s := fmt.Sprintf("%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
		[]int{0, 1, 1900, 1999, 2000, 2024, 2026, 2100, 9999}[g.r.IntN(9)],
		g.r.IntN(14), g.r.IntN(33), g.r.IntN(25), g.r.IntN(61), g.r.IntN(62), g.r.IntN(1000000))
	if g.r.IntN(3) == 0 {
		s = fmt.Sprintf("2026-%02d-%02dT12:00:00.000001Z", 1+g.r.IntN(12), 1+g.r.IntN(28))
	}
	if g.chance(g.bad) {
		i := g.r.IntN(len(s))
		s = s[:i] + string("0aTZ:.-+ t"[g.r.IntN(10)]) + s[i+1:]
	}
	return s
}

func (g *gen) hexString(n int) string {
	b := make([]byte, n/2)
	for i := range b {
		b[i] = byte(g.r.IntN(256))
	}
	s := hex.EncodeToString(b)
	if g.chance(g.bad) {
		s = strings.ToUpper(s)
	}
	return s
}

// label returns a non-empty text without control characters, most of the
// time (short fields refuse them).
func (g *gen) label(maxRunes int) string {
	if g.chance(g.bad) {
		return g.nonEmptyText(maxRunes)
	}
	var b strings.Builder
	for b.Len() == 0 {
		for range 1 + g.r.IntN(maxRunes) {
			if r := g.rune(); !unicode.IsControl(r) {
				b.WriteRune(r)
			}
		}
	}
	return b.String()
}

// pick returns one of vs, the first ones most of the time and the last one
// (the odd one out) with the defect chance.
func pick[T any](g *gen, vs ...T) T {
	if g.chance(g.bad) {
		return vs[len(vs)-1]
	}
	return vs[g.r.IntN(len(vs)-1)]
}

// span returns a random span. With plausible, fields are well formed but
// for the defects g.bad asks for, so that Validate gets to every check;
// otherwise text fields are arbitrary strings.
func (g *gen) span(plausible bool) Span {
	s := fullSpan()
	opt := func(f func() string) string {
		if g.r.IntN(4) == 0 {
			return ""
		}
		return f()
	}
	short := func() string { return g.nonEmptyText(12) }
	long := func() string { return g.nonEmptyText(200) }
	if plausible {
		label := func() string { return g.label(12) }
		s.ID = opt(g.uuid)
		s.ParentID = opt(g.uuid)
		s.At = opt(g.at)
		s.PrevHash = opt(func() string { return g.hexString(64) })
		s.PublicKey = opt(func() string { return g.hexString(64) })
		s.Visibility = opt(func() string { return pick(g, "private", "tenant", "public", "Public") })
		s.EntityType = pick(g, "execution", "function", "a-z_0.9:x", "Bad")
		s.Who, s.This = label(), label()
		s.Did, s.OwnerID, s.TenantID = opt(label), opt(label), opt(label)
		s.Status, s.Name, s.Language, s.Runtime, s.TraceID = opt(label), opt(label), opt(label), opt(label), opt(label)
	} else {
		s.ID, s.ParentID, s.At, s.PrevHash, s.PublicKey = opt(short), opt(short), opt(short), opt(short), opt(short)
		s.Visibility, s.EntityType = opt(short), opt(short)
		s.CurrHash, s.Signature = opt(short), opt(short)
		s.Who, s.Did, s.This, s.OwnerID, s.TenantID = opt(short), opt(short), opt(short), opt(short), opt(short)
		s.Status, s.Name, s.Language, s.Runtime, s.TraceID = opt(short), opt(short), opt(short), opt(short), opt(short)
	}
	if plausible && !g.chance(g.bad) {
		long = func() string { return "x" + strings.ReplaceAll(g.text(200), "\x00", "") } // no NUL
	}
	s.Description, s.Code = opt(long), opt(long)
	switch g.r.IntN(4) {
	case 0:
		s.RelatedTo = nil
	case 1:
		s.RelatedTo = []string{}
	default:
		s.RelatedTo = nil
		for range 1 + g.r.IntN(3) {
			if plausible {
				s.RelatedTo = append(s.RelatedTo, g.uuid())
			} else {
				s.RelatedTo = append(s.RelatedTo, g.text(6))
			}
		}
	}
	if plausible {
		s.Seq = pick[int32](g, 0, 1, 7, math.MaxInt32, -1)
		s.DurationMs = pick[*int32](g, nil, ptr(int32(0)), ptr(int32(12)), ptr(int32(math.MaxInt32)), ptr(int32(-1)))
	} else {
		s.Seq = int32(g.r.Uint32())
		if g.r.IntN(4) > 0 {
			s.DurationMs = ptr(int32(g.r.Uint32()))
		} else {
			s.DurationMs = nil
		}
	}
	s.IsDeleted = g.r.IntN(2) == 0
	for _, f := range []*json.RawMessage{&s.Input, &s.Output, &s.Error, &s.Metadata} {
		switch g.r.IntN(8) {
		case 0:
			*f = nil
		case 1:
			*f = json.RawMessage([]string{"null", " null\n", "\tnull", ""}[g.r.IntN(4)])
		default:
			*f = g.rawJSON()
		}
	}
	return s
}

// iterations scales a differential test's loop: a few seconds in all by
// default, less under -short or the race detector. FuzzCanonical is the
// place for long runs.
func iterations(n int) int {
	if testing.Short() {
		n /= 10
	}
	if raceEnabled {
		n /= 5
	}
	return max(n, 50)
}

// requireSameCanonical holds Canonical and Hash to the reference.
func requireSameCanonical(t testing.TB, s *Span) {
	t.Helper()
	want, wantErr := canonicalRef(s)
	got, err := s.Canonical()
	if wantErr != nil {
		require.Error(t, err, "reference refused (%v); span %#v", wantErr, s)
		var fe *FieldError
		require.ErrorAs(t, err, &fe)
		_, hashErr := s.Hash()
		require.Error(t, hashErr)
		return
	}
	require.NoError(t, err, "span %#v", s)
	require.Equal(t, string(want), string(got), "span %#v", s)
	d := blake3.Sum256(want)
	h, err := s.Hash()
	require.NoError(t, err)
	require.Equal(t, hex.EncodeToString(d[:]), h)
}

// requireSameValidation holds Validate to the reference: the same verdict,
// field and reason.
func requireSameValidation(t testing.TB, s *Span) {
	t.Helper()
	want := validateRef(s)
	got := s.validate()
	if want == nil {
		require.Nil(t, got, "span %#v", s)
		return
	}
	require.NotNil(t, got, "reference refused %v; span %#v", want, s)
	require.Equal(t, *want, *got, "span %#v", s)
}

func TestCanonicalMatchesReference(t *testing.T) {
	t.Parallel()
	n := iterations(1500)
	for _, bad := range []int{0, 20} {
		g := newGen(uint64(1+bad), bad)
		for range n {
			for _, plausible := range []bool{false, true} {
				s := g.span(plausible)
				requireSameCanonical(t, &s)
			}
		}
	}
}

func TestValidateMatchesReference(t *testing.T) {
	t.Parallel()
	n := iterations(3000)
	k := testKey(t)
	for _, bad := range []int{0, 5, 30} {
		g := newGen(uint64(100+bad), bad)
		for range n {
			s := g.span(true)
			requireSameValidation(t, &s)
			c := s
			c.CurrHash, c.Signature = strings.Repeat("a", 64), strings.Repeat("b", 128)
			requireSameValidation(t, &c)
			// Seal: the reference verdict, then the reference hash.
			sealed := s
			err := k.Seal(&sealed)
			ref := s
			ref.PublicKey, ref.CurrHash, ref.Signature = k.PublicHex(), "", ""
			if ref.At == "" || validateRef(&ref) != nil {
				require.Error(t, err)
				require.Equal(t, s, sealed, "a failed Seal leaves the span unchanged")
				continue
			}
			require.NoError(t, err)
			want, err := canonicalRef(&ref)
			require.NoError(t, err)
			d := blake3.Sum256(want)
			require.Equal(t, hex.EncodeToString(d[:]), sealed.CurrHash)
			require.NoError(t, VerifySignedBy(&sealed, k.PublicHex()))
		}
	}
}

// Strict parsing (Validate) refuses exactly what checkJSON refuses; loose
// parsing (Canonical) exactly what json.Valid plus jcs.Transform refuse,
// and writes what jcs.Transform writes.
func TestJSONTreeMatchesReference(t *testing.T) {
	t.Parallel()
	n := iterations(5000)
	var tree jsonTree
	for _, bad := range []int{0, 10, 60} {
		g := newGen(uint64(200+bad), bad)
		for range n {
			raw := g.rawJSON()
			requireTreeMatches(t, &tree, raw)
		}
	}
}

// Exhaustive sweeps of the grammar's edges: every escape letter, every
// byte, every short number-like token, surrogate boundaries.
func TestJSONTreeGrammarSweep(t *testing.T) {
	t.Parallel()
	var tree jsonTree
	var docs []string
	for c := range 256 {
		b := string([]byte{byte(c)})
		docs = append(docs, b, "["+b+"]", `["\`+b+`"]`, `["\`+b+`0041"]`, `["`+b+`"]`, `{"`+b+`":1}`, `[1`+b+`]`, `{"a"`+b+`1}`)
	}
	alphabet := []string{"-", "+", ".", "e", "E", "0", "1", " ", "9"}
	var tokens func(prefix string, n int)
	tokens = func(prefix string, n int) {
		docs = append(docs, prefix, "["+prefix+"]", `{"a":`+prefix+`}`)
		if n == 0 {
			return
		}
		for _, a := range alphabet {
			tokens(prefix+a, n-1)
		}
	}
	tokens("", 4)
	units := []string{"0000", "0041", "d7ff", "D800", "d800", "dbff", "DBFF", "dc00", "DC00", "dfff", "e000", "ffff", "zzzz", "12"}
	for _, hi := range units {
		docs = append(docs, `"\u`+hi+`"`)
		for _, lo := range units {
			docs = append(docs, `"\u`+hi+`\u`+lo+`"`, `{"\u`+hi+`\u`+lo+`":0}`, `"\u`+hi+`\n`+lo+`"`, `"\u`+hi+`x\u`+lo+`"`)
		}
	}
	for _, lit := range []string{"true", "false", "null"} {
		for i := range len(lit) + 1 {
			docs = append(docs, lit[:i], lit[:i]+"x", "["+lit[:i]+"]", lit+lit[:i])
		}
	}
	for _, d := range docs {
		requireTreeMatches(t, &tree, []byte(d))
	}
}

func requireTreeMatches(t testing.TB, tree *jsonTree, raw []byte) {
	t.Helper()
	tree.reset()
	_, strict := tree.parse(raw, true)
	require.Equal(t, checkJSON("f", raw) == "", strict == "", "strict verdict on %q: %s / %s", raw, checkJSON("f", raw), strict)

	tree.reset()
	root, loose := tree.parse(raw, false)
	var want []byte
	var wantErr error
	if !json.Valid(raw) {
		wantErr = fmt.Errorf("invalid JSON")
	} else {
		// What the reference hashes: the field compacted (and HTML-escaped)
		// by json.Marshal, inside an object, then jcs.Transform.
		var b bytes.Buffer
		require.NoError(t, json.Compact(&b, raw))
		var wrapped []byte
		wrapped, wantErr = jcs.Transform([]byte(`{"f":` + b.String() + `}`))
		if wantErr == nil {
			want = wrapped[len(`{"f":`) : len(wrapped)-1]
		}
	}
	if wantErr != nil {
		require.NotEmpty(t, loose, "reference refused %q (%v)", raw, wantErr)
		return
	}
	require.Empty(t, loose, "%q", raw)
	got, _, err := tree.emit(nil, raw, root)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got), "%q", raw)
	// Alone, as jcs.Transform sees a document.
	alone, err := jcs.Transform(raw)
	require.NoError(t, err)
	require.Equal(t, string(alone), string(got))
}

func TestCanonicalExamples(t *testing.T) {
	t.Parallel()
	base := Span{EntityType: "e", Who: "w", This: "t"}
	for _, tc := range []struct {
		meta, want string
	}{
		// UTF-16 order: U+00E9 < U+1F600 (0xD83D 0xDE00) < U+E000 < U+FFFD.
		{`{"\uFFFD":3,"😀":2,"é":1,"\ue000":4}`, `{"é":1,"😀":2,"` + "\ue000" + `":4,"�":3}`},
		{`{"\ud83d\ude00":1,"\u00E9":2}`, `{"é":2,"😀":1}`},
		{`[1e21,1E+21,0.1,-0,-0.0,1.5e-7,4999950000,1e20,1e-6,1e-7,0.000001,100,1.0,2.50,5e-324]`,
			`[1e+21,1e+21,0.1,0,0,1.5e-7,4999950000,100000000000000000000,0.000001,1e-7,0.000001,100,1,2.5,5e-324]`},
		{`"a\u2028b\u2029<>&\/\u0041"`, "\"a\u2028b\u2029<>&/A\""},
		{`"\u0000\u0001\b\t\n\u000b\f\r\u001f\u007f\"\\"`, `"\u0000\u0001\b\t\n\u000b\f\r\u001f` + "\x7f" + `\"\\"`},
		{` { "b" : [ ] , "a" : { } } `, `{"a":{},"b":[]}`},
	} {
		s := base
		s.Metadata = json.RawMessage(tc.meta)
		c, err := s.Canonical()
		require.NoError(t, err, tc.meta)
		require.Equal(t, `{"entity_type":"e","is_deleted":false,"metadata":`+tc.want+`,"seq":0,"this":"t","who":"w"}`, string(c))
		requireSameCanonical(t, &s)
	}

	// Top-level strings: escapes exactly as RFC 8785 says, the rest as is.
	s := base
	s.Who = "q\"b\\s/\b\t\n\f\r\x00\x01\x1f\x7f<>&\u2028\u2029é😀"
	c, err := s.Canonical()
	require.NoError(t, err)
	require.Contains(t, string(c), `"who":"q\"b\\s/\b\t\n\f\r\u0000\u0001\u001f`+"\x7f<>&\u2028\u2029é😀\"")
	requireSameCanonical(t, &s)
}

// The reference accepts 9999 levels of nesting in a jsonb field and refuses
// 10000 (jcs counts the span object as one).
func TestCanonicalDepthMatchesReference(t *testing.T) {
	t.Parallel()
	for _, depth := range []int{maxCanonDepth - 1, maxCanonDepth, maxCanonDepth + 1} {
		s := Span{EntityType: "e", Who: "w", This: "t"}
		s.Input = json.RawMessage(strings.Repeat("[", depth) + strings.Repeat("]", depth))
		s.Output = json.RawMessage(strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth))
		requireSameCanonical(t, &s)
		_, err := s.Canonical()
		require.Equal(t, depth > maxCanonDepth, err != nil, "depth %d", depth)
	}
}

func TestCmpUTF16(t *testing.T) {
	t.Parallel()
	ref := func(a, b string) int {
		return slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
	}
	g := newGen(7, 0)
	keys := slices.Clone(genKeys)
	for range 500 {
		keys = append(keys, g.text(3))
	}
	for _, a := range keys {
		for _, b := range keys[:200] {
			want, got := ref(a, b), cmpUTF16([]byte(a), []byte(b))
			require.Equal(t, want < 0, got < 0, "%q %q", a, b)
			require.Equal(t, want == 0, got == 0, "%q %q", a, b)
		}
	}
}

func TestParseTimeMatchesReference(t *testing.T) {
	t.Parallel()
	var cases []string
	for _, y := range []string{"0000", "0001", "1900", "2000", "2023", "2024", "2100", "9999"} {
		for m := 0; m <= 13; m++ {
			for d := 0; d <= 32; d++ {
				cases = append(cases, fmt.Sprintf("%s-%02d-%02dT12:30:45.123456Z", y, m, d))
			}
		}
	}
	for _, hms := range []string{"00:00:00", "23:59:59", "24:00:00", "23:60:00", "23:59:60", "99:99:99"} {
		cases = append(cases, "2026-11-26T"+hms+".000000Z")
	}
	g := newGen(9, 300)
	for range 20000 {
		cases = append(cases, g.at())
	}
	cases = append(cases, "", "2026-11-26T12:00:00.000001", "2026-11-26T12:00:00.000001Zx", "２026-11-26T12:00:00.000001Z",
		"2026-11-26T12:00:00,000001Z", "-026-11-26T12:00:00.000001Z")
	for _, c := range cases {
		want, wantErr := parseTimeRef(c)
		got, err := ParseTime(c)
		if wantErr != nil {
			require.EqualError(t, err, wantErr.Error(), c)
			require.Equal(t, wantErr.Error(), checkTime(c))
			continue
		}
		require.NoError(t, err, c)
		require.Empty(t, checkTime(c))
		require.True(t, want.Equal(got), c)
		require.Equal(t, want, got, c)
	}
}

// sum256 is BLAKE3-256 whatever the length and path.
func TestSum256MatchesBlake3(t *testing.T) {
	t.Parallel()
	st := getCanon()
	defer putCanon(st)
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3*canonBufSize)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	// Every length through the serial and SIMD paths, then a sample.
	for n := 0; n <= len(data); n++ {
		if n > canonBufSize+1024 && n < len(data)-64 {
			n = min(n+97, len(data)-64)
		}
		st.out = append(st.out[:0], data[:n]...)
		// Garbage past the end must not matter.
		spare := st.out[len(st.out):cap(st.out)]
		for i := range spare {
			spare[i] = byte(n + i)
		}
		require.Equal(t, blake3.Sum256(data[:n]), st.sum256(st.out), "length %d", n)
	}
}

// FuzzCanonical holds Canonical, Hash and Validate to the reference on
// fuzzed text and jsonb fields.
func FuzzCanonical(f *testing.F) {
	f.Add("edge:run_code", "runs code\nand reports", "export default () => 1\n", `{"limit":100,"nested":{"deep":{"k":"v"}}}`, `{"b":[1,2.5,"x"],"a":{"z":null,"y":true}}`, int32(1), true)
	f.Add("q\"\\\x00\x1f\x7f<>&\u2028\u2029é😀", "\xff", "\t\r\n", `{"\uFFFD":3,"😀":2,"é":1}`, `[1e21,0.1,-0,1.5e-7,4999950000]`, int32(-1), false)
	f.Add("w", "", "", `{"a":1,"\u0061":2}`, `"\ud800"`, int32(0), false)
	f.Add("w", "d", "c", ` null `, `[1e400, 9007199254740993]`, int32(math.MaxInt32), true)
	f.Add("w", "d", "c", `{"\u0000":"\u0000"}`, ``, int32(5), false)
	f.Fuzz(func(t *testing.T, who, desc, code, meta, input string, seq int32, deleted bool) {
		s := fullSpan()
		s.Who, s.Description, s.Code = who, desc, code
		s.Metadata, s.Input = json.RawMessage(meta), json.RawMessage(input)
		s.Seq, s.IsDeleted = seq, deleted
		requireSameCanonical(t, &s)
		requireSameValidation(t, &s)
		var tree jsonTree
		requireTreeMatches(t, &tree, []byte(meta))
		requireTreeMatches(t, &tree, []byte(input))
	})
}
