package stage0_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/ledger/ledgertest"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/sandbox/extism"
	"github.com/logline/logline/host/sandbox/wasmtest"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

var testPG *ledgertest.Server

func TestMain(m *testing.M) { os.Exit(ledgertest.Main(m, "stage0", &testPG)) }

type bundle struct {
	ledger *ledger.Ledger
	host   *stage0.Host
	admin  *span.Key // the key the manifest trusts
}

var operator = ledger.User("logline", "operator")

func setup(t *testing.T, requireSigned bool, allowed ...string) *bundle {
	t.Helper()
	ctx := context.Background()
	url := testPG.Database(t, "stage0")
	node, err := span.GenerateKey()
	require.NoError(t, err)
	l, err := ledger.Open(ctx, url, ledger.WithKey(node))
	require.NoError(t, err)
	t.Cleanup(l.Close)
	rt, err := sandbox.New(ctx, sandbox.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = rt.Close(context.Background()) })
	ext, err := extism.New(ctx, extism.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ext.Close(context.Background()) })
	admin, err := span.GenerateKey()
	require.NoError(t, err)
	b := &bundle{ledger: l, host: stage0.New(l, rt, ext), admin: admin}
	meta, _ := json.Marshal(map[string]any{"allowed_boot_ids": allowed, "trusted_keys": []string{admin.PublicHex()},
		"require_signed_kernels": requireSigned})
	man := span.Span{ID: stage0.ManifestID, EntityType: "manifest", Who: "operator", This: "manifest",
		Visibility: "public", Metadata: meta}
	b.signedAppend(t, operator, admin, man)
	return b
}

// signedAppend seals s with key (as an author would) and appends it.
func (b *bundle) signedAppend(t *testing.T, p ledger.Principal, key *span.Key, s span.Span) span.Span {
	t.Helper()
	require.NoError(t, ledger.Fill(p, &s, span.FormatTime(time.Now())))
	if key != nil {
		require.NoError(t, key.Seal(&s))
	}
	out, err := b.ledger.Append(context.Background(), p, s)
	require.NoError(t, err)
	return out[0]
}

func codeSpan(id, kind, name string, wasm []byte) span.Span {
	meta, _ := json.Marshal(map[string]string{"module_hash": stage0.ModuleHash(wasm)})
	return span.Span{ID: id, EntityType: kind, Who: "author", This: kind, Name: name, Runtime: stage0.RuntimeWasm,
		Code: stage0.EncodeModule(wasm), Metadata: meta, Visibility: "tenant"}
}

const kernelID = "00000000-0000-4000-8000-000000000001"

func TestBootRunsAnAllowedSignedKernel(t *testing.T) {
	t.Parallel()
	b := setup(t, true, kernelID)
	ctx := context.Background()
	k := b.signedAppend(t, ledger.User("acme", "author"), b.admin, codeSpan(kernelID, "kernel", "hello", wasmtest.Outputs(`{"hello":"world"}`)))

	ex, err := b.host.Boot(ctx, kernelID, map[string]string{"SPAN_ID": "x"})
	require.NoError(t, err)
	require.Equal(t, "complete", ex.Status, string(ex.Error))
	require.JSONEq(t, `{"hello":"world"}`, string(ex.Output))
	require.Equal(t, k.ID, ex.ParentID)
	require.Equal(t, "acme", ex.TenantID)
	require.NotEmpty(t, ex.Signature, "execution spans are signed by the node key")
	require.NoError(t, span.Verify(&ex))
	var meta struct {
		FuelUsed int64 `json:"fuel_used"`
	}
	require.NoError(t, json.Unmarshal(ex.Metadata, &meta))
	require.Positive(t, meta.FuelUsed)

	require.NoError(t, b.ledger.Settle(ctx))
	page, err := b.ledger.Query(ctx, ledger.Service("acme", "x"), ledger.Filter{EntityType: "boot_event"})
	require.NoError(t, err)
	require.Len(t, page.Items, 1)
	require.Equal(t, []string{kernelID}, page.Items[0].Span.RelatedTo)
}

func TestBootRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	other := "00000000-0000-4000-8000-000000000002"
	cases := []struct {
		name  string
		setup func(t *testing.T, b *bundle)
		boot  string
		code  string
	}{
		{"not in the manifest", func(t *testing.T, b *bundle) {
			b.signedAppend(t, ledger.User("acme", "a"), b.admin, codeSpan(other, "kernel", "k", wasmtest.Outputs("x")))
		}, other, abi.CodeNotAllowed},
		{"allowed but missing", func(*testing.T, *bundle) {}, kernelID, stage0.CodeNotFound},
		{"unsigned", func(t *testing.T, b *bundle) {
			b.signedAppend(t, ledger.User("acme", "a"), nil, codeSpan(kernelID, "kernel", "k", wasmtest.Outputs("x")))
		}, kernelID, abi.CodeUnsigned},
		{"signed by an untrusted key", func(t *testing.T, b *bundle) {
			mallory, err := span.GenerateKey()
			require.NoError(t, err)
			b.signedAppend(t, ledger.User("acme", "a"), mallory, codeSpan(kernelID, "kernel", "k", wasmtest.Outputs("x")))
		}, kernelID, abi.CodeUnsigned},
		{"module hash mismatch", func(t *testing.T, b *bundle) {
			s := codeSpan(kernelID, "kernel", "k", wasmtest.Outputs("x"))
			s.Metadata = json.RawMessage(`{"module_hash":"` + stage0.ModuleHash([]byte("something else")) + `"}`)
			b.signedAppend(t, ledger.User("acme", "a"), b.admin, s)
		}, kernelID, abi.CodeHashMismatch},
		{"garbage module", func(t *testing.T, b *bundle) {
			b.signedAppend(t, ledger.User("acme", "a"), b.admin, codeSpan(kernelID, "kernel", "k", []byte("not wasm at all")))
		}, kernelID, abi.CodeInvalidModule},
		{"forbidden import", func(t *testing.T, b *bundle) {
			wasm := wasmtest.Module([]wasmtest.Import{{Name: "launch_missiles", Results: []byte{wasmtest.I32}}}, nil, 0, wasmtest.I32Const(0))
			b.signedAppend(t, ledger.User("acme", "a"), b.admin, codeSpan(kernelID, "kernel", "k", wasm))
		}, kernelID, abi.CodeForbiddenImport},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, true, kernelID)
			c.setup(t, b)
			_, err := b.host.Boot(ctx, c.boot, nil)
			var r *stage0.Refusal
			require.ErrorAs(t, err, &r)
			require.Equal(t, c.code, r.Code, r.Message)
		})
	}

	t.Run("tampered kernel row", func(t *testing.T) {
		t.Parallel()
		b := setup(t, false, kernelID)
		k := b.signedAppend(t, ledger.User("acme", "a"), nil, codeSpan(kernelID, "kernel", "k", wasmtest.Outputs("x")))
		// The stored row's code changed behind the ledger's back.
		conn, err := b.ledger.Pool().Acquire(ctx)
		require.NoError(t, err)
		defer conn.Release()
		_, err = conn.Exec(ctx, `SET session_replication_role = replica`)
		require.NoError(t, err)
		_, err = conn.Exec(ctx, `UPDATE ledger.universal_registry SET code = $1 WHERE id = $2`, stage0.EncodeModule(wasmtest.Outputs("evil")), k.ID)
		require.NoError(t, err)
		_, err = conn.Exec(ctx, `RESET session_replication_role`)
		require.NoError(t, err)
		_, err = b.host.Boot(ctx, kernelID, nil)
		var r *stage0.Refusal
		require.ErrorAs(t, err, &r)
		require.Equal(t, abi.CodeHashMismatch, r.Code)
	})
}

