package main

import (
	"encoding/json"
	"net"
	"os/exec"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// jsonError is the object a failing command prints on stderr with --json.
type jsonError struct {
	Error struct {
		Code        string   `json:"code"`
		Message     string   `json:"message"`
		Field       string   `json:"field"`
		Span        int      `json:"span"`
		Line        int      `json:"line"`
		Suggestions []string `json:"suggestions"`
	} `json:"error"`
}

// parseJSONError requires stderr to be exactly one JSON error object.
func parseJSONError(t *testing.T, r result) jsonError {
	t.Helper()
	require.Equal(t, 1, strings.Count(r.err, "\n"), "one line on stderr: %q", r.err)
	var e jsonError
	dec := json.NewDecoder(strings.NewReader(r.err))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&e), r.err)
	require.NotEmpty(t, e.Error.Code, r.err)
	require.NotEmpty(t, e.Error.Message, r.err)
	return e
}

func TestVersion(t *testing.T) {
	t.Parallel()
	want := versionOf(debug.ReadBuildInfo())
	r := cli(t, nil, "", "version")
	require.Equal(t, 0, r.code, r.err)
	require.Empty(t, r.err)
	require.Regexp(t, `^logline \S+\ncommit   \S+( \(modified\))?\ngo       go\S+ \S+/\S+\nabi      1\n$`, r.out)
	require.True(t, strings.HasPrefix(r.out, "logline "+want.Version+"\n"), r.out)
	require.Contains(t, r.out, "go       "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+"\n")
	flag := cli(t, nil, "", "--version")
	require.Equal(t, 0, flag.code, flag.err)
	require.Equal(t, r.out, flag.out, "--version prints what version prints")

	for _, args := range [][]string{{"version", "--json"}, {"--version", "--json"}, {"--json", "--version"}} {
		js := cli(t, nil, "", args...)
		require.Equal(t, 0, js.code, "%v: %s", args, js.err)
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(js.out), &v), js.out)
		require.Equal(t, want.Version, v["version"], args)
		require.Equal(t, want.Commit, v["commit"], args)
		require.Equal(t, want.Modified, v["modified"], args)
		require.Equal(t, runtime.Version(), v["go"], args)
		require.Equal(t, runtime.GOOS+"/"+runtime.GOARCH, v["platform"], args)
		require.EqualValues(t, abi.Version, v["abi_version"], args)
	}
	r = cli(t, nil, "", "version", "extra")
	require.Equal(t, exitUsage, r.code)
}

func TestVersionOfBuildInfo(t *testing.T) {
	t.Parallel()
	v := versionOf(&debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Path: "github.com/logline/logline", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123abcd"},
			{Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"}}}, true)
	require.Equal(t, versionInfo{Version: "v1.2.3", Commit: "0123abcd", CommitTime: "2026-01-02T03:04:05Z", Modified: true,
		Go: "go1.99.1", Platform: runtime.GOOS + "/" + runtime.GOARCH, ABI: abi.Version}, v)

	v = versionOf(&debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "false"}}}, true)
	require.Equal(t, "(devel)", v.Version)
	require.Equal(t, "0123abcd", v.Commit)
	require.False(t, v.Modified)
	require.Equal(t, runtime.Version(), v.Go)

	for _, v := range []versionInfo{versionOf(nil, false), versionOf(&debug.BuildInfo{}, true)} {
		require.Equal(t, "(devel)", v.Version, "unknown")
		require.Empty(t, v.Commit)
		require.Equal(t, abi.Version, v.ABI)
	}
}

