package meter

import "fmt"

// reader decodes a byte slice. base is the offset of b[0] in the original
// module, so that errors can name absolute offsets.
type reader struct {
	b    []byte
	pos  int
	base int
}

func (r *reader) off() int { return r.base + r.pos }

func (r *reader) eof() bool { return r.pos >= len(r.b) }

func (r *reader) errf(format string, args ...any) error {
	return fmt.Errorf("%w: %s at offset %d", ErrMalformed, fmt.Sprintf(format, args...), r.off())
}

func (r *reader) byte() (byte, error) {
	if r.pos >= len(r.b) {
		return 0, r.errf("unexpected end")
	}
	c := r.b[r.pos]
	r.pos++
	return c, nil
}

// bytes returns the next n bytes; n is bounded by the remaining input, so a
// lying length never allocates.
func (r *reader) bytes(n uint64) ([]byte, error) {
	if n > uint64(len(r.b)-r.pos) {
		return nil, r.errf("length %d exceeds remaining %d bytes", n, len(r.b)-r.pos)
	}
	s := r.b[r.pos : r.pos+int(n)]
	r.pos += int(n)
	return s, nil
}

// uleb decodes an unsigned LEB128 number of at most bits bits.
func (r *reader) uleb(bits uint) (uint64, error) {
	maxBytes := (bits + 6) / 7
	var v uint64
	var shift uint
	for i := uint(0); i < maxBytes; i++ {
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			if i == maxBytes-1 {
				if rem := bits - 7*i; rem < 7 && c>>rem != 0 {
					return 0, r.errf("integer overflows %d bits", bits)
				}
			}
			return v, nil
		}
		shift += 7
	}
	return 0, r.errf("integer representation too long")
}

// sleb decodes a signed LEB128 number of at most bits bits.
func (r *reader) sleb(bits uint) (int64, error) {
	maxBytes := (bits + 6) / 7
	var v int64
	var shift uint
	for i := uint(0); i < maxBytes; i++ {
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if i == maxBytes-1 {
				if rem := bits - 7*i; rem < 7 {
					// The unused high bits must all equal the sign bit.
					s := (c & 0x7f) >> (rem - 1)
					if s != 0 && s != 0x7f>>(rem-1) {
						return 0, r.errf("integer overflows %d bits", bits)
					}
				}
			}
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v, nil
		}
	}
	return 0, r.errf("integer representation too long")
}

func (r *reader) u32() (uint32, error) {
	v, err := r.uleb(32)
	return uint32(v), err
}

// name skips a length-prefixed byte string and returns it.
func (r *reader) name() ([]byte, error) {
	n, err := r.u32()
	if err != nil {
		return nil, err
	}
	return r.bytes(uint64(n))
}

func appendULEB(dst []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			dst = append(dst, c|0x80)
			continue
		}
		return append(dst, c)
	}
}

func appendSLEB(dst []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(dst, c)
		}
		dst = append(dst, c|0x80)
	}
}
