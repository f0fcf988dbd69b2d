//go:build !wasip1

package logline_test

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero/api"
	"lukechampine.com/blake3"

	"github.com/logline/logline/abi"
)

func TestFunctionExample(t *testing.T) {
	t.Parallel()
	e := getEngine(t)

	h := newHost(abi.TierFunction, `{"a": 2, "b": 3.5}`)
	require.EqualValues(t, 0, e.run(t, "go-function", h), h.logText())
	assert.JSONEq(t, `{"sum": 5.5}`, string(h.output))
	d := blake3.Sum256(h.input)
	assert.Contains(t, h.logText(), "go-function at 2025-01-02T03:04:05.123456Z: input blake3 "+hex.EncodeToString(d[:])+", nonce 0108")
	assert.Equal(t, []string{"input", "blake3", "now", "random", "log", "input", "output"}, h.calls)
	assert.Empty(t, h.denied)

	for _, bad := range []struct{ input, msg string }{
		{`{"a": 1}`, `bad input: want {"a": number, "b": number}`},
		{`{"a": "x", "b": 1}`, "bad input: logline: decoding input: json: cannot unmarshal string"},
		{`not json`, "bad input: logline: decoding input: invalid character"},
		{``, "bad input: logline: decoding input: no input"},
	} {
		h := newHost(abi.TierFunction, bad.input)
		assert.EqualValues(t, 1, e.run(t, "go-function", h), bad.input)
		assert.False(t, h.outputSet, bad.input)
		require.NotEmpty(t, h.logs)
		last := h.logs[len(h.logs)-1]
		assert.EqualValues(t, abi.LogError, last.Level)
		assert.Contains(t, last.Msg, bad.msg)
	}
}

func TestKernelExample(t *testing.T) {
	t.Parallel()
	e := getEngine(t)

	h := newHost(abi.TierKernel, `{"a": 20, "b": 22}`)
	h.env["SPAN_ID"] = kernelTarget
	require.EqualValues(t, 0, e.run(t, "go-kernel", h), h.logText()+h.stderr.String())

	require.Len(t, h.sqls, 1)
	assert.Equal(t, `SELECT id, seq, name FROM ledger.visible_timeline WHERE id = $1`, h.sqls[0].Query)
	assert.Equal(t, []any{kernelTarget}, h.sqls[0].Params)
	assert.Equal(t, []string{"lock " + kernelTarget + " 30000", "unlock " + kernelTarget}, h.lockCalls)
	assert.Empty(t, h.held, "the kernel releases its lock")
	require.Len(t, h.execs, 1)
	assert.Equal(t, kernelTarget, h.execs[0].SpanID)
	assert.Equal(t, map[string]any{"a": 20.0, "b": 22.0}, h.execs[0].Input)

	require.Len(t, h.spans, 1)
	span := h.spans[0]
	assert.Equal(t, "execution", span["entity_type"])
	assert.Equal(t, "complete", span["status"])
	assert.Equal(t, kernelTarget, span["parent_id"])
	assert.Equal(t, []any{kernelTarget}, span["related_to"])
	assert.Equal(t, map[string]any{"sum": 42.0}, span["output"])
	assert.Equal(t, map[string]any{"a": 20.0, "b": 22.0}, span["input"])
	assert.Equal(t, map[string]any{"fuel_used": 4242.0, "function_seq": 2.0}, span["metadata"])
	assert.NotContains(t, span, "error")

	assert.JSONEq(t, fmt.Sprintf(`{"span_id": %q, "seq": 2, "name": "adder v3", "status": "complete",
		"output": {"sum": 42}, "fuel_used": 4242, "execution_id": %q}`, kernelTarget, span["id"]), string(h.output))
	assert.Equal(t, []string{"env", "sql", "lock", "input", "exec", "log", "random", "insert_span", "output", "unlock"}, h.calls)

	t.Run("function fails", func(t *testing.T) {
		h := newHost(abi.TierKernel, `{"a": "two"}`)
		h.env["SPAN_ID"] = kernelTarget
		require.EqualValues(t, 0, e.run(t, "go-kernel", h), h.logText())
		require.Len(t, h.spans, 1)
		assert.Equal(t, "error", h.spans[0]["status"])
		assert.Equal(t, abi.CodeGuestError, h.spans[0]["error"].(map[string]any)["code"])
		assert.Contains(t, string(h.output), `"status":"error"`)
		assert.Contains(t, string(h.output), "bad input")
	})
	t.Run("busy", func(t *testing.T) {
		h := newHost(abi.TierKernel, ``)
		h.env["SPAN_ID"] = kernelTarget
		h.busy[kernelTarget] = true
		require.EqualValues(t, 0, e.run(t, "go-kernel", h), h.logText())
		assert.Empty(t, h.execs)
		assert.Empty(t, h.spans)
		assert.JSONEq(t, fmt.Sprintf(`{"span_id": %q, "seq": 2, "name": "adder v3", "status": "busy", "fuel_used": 0}`, kernelTarget), string(h.output))
	})
	t.Run("no SPAN_ID", func(t *testing.T) {
		h := newHost(abi.TierKernel, ``)
		assert.EqualValues(t, 1, e.run(t, "go-kernel", h))
		assert.Contains(t, h.logText(), "[3] SPAN_ID required")
	})
	t.Run("unknown span", func(t *testing.T) {
		h := newHost(abi.TierKernel, ``)
		h.env["SPAN_ID"] = "00000000-0000-4000-8000-00000000dead"
		assert.EqualValues(t, 1, e.run(t, "go-kernel", h))
		assert.Contains(t, h.logText(), "[3] span 00000000-0000-4000-8000-00000000dead not found")
		assert.Empty(t, h.lockCalls)
	})
	t.Run("as a function", func(t *testing.T) {
		h := newHost(abi.TierFunction, ``)
		h.env["SPAN_ID"] = kernelTarget
		assert.EqualValues(t, 1, e.run(t, "go-kernel", h))
		assert.Equal(t, []string{abi.FnSQL}, h.denied)
		assert.Contains(t, h.logText(), "[3] looking up span "+kernelTarget+": logline: sql: capability_denied: sql is not available to function-tier modules")
	})
}

