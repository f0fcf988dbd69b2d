package span

import (
	"math"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// This file is the fast path for the jsonb fields (input, output, error,
// metadata): one strict RFC 8259 parse into a flat tree, which serves both
// Validate (strict mode: the rules of checkJSON) and the canonical form
// (RFC 8785 output written straight from the tree). It replaces, on the hot
// path, encoding/json's Valid and Decoder.Token walk plus gowebpki/jcs
// parsing its input character by character; its output is checked against
// jcs.Transform by differential and fuzz tests (canonical_test.go).
//
// What it accepts:
//   - strict (Validate): exactly what checkJSON accepts; checkJSON stays the
//     source of error messages, run only once this parse has refused.
//   - canonical: exactly what the reference canonical form (json.Marshal of
//     the field as a json.RawMessage, then jcs.Transform of the whole span)
//     accepts: RFC 8259 JSON with valid UTF-8 in strings, paired surrogate
//     escapes, unique keys, numbers within the double range and at most
//     maxCanonDepth levels of nesting.

// Node kinds.
const (
	nkLit = iota // true, false or null
	nkNum
	nkStr
	nkKey // an object member's key; its value's subtree follows it
	nkArr
	nkObj
)

// maxCanonDepth is the nesting that the reference canonical form accepts in
// a jsonb field: gowebpki/jcs refuses depth > 10000 and the span object
// itself is one level, so a field may nest 9999 containers.
const maxCanonDepth = 9999

// jnode is one node of a jsonTree, in pre-order: a container is followed by
// its children (for objects: key, value subtree, key, value subtree...).
type jnode struct {
	a, b uint32 // the token's raw text in the input (strings and keys with their quotes; containers open..close)
	// nkKey with escapes: the decoded key is arena[ka:kb].
	// nkObj: its key nodes in canonical (UTF-16) order are order[ka:kb].
	// nkNum that is not verbatim: the bits of its float64 value, low word in ka.
	ka, kb uint32
	next   uint32 // index of the first node after this subtree
	kind   uint8
	// nkStr, nkKey: the raw text has backslash escapes.
	// nkNum: the canonical text is not the literal itself (needs ES6 formatting).
	esc bool
}

// jsonTree holds the parsed jsonb fields of one span. Its slices are reused
// across spans (canonState is pooled), so parsing a typical span allocates
// nothing.
type jsonTree struct {
	nodes []jnode
	arena []byte   // decoded keys that had escapes
	order []uint32 // object members in canonical order
	stack []uint32 // key nodes of the objects being parsed

	// The document being parsed.
	in       []byte
	strict   bool
	maxDepth int
}

func (t *jsonTree) reset() {
	t.nodes = t.nodes[:0]
	t.arena = t.arena[:0]
	t.order = t.order[:0]
	t.stack = t.stack[:0]
	t.in = nil
}

// Static parse failures. In strict mode they are replaced by checkJSON's
// precise reason; in canonical mode they are the message.
const (
	perrSyntax    = "is not valid JSON"
	perrUTF8      = "must be valid UTF-8"
	perrNUL       = `must not contain \u0000 (Postgres jsonb cannot store NUL)`
	perrSurrogate = "contains an unpaired UTF-16 surrogate escape"
	perrDepth     = "nests too deeply"
	perrUnsafeInt = "has an integer beyond ±(2^53-1), the largest integer hashed exactly"
	perrRange     = "has a number out of the IEEE double range, which has no canonical form"
	perrTooLarge  = "is too large"
)

// parse parses one jsonb value (surrounding whitespace allowed) and returns
// the index of its root node, or a reason when it is refused. In strict mode
// it applies Validate's rules (no \u0000, integers within ±(2^53-1), nesting
// up to MaxJSONDepth); otherwise those of the canonical form.
func (t *jsonTree) parse(in []byte, strict bool) (uint32, string) {
	if uint64(len(in)) >= 1<<32-1 {
		return 0, perrTooLarge // offsets are uint32
	}
	t.in, t.strict = in, strict
	t.maxDepth = maxCanonDepth
	if strict {
		t.maxDepth = MaxJSONDepth
	}
	root := uint32(len(t.nodes))
	i, reason := t.value(skipWS(in, 0), 0)
	t.in = nil
	if reason != "" {
		return 0, reason
	}
	if skipWS(in, i) != len(in) {
		return 0, perrSyntax
	}
	return root, ""
}

func skipWS(in []byte, i int) int {
	for i < len(in) {
		switch in[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// add appends a node and returns its index; a leaf's next is set here.
func (t *jsonTree) add(kind uint8, a, b int, esc bool) uint32 {
	idx := uint32(len(t.nodes))
	if len(t.nodes) == cap(t.nodes) {
		t.nodes = slices.Grow(t.nodes, 1)
	}
	t.nodes = t.nodes[:idx+1]
	// Field by field: building a jnode value and copying it stalls on
	// store forwarding.
	n := &t.nodes[idx]
	n.a, n.b, n.ka, n.kb, n.next = uint32(a), uint32(b), 0, 0, idx+1
	n.kind, n.esc = kind, esc
	return idx
}

// value parses the value starting at in[i] (no leading whitespace) inside
// depth enclosing containers and returns the index after it.
func (t *jsonTree) value(i, depth int) (int, string) {
	in := t.in
	if i >= len(in) {
		return 0, perrSyntax
	}
	switch c := in[i]; {
	case c == '{':
		return t.object(i, depth)
	case c == '[':
		return t.array(i, depth)
	case c == '"':
		end, esc, reason := t.str(i)
		if reason != "" {
			return 0, reason
		}
		t.add(nkStr, i, end, esc)
		return end, ""
	case c == '-' || c >= '0' && c <= '9':
		return t.number(i)
	default:
		for _, lit := range [...]string{"true", "false", "null"} {
			if len(in)-i >= len(lit) && string(in[i:i+len(lit)]) == lit {
				t.add(nkLit, i, i+len(lit), false)
				return i + len(lit), ""
			}
		}
		return 0, perrSyntax
	}
}

func (t *jsonTree) array(i, depth int) (int, string) {
	if depth >= t.maxDepth {
		return 0, perrDepth
	}
	in := t.in
	idx := t.add(nkArr, i, i, false)
	i = skipWS(in, i+1)
	if i < len(in) && in[i] == ']' {
		i++
	} else {
		for {
			var reason string
			if i, reason = t.value(i, depth+1); reason != "" {
				return 0, reason
			}
			i = skipWS(in, i)
			if i >= len(in) {
				return 0, perrSyntax
			}
			if in[i] == ',' {
				i = skipWS(in, i+1)
				continue
			}
			if in[i] != ']' {
				return 0, perrSyntax
			}
			i++
			break
		}
	}
	t.nodes[idx].b = uint32(i)
	t.nodes[idx].next = uint32(len(t.nodes))
	return i, ""
}

func (t *jsonTree) object(i, depth int) (int, string) {
	if depth >= t.maxDepth {
		return 0, perrDepth
	}
	in := t.in
	idx := t.add(nkObj, i, i, false)
	base := len(t.stack)
	i = skipWS(in, i+1)
	if i < len(in) && in[i] == '}' {
		i++
	} else {
		for {
			if i >= len(in) || in[i] != '"' {
				return 0, perrSyntax
			}
			end, esc, reason := t.str(i)
			if reason != "" {
				return 0, reason
			}
			kidx := t.add(nkKey, i, end, esc)
			if esc {
				ka := uint32(len(t.arena))
				t.arena = appendUnescaped(t.arena, in[i+1:end-1])
				t.nodes[kidx].ka, t.nodes[kidx].kb = ka, uint32(len(t.arena))
			}
			t.stack = append(t.stack, kidx)
			i = skipWS(in, end)
			if i >= len(in) || in[i] != ':' {
				return 0, perrSyntax
			}
			if i, reason = t.value(skipWS(in, i+1), depth+1); reason != "" {
				return 0, reason
			}
			i = skipWS(in, i)
			if i >= len(in) {
				return 0, perrSyntax
			}
			if in[i] == ',' {
				i = skipWS(in, i+1)
				continue
			}
			if in[i] != '}' {
				return 0, perrSyntax
			}
			i++
			break
		}
	}
	members := t.stack[base:]
	if dup, ok := t.sortKeys(members); !ok {
		return 0, "has a duplicate key " + strconv.Quote(truncate(string(t.key(dup)), 64))
	}
	n := &t.nodes[idx]
	n.ka = uint32(len(t.order))
	t.order = append(t.order, members...)
	n.kb = uint32(len(t.order))
	n.b = uint32(i)
	n.next = uint32(len(t.nodes))
	t.stack = t.stack[:base]
	return i, ""
}

// key returns the decoded text of a key node of the document being parsed.
func (t *jsonTree) key(k uint32) []byte {
	n := &t.nodes[k]
	if n.esc {
		return t.arena[n.ka:n.kb]
	}
	return t.in[n.a+1 : n.b-1]
}

func (t *jsonTree) cmpKeys(x, y uint32) int { return cmpUTF16(t.key(x), t.key(y)) }

// sortKeys sorts an object's key nodes into canonical order; on a duplicate
// key it reports false and one of the two.
func (t *jsonTree) sortKeys(m []uint32) (uint32, bool) {
	if len(m) <= 12 {
		// Insertion sort compares every key with its equal, if any: a key
		// moves left past greater keys only, up to the first that is not.
		for i := 1; i < len(m); i++ {
			for j := i; j > 0; j-- {
				c := t.cmpKeys(m[j-1], m[j])
				if c == 0 {
					return m[j], false
				}
				if c < 0 {
					break
				}
				m[j-1], m[j] = m[j], m[j-1]
			}
		}
		return 0, true
	}
	slices.SortFunc(m, t.cmpKeys)
	for i := 1; i < len(m); i++ {
		if t.cmpKeys(m[i-1], m[i]) == 0 {
			return m[i], false
		}
	}
	return 0, true
}

// cmpUTF16 compares two valid UTF-8 strings by their UTF-16 code units, the
// order RFC 8785 §3.2.3 sorts object keys in. It differs from byte (= code
// point) order only between supplementary characters (surrogate pairs,
// 0xD800-0xDBFF first unit) and BMP characters from U+E000 up.
func cmpUTF16(x, y []byte) int {
	n := min(len(x), len(y))
	i := 0
	for i < n && x[i] == y[i] {
		i++
	}
	if i == n {
		return len(x) - len(y)
	}
	if x[i] < utf8.RuneSelf && y[i] < utf8.RuneSelf {
		return int(x[i]) - int(y[i])
	}
	// The common prefix ends inside or just before the runes that differ:
	// back up to their first byte (the same offset in both) and compare
	// their first UTF-16 code units, then the runes themselves.
	for i > 0 && !utf8.RuneStart(x[i]) {
		i--
	}
	rx, _ := utf8.DecodeRune(x[i:])
	ry, _ := utf8.DecodeRune(y[i:])
	if ux, uy := firstUnit(rx), firstUnit(ry); ux != uy {
		return int(ux) - int(uy)
	}
	return int(rx) - int(ry)
}

func firstUnit(r rune) rune {
	if r >= 0x10000 {
		hi, _ := utf16.EncodeRune(r)
		return hi
	}
	return r
}

// strSafe marks the bytes that a string can hold as they are: not a quote,
// backslash, control character or the start of a multi-byte sequence.
var strSafe = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str scans the string whose opening quote is in[i] and returns the index
// after its closing quote and whether it has escapes.
func (t *jsonTree) str(i int) (int, bool, string) {
	in := t.in
	esc := false
	j := i + 1
	for {
		for j < len(in) && strSafe[in[j]] {
			j++
		}
		if j >= len(in) {
			return 0, false, perrSyntax
		}
		switch c := in[j]; {
		case c == '"':
			return j + 1, esc, ""
		case c == '\\':
			esc = true
			if j+1 >= len(in) {
				return 0, false, perrSyntax
			}
			switch in[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
				continue
			case 'u':
			default:
				return 0, false, perrSyntax
			}
			r, ok := hex4At(in, j+2)
			if !ok {
				return 0, false, perrSyntax
			}
			j += 6
			switch {
			case r == 0 && t.strict:
				return 0, false, perrNUL
			case r >= 0xDC00 && r <= 0xDFFF:
				return 0, false, perrSurrogate
			case r >= 0xD800 && r <= 0xDBFF:
				if j+1 >= len(in) || in[j] != '\\' || in[j+1] != 'u' {
					return 0, false, perrSurrogate
				}
				lo, ok := hex4At(in, j+2)
				if !ok {
					return 0, false, perrSyntax
				}
				if lo < 0xDC00 || lo > 0xDFFF {
					return 0, false, perrSurrogate
				}
				j += 6
			}
		case c < 0x20:
			return 0, false, perrSyntax
		default:
			r, size := utf8.DecodeRune(in[j:])
			if r == utf8.RuneError && size <= 1 {
				return 0, false, perrUTF8
			}
			j += size
		}
	}
}

// hex4At decodes the four hex digits at in[p:p+4].
func hex4At(in []byte, p int) (rune, bool) {
	if p+4 > len(in) {
		return 0, false
	}
	var r rune
	for _, c := range in[p : p+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// maxVerbatimDigits: an integer literal of at most this many digits is
// below 2^53, so its IEEE double is exact and ES6 Number-to-String prints
// it back digit for digit (-0 aside): it is its own canonical form.
const maxVerbatimDigits = 15

// number scans the number starting at in[i] (RFC 8259 §6 grammar).
func (t *jsonTree) number(i int) (int, string) {
	in := t.in
	j := i
	if in[j] == '-' {
		j++
	}
	digits := j
	switch {
	case j < len(in) && in[j] == '0':
		j++
	case j < len(in) && in[j] >= '1' && in[j] <= '9':
		for j < len(in) && in[j] >= '0' && in[j] <= '9' {
			j++
		}
	default:
		return 0, perrSyntax
	}
	nDigits := j - digits
	integer := true
	if j < len(in) && in[j] == '.' {
		integer = false
		j++
		k := j
		for j < len(in) && in[j] >= '0' && in[j] <= '9' {
			j++
		}
		if j == k {
			return 0, perrSyntax
		}
	}
	if j < len(in) && (in[j] == 'e' || in[j] == 'E') {
		integer = false
		j++
		if j < len(in) && (in[j] == '+' || in[j] == '-') {
			j++
		}
		k := j
		for j < len(in) && in[j] >= '0' && in[j] <= '9' {
			j++
		}
		if j == k {
			return 0, perrSyntax
		}
	}
	lit := in[i:j]
	if integer && t.strict {
		// checkNumber: at most 16 digits and at most 2^53-1.
		if nDigits > 16 {
			return 0, perrUnsafeInt
		}
		var v uint64
		for _, c := range in[digits:j] {
			v = v*10 + uint64(c-'0')
		}
		if v > MaxSafeInteger {
			return 0, perrUnsafeInt
		}
	}
	verbatim := integer && nDigits <= maxVerbatimDigits
	idx := t.add(nkNum, i, j, !verbatim)
	if !verbatim {
		f, err := strconv.ParseFloat(string(lit), 64)
		if err != nil {
			return 0, perrRange
		}
		bits := math.Float64bits(f)
		t.nodes[idx].ka, t.nodes[idx].kb = uint32(bits), uint32(bits>>32)
	}
	return j, ""
}

// emit appends the canonical form of the subtree at node idx of a document
// parsed from in, and returns the index of the node after the subtree.
func (t *jsonTree) emit(dst, in []byte, idx uint32) ([]byte, uint32, error) {
	n := t.nodes[idx]
	var err error
	switch n.kind {
	case nkLit:
		dst = append(dst, in[n.a:n.b]...)
	case nkNum:
		lit := in[n.a:n.b]
		switch {
		case !n.esc && string(lit) == "-0":
			dst = append(dst, '0')
		case !n.esc:
			dst = append(dst, lit...)
		default:
			s, ferr := jcs.NumberToJSON(math.Float64frombits(uint64(n.kb)<<32 | uint64(n.ka)))
			if ferr != nil {
				return dst, 0, ferr
			}
			dst = append(dst, s...)
		}
	case nkStr:
		if !n.esc {
			dst = append(dst, in[n.a:n.b]...) // nothing to escape or unescape
		} else {
			dst = append(dst, '"')
			dst = appendJCSUnescaped(dst, in[n.a+1:n.b-1])
			dst = append(dst, '"')
		}
	case nkArr:
		dst = append(dst, '[')
		for c := idx + 1; c < n.next; {
			if c > idx+1 {
				dst = append(dst, ',')
			}
			if dst, c, err = t.emit(dst, in, c); err != nil {
				return dst, 0, err
			}
		}
		dst = append(dst, ']')
	case nkObj:
		dst = append(dst, '{')
		for m, k := range t.order[n.ka:n.kb] {
			if m > 0 {
				dst = append(dst, ',')
			}
			kn := &t.nodes[k]
			if !kn.esc {
				dst = append(dst, in[kn.a:kn.b]...)
			} else {
				dst = append(dst, '"')
				dst = appendJCSUnescaped(dst, in[kn.a+1:kn.b-1])
				dst = append(dst, '"')
			}
			dst = append(dst, ':')
			if dst, _, err = t.emit(dst, in, k+1); err != nil {
				return dst, 0, err
			}
		}
		dst = append(dst, '}')
	}
	return dst, n.next, nil
}

// jcsEscape gives, for each byte, the letter of its RFC 8785 §3.2.2.2 escape
// ('u' for \u00xx), or 0 when the byte stands for itself.
var jcsEscape = func() (t [256]byte) {
	for c := 0; c < 0x20; c++ {
		t[c] = 'u'
	}
	t['\b'], t['\t'], t['\n'], t['\f'], t['\r'] = 'b', 't', 'n', 'f', 'r'
	t['"'], t['\\'] = '"', '\\'
	return t
}()

const hexDigits = "0123456789abcdef"

// appendJCSString appends s as an RFC 8785 JSON string (§3.2.2.2): only
// '"', '\\' and U+0000-U+001F are escaped (\b \t \n \f \r, else \u00xx in
// lowercase hex); everything else, U+2028, U+2029, '<', '>', '&' and all
// non-ASCII included, is written as it is. It reports false, having
// appended part of s, when s is not valid UTF-8.
func appendJCSString(dst []byte, s string) ([]byte, bool) {
	dst = slices.Grow(dst, len(s)+2)
	dst = append(dst, '"')
	for i := 0; ; {
		j := plainPrefix(s, i)
		dst = append(dst, s[i:j]...)
		if j == len(s) {
			return append(dst, '"'), true
		}
		c := s[j]
		if c < utf8.RuneSelf {
			dst = appendEscape(dst, c, jcsEscape[c])
			i = j + 1
			continue
		}
		r, n := utf8.DecodeRuneInString(s[j:])
		if r == utf8.RuneError && n <= 1 {
			return dst, false
		}
		dst = append(dst, s[j:j+n]...)
		i = j + n
	}
}

// plainPrefix returns the index of the first byte of s from i on that is
// not plain (printable ASCII other than '"' and '\\'), or len(s).
func plainPrefix(s string, i int) int {
	for ; i+8 <= len(s); i += 8 {
		if m := swarSpecial(load64(s, i)); m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for ; i < len(s); i++ {
		if !strSafe[s[i]] {
			return i
		}
	}
	return i
}

// load64 reads s[i:i+8] as a little-endian word (the compiler merges the
// loads).
func load64(s string, i int) uint64 {
	_ = s[i+7]
	return uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
		uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
}

// swarSpecial flags (high bit) the bytes of x that are not printable ASCII
// or are '"' or '\\' (the hasless and haszero tricks of "Bit Twiddling
// Hacks"). A borrow can flag a byte above a flagged one spuriously, never
// below: the lowest flag is exact, and 0 means none.
func swarSpecial(x uint64) uint64 {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	ctl := (x - 0x20*ones) &^ x & highs // a byte < 0x20
	q := x ^ '"'*ones
	quote := (q - ones) &^ q & highs
	b := x ^ '\\'*ones
	bslash := (b - ones) &^ b & highs
	return ctl | quote | bslash | x&highs
}

func appendEscape(dst []byte, c, e byte) []byte {
	if e == 'u' {
		return append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
	}
	return append(dst, '\\', e)
}

// appendJCSUnescaped appends the content of a parsed JSON string (between
// its quotes, escapes checked) in RFC 8785 form: escapes are decoded and the
// result re-escaped as appendJCSString does.
func appendJCSUnescaped(dst, raw []byte) []byte {
	start := 0
	for i := 0; i < len(raw); {
		if raw[i] != '\\' {
			i++ // a parsed string holds no raw '"' or control character
			continue
		}
		dst = append(dst, raw[start:i]...)
		r, n := unescapeAt(raw, i)
		if r < utf8.RuneSelf {
			if e := jcsEscape[r]; e != 0 {
				dst = appendEscape(dst, byte(r), e)
			} else {
				dst = append(dst, byte(r))
			}
		} else {
			dst = utf8.AppendRune(dst, r)
		}
		i += n
		start = i
	}
	return append(dst, raw[start:]...)
}

// appendUnescaped appends the decoded content of a parsed JSON string.
func appendUnescaped(dst, raw []byte) []byte {
	start := 0
	for i := 0; i < len(raw); {
		if raw[i] != '\\' {
			i++
			continue
		}
		dst = append(dst, raw[start:i]...)
		r, n := unescapeAt(raw, i)
		dst = utf8.AppendRune(dst, r)
		i += n
		start = i
	}
	return append(dst, raw[start:]...)
}

// unescapeAt decodes the escape at raw[i] (a backslash) of a parsed string
// and returns the rune and the escape's length; a surrogate pair counts as
// one escape.
func unescapeAt(raw []byte, i int) (rune, int) {
	switch raw[i+1] {
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		r, _ := hex4At(raw, i+2)
		if utf16.IsSurrogate(r) {
			lo, _ := hex4At(raw, i+8)
			return utf16.DecodeRune(r, lo), 12
		}
		return r, 6
	default: // '"', '\\', '/'
		return rune(raw[i+1]), 2
	}
}