func TestUnknownCommandSuggestsTheNearest(t *testing.T) {
	t.Parallel()
	r := cli(t, nil, "", "spnas")
	require.Equal(t, exitUsage, r.code)
	require.Empty(t, r.out)
	require.Equal(t, "logline: unknown command \"spnas\" for \"logline\" (see logline --help)\nDid you mean this? spans\n", r.err)

	r = cli(t, nil, "", "spans", "lsit")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.err, `unknown command "lsit" for "logline spans"`)
	require.Contains(t, r.err, "Did you mean this? list\n")

	r = cli(t, nil, "", "verfiy", "--all")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.err, "Did you mean this? verify\n")

	r = cli(t, nil, "", "zzzzzzzz")
	require.Equal(t, exitUsage, r.code)
	require.NotContains(t, r.err, "Did you mean")

	r = cli(t, nil, "", "--json", "spnas")
	require.Equal(t, exitUsage, r.code)
	e := parseJSONError(t, r)
	require.Equal(t, "unknown_command", e.Error.Code)
	require.Equal(t, []string{"spans"}, e.Error.Suggestions)
	require.Empty(t, e.Error.Field)

	// No command at all is the help, not an error.
	r = cli(t, nil, "")
	require.Equal(t, 0, r.code, r.err)
	require.Contains(t, r.out, "Available Commands:")
}

// --json applies to errors: one object on stderr, the exit code kept.
func TestJSONErrors(t *testing.T) {
	t.Parallel()
	principal := map[string]string{"LOGLINE_TENANT": "acme", "LOGLINE_USER": "alice"}
	cases := []struct {
		name  string
		env   map[string]string
		in    string
		args  []string
		code  int
		ecode string
		field string
		msg   string
	}{
		{"bad limit", principal, "", []string{"spans", "list", "--limit", "0", "--json"}, exitUsage, "usage", "--limit", "1 to 1000"},
		{"flag parse error, --json first", principal, "", []string{"--json", "spans", "list", "--limit", "x"}, exitUsage, "usage", "--limit", `"x"`},
		{"flag parse error, --json after it", principal, "", []string{"spans", "list", "--limit", "x", "--json"}, exitUsage, "usage", "--limit", `"x"`},
		{"unknown flag", nil, "", []string{"spans", "list", "--bogus", "--json"}, exitUsage, "usage", "--bogus", "--bogus"},
		{"missing flag", nil, okSpan, []string{"spans", "sign", "--json"}, exitUsage, "usage", "--key", "--key"},
		{"no principal", nil, "", []string{"spans", "list", "--json"}, exitUsage, "usage", "--tenant", "principal"},
		{"no database", principal, okSpan, []string{"spans", "append", "--json"}, exitUsage, "usage", "--database-url", "DATABASE_URL"},
		{"bad span", principal, `{"entity_type":"function","who":"a","this":"f","colour":"red"}`,
			[]string{"spans", "append", "--json"}, exitUsage, "invalid_input", "colour", "colour"},
		{"no args allowed", nil, "", []string{"migrate", "x", "--json=true"}, exitUsage, "usage", "", "no arguments"},
	}
	for _, c := range cases {
		r := cli(t, c.env, c.in, c.args...)
		require.Equal(t, c.code, r.code, "%s: %s", c.name, r.err)
		require.Empty(t, r.out, c.name)
		e := parseJSONError(t, r)
		require.Equal(t, c.ecode, e.Error.Code, c.name)
		require.Equal(t, c.field, e.Error.Field, c.name)
		require.Contains(t, e.Error.Message, c.msg, c.name)
		require.NotContains(t, e.Error.Message, "logline:", c.name)
	}
	r := cli(t, principal, "{\n"+`"entity_type":"function","who":"a","this":"f","colour":"red"}`, "spans", "append", "--json")
	e := parseJSONError(t, r)
	require.Equal(t, 1, e.Error.Span)
	require.Equal(t, 2, e.Error.Line, "the line of the field's key")

	// Without --json (or with --json=false), errors stay one human line.
	for _, args := range [][]string{{"spans", "list", "--limit", "0"}, {"spans", "list", "--limit", "0", "--json=false"}} {
		r := cli(t, principal, "", args...)
		require.Equal(t, exitUsage, r.code)
		require.Equal(t, "logline: --limit 0: want 1 to 1000 (default 100)\n", r.err, args)
	}
}

