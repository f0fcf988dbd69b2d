package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

const okSpan = `{"entity_type":"function","who":"alice","this":"function","name":"adder","code":"return input.a + input.b","metadata":{"nested":{"k":"v"}}}`

func TestKeysGen(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "node.key")
	r := cli(t, nil, "", "keys", "gen", "--out", file)
	require.Equal(t, 0, r.code, r.err)
	st, err := os.Stat(file)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	k, err := span.LoadKey(file)
	require.NoError(t, err)
	require.Equal(t, k.PublicHex()+"\n", r.out)

	r = cli(t, nil, "", "keys", "gen", "--out", file)
	require.Equal(t, 2, r.code, "refuses to overwrite a key")
	r = cli(t, nil, "", "keys", "gen")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.err, "--out")
}

func TestSpansSignIsOffline(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "k")
	require.Equal(t, 0, cli(t, nil, "", "keys", "gen", "--out", file).code)
	// No DATABASE_URL at all: signing needs no database.
	in := okSpan + "\n" + `{"entity_type":"policy","who":"alice","this":"policy","at":"2026-01-02T03:04:05.123456Z"}` + "\n"
	r := cli(t, map[string]string{"LOGLINE_TENANT": "acme", "LOGLINE_USER": "alice"}, in, "spans", "sign", "--key", file)
	require.Equal(t, 0, r.code, r.err)
	out, err := span.Decode(strings.NewReader(r.out))
	require.NoError(t, err)
	require.Len(t, out, 2)
	for i := range out {
		require.NoError(t, span.Verify(&out[i]))
		require.Equal(t, "acme", out[i].TenantID)
		require.Equal(t, "private", out[i].Visibility)
	}
	require.Equal(t, "2026-01-02T03:04:05.123456Z", out[1].At, "a given at is kept")

	r = cli(t, nil, okSpan, "spans", "sign", "--key", file)
	require.Equal(t, 2, r.code, "no tenant and owner anywhere")
	r = cli(t, nil, okSpan, "spans", "sign")
	require.Equal(t, 2, r.code)
	r = cli(t, map[string]string{"LOGLINE_TENANT": "acme", "LOGLINE_USER": "alice"},
		`{"id":"00000000-0000-4000-8000-000000000001","seq":1,"entity_type":"f","who":"a","this":"f"}`, "spans", "sign", "--key", file)
	require.Equal(t, 2, r.code)
	require.Contains(t, r.err, "prev_hash")
}

func TestSignedSpansAppendAndRoundTrip(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	file := filepath.Join(t.TempDir(), "k")
	require.Equal(t, 0, cli(t, nil, "", "keys", "gen", "--out", file).code)
	signed := cli(t, env, okSpan, "spans", "sign", "--key", file)
	require.Equal(t, 0, signed.code, signed.err)

	stored := cli(t, env, signed.out, "spans", "append")
	require.Equal(t, 0, stored.code, stored.err)
	require.JSONEq(t, signed.out, stored.out, "a signed span is stored exactly as signed")

	var s span.Span
	require.NoError(t, json.Unmarshal([]byte(signed.out), &s))
	got := cli(t, env, "", "spans", "get", s.ID)
	require.Equal(t, 0, got.code, got.err)
	require.JSONEq(t, signed.out, got.out)

	// Unsigned spans are sealed by the host with --key.
	node := filepath.Join(t.TempDir(), "node")
	require.Equal(t, 0, cli(t, nil, "", "keys", "gen", "--out", node).code)
	r := cli(t, env, okSpan+"\n"+okSpan+"\n", "spans", "append", "--key", node)
	require.Equal(t, 0, r.code, r.err)
	out, err := span.Decode(strings.NewReader(r.out))
	require.NoError(t, err)
	require.Len(t, out, 2)
	nodeKey, err := span.LoadKey(node)
	require.NoError(t, err)
	require.Equal(t, nodeKey.PublicHex(), out[0].PublicKey)

	settle(t, env)
	list := cli(t, env, "", "spans", "list", "--json", "--entity-type", "function", "--limit", "2")
	require.Equal(t, 0, list.code, list.err)
	var page struct {
		Items []struct {
			Cursor string    `json:"cursor"`
			Span   span.Span `json:"span"`
		} `json:"items"`
		Next string `json:"next"`
	}
	require.NoError(t, json.Unmarshal([]byte(list.out), &page))
	require.Len(t, page.Items, 2)
	require.Equal(t, s.ID, page.Items[0].Span.ID)
	more := cli(t, env, "", "spans", "list", "--json", "--cursor", page.Next)
	require.Equal(t, 0, more.code, more.err)
	require.Contains(t, more.out, out[1].ID)

	human := cli(t, env, "", "spans", "list", "--limit", "1")
	require.Equal(t, 0, human.code)
	require.Contains(t, human.out, s.ID)
	require.Contains(t, human.out, "more: --limit 1 --cursor ")

	require.Equal(t, 0, cli(t, env, "", "verify", "--all").code)
	require.Equal(t, 0, cli(t, env, "", "verify", s.ID).code)
}