func TestKernelSQLSeesOnlyItsTenant(t *testing.T) {
	t.Parallel()
	b := setup(t, false, kernelID)
	ctx := context.Background()
	for _, p := range []ledger.Principal{ledger.User("acme", "a"), ledger.User("other", "b")} {
		_, err := b.ledger.Append(ctx, p, span.Span{EntityType: "note", Who: "x", This: "note", Visibility: "tenant"})
		require.NoError(t, err)
	}
	req := `{"query":"SELECT tenant_id, count(*) AS n FROM ledger.universal_registry WHERE entity_type = $1 GROUP BY tenant_id","params":["note"]}`
	b.signedAppend(t, ledger.User("acme", "a"), nil, codeSpan(kernelID, "kernel", "k", wasmtest.Calls(abi.FnSQL, req)))
	ex, err := b.host.Boot(ctx, kernelID, nil)
	require.NoError(t, err)
	require.Equal(t, "complete", ex.Status, string(ex.Error))
	require.JSONEq(t, `{"rows":[{"tenant_id":"acme","n":1}]}`, string(ex.Output))
}

func TestFunctionsCannotReachKernelCapabilities(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	ctx := context.Background()
	alice := ledger.User("acme", "alice")
	for _, fn := range []string{abi.FnSQL, abi.FnInsertSpan, abi.FnHTTP, abi.FnExec} {
		f := b.signedAppend(t, alice, nil, codeSpan("", "function", "sneaky-"+fn, wasmtest.Calls(fn, `{}`)))
		ex, err := b.host.Run(ctx, alice, f.ID, nil)
		require.NoError(t, err)
		require.Equal(t, "error", ex.Status, fn)
		var e abi.Error
		require.NoError(t, json.Unmarshal(ex.Error, &e))
		require.Equal(t, abi.CodeCapabilityDenied, e.Code, "%s: %s", fn, e.Message)
	}
	// A pure function runs and its output is recorded.
	f := b.signedAppend(t, alice, nil, codeSpan("", "function", "pure", wasmtest.Outputs(`{"sum":3}`)))
	ex, err := b.host.Run(ctx, alice, f.ID, json.RawMessage(`{"a":1,"b":2}`))
	require.NoError(t, err)
	require.Equal(t, "complete", ex.Status)
	require.JSONEq(t, `{"sum":3}`, string(ex.Output))
	require.JSONEq(t, `{"a":1,"b":2}`, string(ex.Input))
	require.Equal(t, "alice", ex.OwnerID)
	// Another tenant cannot run it.
	_, err = b.host.Run(ctx, ledger.User("other", "eve"), f.ID, nil)
	var r *stage0.Refusal
	require.ErrorAs(t, err, &r)
	require.Equal(t, stage0.CodeNotFound, r.Code)

	// A public function run by another tenant is that tenant's run: its
	// execution span lands in the caller's tenant, never in the author's.
	pub := codeSpan("", "function", "public", wasmtest.Outputs(`{"ok":true}`))
	pub.Visibility = "public"
	pf := b.signedAppend(t, alice, nil, pub)
	ex, err = b.host.Run(ctx, ledger.User("other", "eve"), pf.ID, nil)
	require.NoError(t, err)
	require.Equal(t, "complete", ex.Status)
	require.Equal(t, "other", ex.TenantID)
	require.Equal(t, "eve", ex.OwnerID)
}

func TestRunRecordsGuestLimits(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	ctx := context.Background()
	alice := ledger.User("acme", "alice")
	f := b.signedAppend(t, alice, nil, codeSpan("", "function", "spin", wasmtest.Spins()))
	ex, err := b.host.Run(ctx, alice, f.ID, nil)
	require.NoError(t, err)
	require.Equal(t, "error", ex.Status)
	var e abi.Error
	require.NoError(t, json.Unmarshal(ex.Error, &e))
	require.Equal(t, abi.CodeFuelExhausted, e.Code)
	fuel := func(ex span.Span) int64 {
		var m struct {
			FuelUsed int64 `json:"fuel_used"`
		}
		require.NoError(t, json.Unmarshal(ex.Metadata, &m))
		return m.FuelUsed
	}
	require.GreaterOrEqual(t, fuel(ex), int64(11_000_000), "the default limit")

	// A span may ask for its own fuel limit; the manifest bounds it.
	s := codeSpan("", "function", "spin-small", wasmtest.Spins())
	s.Metadata = json.RawMessage(`{"module_hash":"` + stage0.ModuleHash(wasmtest.Spins()) + `","limits":{"fuel":1000}}`)
	f = b.signedAppend(t, alice, nil, s)
	ex, err = b.host.Run(ctx, alice, f.ID, nil)
	require.NoError(t, err)
	require.Contains(t, string(ex.Error), abi.CodeFuelExhausted)
	require.Less(t, fuel(ex), int64(2000))
}