func TestJSONErrorsKeepExitCodes(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	r := cli(t, env, "", "spans", "get", "00000000-0000-4000-8000-00000000beef", "--json")
	require.Equal(t, exitFailed, r.code, r.err)
	require.Empty(t, r.out)
	e := parseJSONError(t, r)
	require.Equal(t, "not_found", e.Error.Code)

	r = cli(t, env, "", "verify", "00000000-0000-4000-8000-00000000beef", "--json")
	require.Equal(t, exitFailed, r.code, r.err)
	require.Equal(t, "check_failed", parseJSONError(t, r).Error.Code)
	var rep map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.out), &rep), "the report is still on stdout")
	require.Equal(t, false, rep["ok"])
	require.EqualValues(t, 0, rep["checked"])
}

// hintArgs turns the "more:" line of a listing into the arguments that
// list the next page.
func hintArgs(t *testing.T, out string) []string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^more: (.*)$`).FindStringSubmatch(out)
	require.NotNil(t, m, "a full page ends with a more: line: %s", out)
	return append([]string{"spans", "list"}, strings.Fields(m[1])...)
}

func listedIDs(out string) []string {
	var ids []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && !strings.HasPrefix(line, "more:") {
			ids = append(ids, f[1])
		}
	}
	return ids
}

type listPage struct {
	Items []struct {
		Cursor string    `json:"cursor"`
		Span   span.Span `json:"span"`
	} `json:"items"`
	Next string `json:"next"`
	More bool   `json:"more"`
}

func TestSpansListPaging(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	const note = `{"entity_type":"note","who":"alice","this":"note"}`
	r := cli(t, env, strings.Repeat(note+"\n", ledger.DefaultLimit+1), "spans", "append")
	require.Equal(t, 0, r.code, r.err)
	notes, err := span.Decode(strings.NewReader(r.out))
	require.NoError(t, err)
	require.Len(t, notes, ledger.DefaultLimit+1)
	settle(t, env)
	n := len(notes)

	// The default page is the API's: DefaultLimit, then more.
	js := cli(t, env, "", "spans", "list", "--entity-type", "note", "--json")
	require.Equal(t, 0, js.code, js.err)
	var page listPage
	require.NoError(t, json.Unmarshal([]byte(js.out), &page))
	require.Len(t, page.Items, ledger.DefaultLimit)
	require.True(t, page.More)
	js = cli(t, env, "", "spans", "list", "--entity-type", "note", "--json", "--cursor", page.Next)
	require.Equal(t, 0, js.code, js.err)
	page = listPage{}
	require.NoError(t, json.Unmarshal([]byte(js.out), &page))
	require.Len(t, page.Items, 1)
	require.False(t, page.More)
	require.Equal(t, notes[n-1].ID, page.Items[0].Span.ID)

	// Oldest first: the hint repeats the filters and the page size.
	r = cli(t, env, "", "spans", "list", "--entity-type", "note", "--limit", "2")
	require.Equal(t, 0, r.code, r.err)
	require.Equal(t, []string{notes[0].ID, notes[1].ID}, listedIDs(r.out))
	require.Regexp(t, `(?m)^more: --entity-type note --limit 2 --cursor \S+$`, r.out)
	r = cli(t, env, "", hintArgs(t, r.out)...)
	require.Equal(t, 0, r.code, r.err)
	require.Equal(t, []string{notes[2].ID, notes[3].ID}, listedIDs(r.out))

	// Newest first: the hint keeps the direction.
	r = cli(t, env, "", "spans", "list", "--entity-type", "note", "--limit", "2", "--newest")
	require.Equal(t, 0, r.code, r.err)
	require.Equal(t, []string{notes[n-1].ID, notes[n-2].ID}, listedIDs(r.out))
	require.Regexp(t, `(?m)^more: --entity-type note --limit 2 --newest --cursor \S+$`, r.out)
	r = cli(t, env, "", hintArgs(t, r.out)...)
	require.Equal(t, 0, r.code, r.err)
	require.Equal(t, []string{notes[n-3].ID, notes[n-4].ID}, listedIDs(r.out))
	r = cli(t, env, "", hintArgs(t, r.out)...)
	require.Equal(t, 0, r.code, r.err)
	require.Equal(t, []string{notes[n-5].ID, notes[n-6].ID}, listedIDs(r.out))

	// --after is the deprecated name of --cursor: it still works, warns on
	// stderr and keeps stdout JSON.
	first := cli(t, env, "", "spans", "list", "--entity-type", "note", "--limit", "1", "--json")
	require.NoError(t, json.Unmarshal([]byte(first.out), &page))
	viaCursor := cli(t, env, "", "spans", "list", "--entity-type", "note", "--limit", "1", "--json", "--cursor", page.Next)
	viaAfter := cli(t, env, "", "spans", "list", "--entity-type", "note", "--limit", "1", "--json", "--after", page.Next)
	require.Equal(t, 0, viaAfter.code, viaAfter.err)
	require.Equal(t, viaCursor.out, viaAfter.out)
	require.Contains(t, viaAfter.out, notes[1].ID)
	require.Empty(t, viaCursor.err)
	require.Equal(t, "Flag --after has been deprecated, use --cursor\n", viaAfter.err)
	r = cli(t, env, "", "spans", "list", "--cursor", page.Next, "--after", "other", "--json")
	require.Equal(t, exitUsage, r.code)
	warning, rest, _ := strings.Cut(r.err, "\n")
	require.Equal(t, "Flag --after has been deprecated, use --cursor", warning)
	require.Equal(t, "--cursor", parseJSONError(t, result{code: r.code, err: rest}).Error.Field)
	require.NotContains(t, cli(t, env, "", "spans", "list", "--help").out, "--after", "hidden from help")

	// Limits are the API's: 1 to MaxLimit.
	for _, bad := range []string{"0", "-1", "1001"} {
		r := cli(t, env, "", "spans", "list", "--limit", bad)
		require.Equal(t, exitUsage, r.code, bad)
		require.Contains(t, r.err, "--limit "+bad+": want 1 to 1000", bad)
	}
	r = cli(t, env, "", "spans", "list", "--entity-type", "note", "--limit", "1000", "--json")
	require.Equal(t, 0, r.code, r.err)
	require.NoError(t, json.Unmarshal([]byte(r.out), &page))
	require.Len(t, page.Items, n)
	require.False(t, page.More)
}

// --addr defaults to $LOGLINE_ADDR for serve and dev; the flag wins.
func TestAddrFromEnv(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	env := newEnv(t)

	env["LOGLINE_ADDR"] = "127.0.0.1:0"
	out, _, stop := startCmd(t, env, servingLine, "serve")
	require.Regexp(t, `^http://127\.0\.0\.1:\d+$`, servingLine.FindStringSubmatch(out.String())[1], "not the default :8080")
	require.Equal(t, 0, stop())

	env["LOGLINE_ADDR"] = busy.Addr().String()
	out, _, stop = startCmd(t, env, servingLine, "serve", "--addr", "127.0.0.1:0")
	require.Regexp(t, `^http://127\.0\.0\.1:\d+$`, servingLine.FindStringSubmatch(out.String())[1])
	require.Equal(t, 0, stop(), "the flag wins over LOGLINE_ADDR")

	r := cli(t, env, "", "serve", "--json")
	require.Equal(t, exitUsage, r.code, r.err)
	e := parseJSONError(t, r)
	require.Equal(t, "--addr", e.Error.Field)
	require.Contains(t, e.Error.Message, "LOGLINE_ADDR")
	require.Contains(t, e.Error.Message, busy.Addr().String())

	dev := map[string]string{"DATABASE_URL": env["DATABASE_URL"], "LOGLINE_ADDR": busy.Addr().String()}
	r = cli(t, dev, "", "dev", "--data", t.TempDir())
	require.Equal(t, exitUsage, r.code, r.err)
	require.Contains(t, r.err, "LOGLINE_ADDR")
	dev["LOGLINE_ADDR"] = "127.0.0.1:0"
	r = cli(t, dev, "", "dev", "--data", t.TempDir(), "--addr", busy.Addr().String())
	require.Equal(t, exitUsage, r.code, r.err)
	require.Contains(t, r.err, "--addr: ")
	require.NotContains(t, r.err, "LOGLINE_ADDR", "the flag wins")
}