// TestRoundTrip drives every wrapper through the roundtrip guest.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	e := getEngine(t)

	pub, priv, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	msg := "span digest"
	in := fmt.Sprintf(`{"mode":"all","pub":%q,"msg":%q,"sig":%q}`,
		hex.EncodeToString(pub), msg, hex.EncodeToString(ed25519.Sign(priv, []byte(msg))))
	h := newHost(abi.TierKernel, in)
	h.env["GREETING"] = "héllo wörld"
	h.env["EMPTY"] = ""
	require.EqualValues(t, 0, e.run(t, "roundtrip", h), h.logText()+h.stderr.String())

	var r map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(h.output, &r), string(h.output))
	field := func(k string) string { return string(r[k]) }

	assert.Equal(t, "[0] level debug\n[1] level info\n[2] level warn\n[3] level error\n[1] formatted 42 ok\n", h.logText())
	assert.Equal(t, `"2025-01-02T03:04:05.123456789Z"`, field("now"))
	assert.Equal(t, `"01080f161d242b323940474e555c636a"`, field("random"))
	assert.JSONEq(t, `{"n":5,"hex":"20272e353c","err":null}`, field("rand_read"))
	assert.Regexp(t, `^"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"$`, field("uuid"))
	assert.JSONEq(t, fmt.Sprintf("%q", in), field("input"))
	assert.JSONEq(t, `{"value":"héllo wörld","ok":true}`, field("env"))
	assert.JSONEq(t, `{"value":"","ok":true}`, field("env_empty"))
	assert.JSONEq(t, `{"value":"","ok":false}`, field("env_missing"))

	assert.JSONEq(t, `{"rows":[{"echo":"hi","n":7,"one":1}],"err":null}`, field("sql"))
	assert.JSONEq(t, `{"rows":[{"one":1,"echo":"typed"}],"err":null}`, field("sql_into"))
	assert.JSONEq(t, `{"rows":[{"i":1},{"i":2}],"err":{"text":"logline: sql: result truncated at the host's row or byte cap",
		"code":0,"name":"","message":"","op":"","denied":false,"not_found":false,"failed":false,"truncated":true}}`, field("sql_truncated"))
	assert.JSONEq(t, `{"rows":null,"err":{"text":"logline: sql: failed: syntax error at or near \"bad\"",
		"code":-5,"name":"failed","message":"syntax error at or near \"bad\"","op":"sql","denied":false,"not_found":false,"failed":true,"truncated":false}}`, field("sql_bad"))
	assert.JSONEq(t, `{"rows":[],"nil":false,"err":null}`, field("sql_empty"))
	require.Len(t, h.sqls, 5)
	assert.Equal(t, []any{"hi", 7.0}, h.sqls[0].Params)
	assert.Nil(t, h.sqls[2].Params, "no params are sent as none")

	require.Len(t, h.spans, 2)
	assert.JSONEq(t, mustJSON(t, map[string]any{"span": h.spans[0], "err": nil}), field("insert_span"))
	assert.Equal(t, "raw", h.spans[1]["who"])
	assert.Contains(t, field("insert_span_invalid"), `"code":-2,"name":"invalid","message":"span needs an entity_type","op":"insert_span"`)

	assert.JSONEq(t, `{"taken":true,"err":null}`, field("lock"))
	assert.JSONEq(t, `{"taken":false,"err":null}`, field("lock_busy"))
	assert.JSONEq(t, `{"err":null}`, field("unlock"))
	assert.Contains(t, field("unlock_not_held"), `"code":-3,"name":"not_found","message":"lock k1 is not held by this run","op":"unlock","denied":false,"not_found":true`)
	assert.Equal(t, []string{"lock k1 1500", "lock busy 60000", "unlock k1", "unlock k1"}, h.lockCalls)

	var exec struct {
		Result abi.ExecResult `json:"result"`
	}
	require.NoError(t, json.Unmarshal(r["exec"], &exec))
	assert.Equal(t, "complete", exec.Result.Status)
	assert.Equal(t, map[string]any{"sum": 5.0}, exec.Result.Output)
	assert.EqualValues(t, 4242, exec.Result.FuelUsed)
	require.NoError(t, json.Unmarshal(r["exec_failing"], &exec))
	assert.Equal(t, "error", exec.Result.Status)
	require.NotNil(t, exec.Result.Error)
	assert.Equal(t, abi.CodeGuestError, exec.Result.Error.Code)
	assert.Contains(t, exec.Result.Error.Message, "bad input")
	assert.Contains(t, field("exec_missing"), `"code":-3,"name":"not_found","message":"no function span no-such-span","op":"exec"`)
	require.Len(t, h.execs, 3)
	assert.Equal(t, map[string]any{"a": 2.0, "b": 3.0}, h.execs[0].Input)
	assert.Nil(t, h.execs[2].Input)

	assert.JSONEq(t, `{"response":{"status":201,"headers":{"Content-Type":"text/plain","X-Echo":"1"},
		"body":"POST https://example.test/x ping","duration_ms":0},"err":null}`, field("http"))
	assert.Equal(t, []abi.HTTPRequest{{Method: "POST", URL: "https://example.test/x", Headers: map[string]string{"X-A": "1"}, Body: "ping"}}, h.https)

	abc, empty := blake3.Sum256([]byte("abc")), blake3.Sum256(nil)
	assert.JSONEq(t, fmt.Sprintf(`{"abc":%q,"empty":%q}`, hex.EncodeToString(abc[:]), hex.EncodeToString(empty[:])), field("blake3"))
	assert.JSONEq(t, `{"valid":true,"wrong_msg":false,"tampered":false,"short_key":false,"empty_msg":false}`, field("ed25519"))

	assert.Empty(t, h.denied)
	assert.Empty(t, h.held)
}

