package quickjs_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/guests/quickjs"
	"github.com/logline/logline/host/sandbox"
)

// ttlReaper is the seed's ttl_reaper_policy (LogLineOS Bluebook §5), byte
// for byte as the seed's INSERT holds it between its $$ quotes.
const ttlReaper = `
export default function on(span){
  // expire prompt_block with metadata.ttl_minutes elapsed
  if (span.entity_type!=='prompt_block') return [];
  const ttl = Number(span.metadata?.ttl_minutes||0);
  if (!ttl) return [];
  const created = new Date(span["when"]||span.at||Date.now());
  const expired = (Date.now() - created.getTime()) > (ttl*60*1000);
  if (!expired) return [];
  return [{
    emit_span: {
      entity_type:'status_patch', who:'policy:ttl', did:'expired', this:'status=archived',
      status:'complete', parent_id: span.id, related_to:[span.id],
      metadata:{ reason:'ttl' }
    }
  }];
}
`

// promptBlock is a prompt_block span written age before the test clock.
func promptBlock(id string, age time.Duration, ttlMinutes any) map[string]any {
	return map[string]any{
		"id": id, "seq": 0, "entity_type": "prompt_block", "who": "author", "this": "block",
		"at": clock.Add(-age).Format("2006-01-02T15:04:05.000000Z"), "status": "active",
		"metadata": map[string]any{"ttl_minutes": ttlMinutes},
	}
}

func statusPatch(id string) string {
	return `[{"emit_span":{"entity_type":"status_patch","who":"policy:ttl","did":"expired","this":"status=archived",
		"status":"complete","parent_id":"` + id + `","related_to":["` + id + `"],"metadata":{"reason":"ttl"}}}]`
}

func TestTTLReaperVerbatim(t *testing.T) {
	t.Parallel()
	m := prepare(t, quickjs.KindPolicy, ttlReaper)
	expired, _ := json.Marshal(promptBlock("b1", 10*time.Minute, 5))
	res := run(t, m, abi.TierPolicy, string(expired))
	ok(t, res)
	require.JSONEq(t, statusPatch("b1"), string(res.Output))

	for name, s := range map[string]map[string]any{
		"fresh":        promptBlock("b2", 4*time.Minute, 5),
		"no ttl":       promptBlock("b3", 10*time.Hour, 0),
		"another type": {"id": "x", "entity_type": "execution", "at": "2020-01-01T00:00:00.000000Z", "metadata": map[string]any{"ttl_minutes": 1}},
	} {
		in, _ := json.Marshal(s)
		res := run(t, m, abi.TierPolicy, string(in))
		ok(t, res)
		require.JSONEq(t, `[]`, string(res.Output), name)
	}

	// The seed reads "when" before "at"; a ttl given as a string counts.
	s := promptBlock("b4", time.Minute, "2")
	s["when"] = clock.Add(-3 * time.Minute).Format(time.RFC3339Nano)
	in, _ := json.Marshal(s)
	res = run(t, m, abi.TierPolicy, string(in))
	ok(t, res)
	require.JSONEq(t, statusPatch("b4"), string(res.Output))
}

