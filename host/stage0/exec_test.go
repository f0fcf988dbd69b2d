package stage0_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/sandbox/wasmtest"
	"github.com/logline/logline/host/span"
)

// A kernel's exec runs a function and hands back its outcome, appending
// nothing; its insert_span of an array appends all the spans together.
func TestKernelExecAndBatchInsert(t *testing.T) {
	t.Parallel()
	b := setup(t, false, kernelID)
	ctx := context.Background()
	author := ledger.User("acme", "author")
	const fnID = "00000000-0000-4000-8000-0000000000f1"
	b.signedAppend(t, author, nil, codeSpan(fnID, "function", "greet", wasmtest.Outputs(`{"hi":1}`)))

	kernel := func(fn, req string) {
		s := codeSpan(kernelID, "kernel", "k", wasmtest.Calls(fn, req))
		latest, err := b.ledger.Latest(ctx, ledger.System(), kernelID)
		if err == nil {
			s.Seq, s.PrevHash = latest.Seq+1, latest.CurrHash
		}
		b.signedAppend(t, author, nil, s)
	}
	kernel(abi.FnExec, fmt.Sprintf(`{"span_id":%q,"input":{"x":1}}`, fnID))
	res, err := b.host.Tick(ctx, kernelID, "acme", nil, nil)
	require.NoError(t, err)
	require.Nil(t, res.Err)
	var ex abi.ExecResult
	require.NoError(t, json.Unmarshal(res.Output, &ex))
	require.Equal(t, "complete", ex.Status)
	require.JSONEq(t, `{"hi":1}`, mustJSON(t, ex.Output))
	require.Equal(t, 0, ex.CodeSeq)
	require.NotEmpty(t, ex.ModuleHash)
	require.Positive(t, ex.FuelUsed)
	execs, err := b.ledger.Query(ctx, ledger.System(), ledger.Filter{EntityType: "execution", Desc: true})
	require.NoError(t, err)
	require.Empty(t, execs.Items, "exec and a successful tick append nothing")

	// exec of something that is not a function or policy is invalid.
	kernel(abi.FnExec, fmt.Sprintf(`{"span_id":%q}`, kernelID))
	res, err = b.host.Tick(ctx, kernelID, "acme", nil, nil)
	require.NoError(t, err)
	require.NotNil(t, res.Err)
	require.Equal(t, abi.CodeGuestError, res.Err.Code)
	require.Contains(t, res.Err.Message, fmt.Sprint(abi.ErrInvalid))
	execs, err = b.ledger.Query(ctx, ledger.System(), ledger.Filter{EntityType: "execution", Desc: true})
	require.NoError(t, err)
	require.Len(t, execs.Items, 1, "a failed tick is recorded")
	require.Equal(t, "error", execs.Items[0].Span.Status)

	// An array appends together: all or none.
	two := `[{"entity_type":"note","who":"k","this":"a","owner_id":"author"},{"entity_type":"note","who":"k","this":"b","owner_id":"author"}]`
	kernel(abi.FnInsertSpan, two)
	res, err = b.host.Tick(ctx, kernelID, "acme", nil, nil)
	require.NoError(t, err)
	require.Nil(t, res.Err)
	var stored []span.Span
	require.NoError(t, json.Unmarshal(res.Output, &stored))
	require.Len(t, stored, 2)
	for _, s := range stored {
		require.Equal(t, "acme", s.TenantID)
		require.NoError(t, span.Verify(&s))
	}
	bad := `[{"entity_type":"note","who":"k","this":"a","owner_id":"author"},{"entity_type":"note","who":"k","this":"b","owner_id":"author","tenant_id":"other"}]`
	kernel(abi.FnInsertSpan, bad)
	res, err = b.host.Tick(ctx, kernelID, "acme", nil, nil)
	require.NoError(t, err)
	require.NotNil(t, res.Err)
	notes, err := b.ledger.Query(ctx, ledger.System(), ledger.Filter{EntityType: "note", Desc: true})
	require.NoError(t, err)
	require.Len(t, notes.Items, 2, "the refused array appended nothing")
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}
