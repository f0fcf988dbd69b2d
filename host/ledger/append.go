package ledger

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/logline/logline/host/span"
)

// MaxBatch bounds one Append: a batch is one transaction, and a huge one
// holds locks and memory for too long.
const MaxBatch = 1000

// Append stores spans in one transaction — all of them or none — and returns
// them as stored.
//
// The principal decides tenant_id and owner_id (filled in when absent,
// refused when they name someone else; only a service principal may write for
// another owner of its tenant). A span without an id gets a fresh one at seq
// 0; a span with seq n > 0 must be the next version of its id (optimistic
// concurrency: ErrSeqConflict when someone else got there first).
//
// A span that arrives signed (signature and public_key set, as `logline spans
// sign` makes them) is stored exactly as signed after its hash and signature
// are checked. Any other span is sealed by the host: at is stamped now,
// prev_hash is linked to the previous version, and curr_hash and, with a
// node key, signature and public_key are computed.
//
// Concurrent single-span Appends of one principal may be committed together
// (group.go): each still gets its own span or its own error.
func (l *Ledger) Append(ctx context.Context, p Principal, spans ...span.Span) ([]span.Span, error) {
	if err := checkBatch(p, len(spans)); err != nil {
		return nil, err
	}
	if len(spans) == 1 && l.group.inflight > 0 {
		return l.appendGrouped(ctx, p, spans[0])
	}
	return l.appendBatch(ctx, p, spans...)
}

