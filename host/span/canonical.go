package span

import (
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"lukechampine.com/blake3"
	"lukechampine.com/blake3/guts"
)

// The canonical form is written directly: the top-level keys are a fixed
// set of ASCII names, so their RFC 8785 order (UTF-16 code units) is plain
// byte order, computed once in topOrder. Text fields are written by
// appendJCSString, integers in decimal, and the jsonb fields from their
// parsed trees (jsontree.go). The result is byte for byte what the reference
// implementation gives (json.Marshal of a map of the present fields, then
// jcs.Transform of the whole), which canonical_test.go checks.

// topKind says how a top-level field is written.
type topKind uint8

const (
	topText topKind = iota
	topSeq
	topDeleted
	topRelatedTo
	topDuration
	topJSON
)

type topField struct {
	name string
	key  string // `"name":`
	kind topKind
	idx  int // index in texts() or jsons()
}

// topOrder lists the hashed top-level fields in canonical order: every
// column except curr_hash and signature.
var topOrder = func() []topField {
	var s Span
	var fs []topField
	add := func(name string, kind topKind, idx int) {
		fs = append(fs, topField{name: name, key: strconv.Quote(name) + ":", kind: kind, idx: idx})
	}
	for i, f := range s.texts() {
		if f.name != "curr_hash" && f.name != "signature" {
			add(f.name, topText, i)
		}
	}
	for i, f := range s.jsons() {
		add(f.name, topJSON, i)
	}
	add("seq", topSeq, 0)
	add("is_deleted", topDeleted, 0)
	add("related_to", topRelatedTo, 0)
	add("duration_ms", topDuration, 0)
	// RFC 8785 sorts by UTF-16 code units, which for these ASCII names is
	// byte order.
	slices.SortFunc(fs, func(a, b topField) int { return strings.Compare(a.name, b.name) })
	return fs
}()

// canonState is the scratch space of one canonicalisation, pooled so that
// hashing a typical span allocates nothing.
type canonState struct {
	out   []byte // the canonical form; capacity at least canonBufSize
	tree  jsonTree
	roots [4]uint32 // root node of each jsonb field (jsons() order) when present
	h     *blake3.Hasher
	sum   [HashSize]byte // h's output: on the heap already, so the digest does not escape
}

const (
	// canonBufSize is the initial capacity of canonState.out: the SIMD
	// buffer size of the BLAKE3 implementation, so that sum256 can hash
	// canonical forms up to that size in place.
	canonBufSize = guts.MaxSIMD * guts.ChunkSize
	// maxPooledBytes bounds what a pooled canonState keeps, so one huge
	// span does not pin its buffers for the life of the process.
	maxPooledBytes = 1 << 20
)

var canonPool = sync.Pool{New: func() any {
	return &canonState{out: make([]byte, 0, canonBufSize)}
}}

func getCanon() *canonState { return canonPool.Get().(*canonState) }

func putCanon(st *canonState) {
	t := &st.tree
	if cap(st.out) > maxPooledBytes || cap(t.arena) > maxPooledBytes ||
		cap(t.nodes) > maxPooledBytes/32 || cap(t.order) > maxPooledBytes/4 || cap(t.stack) > maxPooledBytes/4 {
		return // let the GC have it; the pool makes a fresh one
	}
	st.out = st.out[:0]
	t.reset()
	canonPool.Put(st)
}

// parseJSONFields parses the present jsonb fields into st (canonical rules).
func (s *Span) parseJSONFields(st *canonState) error {
	st.tree.reset()
	for i, f := range s.jsons() {
		if !jsonPresent(f.val) {
			continue
		}
		root, reason := st.tree.parse(f.val, false)
		if reason != "" {
			return &FieldError{Field: f.name, Reason: reason}
		}
		st.roots[i] = root
	}
	return nil
}