func TestPolicyBatch(t *testing.T) {
	t.Parallel()
	m := prepare(t, quickjs.KindPolicy, ttlReaper)
	batch := []any{
		promptBlock("old", time.Hour, 30), promptBlock("new", time.Minute, 30),
		map[string]any{"id": "bad", "entity_type": "prompt_block", "metadata": nil},
	}
	in, _ := json.Marshal(map[string]any{"batch": batch})
	res := run(t, m, abi.TierPolicy, string(in))
	ok(t, res)
	var out []map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(res.Output, &out))
	require.Len(t, out, 3, "one entry per span")
	require.JSONEq(t, statusPatch("old"), string(out[0]["actions"]))
	require.JSONEq(t, `[]`, string(out[1]["actions"]))
	require.JSONEq(t, `[]`, string(out[2]["actions"]), "metadata null: optional chaining, no ttl")

	// A throw on one span is that span's error; the others go on. Async
	// policies settle within the run.
	m = prepare(t, quickjs.KindPolicy, `export default async function on(span) {
  await null;
  if (span.n % 2) throw new TypeError('odd ' + span.n);
  return span.n ? [{ n: span.n }] : undefined;
}`)
	res = run(t, m, abi.TierPolicy, `{"batch":[{"n":0},{"n":1},{"n":2}]}`)
	ok(t, res)
	require.JSONEq(t, `[{"actions":[]},{"error":{"message":"TypeError: odd 1"}},{"actions":[{"n":2}]}]`, string(res.Output))

	// A plain span's throw fails the run; so does a non-array answer.
	failed(t, run(t, m, abi.TierPolicy, `{"n":1}`), abi.CodeGuestError)
	m = prepare(t, quickjs.KindPolicy, `export default function on(span) { return 'archive it' }`)
	e := failed(t, run(t, m, abi.TierPolicy, `{"n":1}`), abi.CodeGuestError)
	require.Contains(t, e.Message, "a policy returns an array of actions")
	res = run(t, m, abi.TierPolicy, `{"batch":[{}]}`)
	ok(t, res)
	require.Contains(t, string(res.Output), `"error"`)
}

func TestPolicyForms(t *testing.T) {
	t.Parallel()
	// The seed's forms besides export default, and named exports.
	for name, src := range map[string]string{
		"globalThis.default":  `globalThis.default = function (span) { return [{ id: span.id }] }`,
		"function on":         `function on(span) { return [{ id: span.id }] }`,
		"const on":            `const on = (span) => [{ id: span.id }]`,
		"export function on":  `export function on(span) { return [{ id: span.id }] }`,
		"module with prelude": "const k = 'id';\nexport default (span) => [{ [k]: span.id }]",
	} {
		m := prepare(t, quickjs.KindPolicy, src)
		res := run(t, m, abi.TierPolicy, `{"id":"s1"}`)
		ok(t, res)
		require.JSONEq(t, `[{"id":"s1"}]`, string(res.Output), name)
	}
	e := prepareErr(t, quickjs.KindPolicy, "none.js", `const x = 1`)
	require.Equal(t, abi.CodeGuestError, e.Code)
	require.Contains(t, e.Message, "none.js: a policy exports default function on(span)")
	e = prepareErr(t, quickjs.KindPolicy, "imports.js", "import fs from 'fs';\nexport default () => []")
	require.Contains(t, e.Message, "cannot import 'fs'")
}

func TestInfiniteLoopRunsOutOfFuel(t *testing.T) {
	t.Parallel()
	m := prepare(t, quickjs.KindFunction, "while (true) {}")
	res := run(t, m, abi.TierFunction, "")
	failed(t, res, abi.CodeFuelExhausted)
	require.GreaterOrEqual(t, res.FuelUsed, int64(sandbox.DefaultFuel))

	m = prepare(t, quickjs.KindPolicy, "export default function on(span) { for (;;) { span.n++ } }")
	failed(t, run(t, m, abi.TierPolicy, `{"n":0}`), abi.CodeFuelExhausted)

	// The next run starts afresh: the instance that ran out was discarded.
	m = prepare(t, quickjs.KindFunction, "if (input.spin) for (;;) {} return 'done'")
	failed(t, run(t, m, abi.TierFunction, `{"spin":true}`), abi.CodeFuelExhausted)
	res = run(t, m, abi.TierFunction, `{"spin":false}`)
	ok(t, res)
	require.JSONEq(t, `"done"`, string(res.Output))
}

