package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/sandbox/wasmtest"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
	"github.com/logline/logline/seeds"
)

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

var publishedID = regexp.MustCompile(`published ([0-9a-f-]{36}) seq (\d+)`)

func TestSeedPublishBootRun(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	dir := t.TempDir()
	admin, node := filepath.Join(dir, "admin.key"), filepath.Join(dir, "node.key")
	require.Equal(t, 0, cli(t, nil, "", "keys", "gen", "--out", admin).code)
	require.Equal(t, 0, cli(t, nil, "", "keys", "gen", "--out", node).code)
	env["LOGLINE_KEY_FILE"] = node
	op := map[string]string{"DATABASE_URL": env["DATABASE_URL"], "LOGLINE_KEY_FILE": node}

	// seed: the manifest, trusting the admin key; again: nothing changes.
	r := cli(t, op, "", "seed", "--key", admin)
	require.Equal(t, 0, r.code, r.err)
	require.Equal(t, fmt.Sprintf("seeded: %d appended, 0 unchanged\n", seedCount()), r.out)
	r = cli(t, op, "", "seed", "--key", admin)
	require.Equal(t, 0, r.code, r.err)
	require.Equal(t, fmt.Sprintf("seeded: 0 appended, %d unchanged\n", seedCount()), r.out)

	// publish a kernel signed by the admin key, and a function.
	kernel := writeFile(t, "hello.wasm", wasmtest.Outputs(`{"hello":"kernel"}`))
	r = cli(t, env, "", "publish", kernel, "--name", "hello", "--kind", "kernel", "--key", admin)
	require.Equal(t, 0, r.code, r.err)
	kid := publishedID.FindStringSubmatch(r.out)[1]
	r = cli(t, env, "", "publish", kernel, "--id", kid, "--name", "hello", "--kind", "kernel", "--key", admin)
	require.Equal(t, 0, r.code, r.err)
	require.Equal(t, "1", publishedID.FindStringSubmatch(r.out)[2], "a second publish is the next version")

	// Not in the manifest yet: refused.
	r = cli(t, op, "", "boot", kid)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.err, "refused: not_allowed")

	// The operator allows it: a new manifest version.
	got := cli(t, map[string]string{"DATABASE_URL": env["DATABASE_URL"], "LOGLINE_TENANT": "logline", "LOGLINE_USER": "operator"},
		"", "spans", "get", stage0.ManifestID)
	require.Equal(t, 0, got.code, got.err)
	var man span.Span
	require.NoError(t, json.Unmarshal([]byte(got.out), &man))
	var meta map[string]any
	require.NoError(t, json.Unmarshal(man.Metadata, &meta))
	meta["allowed_boot_ids"] = []string{kid}
	man.Metadata, _ = json.Marshal(meta)
	man.Seq, man.PrevHash, man.Signature = 1, man.CurrHash, ""
	next, _ := json.Marshal(man)
	r = cli(t, map[string]string{"DATABASE_URL": env["DATABASE_URL"], "LOGLINE_TENANT": "logline", "LOGLINE_USER": "operator"},
		string(next), "spans", "sign", "--key", admin)
	require.Equal(t, 0, r.code, r.err)
	r = cli(t, map[string]string{"DATABASE_URL": env["DATABASE_URL"], "LOGLINE_TENANT": "logline", "LOGLINE_USER": "operator"},
		r.out, "spans", "append")
	require.Equal(t, 0, r.code, r.err)

	r = cli(t, op, "", "boot", kid, "--env", "SPAN_ID=x", "--json")
	require.Equal(t, 0, r.code, r.err)
	var ex span.Span
	require.NoError(t, json.Unmarshal([]byte(r.out), &ex))
	require.Equal(t, "complete", ex.Status)
	require.JSONEq(t, `{"hello":"kernel"}`, string(ex.Output))
	require.NoError(t, span.Verify(&ex))
	r = cli(t, op, "", "boot", kid, "--env", "nokey")
	require.Equal(t, 2, r.code)

	// run: a function's execution span is appended and printed; a failing
	// one exits 1 with its typed error.
	fn := writeFile(t, "sum.wasm", wasmtest.Outputs(`{"sum":3}`))
	r = cli(t, env, "", "publish", fn, "--name", "sum", "--kind", "function")
	require.Equal(t, 0, r.code, r.err)
	fid := publishedID.FindStringSubmatch(r.out)[1]
	r = cli(t, env, "", "run", fid, "--input", `{"a":1,"b":2}`)
	require.Equal(t, 0, r.code, r.err)
	require.Contains(t, r.out, `output: {"sum":3}`)
	spin := writeFile(t, "spin.wasm", wasmtest.Spins())
	r = cli(t, env, "", "publish", spin, "--name", "spin", "--kind", "function")
	require.Equal(t, 0, r.code, r.err)
	r = cli(t, env, "", "run", publishedID.FindStringSubmatch(r.out)[1])
	require.Equal(t, 1, r.code)
	require.Contains(t, r.out, "fuel_exhausted")
	r = cli(t, env, "", "run", fid, "--input", `{bad`)
	require.Equal(t, 2, r.code)
	r = cli(t, env, "", "run", fid, "--input", `{"s":"a\u0000b"}`)
	require.Equal(t, 2, r.code, "an input the ledger could not record")
	require.Contains(t, r.err, `\u0000`)

	// A function whose output the ledger cannot store: a recorded run that
	// failed with invalid_output, not an unrecorded one.
	nul := writeFile(t, "nul.js", []byte(`return "a\u0000b"`))
	r = cli(t, env, "", "publish", nul, "--name", "nul", "--kind", "function")
	require.Equal(t, 0, r.code, r.err)
	r = cli(t, env, "", "run", publishedID.FindStringSubmatch(r.out)[1], "--json")
	require.Equal(t, 1, r.code, r.err)
	require.NoError(t, json.Unmarshal([]byte(r.out), &ex))
	require.Equal(t, "error", ex.Status)
	require.Contains(t, string(ex.Error), "invalid_output")

	// Code that could never run is refused at publish, and nothing is written.
	before := rows(t, env["DATABASE_URL"])
	bad := writeFile(t, "bad.wasm", []byte("not wasm"))
	r = cli(t, env, "", "publish", bad, "--name", "bad", "--kind", "function")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.err, "invalid_module")
	forbidden := writeFile(t, "f.wasm", wasmtest.Module([]wasmtest.Import{{Name: "launch_missiles", Results: []byte{wasmtest.I32}}}, nil, 0, wasmtest.I32Const(0)))
	r = cli(t, env, "", "publish", forbidden, "--name", "f", "--kind", "function")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.err, "forbidden_import")
	syntax := writeFile(t, "broken.js", []byte("return (1 +;\n"))
	r = cli(t, env, "", "publish", syntax, "--name", "broken", "--kind", "function")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.err, "broken.js:1:")
	require.Contains(t, r.err, "SyntaxError")
	require.Equal(t, before, rows(t, env["DATABASE_URL"]))
}

