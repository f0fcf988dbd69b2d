package span

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// checkJSON checks one jsonb value against what Postgres jsonb and the
// canonical form both accept, and returns a reason, or "" when it is fine.
// name prefixes paths in the reason (e.g. metadata.a.b[2]).
//
// Validate runs the strict jsonTree parse (jsontree.go) instead, which gives
// the same verdicts at a fraction of the cost, and calls checkJSON only
// once that has refused a value, for its precise reason.
func checkJSON(name string, raw []byte) string {
	if len(raw) > MaxJSONBytes {
		return "is " + strconv.Itoa(len(raw)) + " bytes, more than the limit of " + strconv.Itoa(MaxJSONBytes)
	}
	if !utf8.Valid(raw) {
		return "must be valid UTF-8"
	}
	if !json.Valid(raw) {
		var v any
		err := json.Unmarshal(raw, &v) // only for its message
		return "is not valid JSON: " + errText(err)
	}
	if r := checkEscapes(raw, false); r != "" {
		return r
	}
	return walkJSON(name, raw)
}

func errText(err error) string {
	if err == nil {
		return "invalid"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// checkEscapes scans valid JSON text for \u escapes that Postgres jsonb or
// JCS refuse: \u0000 (jsonb cannot store NUL) and unpaired surrogates (which
// encoding/json would silently turn into U+FFFD). In valid JSON a backslash
// occurs only inside strings, and always starts an escape, so a linear scan
// is exact. With allowNUL, \u0000 passes (text fields report NUL themselves).
func checkEscapes(raw []byte, allowNUL bool) string {
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++ // the escaped character
		if raw[i] != 'u' {
			continue
		}
		c := hex4(raw[i+1 : i+5])
		i += 4
		switch {
		case c == 0 && !allowNUL:
			return `must not contain \u0000 (Postgres jsonb cannot store NUL)`
		case c >= 0xDC00 && c <= 0xDFFF:
			return "contains an unpaired UTF-16 surrogate escape"
		case c >= 0xD800 && c <= 0xDBFF:
			if i+6 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u' {
				return "contains an unpaired UTF-16 surrogate escape"
			}
			lo := hex4(raw[i+3 : i+7])
			if lo < 0xDC00 || lo > 0xDFFF {
				return "contains an unpaired UTF-16 surrogate escape"
			}
			i += 6
		}
	}
	return ""
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// frame is one open object or array during walkJSON.
type frame struct {
	obj       bool
	expectKey bool
	keys      map[string]struct{}
	key       string // current key (objects)
	idx       int    // current index (arrays)
}

// walkJSON walks the tokens of valid JSON text and refuses duplicate object
// keys at any depth (jsonb keeps the last one, JCS refuses them, and either
// way the stored value would differ from the signed one), nesting deeper than
// MaxJSONDepth, and numbers that cannot be hashed exactly.
func walkJSON(name string, raw []byte) string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var stack []*frame
	path := func(n int) string {
		var b strings.Builder
		b.WriteString(name)
		for _, f := range stack[:n] {
			if f.obj {
				b.WriteString(pathKey(f.key))
			} else {
				b.WriteString("[" + strconv.Itoa(f.idx) + "]")
			}
		}
		return b.String()
	}
	valueDone := func() {
		if n := len(stack); n > 0 {
			if top := stack[n-1]; top.obj {
				top.expectKey = true
			} else {
				top.idx++
			}
		}
	}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return ""
		}
		if err != nil {
			return "is not valid JSON: " + errText(err)
		}
		n := len(stack)
		if n > 0 && stack[n-1].obj && stack[n-1].expectKey {
			top := stack[n-1]
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:n-1]
				valueDone()
				continue
			}
			k, _ := tok.(string)
			if _, dup := top.keys[k]; dup {
				return "duplicate key " + strconv.Quote(truncate(k, 64)) + " in " + path(n-1)
			}
			top.keys[k] = struct{}{}
			top.key = k
			top.expectKey = false
			continue
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if n >= MaxJSONDepth {
					return "nests deeper than " + strconv.Itoa(MaxJSONDepth) + " levels at " + path(n)
				}
				f := &frame{obj: v == '{'}
				if f.obj {
					f.expectKey = true
					f.keys = make(map[string]struct{})
				}
				stack = append(stack, f)
			case ']':
				stack = stack[:n-1]
				valueDone()
			}
		case json.Number:
			if r := checkNumber(string(v)); r != "" {
				return "number " + truncate(string(v), 40) + " at " + path(n) + " " + r
			}
			valueDone()
		default:
			valueDone()
		}
	}
}

// pathKey renders one object key in a path: .key for simple keys, ["k"]
// otherwise.
func pathKey(k string) string {
	simple := k != ""
	for _, c := range k {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			simple = false
			break
		}
	}
	if simple {
		return "." + k
	}
	return "[" + strconv.Quote(truncate(k, 64)) + "]"
}

// checkNumber refuses numbers the canonical form cannot carry exactly. JCS
// hashes every number as an IEEE double while jsonb stores it exactly, so an
// integer beyond ±(2^53-1) would hash the same as its neighbours and a
// tampered value could go unnoticed (I-JSON, RFC 7493 §2.2); numbers beyond
// the double range have no canonical form at all.
func checkNumber(lit string) string {
	if !strings.ContainsAny(lit, ".eE") {
		digits := strings.TrimPrefix(lit, "-")
		if len(digits) > 16 {
			return "exceeds ±(2^53-1), the largest integer hashed exactly; send it as a string"
		}
		n, err := strconv.ParseInt(digits, 10, 64)
		if err != nil || n > MaxSafeInteger {
			return "exceeds ±(2^53-1), the largest integer hashed exactly; send it as a string"
		}
		return ""
	}
	if _, err := strconv.ParseFloat(lit, 64); err != nil {
		return "is out of the IEEE double range and has no canonical form"
	}
	return ""
}
