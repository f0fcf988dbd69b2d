package ledger

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/logline/logline/host/span"
)

// Check tells, span by span, whether Append(ctx, p, spans...) would refuse
// each of them, and why, without writing anything: nil where a span passes.
// It applies Append's own checks (the principal's tenant and owner, the
// span's fields, a signed span's proofs, two versions of one id in the
// batch) and the ledger's rules of succession (a seq 0 whose id exists, a
// seq n whose latest version is not n-1 or belongs to another tenant or
// owner), each span judged as if those before it that pass were appended
// with it.
//
// It is how a kernel whose batch was refused finds the items at fault, so
// that one bad item does not fail the rest of its batch (guests/kernels
// lib.js appendAll). Its verdicts can go stale (another writer appends
// meanwhile): the Append that follows still decides.
func (l *Ledger) Check(ctx context.Context, p Principal, spans []span.Span) ([]error, error) {
	if err := checkBatch(p, len(spans)); err != nil {
		return nil, err
	}
	out := make([]span.Span, len(spans))
	copy(out, spans)
	now := span.FormatTime(l.now())
	verdicts := make([]error, len(out))
	var ids []string
	for i := range out {
		s := &out[i]
		if err := l.prepare(p, s, now); err != nil {
			verdicts[i] = err
			continue
		}
		if s.Signature != "" {
			if err := span.Verify(s); err != nil {
				verdicts[i] = fmt.Errorf("%w: %w", ErrInvalid, err)
				continue
			}
		}
		ids = append(ids, s.ID)
	}

	// The heads of the ids, read as the system principal: the insert
	// trigger judges against every tenant's ids, and so must this (its
	// messages, like the trigger's, never reveal another tenant's data).
	type head struct {
		seq           int32
		hash          string
		tenant, owner string
	}
	heads := map[string]*head{}
	if len(ids) > 0 {
		err := l.InTx(ctx, System(), pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `SELECT id::text, seq, curr_hash, tenant_id, owner_id FROM ledger.heads WHERE id = ANY($1::uuid[])`, ids)
			if err != nil {
				return err
			}
			for rows.Next() {
				var id string
				var h head
				if err := rows.Scan(&id, &h.seq, &h.hash, &h.tenant, &h.owner); err != nil {
					return err
				}
				heads[id] = &h
			}
			return rows.Err()
		})
		if err != nil {
			return nil, fmt.Errorf("error reading the heads of %d spans: %w", len(ids), err)
		}
	}
	for i := range out {
		if verdicts[i] != nil {
			continue
		}
		s := &out[i]
		h := heads[s.ID]
		switch {
		case s.Seq == 0 && h != nil:
			verdicts[i] = fmt.Errorf("%w: span %s seq 0: the id already exists; a new version needs seq = latest+1", ErrSeqConflict, s.ID)
		case s.Seq > 0 && (h == nil || h.tenant != s.TenantID):
			verdicts[i] = fmt.Errorf("%w: span %s seq %d: no earlier version of this id in tenant %s", ErrSeqConflict, s.ID, s.Seq, s.TenantID)
		case s.Seq > 0 && h.seq != s.Seq-1:
			verdicts[i] = fmt.Errorf("%w: span %s seq %d: seq must be latest+1 (latest is %d)", ErrSeqConflict, s.ID, s.Seq, h.seq)
		case s.Seq > 0 && h.owner != s.OwnerID:
			verdicts[i] = fmt.Errorf("%w: span %s seq %d: a new version must keep tenant_id and owner_id (owner is %s)", ErrInvalid, s.ID, s.Seq, h.owner)
		case s.Seq > 0 && s.Signature != "" && h.hash != "" && s.PrevHash != h.hash:
			verdicts[i] = fmt.Errorf("%w: span %s seq %d: prev_hash %s does not match curr_hash %s of seq %d", ErrChain, s.ID, s.Seq, s.PrevHash, h.hash, h.seq)
		}
		if verdicts[i] != nil {
			continue
		}
		// As if appended: the next span of the same id follows this one
		// (an unsigned one's hash is not known until it is sealed).
		heads[s.ID] = &head{seq: s.Seq, hash: s.CurrHash, tenant: s.TenantID, owner: s.OwnerID}
	}
	return verdicts, nil
}
