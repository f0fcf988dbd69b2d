package quickjs_test

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"lukechampine.com/blake3"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/guests/quickjs"
	"github.com/logline/logline/host/sandbox"
)

// fakeCaps records what a kernel asks of the host and answers from fixed
// data (the real ones are host/stage0's, tested there against Postgres).
type fakeCaps struct {
	calls atomic.Int64
	mu    sync.Mutex
	sql   []abi.SQLRequest
	spans []json.RawMessage
	held  map[string]bool
}

func (f *fakeCaps) SQL(_ context.Context, req abi.SQLRequest) ([]byte, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.sql = append(f.sql, req)
	f.mu.Unlock()
	if req.Query == "boom" {
		return nil, sandbox.CallErrorf(abi.ErrFailed, "ERROR: syntax error at or near \"boom\" (SQLSTATE 42601)")
	}
	rows, _ := json.Marshal(map[string]any{"rows": []any{map[string]any{"query": req.Query, "params": req.Params}}})
	return rows, nil
}

func (f *fakeCaps) CheckSpans(_ context.Context, spans []byte) ([]byte, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(spans, &items); err != nil {
		return nil, err
	}
	return json.Marshal(make([]*abi.Error, len(items)))
}

func (f *fakeCaps) InsertSpan(_ context.Context, span []byte) ([]byte, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.spans = append(f.spans, append(json.RawMessage(nil), span...))
	f.mu.Unlock()
	var one map[string]any
	if err := json.Unmarshal(span, &one); err == nil {
		one["tenant_id"], one["signature"] = "t", "signed-by-the-host"
		return json.Marshal(one)
	}
	var many []map[string]any
	if err := json.Unmarshal(span, &many); err != nil {
		return nil, sandbox.Invalid("not a span or an array of spans: %v", err)
	}
	for _, s := range many {
		s["tenant_id"], s["signature"] = "t", "signed-by-the-host"
	}
	return json.Marshal(many)
}

func (f *fakeCaps) Lock(_ context.Context, key string, _ time.Duration) (bool, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if key == "taken" {
		return false, nil
	}
	if f.held == nil {
		f.held = map[string]bool{}
	}
	f.held[key] = true
	return true, nil
}

func (f *fakeCaps) Unlock(_ context.Context, key string) error {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.held[key] {
		return sandbox.NotFound("lock %q is not held", key)
	}
	delete(f.held, key)
	return nil
}

func (f *fakeCaps) Exec(_ context.Context, req abi.ExecRequest) (abi.ExecResult, error) {
	f.calls.Add(1)
	if req.SpanID == "missing" {
		return abi.ExecResult{}, sandbox.NotFound("no function %s", req.SpanID)
	}
	return abi.ExecResult{Status: "complete", Output: map[string]any{"ran": req.SpanID, "input": req.Input}, FuelUsed: 7}, nil
}

func (f *fakeCaps) HTTP(_ context.Context, req abi.HTTPRequest) (abi.HTTPResponse, error) {
	f.calls.Add(1)
	return abi.HTTPResponse{Status: 200, Body: req.Method + " " + req.URL}, nil
}

func runKernel(t *testing.T, src string, caps sandbox.Capabilities, env map[string]string, input string) sandbox.Result {
	t.Helper()
	m := prepare(t, quickjs.KindKernel, src)
	req := sandbox.Request{Tier: abi.TierKernel, Caps: caps, Env: env}
	if input != "" {
		req.Input = []byte(input)
	}
	return runReq(t, m, req)
}

func TestKernelSQLIsParameterised(t *testing.T) {
	t.Parallel()
	caps := &fakeCaps{}
	res := runKernel(t, `globalThis.default = async function main(ctx) {
  const { sql } = ctx;
  const id = "x'; DROP TABLE ledger.universal_registry; --";
  const a = await sql`+"`SELECT * FROM ledger.visible_timeline WHERE id=${id} AND seq > ${2} AND at < ${new Date(0)} LIMIT ${undefined}`"+`;
  const b = await sql('SELECT $1::int AS n', [5]);
  const c = await sql`+"`SELECT 1`"+`;
  const d = await sql`+"`SELECT ${'x1'} ~ '^x\\\\d$'`"+`;
  const e = await sql`+"`SELECT '\\xyz' || ${1}`"+`;
  return [a.rows[0], b.rows[0], c.rows[0], d.rows[0], e.rows[0]];
};`, caps, nil, "")
	ok(t, res)
	require.JSONEq(t, `[
		{"query":"SELECT * FROM ledger.visible_timeline WHERE id=$1 AND seq > $2 AND at < $3 LIMIT $4",
		 "params":["x'; DROP TABLE ledger.universal_registry; --",2,"1970-01-01T00:00:00.000Z",null]},
		{"query":"SELECT $1::int AS n","params":[5]},
		{"query":"SELECT 1","params":[]},
		{"query":"SELECT $1 ~ '^x\\d$'","params":["x1"]},
		{"query":"SELECT '\\xyz' || $1","params":[1]}
	]`, string(res.Output), "an escape JS cannot cook (\\xyz) reaches Postgres as written")
	require.Len(t, caps.sql, 5)
	require.NotContains(t, caps.sql[0].Query, "DROP", "values never reach the query text")
}