// appendCanonical appends the canonical form of s to dst. With checked, s
// has just passed validateWith(st), which checked the text fields and left
// the parsed jsonb fields in st; otherwise the jsonb fields are parsed here
// and the text fields checked for UTF-8 while they are written.
func (s *Span) appendCanonical(dst []byte, st *canonState, checked bool) ([]byte, error) {
	if !checked {
		if err := s.parseJSONFields(st); err != nil {
			return dst, s.canonicalError(err)
		}
	}
	ts := s.texts()
	js := s.jsons()
	ok := true
	dst = append(dst, '{')
	first := true
	for i := range topOrder {
		f := &topOrder[i]
		switch f.kind {
		case topText:
			if ts[f.idx].val == "" {
				continue
			}
		case topRelatedTo:
			if s.RelatedTo == nil {
				continue
			}
		case topDuration:
			if s.DurationMs == nil {
				continue
			}
		case topJSON:
			if !jsonPresent(js[f.idx].val) {
				continue
			}
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, f.key...)
		switch f.kind {
		case topText:
			if dst, ok = appendJCSString(dst, ts[f.idx].val); !ok {
				return dst, s.canonicalError(nil)
			}
		case topSeq:
			dst = strconv.AppendInt(dst, int64(s.Seq), 10)
		case topDeleted:
			dst = strconv.AppendBool(dst, s.IsDeleted)
		case topRelatedTo:
			dst = append(dst, '[')
			for i, r := range s.RelatedTo {
				if i > 0 {
					dst = append(dst, ',')
				}
				if dst, ok = appendJCSString(dst, r); !ok {
					return dst, s.canonicalError(nil)
				}
			}
			dst = append(dst, ']')
		case topDuration:
			dst = strconv.AppendInt(dst, int64(*s.DurationMs), 10)
		case topJSON:
			var err error
			if dst, _, err = st.tree.emit(dst, js[f.idx].val, st.roots[f.idx]); err != nil {
				return dst, &FieldError{Field: js[f.idx].name, Reason: err.Error()}
			}
		}
	}
	return append(dst, '}'), nil
}

// canonicalError names the first reason s has no canonical form, in a fixed
// order: text fields that are not valid UTF-8 (encoding/json would silently
// turn them into U+FFFD, so the hash would cover a different value from the
// stored one), in column order, then related_to, then jsonErr, the refusal
// of a jsonb field if there was one.
func (s *Span) canonicalError(jsonErr error) error {
	for _, f := range s.texts() {
		if f.val != "" && f.name != "curr_hash" && f.name != "signature" && !utf8.ValidString(f.val) {
			return &FieldError{Field: f.name, Reason: "must be valid UTF-8"}
		}
	}
	for i, r := range s.RelatedTo {
		if !utf8.ValidString(r) {
			return &FieldError{Field: fmt.Sprintf("related_to[%d]", i), Reason: "must be valid UTF-8"}
		}
	}
	if jsonErr != nil {
		return jsonErr
	}
	return errors.New("text is not valid UTF-8") // not reached: a text field failed above
}

// digestWith canonicalises s into st.out and returns its BLAKE3-256 digest.
func (s *Span) digestWith(st *canonState, checked bool) ([HashSize]byte, error) {
	out, err := s.appendCanonical(st.out[:0], st, checked)
	st.out = out
	if err != nil {
		return [HashSize]byte{}, fmt.Errorf("error canonicalising span: %w", err)
	}
	return st.sum256(out), nil
}

// serialHashMax is the size up to which sum256 feeds BLAKE3 one chunk at a
// time: below it, the SIMD path costs more than it saves (measured on AVX2).
const serialHashMax = 3 << 10

// sum256 is blake3.Sum256(b) without its costs for small inputs: beyond one
// chunk (1 KiB), Sum256 starts a goroutine per subtree and allocates. b must
// be st.out (sum256 may read its spare capacity).
func (st *canonState) sum256(b []byte) (d [HashSize]byte) {
	switch {
	case len(b) <= guts.ChunkSize:
		return blake3.Sum256(b) // one chunk: no goroutine, no allocation
	case len(b) <= serialHashMax:
		// Writes of at most one chunk keep the Hasher on its serial path.
		if st.h == nil {
			st.h = blake3.New(HashSize, nil)
		}
		st.h.Reset()
		for p := b; len(p) > 0; {
			n := min(len(p), guts.ChunkSize)
			_, _ = st.h.Write(p[:n])
			p = p[n:]
		}
		st.h.Sum(st.sum[:0])
		return st.sum
	case len(b) <= canonBufSize && cap(b) >= canonBufSize:
		// Up to 16 chunks at once with SIMD, in place: CompressBuffer reads
		// only b's first len(b) bytes into the result (the lanes beyond
		// are computed and dropped), and merges the chunk chaining values
		// into the same left-balanced tree as the Hasher.
		n := guts.CompressBuffer((*[canonBufSize]byte)(b[:canonBufSize]), len(b), &guts.IV, 0, 0)
		n.Flags |= guts.FlagRoot
		w := guts.WordsToBytes(guts.CompressNode(n))
		copy(d[:], w[:HashSize])
		return d
	default:
		return blake3.Sum256(b) // large: its parallel path pays off
	}
}

// hexString is hex.EncodeToString with one allocation instead of two, for
// digests, keys and signatures (at most 64 bytes).
func hexString(b []byte) string {
	var buf [128]byte
	return string(buf[:hex.Encode(buf[:], b)])
}
