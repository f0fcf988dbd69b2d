package stage0_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

// Whatever a guest hands back that the ledger cannot store ends that one
// run with invalid_output, recorded in its execution span: never an
// execution that cannot be recorded.
func TestUnstorableOutputEndsOnlyItsRun(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	ctx := context.Background()
	alice := ledger.User("acme", "alice")
	for name, body := range map[string]string{
		"nul":            `return "a\u0000b"`,
		"nul_key":        `return {["k\u0000"]: 1}`,
		"nul_nested":     `return {a: [1, {b: "x\u0000"}]}`,
		"lone_surrogate": `return "\ud800"`,
		"low_surrogate":  `return ["ok", "\udc00"]`,
		"too_deep":       `let v = 0; for (let i = 0; i < 520; i++) v = [v]; return v`,
		"unsafe_integer": `return 2 ** 60`,
	} {
		t.Run(name, func(t *testing.T) {
			fn := jsSpan("", "function", name, body)
			fn.Metadata = json.RawMessage(`{"limits":{"fuel":100000000}}`)
			f := b.signedAppend(t, alice, nil, fn)
			ex, err := b.host.Run(ctx, alice, f.ID, nil)
			require.NoError(t, err, "the run is recorded")
			require.Equal(t, "error", ex.Status)
			require.Empty(t, ex.Output)
			var e abi.Error
			require.NoError(t, json.Unmarshal(ex.Error, &e))
			require.Equal(t, abi.CodeInvalidOutput, e.Code, e.Message)
			require.True(t, strings.HasPrefix(e.Message, "output "), e.Message)
			require.NoError(t, span.Verify(&ex))
			stored, err := b.ledger.Get(ctx, alice, ex.ID)
			require.NoError(t, err)
			require.Equal(t, ex.CurrHash, stored[0].CurrHash)
		})
	}

	// A message quoting the guest is cleaned, not refused.
	f := b.signedAppend(t, alice, nil, jsSpan("", "function", "thrower", `throw new Error("a\u0000b")`))
	ex, err := b.host.Run(ctx, alice, f.ID, nil)
	require.NoError(t, err)
	var e abi.Error
	require.NoError(t, json.Unmarshal(ex.Error, &e))
	require.Equal(t, abi.CodeGuestError, e.Code)
	require.Contains(t, e.Message, "a\uFFFDb")

	// An input the ledger could not record is refused before anything runs.
	ok := b.signedAppend(t, alice, nil, jsSpan("", "function", "echo", `return input`))
	_, err = b.host.Run(ctx, alice, ok.ID, json.RawMessage(`{"s":"a\u0000b"}`))
	require.ErrorIs(t, err, ledger.ErrInvalid)
	require.Contains(t, err.Error(), `input`)
	require.NoError(t, b.ledger.Settle(ctx))
	page, err := b.ledger.Query(ctx, ledger.System(), ledger.Filter{EntityType: "execution", ParentID: ok.ID})
	require.NoError(t, err)
	require.Empty(t, page.Items, "nothing was written for the refused input")
}

// A kernel gets the same verdict through exec (as the request_worker runs
// functions); what it appends itself that the ledger cannot store ends its
// run with invalid_output; insert_span's check judges an array span by span
// and appends nothing.
func TestKernelPathsOfUnstorableOutput(t *testing.T) {
	t.Parallel()
	b := setup(t, false, kernelID)
	ctx := context.Background()
	author := ledger.User("acme", "author")
	poison := b.signedAppend(t, author, nil, jsSpan("", "function", "poison", `return "a\u0000b"`))
	fine := b.signedAppend(t, author, nil, jsSpan("", "function", "fine", `return 7`))
	boot := func(src string, env map[string]string) span.Span {
		t.Helper()
		k := jsSpan(kernelID, "kernel", "k", src)
		if latest, err := b.ledger.Latest(ctx, ledger.System(), kernelID); err == nil {
			k.Seq, k.PrevHash = latest.Seq+1, latest.CurrHash
		}
		b.signedAppend(t, author, nil, k)
		ex, err := b.host.Boot(ctx, kernelID, env)
		require.NoError(t, err)
		return ex
	}

	// exec: the poisoned run fails alone, its neighbour completes.
	ex := boot(`globalThis.default = async function (ctx) {
  const [a, b] = await ctx.exec([{ span_id: ctx.env.P }, { span_id: ctx.env.F }]);
  return { a, b };
};`, map[string]string{"P": poison.ID, "F": fine.ID})
	require.Equal(t, "complete", ex.Status, string(ex.Error))
	var out struct{ A, B abi.ExecResult }
	require.NoError(t, json.Unmarshal(ex.Output, &out))
	require.Equal(t, "error", out.A.Status)
	require.Equal(t, abi.CodeInvalidOutput, out.A.Error.Code)
	require.Equal(t, "complete", out.B.Status)
	require.JSONEq(t, `7`, mustJSON(t, out.B.Output))

	// insert_span of something no span can hold ends the run.
	ex = boot(`globalThis.default = async function (ctx) {
  await ctx.insertSpan({ entity_type: 'note', who: 'k', this: 'x', metadata: { s: 'a\u0000b' } });
  return 'not reached';
};`, nil)
	require.Equal(t, "error", ex.Status)
	var e abi.Error
	require.NoError(t, json.Unmarshal(ex.Error, &e))
	require.Equal(t, abi.CodeInvalidOutput, e.Code, e.Message)
	require.Contains(t, e.Message, `\u0000`)

	// The check names each bad span and appends nothing.
	existing := fine.ID
	ex = boot(`globalThis.default = async function (ctx) {
  return await ctx.insertSpan({ check: true, spans: [
    { entity_type: 'note', who: 'k', this: 'good', owner_id: 'author' },
    { entity_type: 'Not A Type', who: 'k', this: 'bad' },
    { id: ctx.env.E, seq: 0, entity_type: 'note', who: 'k', this: 'exists' },
    { entity_type: 'note', who: 'k', this: 'other tenant', tenant_id: 'globex' },
    { entity_type: 'note', who: 'k', this: 'nul', name: 'a\u0000b' },
    { entity_type: 'note', who: 'k', this: 'unknown field', colour: 'red' },
  ] });
};`, map[string]string{"E": existing})
	require.Equal(t, "complete", ex.Status, string(ex.Error))
	var verdicts []*abi.Error
	require.NoError(t, json.Unmarshal(ex.Output, &verdicts))
	require.Len(t, verdicts, 6)
	require.Nil(t, verdicts[0])
	require.Equal(t, "invalid", verdicts[1].Code)
	require.Contains(t, verdicts[1].Message, "entity_type")
	require.Equal(t, "conflict", verdicts[2].Code)
	require.Contains(t, verdicts[2].Message, "already exists")
	require.Equal(t, "forbidden", verdicts[3].Code)
	require.Equal(t, abi.CodeInvalidOutput, verdicts[4].Code)
	require.Equal(t, "invalid", verdicts[5].Code)
	require.Contains(t, verdicts[5].Message, "colour")
	require.NoError(t, b.ledger.Settle(ctx))
	notes, err := b.ledger.Query(ctx, ledger.System(), ledger.Filter{EntityType: "note"})
	require.NoError(t, err)
	require.Empty(t, notes.Items, "a check appends nothing")
}