// appendBatch is Append of spans as one transaction.
func (l *Ledger) appendBatch(ctx context.Context, p Principal, spans ...span.Span) ([]span.Span, error) {
	out := make([]span.Span, len(spans))
	copy(out, spans)
	now := span.FormatTime(l.now())

	// Pass 1: fill what the host decides, validate, and note which
	// previous versions must be looked up.
	type ref struct {
		id  string
		seq int32
	}
	var lookups []ref
	inBatch := map[ref]int{} // (id, seq) -> index, to chain versions within the batch
	for i := range out {
		s := &out[i]
		if err := l.prepare(p, s, now); err != nil {
			return nil, withIndex(i, len(out), err)
		}
		k := ref{s.ID, s.Seq}
		if _, dup := inBatch[k]; dup {
			return nil, withIndex(i, len(out), fmt.Errorf("%w: span %s seq %d appears twice in the batch", ErrSeqConflict, s.ID, s.Seq))
		}
		inBatch[k] = i
		if s.Seq > 0 && s.Signature == "" {
			if _, ok := inBatch[ref{s.ID, s.Seq - 1}]; !ok {
				lookups = append(lookups, ref{s.ID, s.Seq - 1})
			}
		}
	}

	// Pass 2: fetch the hashes of previous versions in one round trip.
	prev := map[ref]string{}
	if len(lookups) > 0 {
		ids := make([]string, len(lookups))
		seqs := make([]int32, len(lookups))
		for i, r := range lookups {
			ids[i], seqs[i] = r.id, r.seq
		}
		b, _ := l.batch(p)
		b.Queue(`SELECT u.id::text, u.seq, r.curr_hash
			FROM unnest($1::uuid[], $2::int[]) AS u(id, seq)
			JOIN ledger.universal_registry r ON r.id = u.id AND r.seq = u.seq`, ids, seqs).
			Query(func(rows pgx.Rows) error {
				for rows.Next() {
					var r ref
					var h string
					if err := rows.Scan(&r.id, &r.seq, &h); err != nil {
						return err
					}
					prev[r] = h
				}
				return rows.Err()
			})
		if err := l.send(ctx, b); err != nil {
			return nil, fmt.Errorf("error reading previous versions: %w", err)
		}
		for _, r := range lookups {
			if _, ok := prev[r]; !ok {
				i := inBatch[ref{r.id, r.seq + 1}]
				return nil, withIndex(i, len(out), fmt.Errorf("%w: span %s seq %d: no version seq %d visible to %s", ErrSeqConflict, r.id, r.seq+1, r.seq, p))
			}
		}
	}

	// Pass 3: seal (in parallel: signing is the costly part), then insert
	// every span in one statement, so the ledger's trigger runs once for
	// the batch (migrations/009), in one implicit transaction with the
	// principal: all of it commits, or none.
	seal := func(i int) error {
		s := &out[i]
		if s.Signature != "" {
			if err := span.Verify(s); err != nil {
				return withIndex(i, len(out), fmt.Errorf("%w: %w", ErrInvalid, err))
			}
			return nil
		}
		if s.Seq > 0 {
			if j, ok := inBatch[ref{s.ID, s.Seq - 1}]; ok {
				s.PrevHash = out[j].CurrHash
			} else {
				s.PrevHash = prev[ref{s.ID, s.Seq - 1}]
			}
		}
		var err error
		if l.key != nil {
			err = l.key.Seal(s)
		} else {
			s.CurrHash, err = s.Hash()
		}
		if err != nil {
			return withIndex(i, len(out), fmt.Errorf("%w: %w", ErrInvalid, err))
		}
		return nil
	}
	// A version whose predecessor is in the batch is sealed after it (its
	// prev_hash is the predecessor's curr_hash): each chain of one id is
	// sealed in order by one worker, chains in parallel.
	// (A chain is named by its first version in the batch, wherever in
	// the batch each version is.)
	chainOf := map[int]int{} // first version's index -> chain
	var chains [][]int
	for i := range out {
		root := i
		for out[root].Seq > 0 {
			j, ok := inBatch[ref{out[root].ID, out[root].Seq - 1}]
			if !ok {
				break
			}
			root = j
		}
		c, ok := chainOf[root]
		if !ok {
			c = len(chains)
			chainOf[root] = c
			chains = append(chains, nil)
		}
		chains[c] = append(chains[c], i)
	}
	for _, c := range chains {
		slices.SortFunc(c, func(a, b int) int { return cmp.Compare(out[a].Seq, out[b].Seq) })
	}
	if err := parallel(len(chains), func(c int) error {
		for _, i := range chains[c] {
			if err := seal(i); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	b, _ := l.batch(p)
	if len(out) == 1 {
		b.Queue(insertSpan, textParams(&out[0])...)
	} else {
		b.Queue(insertSpans, columnArrays(out)...)
	}
	if err := l.send(ctx, b); err != nil {
		if len(out) == 1 {
			return nil, fmt.Errorf("error appending span %s seq %d: %w", out[0].ID, out[0].Seq, err)
		}
		return nil, fmt.Errorf("error appending %d spans (none written): %w", len(out), err)
	}
	return out, nil
}

// parallel runs fn(0..n-1) on up to GOMAXPROCS goroutines and returns the
// error of the lowest i that failed, as a sequential loop would (every fn
// runs; they are cheap to finish). Few items run on the caller's goroutine.
func parallel(n int, fn func(int) error) error {
	workers := min(runtime.GOMAXPROCS(0), n/8)
	if workers <= 1 {
		for i := 0; i < n; i++ {
			if err := fn(i); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				errs[i] = fn(i)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// prepare readies one span of an Append: unsigned spans lose whatever
// proofs they carry (the host seals them), then Fill and validation.
func (l *Ledger) prepare(p Principal, s *span.Span, now string) error {
	if s.Signature == "" {
		s.At, s.PrevHash, s.CurrHash, s.PublicKey = "", "", "", ""
	}
	if err := Fill(p, s, now); err != nil {
		return err
	}
	if err := s.ValidateComplete(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if s.Signature != "" && (s.CurrHash == "" || (s.Seq > 0) != (s.PrevHash != "")) {
		return fmt.Errorf("%w: a signed span must carry curr_hash and, for seq > 0, prev_hash", ErrInvalid)
	}
	return nil
}

// Fill sets the fields the host decides before a span is sealed, exactly as
// Append will store them, so that a span sealed offline (logline spans sign)
// hashes the same once stored: tenant_id and owner_id from the principal
// (refusing values that name someone else; a service principal may write for
// any owner of its tenant), the default visibility, a new id (UUIDv7, seq 0)
// when there is none, and at = now when absent.
func Fill(p Principal, s *span.Span, now string) error {
	if s.TenantID == "" {
		s.TenantID = p.Tenant
	} else if s.TenantID != p.Tenant {
		return fmt.Errorf("%w: tenant_id %q is not the principal's tenant %q", ErrForbidden, s.TenantID, p.Tenant)
	}
	if s.OwnerID == "" {
		s.OwnerID = p.User
	} else if s.OwnerID != p.User && p.Kind != KindService {
		return fmt.Errorf("%w: owner_id %q: a user may only write spans it owns", ErrForbidden, s.OwnerID)
	}
	if s.Visibility == "" {
		s.Visibility = span.DefaultVisibility
	}
	if s.ID == "" {
		if s.Seq != 0 {
			return fmt.Errorf("%w: seq %d without an id (a new id starts at seq 0)", ErrInvalid, s.Seq)
		}
		id, err := uuid.NewV7()
		if err != nil {
			return err
		}
		s.ID = id.String()
	}
	if s.At == "" {
		s.At = now
	}
	return nil
}

// checkBatch refuses a batch of n spans that p may not append, whatever
// the spans: a principal that is not valid or is the (read-only) system,
// an empty batch, one over MaxBatch.
func checkBatch(p Principal, n int) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if p.Kind == KindSystem {
		return fmt.Errorf("%w: the system principal is read-only", ErrForbidden)
	}
	if n == 0 {
		return fmt.Errorf("%w: no spans to append", ErrInvalid)
	}
	if n > MaxBatch {
		return fmt.Errorf("%w: %d spans in one batch, at most %d", ErrInvalid, n, MaxBatch)
	}
	return nil
}

// withIndex names the span of a batch an error is about.
func withIndex(i, n int, err error) error {
	if n == 1 {
		return err
	}
	return fmt.Errorf("span %d of %d: %w", i+1, n, err)
}
