package stage0_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

// jsSpan is a span as `logline publish FILE.js` writes it.
func jsSpan(id, kind, name, source string) span.Span {
	return span.Span{ID: id, EntityType: kind, Who: "author", This: kind, Name: name, Status: "active",
		Runtime: stage0.RuntimeQuickJS, Language: "javascript", Code: source, Visibility: "tenant"}
}

func TestRunQuickJSFunction(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	ctx := context.Background()
	alice := ledger.User("acme", "alice")
	src := "// adds\nconst sum = input.a + input.b;\nconsole.log('sum', sum);\nreturn { sum, who: 'js' };\n"
	f := b.signedAppend(t, alice, nil, jsSpan("", "function", "add", src))

	ex, err := b.host.Run(ctx, alice, f.ID, json.RawMessage(`{"a":1,"b":2}`))
	require.NoError(t, err)
	require.Equal(t, "complete", ex.Status, string(ex.Error))
	require.JSONEq(t, `{"sum":3,"who":"js"}`, string(ex.Output))
	require.JSONEq(t, `{"a":1,"b":2}`, string(ex.Input))
	require.NoError(t, span.Verify(&ex))
	var meta struct {
		FuelUsed   int64  `json:"fuel_used"`
		ModuleHash string `json:"module_hash"`
		Tier       string `json:"tier"`
	}
	require.NoError(t, json.Unmarshal(ex.Metadata, &meta))
	require.Positive(t, meta.FuelUsed)
	require.Equal(t, stage0.ModuleHash([]byte(src)), meta.ModuleHash, "a JS span's hash is its source's")
	require.Equal(t, "function", meta.Tier)

	// A thrown error is the run's error, with its message.
	f = b.signedAppend(t, alice, nil, jsSpan("", "function", "thrower", "throw new RangeError('too big: ' + input.n)"))
	ex, err = b.host.Run(ctx, alice, f.ID, json.RawMessage(`{"n":7}`))
	require.NoError(t, err)
	require.Equal(t, "error", ex.Status)
	var e abi.Error
	require.NoError(t, json.Unmarshal(ex.Error, &e))
	require.Equal(t, abi.CodeGuestError, e.Code)
	require.Contains(t, e.Message, "RangeError: too big: 7")
	require.Contains(t, e.Message, "thrower.js:1")

	// Kernel capabilities are refused to a JS function.
	f = b.signedAppend(t, alice, nil, jsSpan("", "function", "sneaky", "return logline.sql`SELECT 1`"))
	ex, err = b.host.Run(ctx, alice, f.ID, nil)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(ex.Error, &e))
	require.Equal(t, abi.CodeCapabilityDenied, e.Code, e.Message)

	// A syntax error refuses the run, naming line and column.
	f = b.signedAppend(t, alice, nil, jsSpan("", "function", "broken", "const a = 1;\nreturn a +* 2;\n"))
	_, err = b.host.Run(ctx, alice, f.ID, nil)
	var r *stage0.Refusal
	require.ErrorAs(t, err, &r)
	require.Equal(t, abi.CodeGuestError, r.Code)
	require.Contains(t, r.Message, "broken.js:2:11: SyntaxError")

	// A declared hash must be the source's.
	s := jsSpan("", "function", "tampered", "return 1")
	s.Metadata = json.RawMessage(`{"module_hash":"` + stage0.ModuleHash([]byte("return 2")) + `"}`)
	f = b.signedAppend(t, alice, nil, s)
	_, err = b.host.Run(ctx, alice, f.ID, nil)
	require.ErrorAs(t, err, &r)
	require.Equal(t, abi.CodeHashMismatch, r.Code)
}

func TestRunQuickJSPolicyBatch(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	ctx := context.Background()
	alice := ledger.User("acme", "alice")
	src := `export default function on(span) {
  if (span.entity_type === 'boom') throw new Error('cannot handle ' + span.id);
  return span.entity_type === 'execution' ? [{ emit_span: { entity_type: 'seen', parent_id: span.id } }] : null;
}`
	p := b.signedAppend(t, alice, nil, jsSpan("", "policy", "seen", src))
	in := `{"batch":[{"id":"a","entity_type":"execution"},{"id":"b","entity_type":"boom"},{"id":"c","entity_type":"note"}]}`
	ex, err := b.host.Run(ctx, alice, p.ID, json.RawMessage(in))
	require.NoError(t, err)
	require.Equal(t, "complete", ex.Status, string(ex.Error))
	require.JSONEq(t, `[
		{"actions":[{"emit_span":{"entity_type":"seen","parent_id":"a"}}]},
		{"error":{"message":"Error: cannot handle b"}},
		{"actions":[]}
	]`, string(ex.Output))
}