func TestMemoryBombHitsTheMemoryLimit(t *testing.T) {
	t.Parallel()
	// 8 MiB, and fuel to spare: the memory runs out first.
	lim := sandbox.Limits{MemoryPages: 128, Fuel: 10 * sandbox.DefaultFuel}
	for name, src := range map[string]string{
		"buffers": "const a = []; for (;;) a.push(new ArrayBuffer(256 * 1024));",
		"string":  "let s = 'x'; for (;;) s += s;",
		"objects": "const big = 'x'.repeat(10000), a = []; for (let i = 0; ; i++) a.push({ i, s: big + i });",
		"one big": "return new ArrayBuffer(64 * 1024 * 1024).byteLength",
		// Catching the out-of-memory error does not save the run: the
		// memory is gone, and the run says so.
		"caught": "let a = []; try { for (;;) a.push(new ArrayBuffer(256 * 1024)); } catch (e) { a = null; return 'swallowed' }",
	} {
		m := prepare(t, quickjs.KindFunction, src)
		res := runReq(t, m, sandbox.Request{Limits: lim})
		require.NotNil(t, res.Err, name)
		require.Equal(t, abi.CodeMemoryLimit, res.Err.Code, "%s: %s", name, res.Err.Message)
		require.Contains(t, res.Err.Message, "out of memory", name)
	}
	// Within the limit the same code is fine.
	m := prepare(t, quickjs.KindFunction, "return new ArrayBuffer(1024 * 1024).byteLength")
	res := runReq(t, m, sandbox.Request{Limits: lim})
	ok(t, res)
	require.Equal(t, "1048576", string(res.Output))
}

func TestSyntaxErrorsHaveLineAndColumn(t *testing.T) {
	t.Parallel()
	cases := []struct {
		kind      quickjs.Kind
		name, src string
		want      string
	}{
		{quickjs.KindFunction, "add.js", "const a = 1;\nreturn a +* 2;", "add.js:2:11: SyntaxError: unexpected token in expression: '*'"},
		{quickjs.KindFunction, "", "return ) 1", "function.js:1:8: SyntaxError: unexpected token in expression: ')'"},
		{quickjs.KindFunction, "open.js", "if (input) {\n  return 1;", "open.js:2:12: SyntaxError: unexpected end of the function body (is a bracket left open, or closed once too often?)"},
		{quickjs.KindPolicy, "p.js", "export default function on(span) {\n  return [\n    { a: 1 }\n    { b: 2 }\n  ];\n}", "p.js:4:5: SyntaxError: expecting ']'"},
		{quickjs.KindKernel, "k.js", "globalThis.default = async function main(ctx) {\n  const x = 'unterminated;\n};", "k.js:2:13: SyntaxError: unexpected end of string"},
		{quickjs.KindFunction, "utf8.js", "const s = 'olá — ✓'; return s @", "utf8.js:1:31: SyntaxError: expecting ';'"},
	}
	for _, c := range cases {
		e := prepareErr(t, c.kind, c.name, c.src)
		require.Equal(t, abi.CodeGuestError, e.Code)
		require.Equal(t, "logline_prepare: "+c.want, e.Message)
	}
}

func TestThrownErrorsAreRecorded(t *testing.T) {
	t.Parallel()
	cases := []struct {
		src  string
		want []string
	}{
		{"throw new Error('boom: ' + input.why)", []string{"Error: boom: because", "at <anonymous> (function.js:1)"}},
		{"function inner() { null.x }\nfunction outer() { inner() }\nouter()", []string{"TypeError: cannot read property 'x' of null", "at inner (function.js:1)", "at outer (function.js:2)"}},
		{"return Promise.reject(new RangeError('later'))", []string{"RangeError: later"}},
		{"return (async () => { await 1; throw new SyntaxError('async') })()", []string{"SyntaxError: async"}},
		{"throw { code: 42 }", []string{`uncaught {"code":42}`}},
		{"return new Promise(() => {})", []string{"the run ended with its promise pending"}},
		{"return BigInt(1)", []string{"TypeError"}},
	}
	for _, c := range cases {
		m := prepare(t, quickjs.KindFunction, c.src)
		res := run(t, m, abi.TierFunction, `{"why":"because"}`)
		e := failed(t, res, abi.CodeGuestError)
		for _, w := range c.want {
			require.Contains(t, e.Message, w, c.src)
		}
		require.NotContains(t, e.Message, "<logline prelude>", "the harness's own frames are not the author's business")
		var errorLines int
		for _, l := range res.Logs {
			if l.Level == abi.LogError {
				errorLines++
			}
		}
		require.Equal(t, 1, errorLines, "the error is logged once, at error level")
	}
}