func TestBadInputExits2AndWritesNothing(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	cases := map[string]struct{ in, want string }{
		"malformed JSON": {`{"entity_type":"function",`, "line 1"},
		"unknown column": {`{"entity_type":"function","who":"a","this":"f","colour":"red"}`, "colour"},
		"wrong type":     {`{"entity_type":"function","who":"a","this":"f","seq":"one"}`, "seq"},
		"oversize field": {`{"entity_type":"function","who":"` + strings.Repeat("a", 300) + `","this":"f"}`, "who"},
		"invalid uuid":   {`{"entity_type":"function","who":"a","this":"f","parent_id":"1234"}`, "parent_id"},
		"bad visibility": {`{"entity_type":"function","who":"a","this":"f","visibility":"everyone"}`, "visibility"},
		"missing field":  {`{"who":"a","this":"f"}`, "entity_type"},
		"second line":    {okSpan + "\n" + `{"entity_type":"function","who":"a","this":"f","seq":-1}`, "line 2"},
		"empty input":    {"", "empty input"},
		"other tenant":   {`{"entity_type":"function","who":"a","this":"f","tenant_id":"other"}`, "tenant_id"},
	}
	for name, c := range cases {
		r := cli(t, env, c.in, "spans", "append")
		if name == "other tenant" {
			require.NotEqual(t, 0, r.code, name)
		} else {
			require.Equal(t, 2, r.code, "%s: %s", name, r.err)
		}
		require.Contains(t, r.err, c.want, name)
		require.Empty(t, r.out, name)
	}
	require.Zero(t, rows(t, env["DATABASE_URL"]), "nothing was written")

	// Usage errors are exit 2 too.
	for _, args := range [][]string{
		{"verify"}, {"spans", "get"}, {"spans", "list", "--limit", "x"}, {"spans", "list", "--after", "bogus"},
		{"spans", "list", "--cursor", "bogus"}, {"spans", "list", "--limit", "0"}, {"spans", "list", "--limit", "1001"},
		{"no-such-command"}, {"spnas"}, {"spans", "bogus"}, {"spans"}, {"keys"},
	} {
		r := cli(t, env, "", args...)
		require.Equal(t, 2, r.code, "%v: %s", args, r.err)
	}
	r := cli(t, map[string]string{"LOGLINE_TENANT": "a", "LOGLINE_USER": "b"}, okSpan, "spans", "append")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.err, "DATABASE_URL")
	r = cli(t, map[string]string{"DATABASE_URL": env["DATABASE_URL"]}, okSpan, "spans", "append")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.err, "--tenant")
}

func TestVerifyAllNamesTamperedSpans(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	r := cli(t, env, okSpan+"\n"+okSpan+"\n", "spans", "append")
	require.Equal(t, 0, r.code, r.err)
	out, err := span.Decode(strings.NewReader(r.out))
	require.NoError(t, err)
	victim := out[1]
	require.Equal(t, 0, cli(t, env, "", "verify", "--all").code)

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, env["DATABASE_URL"])
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `SET session_replication_role = replica`)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `UPDATE ledger.universal_registry SET metadata = '{"nested":{"k":"tampered"}}' WHERE id = $1`, victim.ID)
	require.NoError(t, err)

	r = cli(t, env, "", "verify", "--all")
	require.Equal(t, 1, r.code, r.out)
	require.Contains(t, r.out, "FAIL "+victim.ID+" seq 0: hash mismatch")
	require.NotContains(t, r.out, out[0].ID)

	js := cli(t, env, "", "verify", "--all", "--json")
	require.Equal(t, 1, js.code)
	require.JSONEq(t, `{"error":{"code":"check_failed","message":"check failed"}}`, js.err, "a failed check is one JSON error on stderr too")
	var rep struct {
		OK       bool `json:"ok"`
		Failures []struct {
			ID string `json:"id"`
		} `json:"failures"`
	}
	require.NoError(t, json.Unmarshal([]byte(js.out), &rep))
	require.False(t, rep.OK)
	require.Len(t, rep.Failures, 1)
	require.Equal(t, victim.ID, rep.Failures[0].ID)

	// The untouched span alone still verifies.
	require.Equal(t, 0, cli(t, env, "", "verify", out[0].ID).code)
	// An id nobody can see is a failed check, not a pass.
	require.Equal(t, 1, cli(t, env, "", "verify", "00000000-0000-4000-8000-00000000beef").code)
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	url := testPG.TestDatabase(t, "mig")
	env := map[string]string{"DATABASE_URL": url}
	r := cli(t, env, "", "migrate")
	require.Equal(t, 0, r.code, r.err)
	require.Regexp(t, `^migrated schema from version 0 to [1-9][0-9]*\n$`, r.out)
	r = cli(t, env, "", "migrate", "--json")
	require.Equal(t, 0, r.code, r.err)
	var v struct{ From, To int }
	require.NoError(t, json.Unmarshal([]byte(r.out), &v))
	require.Positive(t, v.To)
	require.Equal(t, v.From, v.To, "a second migrate changes nothing")
}

func rows(t *testing.T, url string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM ledger.universal_registry`).Scan(&n))
	return n
}

// settle waits until everything committed is listable (see ledger.Settle).
func settle(t *testing.T, env map[string]string) {
	t.Helper()
	l, err := ledger.Open(context.Background(), env["DATABASE_URL"])
	require.NoError(t, err)
	defer l.Close()
	require.NoError(t, l.Settle(context.Background()))
}

func spanFrom(t *testing.T, js string) span.Span {
	t.Helper()
	s, err := span.Decode(strings.NewReader(js))
	require.NoError(t, err)
	return s[0]
}