func TestBootQuickJSKernel(t *testing.T) {
	t.Parallel()
	b := setup(t, false, kernelID)
	ctx := context.Background()
	author := ledger.User("acme", "author")
	for _, p := range []ledger.Principal{ledger.User("acme", "a"), ledger.User("other", "b")} {
		_, err := b.ledger.Append(ctx, p, span.Span{EntityType: "note", Who: "x", This: "note", Visibility: "tenant"})
		require.NoError(t, err)
	}
	double := b.signedAppend(t, author, nil, jsSpan("", "function", "double", "return input.n * 2"))
	// The seed's kernel form, async, with ctx.sql as a tagged template,
	// insertSpan, exec, lock and env.
	src := `globalThis.default = async function main(ctx) {
  const { sql, insertSpan, exec, lock, unlock, env, now, crypto } = ctx;
  const kind = 'note';
  const { rows } = await sql` + "`SELECT tenant_id, count(*)::int AS n FROM ledger.universal_registry WHERE entity_type = ${kind} GROUP BY tenant_id`" + `;
  if (!(await lock('k', 1000))) throw new Error('lock busy');
  const stored = await insertSpan({ entity_type: 'kernel_note', who: 'kernel', this: 'note', visibility: 'tenant',
    metadata: { at: now(), uuid: crypto.randomUUID() } });
  const doubled = await exec(env.DOUBLE, { n: 21 });
  // The envelope: refs instead of the stored spans.
  const refs = await insertSpan({ spans: [{ entity_type: 'ref_note', who: 'kernel', this: 'a' },
    { entity_type: 'ref_note', who: 'kernel', this: 'b' }], result: 'refs' });
  let bad;
  try { await insertSpan({ spans: [{ entity_type: 'ref_note', who: 'kernel', this: 'c' }], result: 'all' }); } catch (e) { bad = e.code; }
  await unlock('k');
  return { rows, stored: { tenant: stored.tenant_id, signed: stored.signature !== '' }, doubled: doubled.output, missing: env.NOPE ?? null,
    refs, bad };
};`
	b.signedAppend(t, author, nil, jsSpan(kernelID, "kernel", "js-kernel", src))
	ex, err := b.host.Boot(ctx, kernelID, map[string]string{"DOUBLE": double.ID})
	require.NoError(t, err)
	require.Equal(t, "complete", ex.Status, string(ex.Error))
	var out struct {
		Refs []abi.SpanRef `json:"refs"`
		Bad  string        `json:"bad"`
	}
	require.NoError(t, json.Unmarshal(ex.Output, &out))
	require.Equal(t, "invalid", out.Bad, "an unknown result is refused")
	require.Len(t, out.Refs, 2)
	for i, ref := range out.Refs {
		var this, hash string
		require.NoError(t, b.ledger.Pool().QueryRow(ctx, `SELECT "this", curr_hash FROM ledger.universal_registry WHERE id = $1 AND seq = $2`,
			ref.ID, ref.Seq).Scan(&this, &hash))
		require.Equal(t, []string{"a", "b"}[i], this)
		require.Equal(t, hash, ref.CurrHash)
	}
	var n int
	require.NoError(t, b.ledger.Pool().QueryRow(ctx, `SELECT count(*) FROM ledger.universal_registry
		WHERE tenant_id = 'acme' AND entity_type IN ('ref_note', 'kernel_note')`).Scan(&n))
	require.Equal(t, 3, n, "nothing of the refused request was written")
	var rest map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(ex.Output, &rest))
	delete(rest, "refs")
	delete(rest, "bad")
	got, _ := json.Marshal(rest)
	require.JSONEq(t, `{"rows":[{"tenant_id":"acme","n":1}],"stored":{"tenant":"acme","signed":true},"doubled":42,"missing":null}`, string(got))
}
