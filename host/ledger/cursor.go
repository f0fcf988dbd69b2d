package ledger

import (
	"fmt"
	"strconv"
	"strings"
)

// Cursor is a position in the ledger's commit order: the inserting
// transaction's id and the row's insertion number. Readers only return rows
// whose transaction ended before every transaction still running began, so
// positions are handed out in an order no late commit can break.
type Cursor struct {
	Tx  uint64
	Ord int64
}

// IsZero reports whether c is the start of the ledger.
func (c Cursor) IsZero() bool { return c == Cursor{} }

// String is the cursor's wire form, "<tx>.<ord>" (opaque to clients).
func (c Cursor) String() string {
	if c.IsZero() {
		return ""
	}
	return strconv.FormatUint(c.Tx, 10) + "." + strconv.FormatInt(c.Ord, 10)
}

// ParseCursor reads a cursor's wire form; "" is the start.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	tx, ord, ok := strings.Cut(s, ".")
	if !ok {
		return Cursor{}, fmt.Errorf("%w: cursor %q is malformed", ErrInvalid, s)
	}
	t, err1 := parseUint(tx)
	o, err2 := strconv.ParseInt(ord, 10, 64)
	if err1 != nil || err2 != nil || o < 0 {
		return Cursor{}, fmt.Errorf("%w: cursor %q is malformed", ErrInvalid, s)
	}
	return Cursor{Tx: t, Ord: o}, nil
}

func parseUint(s string) (uint64, error) { return strconv.ParseUint(s, 10, 64) }