func TestKernelContext(t *testing.T) {
	t.Parallel()
	caps := &fakeCaps{}
	pub, priv, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	msg := []byte("signed by the host")
	sig := ed25519.Sign(priv, msg)
	env := map[string]string{"SPAN_ID": "f1", "PUB": hex.EncodeToString(pub), "SIG": hex.EncodeToString(sig)}
	// The seed's form: a script that sets globalThis.default, destructuring
	// ctx as the seed's kernels do.
	res := runKernel(t, `globalThis.default = async function main(ctx) {
  const { sql, insertSpan, now, crypto, env, exec, lock, unlock, http } = ctx;
  const stored = await insertSpan({ entity_type: 'note', who: 'k', this: 'n', metadata: { at: now() } });
  const many = await insertSpan([{ entity_type: 'a' }, { entity_type: 'b' }]);
  const ran = await exec(env.SPAN_ID, { n: 1 });
  const both = await exec([{ span_id: 'f2', input: 2 }, { span_id: 'missing' }]);
  let missing;
  try { await exec('missing', {}); } catch (e) { missing = [e.code, e.errno]; }
  let failed;
  try { await sql`+"`boom`"+`; } catch (e) { failed = [e.code, e.message]; }
  const locks = [await lock('mine', 1000), await lock('taken', 1000), await unlock('mine'), await unlock('mine')];
  const got = await http({ method: 'GET', url: 'https://example.com/x' });
  const u8 = new TextEncoder().encode('abc');
  return {
    stored: stored.signature, many: many.length, ran: ran.output, missing, failed, locks, http: got.body,
    both: [both[0].output, both[1].status, both[1].error.code],
    env: [env.SPAN_ID, env.NOPE === undefined, 'SPAN_ID' in env, 'NOPE' in env, Object.keys(env).length],
    blake3: crypto.hex(crypto.blake3('abc')), blake3u8: crypto.hex(crypto.blake3(u8)),
    toU8: Array.from(crypto.toU8('00ff10')), text: new TextDecoder().decode(u8),
    verify: [crypto.ed25519.verify(crypto.toU8(env.SIG), new TextEncoder().encode('signed by the host'), crypto.toU8(env.PUB)),
             crypto.ed25519.verify(crypto.toU8(env.SIG), 'tampered', crypto.toU8(env.PUB))],
    input: ctx.input, clone: structuredClone({ d: new Date(0), m: new Map([[1, 2]]) }).m.get(1),
  };
};`, caps, env, `{"boot":1}`)
	ok(t, res)
	abc := blake3.Sum256([]byte("abc"))
	want := `{
		"stored": "signed-by-the-host", "many": 2, "ran": {"ran":"f1","input":{"n":1}},
		"both": [{"ran":"f2","input":2}, "error", "not_found"],
		"missing": ["not_found", -3],
		"failed": ["failed", "sql: ERROR: syntax error at or near \"boom\" (SQLSTATE 42601) (failed)"],
		"locks": [true, false, true, false], "http": "GET https://example.com/x",
		"env": ["f1", true, true, false, 0],
		"blake3": "` + hex.EncodeToString(abc[:]) + `", "blake3u8": "` + hex.EncodeToString(abc[:]) + `",
		"toU8": [0, 255, 16], "text": "abc", "verify": [true, false], "input": {"boot":1}, "clone": 2
	}`
	require.JSONEq(t, want, string(res.Output))
	require.Len(t, caps.spans, 2)
	require.JSONEq(t, `{"entity_type":"note","who":"k","this":"n","metadata":{"at":"2026-01-02T03:04:05.123456Z"}}`, string(caps.spans[0]))
}

func TestKernelForms(t *testing.T) {
	t.Parallel()
	for name, src := range map[string]string{
		"export default": "export default async function main(ctx) { return ctx.input.n + 1 }",
		"export main":    "export async function main(ctx) { return ctx.input.n + 1 }",
		"function main":  "async function main(ctx) { return ctx.input.n + 1 }",
		"sync":           "globalThis.default = (ctx) => ctx.input.n + 1",
	} {
		res := runKernel(t, src, &fakeCaps{}, nil, `{"n":41}`)
		ok(t, res)
		require.Equal(t, "42", string(res.Output), name)
	}
	// No private key is ever handed out: signing is refused, clearly.
	res := runKernel(t, "export default async (ctx) => ctx.crypto.ed25519.sign(new Uint8Array(32), new Uint8Array(32))", &fakeCaps{}, nil, "")
	e := failed(t, res, abi.CodeGuestError)
	require.Contains(t, e.Message, "guests never hold private keys")
	// A kernel without capabilities (nil Caps) is denied like a function.
	res = runKernel(t, "export default async ({ sql }) => sql`SELECT 1`", nil, nil, "")
	failed(t, res, abi.CodeCapabilityDenied)
}