// TestDenied: a lower tier's call of a kernel-only function comes back as an
// error that matches logline.ErrCapabilityDenied and carries the host's message.
func TestDenied(t *testing.T) {
	t.Parallel()
	e := getEngine(t)
	for _, tier := range []abi.Tier{abi.TierFunction, abi.TierPolicy} {
		h := newHost(tier, `{"mode":"denied"}`)
		require.EqualValues(t, 0, e.run(t, "roundtrip", h), h.logText())
		var r map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(h.output, &r), string(h.output))
		for _, fn := range []string{abi.FnSQL, abi.FnInsertSpan, abi.FnLock, abi.FnUnlock, abi.FnExec, abi.FnHTTP} {
			msg := fmt.Sprintf("%s is not available to %s-tier modules", fn, tier)
			assert.JSONEq(t, mustJSON(t, map[string]any{
				"text": "logline: " + fn + ": capability_denied: " + msg, "code": -1, "name": "capability_denied",
				"message": msg, "op": fn, "denied": true, "not_found": false, "failed": false, "truncated": false,
			}), string(r[fn]), "%s %s", tier, fn)
		}
		d := blake3.Sum256([]byte("still pure"))
		assert.Equal(t, `"`+hex.EncodeToString(d[:])+`"`, string(r["blake3"]))
		assert.Equal(t, []string{abi.FnSQL, abi.FnInsertSpan, abi.FnLock, abi.FnUnlock, abi.FnExec, abi.FnHTTP}, h.denied)
	}
}

