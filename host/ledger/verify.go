package ledger

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/logline/logline/host/span"
)

// Scope selects what Verify checks: the given ids (every version), or when
// IDs is empty every span visible to the principal, optionally only those in
// the commit range (After, Until].
type Scope struct {
	IDs   []string
	After Cursor
	Until Cursor
}

// Failure names a span that failed verification and why.
type Failure struct {
	ID     string `json:"id"`
	Seq    int32  `json:"seq"`
	Reason string `json:"reason"`
}

func (f Failure) String() string { return fmt.Sprintf("%s seq %d: %s", f.ID, f.Seq, f.Reason) }

// Report is the outcome of Verify.
type Report struct {
	Checked  int
	Signed   int
	Failures []Failure
}

// OK reports whether every checked span verified.
func (r Report) OK() bool { return len(r.Failures) == 0 }

// Verify recomputes every selected span's hash, checks its signature when it
// has one, and checks its link to the previous version (prev_hash equals the
// curr_hash of seq-1, and seq-1 exists). It reports every failure, not just
// the first; the error is for failing to read, not for failing spans.
func (l *Ledger) Verify(ctx context.Context, p Principal, sc Scope) (Report, error) {
	var where []string
	var args []any
	if len(sc.IDs) > 0 {
		for _, id := range sc.IDs {
			if err := checkUUID("id", id); err != nil {
				return Report{}, err
			}
		}
		args = append(args, sc.IDs)
		where = append(where, "r.id = ANY($1::uuid[])")
	}
	for _, b := range []struct {
		op string
		c  Cursor
	}{{">", sc.After}, {"<=", sc.Until}} {
		if !b.c.IsZero() {
			args = append(args, fmt.Sprint(b.c.Tx), b.c.Ord)
			where = append(where, fmt.Sprintf("(r.tx_id, r.ord) %s ($%d::text::xid8, $%d)", b.op, len(args)-1, len(args)))
		}
	}
	q := `SELECT ` + prefixed("r.") + `, p.curr_hash, p.id IS NOT NULL
		FROM ledger.universal_registry r
		LEFT JOIN ledger.universal_registry p ON p.id = r.id AND p.seq = r.seq - 1`
	for i, w := range where {
		if i == 0 {
			q += " WHERE " + w
		} else {
			q += " AND " + w
		}
	}
	q += " ORDER BY r.id, r.seq"

	var rep Report
	err := l.InTx(ctx, p, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var predHash *string
			var predExists bool
			it, err := scanItem(withTail(rows, &predHash, &predExists))
			if err != nil {
				return err
			}
			rep.Checked++
			s := &it.Span
			if s.Signature != "" {
				rep.Signed++
			}
			fail := func(format string, a ...any) {
				rep.Failures = append(rep.Failures, Failure{ID: s.ID, Seq: s.Seq, Reason: fmt.Sprintf(format, a...)})
			}
			if err := span.Verify(s); err != nil {
				switch {
				case errors.Is(err, span.ErrHashMismatch):
					fail("hash mismatch: the stored content does not hash to curr_hash (%v)", err)
				case errors.Is(err, span.ErrBadSignature):
					fail("bad signature: %v", err)
				default:
					fail("%v", err)
				}
			}
			switch {
			case s.Seq == 0 && s.PrevHash != "":
				fail("broken chain: seq 0 has a prev_hash")
			case s.Seq > 0 && !predExists:
				fail("broken chain: previous version seq %d is missing or not visible", s.Seq-1)
			case s.Seq > 0 && (predHash == nil || *predHash != s.PrevHash):
				fail("broken chain: prev_hash %s does not match curr_hash %s of seq %d", s.PrevHash, deref(predHash), s.Seq-1)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return rep, fmt.Errorf("error verifying spans: %w", err)
	}
	return rep, nil
}

// withTail lets scanItem read a row that has extra columns after the span's.
func withTail(rows pgx.Rows, tail ...any) pgx.Row { return tailRow{rows, tail} }

type tailRow struct {
	rows pgx.Rows
	tail []any
}

func (t tailRow) Scan(dest ...any) error { return t.rows.Scan(append(dest, t.tail...)...) }