func TestDeepRecursionIsAnError(t *testing.T) {
	t.Parallel()
	// The interpreter checks its stack: a runaway recursion is a JS error,
	// not a crash, within the default fuel (its stack trace stops after
	// the innermost frames).
	m := prepare(t, quickjs.KindFunction, "function f(n) { return f(n + 1) + 1 }\nreturn f(0)")
	e := failed(t, run(t, m, abi.TierFunction, ""), abi.CodeGuestError)
	require.Contains(t, e.Message, "InternalError: stack overflow\n    at f (function.js:1)")
	require.Contains(t, e.Message, "\n    ...")
	// Deep enough for real code.
	m = prepare(t, quickjs.KindFunction, "function f(n) { return n === 0 ? 0 : 1 + f(n - 1) }\nreturn f(input)")
	res := run(t, m, abi.TierFunction, "1000")
	ok(t, res)
	require.Equal(t, "1000", string(res.Output))
}

func TestJSONCrossesIntact(t *testing.T) {
	t.Parallel()
	echo := prepare(t, quickjs.KindFunction, "return input")
	for _, in := range []string{
		`{"msg":"olá — ✓ 🚀","cjk":"漢字かな","rtl":"שלום","escapes":"tab\tnl\n\"q\" \\ \u0000 \u001f \u2028"}`,
		`[1,-1,0,2.5,0.1,1e+21,1.5e-7,4999950000,9007199254740991,-9007199254740991,5e-324,1.7976931348623157e+308]`,
		`{"a":{"b":{"c":{"d":{"e":[[[[[{"f":null}]]]]]}}}},"t":true,"f":false}`,
		`"\ud83d\ude80"`,
		`null`,
	} {
		res := run(t, echo, abi.TierFunction, in)
		ok(t, res)
		require.JSONEq(t, in, string(res.Output))
		require.True(t, json.Valid(res.Output))
	}
	deep := strings.Repeat(`{"x":[`, 64) + `1` + strings.Repeat(`]}`, 64)
	res := run(t, echo, abi.TierFunction, deep)
	ok(t, res)
	require.Equal(t, deep, string(res.Output))
	// A lone surrogate made in JS leaves as an escape: the output stays
	// valid UTF-8 JSON.
	res = run(t, prepare(t, quickjs.KindFunction, "return '\\ud800' + 'x'"), abi.TierFunction, "")
	ok(t, res)
	require.Equal(t, `"\ud800x"`, string(res.Output))
	// undefined becomes null.
	res = run(t, prepare(t, quickjs.KindFunction, "return undefined"), abi.TierFunction, "")
	ok(t, res)
	require.Equal(t, "null", string(res.Output))
}