func TestRunErrorAndPanic(t *testing.T) {
	t.Parallel()
	e := getEngine(t)

	h := newHost(abi.TierFunction, `{"mode":"error"}`)
	assert.EqualValues(t, 1, e.run(t, "roundtrip", h))
	assert.Equal(t, "[3] requested failure: logline: invalid\n", h.logText())
	assert.False(t, h.outputSet)

	h = newHost(abi.TierFunction, `{"mode":"panic"}`)
	assert.EqualValues(t, 2, e.run(t, "roundtrip", h))
	require.Len(t, h.logs, 1)
	assert.EqualValues(t, abi.LogError, h.logs[0].Level)
	assert.True(t, strings.HasPrefix(h.logs[0].Msg, "panic: requested panic\ngoroutine "), h.logs[0].Msg)
	assert.Contains(t, h.logs[0].Msg, "main.run")
}

// TestBigBuffers moves input, env values, error messages and output past the
// SDK's first-guess buffers.
func TestBigBuffers(t *testing.T) {
	t.Parallel()
	e := getEngine(t)
	blob := strings.Repeat("x", 300_000)
	h := newHost(abi.TierKernel, fmt.Sprintf(`{"mode":"big","blob":%q}`, blob))
	h.env["BIG"] = strings.Repeat("é", 50_000)
	require.EqualValues(t, 0, e.run(t, "roundtrip", h), h.logText())
	var r struct {
		InputLen  int    `json:"input_len"`
		BlobLen   int    `json:"blob_len"`
		EnvLen    int    `json:"env_len"`
		EnvOK     bool   `json:"env_ok"`
		EnvBlake3 string `json:"env_blake3"`
		ErrMsg    string `json:"err_message"`
		Echo      string `json:"echo"`
	}
	require.NoError(t, json.Unmarshal(h.output, &r))
	d := blake3.Sum256([]byte(h.env["BIG"]))
	assert.Equal(t, len(h.input), r.InputLen)
	assert.Equal(t, len(blob), r.BlobLen)
	assert.Equal(t, 100_000, r.EnvLen)
	assert.True(t, r.EnvOK)
	assert.Equal(t, hex.EncodeToString(d[:]), r.EnvBlake3)
	assert.Equal(t, strings.Repeat("z", 10_000), r.ErrMsg)
	assert.Len(t, r.Echo, 200_000)
}

// TestGoroutines: calls from several goroutines of one run never mix up
// their pending results.
func TestGoroutines(t *testing.T) {
	t.Parallel()
	e := getEngine(t)
	h := newHost(abi.TierKernel, `{"mode":"goroutines"}`)
	for w := range 8 {
		k := fmt.Sprintf("W%d", w)
		h.env[k] = strings.Repeat(k, 10)
	}
	require.EqualValues(t, 0, e.run(t, "roundtrip", h), h.logText()+h.stderr.String())
	assert.JSONEq(t, `{"calls":200,"bad":null}`, string(h.output))
}

// TestConcurrentRuns runs many guests at once on one runtime, the way a host
// serves many tenants.
func TestConcurrentRuns(t *testing.T) {
	t.Parallel()
	e := getEngine(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 3 {
				h := newHost(abi.TierFunction, fmt.Sprintf(`{"a": %d, "b": %d}`, i, j))
				code, err := e.runErr("go-function", h)
				assert.NoError(t, err)
				assert.EqualValues(t, 0, code)
				assert.JSONEq(t, fmt.Sprintf(`{"sum": %d}`, i+j), string(h.output))
			}
		}()
	}
	wg.Wait()
}

