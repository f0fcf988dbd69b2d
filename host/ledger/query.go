package ledger

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/logline/logline/host/span"
)

// Get returns every version of id visible to p, oldest first.
func (l *Ledger) Get(ctx context.Context, p Principal, id string) ([]span.Span, error) {
	if err := checkUUID("id", id); err != nil {
		return nil, err
	}
	items, err := l.collect(ctx, p, `SELECT `+selectColumns+` FROM ledger.universal_registry WHERE id = $1 ORDER BY seq`, id)
	if err != nil {
		return nil, fmt.Errorf("error reading span %s: %w", id, err)
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	out := make([]span.Span, len(items))
	for i := range items {
		out[i] = items[i].Span
	}
	return out, nil
}

// Latest returns the highest version of id visible to p.
func (l *Ledger) Latest(ctx context.Context, p Principal, id string) (span.Span, error) {
	if err := checkUUID("id", id); err != nil {
		return span.Span{}, err
	}
	items, err := l.collect(ctx, p, `SELECT `+selectColumns+` FROM ledger.universal_registry WHERE id = $1 ORDER BY seq DESC LIMIT 1`, id)
	if err != nil {
		return span.Span{}, fmt.Errorf("error reading span %s: %w", id, err)
	}
	if len(items) == 0 {
		return span.Span{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return items[0].Span, nil
}

// Filter selects spans for Query. Zero fields do not filter.
type Filter struct {
	EntityType string
	Status     string
	Tenant     string
	Visibility string
	TraceID    string
	ParentID   string
	Since      time.Time // at >= Since
	// ExcludeTypes leaves these entity types out (Bookkeeping, by the API's
	// and the CLI's default).
	ExcludeTypes []string

	// After continues a forward (oldest-first) listing. Forward listings only
	// return rows no running transaction can still precede, so following
	// Next never skips a row that commits late.
	After Cursor
	// Desc lists newest first (for browsing) and continues from Before.
	// A newest-first listing cannot promise to see rows that commit late
	// below its position; follow a forward listing for that.
	Desc   bool
	Before Cursor
	// Limit bounds the page; 0 means DefaultLimit, at most MaxLimit.
	Limit int
}

// Bookkeeping are the entity types the engine writes for itself (cursors,
// quota counters): six per user append, rarely what a reader wants, so
// listings and streams leave them out unless asked. (The span package
// holds the list: no policy may declare it judges them.)
var Bookkeeping = span.Bookkeeping

// Excluded is what a listing leaves out: the bookkeeping types unless
// includeBookkeeping (or entityType names one of them), and extra.
func Excluded(includeBookkeeping bool, entityType string, extra ...string) []string {
	var out []string
	if !includeBookkeeping && !slices.Contains(Bookkeeping, entityType) {
		out = append(out, Bookkeeping...)
	}
	for _, t := range extra {
		if t = strings.TrimSpace(t); t != "" && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// Page limits.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Page is one page of a Query.
type Page struct {
	Items []Item
	// Next continues the listing (pass it as After, or Before when Desc).
	// It is set even on a short page, so a follower can poll from it.
	Next Cursor
}

// Query lists spans visible to p that match f, in commit order.
func (l *Ledger) Query(ctx context.Context, p Principal, f Filter) (Page, error) {
	q, args, err := f.sql()
	if err != nil {
		return Page{}, err
	}
	items, err := l.collect(ctx, p, q, args...)
	if err != nil {
		return Page{}, fmt.Errorf("error querying spans: %w", err)
	}
	page := Page{Items: items, Next: f.After}
	if f.Desc {
		page.Next = f.Before
	}
	if n := len(items); n > 0 {
		page.Next = items[n-1].Cursor
	}
	return page, nil
}

// Match reports whether s passes f's selection — the fields sql turns
// into conditions, paging aside — for a consumer that filters rows it
// already read (the stream reads once per principal and filters per
// subscriber). Keep it in step with sql.
func (f Filter) Match(s *span.Span) bool {
	visibility := s.Visibility
	if visibility == "" {
		visibility = span.DefaultVisibility
	}
	for _, c := range []struct{ want, got string }{
		{f.EntityType, s.EntityType}, {f.Status, s.Status}, {f.Tenant, s.TenantID},
		{f.TraceID, s.TraceID}, {f.Visibility, visibility}, {f.ParentID, s.ParentID},
	} {
		if c.want != "" && c.want != c.got {
			return false
		}
	}
	if slices.Contains(f.ExcludeTypes, s.EntityType) {
		return false
	}
	if !f.Since.IsZero() {
		at, err := span.ParseTime(s.At)
		if err != nil || at.Before(f.Since) {
			return false
		}
	}
	return true
}

func (f Filter) sql() (string, []any, error) {
	limit := f.Limit
	switch {
	case limit == 0:
		limit = DefaultLimit
	case limit < 0 || limit > MaxLimit:
		return "", nil, fmt.Errorf("%w: limit must be between 1 and %d", ErrInvalid, MaxLimit)
	}
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	text := map[string]string{"entity_type": f.EntityType, "status": f.Status, "tenant_id": f.Tenant, "trace_id": f.TraceID}
	for _, col := range []string{"entity_type", "status", "tenant_id", "trace_id"} {
		if v := text[col]; v != "" {
			add(col+" = ?", v)
		}
	}
	if len(f.ExcludeTypes) > 0 {
		add("entity_type <> ALL(?::text[])", f.ExcludeTypes)
	}
	if f.Visibility != "" {
		switch f.Visibility {
		case span.VisibilityPrivate, span.VisibilityTenant, span.VisibilityPublic:
		default:
			return "", nil, fmt.Errorf("%w: visibility must be private, tenant or public", ErrInvalid)
		}
		add("visibility = ?", f.Visibility)
	}
	if f.ParentID != "" {
		if err := checkUUID("parent_id", f.ParentID); err != nil {
			return "", nil, err
		}
		add("parent_id = ?", f.ParentID)
	}
	if !f.Since.IsZero() {
		add("at >= ?", f.Since)
	}
	cursor := func(op string, c Cursor) {
		args = append(args, strconv.FormatUint(c.Tx, 10), c.Ord)
		where = append(where, fmt.Sprintf("(tx_id, ord) %s ($%d::text::xid8, $%d)", op, len(args)-1, len(args)))
	}
	order := "tx_id, ord"
	if f.Desc {
		order = "tx_id DESC, ord DESC"
		if !f.Before.IsZero() {
			cursor("<", f.Before)
		}
	} else {
		if !f.After.IsZero() {
			cursor(">", f.After)
		}
		// Only rows of transactions older than every running one: nothing
		// can commit behind them later.
		where = append(where, "tx_id < pg_snapshot_xmin(pg_current_snapshot())")
	}
	q := `SELECT ` + selectColumns + ` FROM ledger.universal_registry`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY " + order + " LIMIT " + strconv.Itoa(limit)
	return q, args, nil
}

// collect runs one principal-scoped query returning span rows.
func (l *Ledger) collect(ctx context.Context, p Principal, q string, args ...any) ([]Item, error) {
	b, err := l.batch(p)
	if err != nil {
		return nil, err
	}
	var items []Item
	b.Queue(q, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			it, err := scanItem(rows)
			if err != nil {
				return err
			}
			items = append(items, it)
		}
		return rows.Err()
	})
	if err := l.send(ctx, b); err != nil {
		return nil, err
	}
	return items, nil
}

func checkUUID(field, v string) error {
	u, err := uuid.Parse(v)
	if err != nil || u.String() != v {
		return fmt.Errorf("%w: %s %q is not a lowercase UUID", ErrInvalid, field, v)
	}
	return nil
}

// Settle waits until every transaction that committed before the call is
// behind the forward-listing horizon, so a forward Query started afterwards
// sees all of them (read-your-writes for listings). It waits only as long as
// the oldest write transaction still running on the server.
func (l *Ledger) Settle(ctx context.Context) error {
	// One round trip when nothing is running (the common case), else wait
	// for the transactions running now: checks 1 ms apart at first (most
	// are appends that commit within a few), then up to 5 ms apart.
	var target string
	var done bool
	err := l.row(ctx, `SELECT pg_snapshot_xmax(s)::text, pg_snapshot_xmin(s) >= pg_snapshot_xmax(s)
		FROM pg_current_snapshot() s`, nil, &target, &done)
	if err != nil {
		return fmt.Errorf("error reading the snapshot: %w", err)
	}
	wait := time.Millisecond
	for !done {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Millisecond)
		if err := l.scalar(ctx, &done, `SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::xid8`, target); err != nil {
			return fmt.Errorf("error reading the snapshot: %w", err)
		}
	}
	return nil
}

// scalar runs a one-value query as the system principal.
func (l *Ledger) scalar(ctx context.Context, dst any, q string, args ...any) error {
	return l.row(ctx, q, args, dst)
}

// row runs a one-row query as the system principal and scans it into dst.
func (l *Ledger) row(ctx context.Context, q string, args []any, dst ...any) error {
	b, err := l.batch(System())
	if err != nil {
		return err
	}
	b.Queue(q, args...).QueryRow(func(r pgx.Row) error { return r.Scan(dst...) })
	return l.send(ctx, b)
}