// TestProofVectorsRoundTrip hands each span of the proof vectors to JS,
// which computes its canonical form (RFC 8785: the keys sorted, numbers as
// ECMAScript prints them) and its BLAKE3 with the host call: both must be
// the vectors', byte for byte.
func TestProofVectorsRoundTrip(t *testing.T) {
	t.Parallel()
	// The vectors host/span's tests read.
	raw, err := os.ReadFile("../../host/span/testdata/span_proofs.json")
	require.NoError(t, err, "the span proof vectors must be at host/span/testdata/span_proofs.json")
	var doc struct {
		Vectors []struct {
			Span      json.RawMessage `json:"span"`
			Canonical string          `json:"canonical"`
			CurrHash  string          `json:"curr_hash"`
		} `json:"vectors"`
	}
	require.NoError(t, json.Unmarshal(raw, &doc))
	require.NotEmpty(t, doc.Vectors)
	m := prepare(t, quickjs.KindFunction, `
function jcs(v) {
  if (Array.isArray(v)) return '[' + v.map(jcs).join(',') + ']';
  if (v !== null && typeof v === 'object')
    return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + jcs(v[k])).join(',') + '}';
  return JSON.stringify(v);
}
const s = Object.assign({}, input);
delete s.curr_hash; delete s.signature;
for (const k of Object.keys(s)) if (s[k] === null) delete s[k];
const canonical = jcs(s);
return { canonical, curr_hash: logline.crypto.hex(logline.crypto.blake3(canonical)) };`)
	for i, v := range doc.Vectors {
		res := run(t, m, abi.TierFunction, string(v.Span))
		ok(t, res)
		var out struct {
			Canonical string `json:"canonical"`
			CurrHash  string `json:"curr_hash"`
		}
		require.NoError(t, json.Unmarshal(res.Output, &out))
		require.Equal(t, v.Canonical, out.Canonical, "vector %d", i)
		require.Equal(t, v.CurrHash, out.CurrHash, "vector %d", i)
	}
}

func TestFunctionsCannotReachKernelCapabilities(t *testing.T) {
	t.Parallel()
	caps := &fakeCaps{}
	for _, call := range []string{
		"logline.sql`SELECT 1`",
		"logline.insertSpan({ entity_type: 'x', who: 'y', this: 'z' })",
		"logline.http({ method: 'GET', url: 'https://example.com/' })",
		"logline.exec('00000000-0000-4000-8000-000000000001', {})",
		"logline.lock('k', 1000)",
	} {
		// Uncaught: the run fails with capability_denied.
		m := prepare(t, quickjs.KindFunction, "return "+call)
		for _, tier := range []abi.Tier{abi.TierFunction, abi.TierPolicy} {
			kind := quickjs.KindFunction
			if tier == abi.TierPolicy {
				kind = quickjs.KindPolicy
				m = prepare(t, kind, "export default async function on(span) { await "+call+"; return [] }")
			}
			res := runReq(t, m, sandbox.Request{Tier: tier, Input: []byte(`{}`), Caps: caps})
			e := failed(t, res, abi.CodeCapabilityDenied)
			require.Contains(t, e.Message, "capability denied", call)
		}
		// Caught: the JS error carries the code.
		m = prepare(t, quickjs.KindFunction, "return (async () => {\n  try { await "+call+"; return 'reached' }\n  catch (e) { return [e.name, e.code, e.errno, e instanceof logline.LoglineError] }\n})()")
		res := runReq(t, m, sandbox.Request{Tier: abi.TierFunction, Caps: caps})
		ok(t, res)
		require.JSONEq(t, `["LoglineError","capability_denied",-1,true]`, string(res.Output), call)
	}
	require.Zero(t, caps.calls.Load(), "the host never reached the capabilities")
}

func TestEachRunStartsPristine(t *testing.T) {
	t.Parallel()
	m := prepare(t, quickjs.KindFunction, `
globalThis.count = (globalThis.count || 0) + 1;
Array.prototype.leak = 'x';
return { count: globalThis.count, leaked: [].leak === 'x' && input.check };`)
	for i := 0; i < 5; i++ {
		res := run(t, m, abi.TierFunction, `{"check":true}`)
		ok(t, res)
		require.JSONEq(t, `{"count":1,"leaked":true}`, string(res.Output))
	}
	// Top-level state of a module is set once, in the snapshot, and every
	// run sees it as prepare left it.
	m = prepare(t, quickjs.KindPolicy, "let n = 0;\nexport default function on() { n++; return [{ n }] }")
	for i := 0; i < 3; i++ {
		res := run(t, m, abi.TierPolicy, `{"batch":[{},{}]}`)
		ok(t, res)
		require.JSONEq(t, `[{"actions":[{"n":1}]},{"actions":[{"n":2}]}]`, string(res.Output))
	}
}