// seedCount is the number of seed spans: the manifest, the stock kernels and
// the stock policies.
func seedCount() int {
	prompts, _ := seeds.FS.ReadFile("prompts.ndjson")
	return 1 + len(seeds.Kernels) + len(seeds.Policies) + bytes.Count(prompts, []byte("\n"))
}

// publish --judges declares what a policy judges (metadata.judges); a
// declaration that does not check is refused naming its field, and nothing
// is written.
func TestPublishJudges(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	env["LOGLINE_KEY_FILE"] = filepath.Join(t.TempDir(), "node.key")
	require.Equal(t, 0, cli(t, nil, "", "keys", "gen", "--out", env["LOGLINE_KEY_FILE"]).code)
	pol := writeFile(t, "errors.js", []byte(`export default function on(span) { return []; }`))
	r := cli(t, env, "", "publish", pol, "--name", "errors", "--kind", "policy",
		"--judges", `{"entity_types":["execution"],"where":{"status":"error"}}`)
	require.Equal(t, 0, r.code, r.err)
	got := cli(t, env, "", "spans", "get", publishedID.FindStringSubmatch(r.out)[1])
	require.Equal(t, 0, got.code, got.err)
	var s span.Span
	require.NoError(t, json.Unmarshal([]byte(got.out), &s))
	require.JSONEq(t, `{"judges":{"entity_types":["execution"],"where":{"status":"error"}}}`, string(s.Metadata))

	before := rows(t, env["DATABASE_URL"])
	for _, tc := range []struct{ judges, field, msg string }{
		{`{"entity_types":["execution"],"where":{"colour":"red"}}`, "metadata.judges.where.colour", "is not a field a declaration filters on"},
		{`{"where":{"status":"error"}}`, "metadata.judges.entity_types", "is required"},
		{`[]`, "metadata.judges", "must be an object"},
	} {
		r := cli(t, env, "", "publish", pol, "--name", "errors", "--kind", "policy", "--judges", tc.judges, "--json")
		require.Equal(t, 2, r.code, r.err)
		var e struct {
			Error struct{ Code, Message, Field string }
		}
		require.NoError(t, json.Unmarshal([]byte(r.err), &e), r.err)
		require.Equal(t, "invalid_input", e.Error.Code)
		require.Equal(t, tc.field, e.Error.Field)
		require.Contains(t, e.Error.Message, tc.msg)
	}
	r = cli(t, env, "", "publish", pol, "--name", "errors", "--kind", "policy", "--judges", `{nope`)
	require.Equal(t, 2, r.code)
	require.Contains(t, r.err, "--judges must be JSON")
	r = cli(t, env, "", "publish", pol, "--name", "f", "--kind", "function", "--judges", `{"entity_types":["note"]}`)
	require.Equal(t, 2, r.code)
	require.Contains(t, r.err, "takes --kind policy")
	require.Equal(t, before, rows(t, env["DATABASE_URL"]), "nothing written")
}