// `make run ADDR=…` passes --addr to logline dev.
func TestMakeRunTakesADDR(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	out, err := exec.Command("make", "-s", "-n", "-C", "../..", "run", "ADDR=127.0.0.1:9999").CombinedOutput()
	require.NoError(t, err, string(out))
	require.Regexp(t, `(?m)^bin/logline dev --addr '127\.0\.0\.1:9999'$`, string(out))
	out, err = exec.Command("make", "-s", "-n", "-C", "../..", "run").CombinedOutput()
	require.NoError(t, err, string(out))
	require.Regexp(t, `(?m)^bin/logline dev\s*$`, string(out))
}

// The engine's bookkeeping is left out of listings unless asked for
// (--all-types, or --entity-type naming it); --exclude-type leaves out
// more, and the continuation hint repeats both.
func TestSpansListHidesBookkeeping(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	in := `{"entity_type":"note","who":"alice","this":"note"}` + "\n" +
		`{"entity_type":"policy_cursor","who":"alice","this":"cursor"}` + "\n" +
		`{"entity_type":"metric","who":"alice","this":"metric"}` + "\n"
	r := cli(t, env, in, "spans", "append")
	require.Equal(t, 0, r.code, r.err)
	ids, err := span.Decode(strings.NewReader(r.out))
	require.NoError(t, err)
	settle(t, env)
	list := func(args ...string) []string {
		r := cli(t, env, "", append([]string{"spans", "list"}, args...)...)
		require.Equal(t, 0, r.code, r.err)
		return listedIDs(r.out)
	}
	require.Equal(t, []string{ids[0].ID, ids[2].ID}, list())
	require.Equal(t, []string{ids[0].ID, ids[1].ID, ids[2].ID}, list("--all-types"))
	require.Equal(t, []string{ids[1].ID}, list("--entity-type", "policy_cursor"))
	require.Equal(t, []string{ids[0].ID}, list("--exclude-type", "metric"))
	r = cli(t, env, "", "spans", "list", "--exclude-type", "metric", "--exclude-type", "x y", "--limit", "1")
	require.Equal(t, 0, r.code, r.err)
	require.Contains(t, r.out, "more: --exclude-type metric --exclude-type 'x y' --limit 1 --cursor ")
}

// --follow prints what is there, then each span as it commits, like
// tail -f, until stopped.
func TestSpansListFollow(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	r := cli(t, env, `{"entity_type":"note","who":"alice","this":"note","name":"first"}`, "spans", "append")
	require.Equal(t, 0, r.code, r.err)
	settle(t, env)
	out, _, stop := startCmd(t, env, regexp.MustCompile(`note .* first`), "spans", "list", "--follow")
	r = cli(t, env, `{"entity_type":"note","who":"alice","this":"note","name":"second"}`, "spans", "append")
	require.Equal(t, 0, r.code, r.err)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "second") {
		require.True(t, time.Now().Before(deadline), "the new span never showed: %s", out.String())
		time.Sleep(50 * time.Millisecond)
	}
	require.Equal(t, 1, strings.Count(out.String(), "first"), "nothing printed twice")
	require.Equal(t, 0, stop())
	r = cli(t, env, "", "spans", "list", "--follow", "--newest")
	require.Equal(t, exitUsage, r.code)
	require.Contains(t, r.err, "--follow")
}