func TestRunsAreDeterministic(t *testing.T) {
	t.Parallel()
	m := prepare(t, quickjs.KindFunction, `return {
  now: Date.now(), iso: new Date().toISOString(), ll: logline.now(),
  r: [Math.random(), Math.random()], uuid: logline.crypto.randomUUID(),
  perf: performance.now() >= 0, tz: new Date(0).getTimezoneOffset() };`)
	out := func(seed uint64) string {
		res := runReq(t, m, sandbox.Request{Seed: seed})
		ok(t, res)
		return string(res.Output)
	}
	a, b, c := out(7), out(7), out(8)
	require.Equal(t, a, b, "same seed and clock, same output")
	require.NotEqual(t, a, c, "the seed drives Math.random and randomUUID")
	var v struct {
		Now  int64     `json:"now"`
		ISO  string    `json:"iso"`
		LL   string    `json:"ll"`
		R    []float64 `json:"r"`
		UUID string    `json:"uuid"`
		TZ   int       `json:"tz"`
	}
	require.NoError(t, json.Unmarshal([]byte(a), &v))
	require.Equal(t, clock.UnixMilli(), v.Now, "Date.now is the run's clock")
	require.Equal(t, "2026-01-02T03:04:05.123Z", v.ISO)
	require.Equal(t, "2026-01-02T03:04:05.123456Z", v.LL, "the ledger's format: six fractional digits")
	require.NotEqual(t, v.R[0], v.R[1])
	require.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, v.UUID)
	require.Zero(t, v.TZ, "UTC")
}

func TestAsyncAndTimers(t *testing.T) {
	t.Parallel()
	m := prepare(t, quickjs.KindFunction, `
const order = [];
setTimeout(() => order.push('t20'), 20);
const t = setTimeout(() => order.push('cancelled'), 5);
clearTimeout(t);
setTimeout(() => order.push('t10'), 10);
queueMicrotask(() => order.push('micro'));
return (async () => {
  order.push('start');
  await new Promise((r) => setTimeout(r, 30));
  order.push('end');
  return order;
})();`)
	res := run(t, m, abi.TierFunction, "")
	ok(t, res)
	require.JSONEq(t, `["start","micro","t10","t20","end"]`, string(res.Output))
}

func TestConsoleLogs(t *testing.T) {
	t.Parallel()
	m := prepare(t, quickjs.KindFunction, `
console.log('hello', 1, { a: [1, 2] }, null, undefined, 10n);
console.debug('d'); console.info('i'); console.warn('w'); console.error(new Error('e'));
logline.log(2, 'direct');
return 0;`)
	res := run(t, m, abi.TierFunction, "")
	ok(t, res)
	var got []string
	for _, l := range res.Logs {
		got = append(got, fmt.Sprintf("%d %s", l.Level, l.Text))
	}
	require.Equal(t, []string{
		`1 hello 1 {"a":[1,2]} null undefined 10n`, "0 d", "1 i", "2 w", "3 Error: e\n    at <anonymous> (function.js:3)", "2 direct",
	}, got)
}

