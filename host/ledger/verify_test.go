package ledger_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

func TestVerifyNamesTamperedSpans(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	p := ledger.User("A", "alice")
	clean, err := b.ledger.Append(ctx, p, fn("clean"))
	require.NoError(t, err)
	victim, err := b.ledger.Append(ctx, p, fn("victim"))
	require.NoError(t, err)
	chain, err := b.ledger.Append(ctx, p, fn("chain"))
	require.NoError(t, err)

	rep, err := b.ledger.Verify(ctx, ledger.System(), ledger.Scope{})
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Failures)
	require.Equal(t, 3, rep.Checked)
	require.Equal(t, 3, rep.Signed)

	// A superuser with triggers disabled edits nested metadata in place.
	conn, err := b.admin.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, `SET session_replication_role = replica`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `UPDATE ledger.universal_registry SET metadata = '{"limit":{"per_day":1000000}}' WHERE id = $1`, victim[0].ID)
	require.NoError(t, err)

	// ... and forges a seq 1 that hashes and signs correctly but does not
	// link to seq 0.
	forged := chain[0]
	forged.Seq, forged.Signature, forged.Code = 1, "", "evil"
	forged.PrevHash = "00000000000000000000000000000000000000000000000000000000000000aa"
	require.NoError(t, b.key.Seal(&forged))
	at, err := span.ParseTime(forged.At)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `INSERT INTO ledger.universal_registry (id, seq, entity_type, who, did, "this", at, owner_id, tenant_id,
		visibility, status, name, code, language, runtime, prev_hash, curr_hash, signature, public_key, tx_id)
		VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, pg_current_xact_id())`,
		forged.ID, forged.EntityType, forged.Who, forged.Did, forged.This, at, forged.OwnerID, forged.TenantID,
		forged.Visibility, forged.Status, forged.Name, forged.Code, forged.Language, forged.Runtime, forged.PrevHash,
		forged.CurrHash, forged.Signature, forged.PublicKey)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `RESET session_replication_role`)
	require.NoError(t, err)

	rep, err = b.ledger.Verify(ctx, ledger.System(), ledger.Scope{})
	require.NoError(t, err)
	require.Equal(t, 4, rep.Checked)
	require.Len(t, rep.Failures, 2, "%v", rep.Failures)
	byID := map[string]ledger.Failure{}
	for _, f := range rep.Failures {
		byID[f.ID] = f
	}
	require.Contains(t, byID[victim[0].ID].Reason, "hash mismatch")
	require.Equal(t, int32(1), byID[chain[0].ID].Seq)
	require.Contains(t, byID[chain[0].ID].Reason, "broken chain")
	require.NotContains(t, byID, clean[0].ID)

	// Scoped to one id, only that id is checked.
	rep, err = b.ledger.Verify(ctx, ledger.System(), ledger.Scope{IDs: []string{clean[0].ID}})
	require.NoError(t, err)
	require.True(t, rep.OK())
	require.Equal(t, 1, rep.Checked)
}

func TestVerifyRange(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	p := ledger.User("A", "alice")
	for i := 0; i < 5; i++ {
		_, err := b.ledger.Append(ctx, p, fn("r"))
		require.NoError(t, err)
	}
	b.settle(t)
	page, err := b.ledger.Query(ctx, p, ledger.Filter{})
	require.NoError(t, err)
	require.Len(t, page.Items, 5)
	// (After, Until]: the 2nd, 3rd and 4th span.
	rep, err := b.ledger.Verify(ctx, p, ledger.Scope{After: page.Items[0].Cursor, Until: page.Items[3].Cursor})
	require.NoError(t, err)
	require.True(t, rep.OK())
	require.Equal(t, 3, rep.Checked)
}