// A kernel booted by hand runs for its own tenant, as the engine runs it.
func TestBootPassesTheKernelsTenant(t *testing.T) {
	t.Parallel()
	b := setup(t, false, kernelID)
	ctx := context.Background()
	b.signedAppend(t, ledger.User("acme", "author"), nil,
		jsSpan(kernelID, "kernel", "k", `globalThis.default = async function (ctx) { return ctx.env.TENANT; };`))
	ex, err := b.host.Boot(ctx, kernelID, nil)
	require.NoError(t, err)
	require.JSONEq(t, `"acme"`, string(ex.Output))
	ex, err = b.host.Boot(ctx, kernelID, map[string]string{"TENANT": "given"})
	require.NoError(t, err)
	require.JSONEq(t, `"given"`, string(ex.Output), "an explicit TENANT stays")
}

// The host seals every unsigned span with its node key, so a manifest that
// names the node key as an authority is refused: otherwise what the host
// sealed would count as signed by a trusted key.
func TestNodeKeyNeverConfersAuthority(t *testing.T) {
	t.Parallel()
	for _, field := range []string{"trusted_keys", "override_pubkey_hex"} {
		t.Run(field, func(t *testing.T) {
			t.Parallel()
			b := setup(t, true, kernelID)
			ctx := context.Background()
			b.signedAppend(t, ledger.User("acme", "author"), b.admin,
				jsSpan(kernelID, "kernel", "k", `globalThis.default = async function () { return 1; };`))
			_, err := b.host.Boot(ctx, kernelID, nil)
			require.NoError(t, err, "boots under a manifest that trusts only the operator key")

			node := b.ledger.NodeKey()
			require.NotEmpty(t, node)
			meta := map[string]any{"allowed_boot_ids": []string{kernelID}, "require_signed_kernels": true,
				"trusted_keys": []string{b.admin.PublicHex()}}
			if field == "trusted_keys" {
				meta["trusted_keys"] = []string{b.admin.PublicHex(), strings.ToUpper(node)}
			} else {
				meta["override_pubkey_hex"] = node
			}
			m, err := b.ledger.Latest(ctx, ledger.System(), stage0.ManifestID)
			require.NoError(t, err)
			next := span.Span{ID: stage0.ManifestID, Seq: m.Seq + 1, PrevHash: m.CurrHash, EntityType: "manifest",
				Who: "operator", This: "manifest", Visibility: "public"}
			next.Metadata, _ = json.Marshal(meta)
			b.signedAppend(t, operator, b.admin, next)

			_, err = b.host.LoadManifest(ctx)
			var r *stage0.Refusal
			require.ErrorAs(t, err, &r)
			require.Equal(t, stage0.CodeNodeKeyIsAuthority, r.Code)
			require.Contains(t, r.Message, node)
			require.Contains(t, r.Message, field)
			_, err = b.host.Boot(ctx, kernelID, nil)
			require.ErrorAs(t, err, &r, "nothing boots under it")
			require.Equal(t, stage0.CodeNodeKeyIsAuthority, r.Code)
		})
	}
}