func TestExamples(t *testing.T) {
	t.Parallel()
	m := prepare(t, quickjs.KindFunction, readExample(t, "function.js"))
	res := run(t, m, abi.TierFunction, `{"a":1,"b":2}`)
	ok(t, res)
	require.JSONEq(t, `{"sum":3}`, string(res.Output))
	require.Len(t, res.Logs, 1)
	require.Regexp(t, `^js-function at 2026-01-02T03:04:05.123456Z: input blake3 [0-9a-f]{64}, nonce [0-9a-f]{16}$`, res.Logs[0].Text)
	e := failed(t, run(t, m, abi.TierFunction, `{"a":1}`), abi.CodeGuestError)
	require.Contains(t, e.Message, `TypeError: bad input: want {"a": number, "b": number}`)

	m = prepare(t, quickjs.KindPolicy, readExample(t, "policy.js"))
	in := `{"batch":[
		{"id":"x1","entity_type":"execution","status":"error","error":{"code":"trap"},"metadata":{"on_error":"h1"},"duration_ms":3},
		{"id":"x2","entity_type":"execution","status":"complete","duration_ms":7000},
		{"id":"x3","entity_type":"execution","status":"complete","duration_ms":10},
		{"id":"n1","entity_type":"note"}]}`
	res = run(t, m, abi.TierPolicy, in)
	ok(t, res)
	require.JSONEq(t, `[
		{"actions":[{"run":"run_code","span_id":"h1","input":{"failed":"x1","error":{"code":"trap"}}}]},
		{"actions":[{"emit_span":{"entity_type":"status_patch","who":"policy:slow","did":"labeled","this":"status=slow",
			"status":"complete","parent_id":"x2","related_to":["x2"],"metadata":{"status":"slow","duration_ms":7000}}}]},
		{"actions":[]},
		{"actions":[]}
	]`, string(res.Output))
}

// TestInputJSONIsJSONParse: the harness parses a run's input in C (as fast
// again as QuickJS's JSON.parse); it must give what JSON.parse gives. Each
// case travels twice, as JSON and as a string JS then hands to JSON.parse.
func TestInputJSONIsJSONParse(t *testing.T) {
	t.Parallel()
	m := prepare(t, quickjs.KindFunction, `
function same(a, b) {
  if (typeof a !== typeof b) return false;
  if (typeof a !== 'object' || a === null || b === null) return Object.is(a, b);
  if (Array.isArray(a) !== Array.isArray(b) || Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  const ka = Object.getOwnPropertyNames(a), kb = Object.getOwnPropertyNames(b);
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && same(a[k], b[k]));
}
const [parsed, text] = input;
return same(parsed, JSON.parse(text)) ? 'same' : JSON.stringify([parsed, JSON.parse(text)]);`)
	for _, c := range []string{
		`0`, `-0`, `[-0, 0.0, -0.0, 0e5]`, `1e400`, `-1e400`, `5e-324`, `2.5e-324`, `0.1`, `1.7976931348623157e308`,
		`123456789012345`, `1234567890123456`, `123456789012345678901234567890`, `9007199254740993`, `-9007199254740993`,
		`2147483647`, `2147483648`, `-2147483648`, `-2147483649`, `1E2`, `1e+2`, `1e-2`, `-1.5E-7`, `100`, `[1,2,3]`,
		`"plain"`, `""`, `"\"\\\/\b\f\n\r\t"`, `"\u0000\u001f\u00e9\u4e2d\ud83d\ude80"`, `"\ud800"`, `"\udc00x\ud800"`, `"\ud83dx"`,
		`"olá — ✓ 🚀"`, `{"a":1,"a":2}`, `{"__proto__":{"x":1}}`, `{"0":"zero","1":"one","b":[],"c":{}}`,
		`{"ключ":"значение","k":"\u043a"}`, " \t\r\n{ \"a\" : [ 1 , { } , [ ] ] } \n", `[[[[[[[[[[]]]]]]]]]]`,
		`{"id":"x","seq":0,"metadata":{"ttl_minutes":5,"n":null,"t":true,"f":false}}`,
	} {
		text, err := json.Marshal(c)
		require.NoError(t, err)
		res := run(t, m, abi.TierFunction, "["+c+","+string(text)+"]")
		ok(t, res)
		require.Equal(t, `"same"`, string(res.Output), c)
	}

	// What JSON.parse refuses, the input parser refuses: the run fails and
	// says where.
	echo := prepare(t, quickjs.KindFunction, "return input")
	for in, want := range map[string]string{
		`01`:             "unexpected data after the value at byte 1",
		`1.`:             "bad number at the end of the input",
		`.5`:             "unexpected character at byte 0",
		`+1`:             "unexpected character at byte 0",
		`-`:              "bad number at the end of the input",
		`1e`:             "bad number at the end of the input",
		`[1,]`:           "unexpected character at byte 3",
		`{"a":1,}`:       "expected a key at byte 7",
		`{'a':1}`:        "expected a key at byte 1",
		`{"a" 1}`:        "expected ':' at byte 5",
		"\"tab\tin\"":    "control character in a string at byte 4",
		`"\x"`:           "bad escape in a string at byte 1",
		`"\u12"`:         "bad \\u escape in a string at byte 1",
		`"open`:          "unterminated string at the end of the input",
		`tru`:            "unexpected character at byte 0",
		`[1] [2]`:        "unexpected data after the value at byte 4",
		`NaN`:            "unexpected character at byte 0",
		"\xef\xbb\xbf{}": "unexpected character at byte 0",
	} {
		res := runReq(t, echo, sandbox.Request{Input: []byte(in)})
		e := failed(t, res, abi.CodeGuestError)
		require.Contains(t, e.Message, "SyntaxError: JSON: "+want, in)
	}
	deep := strings.Repeat("[", 1001) + strings.Repeat("]", 1001)
	e := failed(t, runReq(t, echo, sandbox.Request{Input: []byte(deep)}), abi.CodeGuestError)
	require.Contains(t, e.Message, "JSON: nested too deeply at byte 1000")
}

