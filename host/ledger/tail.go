package ledger

import (
	"context"
	"fmt"
	"strconv"
)

// Tail is where a follower starts when it wants only what is new: a forward
// Query After Tail returns every row that was not yet listable when Tail was
// read (rows committing then or later), and no row that already was. Every
// transaction older than the horizon has ended, so nothing can commit behind
// it; a follower that started from the newest visible row instead could miss
// a row of an older transaction still running.
func (l *Ledger) Tail(ctx context.Context) (Cursor, error) {
	var xmin string
	if err := l.scalar(ctx, &xmin, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text`); err != nil {
		return Cursor{}, fmt.Errorf("error reading the snapshot: %w", err)
	}
	tx, err := strconv.ParseUint(xmin, 10, 64)
	if err != nil {
		return Cursor{}, fmt.Errorf("error reading the snapshot: %q: %w", xmin, err)
	}
	// Rows of transaction xmin itself have ord >= 1, so (xmin, 0) precedes
	// them all.
	return Cursor{Tx: tx}, nil
}