// TestImports checks the modules against abi/abi.go: every `logline` import
// has the documented signature, and nothing else is imported but WASI.
func TestImports(t *testing.T) {
	t.Parallel()
	e := getEngine(t)
	i32, i64 := api.ValueTypeI32, api.ValueTypeI64
	sig := map[string][2][]api.ValueType{
		abi.FnLog:           {{i32, i32, i32}, {i32}},
		abi.FnNow:           {nil, {i64}},
		abi.FnRandom:        {{i32, i32}, {i32}},
		abi.FnInput:         {{i32, i32}, {i32}},
		abi.FnOutput:        {{i32, i32}, {i32}},
		abi.FnEnv:           {{i32, i32}, {i64}},
		abi.FnSQL:           {{i32, i32}, {i64}},
		abi.FnInsertSpan:    {{i32, i32}, {i64}},
		abi.FnLock:          {{i32, i32, i32}, {i32}},
		abi.FnUnlock:        {{i32, i32}, {i32}},
		abi.FnExec:          {{i32, i32}, {i64}},
		abi.FnHTTP:          {{i32, i32}, {i64}},
		abi.FnBlake3:        {{i32, i32, i32}, {i32}},
		abi.FnEd25519Verify: {{i32, i32, i32, i32}, {i32}},
		abi.FnResult:        {{i32, i32}, {i32}},
	}
	for name, c := range e.compiled {
		var ll, wasi []string
		for _, f := range c.ImportedFunctions() {
			mod, fn, _ := f.Import()
			switch mod {
			case abi.Module:
				ll = append(ll, fn)
				want, ok := sig[fn]
				if assert.True(t, ok, "%s imports unknown logline.%s", name, fn) {
					assert.Equal(t, want[0], nilIfEmpty(f.ParamTypes()), "%s: params of %s", name, fn)
					assert.Equal(t, want[1], nilIfEmpty(f.ResultTypes()), "%s: results of %s", name, fn)
				}
			case "wasi_snapshot_preview1":
				wasi = append(wasi, fn)
			default:
				t.Errorf("%s imports %s.%s", name, mod, fn)
			}
		}
		sort.Strings(ll)
		sort.Strings(wasi)
		t.Logf("%s: %d bytes; logline imports %v; WASI imports %v", name, len(built.wasm[name]), ll, wasi)
		exports := c.ExportedFunctions()
		require.Contains(t, exports, abi.Entry, name)
		require.Contains(t, exports, "_initialize", name)
		assert.Empty(t, exports[abi.Entry].ParamTypes(), name)
		assert.Equal(t, []api.ValueType{i32}, exports[abi.Entry].ResultTypes(), name)
		if name == "roundtrip" {
			assert.Len(t, ll, len(sig), "the roundtrip guest uses every host function")
		}
	}
}

func nilIfEmpty(v []api.ValueType) []api.ValueType {
	if len(v) == 0 {
		return nil
	}
	return v
}

// TestInitializeTime reports what a Go guest costs to start under wazero:
// instantiation plus `_initialize` (the Go runtime and package init), the
// work the host does once per module and then snapshots.
func TestInitializeTime(t *testing.T) {
	e := getEngine(t)
	for name := range guestPackages {
		const n = 5
		var total, best time.Duration
		var pages uint32
		for range n {
			h := newHost(abi.TierFunction, `{"mode":"none","a":1,"b":2}`)
			_, err := e.runErr(name, h)
			require.NoError(t, err)
			pages = h.pages
			total += h.initTime
			if best == 0 || h.initTime < best {
				best = h.initTime
			}
		}
		compiled := "compiled by wazero"
		if raceEnabled {
			compiled = "loaded from the precompiled cache"
		}
		t.Logf("%s: %d bytes, built in %v, %s in %v; _initialize mean %v, best %v over %d runs; %d pages after run",
			name, len(built.wasm[name]), built.times[name].Round(time.Millisecond), compiled, e.compileTimes[name].Round(time.Millisecond),
			(total / n).Round(time.Microsecond), best.Round(time.Microsecond), n, pages)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}