// TestBatchOfFullSpansFitsTheDefaultFuel: the policy_agent passes policies
// 50 spans a run, every column of each; the seed's ttl_reaper must get
// through such a batch on the default fuel.
func TestBatchOfFullSpansFitsTheDefaultFuel(t *testing.T) {
	t.Parallel()
	batch := make([]any, 50)
	for i := range batch {
		batch[i] = map[string]any{
			"id": fmt.Sprintf("01a21892-e5b7-7de9-99b2-fe1bab71f%03d", i), "seq": 0, "entity_type": "execution",
			"who": "edge:run_code", "did": "executed", "this": "run_code", "at": "2026-11-26T15:50:58.385033Z",
			"when": "2026-11-26T15:50:58.385033Z", "parent_id": "01a21892-e5b7-7de9-99b2-fe1bab71f125",
			"related_to": []string{"01a21892-e5b7-7de9-99b2-fe1bab71f125", "01a21892-e5b7-7de9-99b2-fe1bab71f126"},
			"owner_id":   "alice", "tenant_id": "acme", "visibility": "private", "status": "complete", "is_deleted": false,
			"name": nil, "description": nil, "code": nil, "language": nil, "runtime": nil,
			"input": map[string]any{"a": 1, "b": 2}, "output": map[string]any{"sum": 3}, "error": nil, "duration_ms": 12,
			"trace_id": "4f3c2b1a-0000-4000-8000-000000000001", "prev_hash": nil,
			"curr_hash":  strings.Repeat("9f", 32),
			"signature":  strings.Repeat("3c", 64),
			"public_key": strings.Repeat("f2", 32),
			"metadata": map[string]any{"fuel_used": 82764, "host_calls": 3, "code_seq": 0, "tier": "function",
				"module_hash": strings.Repeat("a2", 32)},
		}
	}
	in, _ := json.Marshal(map[string]any{"batch": batch})
	res := run(t, prepare(t, quickjs.KindPolicy, ttlReaper), abi.TierPolicy, string(in))
	ok(t, res)
	require.Less(t, res.FuelUsed, int64(sandbox.DefaultFuel))
	t.Logf("%d spans of %d bytes: %d fuel a span", len(batch), len(in)/len(batch), res.FuelUsed/int64(len(batch)))
}