func TestRunsExtismPlugins(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	ctx := context.Background()
	alice := ledger.User("acme", "alice")
	s := codeSpan("", "function", "noop", wasmtest.Module(nil, nil, 0, wasmtest.I32Const(0)))
	s.Runtime = stage0.RuntimeExtism
	f := b.signedAppend(t, alice, nil, s)
	ex, err := b.host.Run(ctx, alice, f.ID, nil)
	require.NoError(t, err)
	require.Equal(t, "complete", ex.Status, string(ex.Error))

	s = codeSpan("", "function", "spin", wasmtest.Spins())
	s.Runtime = stage0.RuntimeExtism
	f = b.signedAppend(t, alice, nil, s)
	ex, err = b.host.Run(ctx, alice, f.ID, nil)
	require.NoError(t, err)
	require.Equal(t, "error", ex.Status)
	require.Contains(t, string(ex.Error), abi.CodeFuelExhausted)
}

func TestKernelHTTPOnlyToTheAllowlist(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/redirect" {
			http.Redirect(w, r, "http://example.invalid/steal", http.StatusFound)
			return
		}
		_, _ = w.Write([]byte(`pong ` + r.URL.Path))
	}))
	defer srv.Close()
	ctx := context.Background()
	b := setup(t, false, kernelID)
	// The operator allows srv/api only.
	man, err := b.ledger.Latest(ctx, ledger.System(), stage0.ManifestID)
	require.NoError(t, err)
	meta, _ := json.Marshal(map[string]any{"allowed_boot_ids": []string{kernelID}, "http_allowlist": []string{srv.URL + "/api"}})
	man.Seq, man.PrevHash, man.Signature, man.Metadata = 1, man.CurrHash, "", meta
	b.signedAppend(t, operator, b.admin, man)

	boot := func(url string, seq int32) span.Span {
		req, _ := json.Marshal(abi.HTTPRequest{Method: "GET", URL: url})
		s := codeSpan(kernelID, "kernel", "fetch", wasmtest.Calls(abi.FnHTTP, string(req)))
		if seq > 0 {
			prev, err := b.ledger.Latest(ctx, ledger.System(), kernelID)
			require.NoError(t, err)
			s.Seq, s.PrevHash = seq, prev.CurrHash
		}
		b.signedAppend(t, ledger.User("acme", "author"), nil, s)
		ex, err := b.host.Boot(ctx, kernelID, nil)
		require.NoError(t, err)
		return ex
	}
	ex := boot(srv.URL+"/api/ping", 0)
	require.Equal(t, "complete", ex.Status, string(ex.Error))
	var resp abi.HTTPResponse
	require.NoError(t, json.Unmarshal(ex.Output, &resp))
	require.Equal(t, 200, resp.Status)
	require.Equal(t, "pong /api/ping", resp.Body)

	// Outside the allowlist: denied, and the run that then fails says so.
	ex = boot(srv.URL+"/admin", 1)
	require.Equal(t, "error", ex.Status)
	require.Contains(t, string(ex.Error), abi.CodeCapabilityDenied)
	require.Contains(t, string(ex.Error), "http_allowlist")

	// A redirect is handed back, not followed.
	ex = boot(srv.URL+"/api/redirect", 2)
	require.Equal(t, "complete", ex.Status, string(ex.Error))
	require.NoError(t, json.Unmarshal(ex.Output, &resp))
	require.Equal(t, http.StatusFound, resp.Status)
}
