package main

import (
	"encoding/json"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/span"
)

// call makes one API request and returns the status and body.
func call(t testing.TB, method, url, token, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(raw)
}

func readDevInfo(t testing.TB, data string) devInfo {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(data, "dev.json"))
	require.NoError(t, err)
	var info devInfo
	require.NoError(t, json.Unmarshal(raw, &info))
	return info
}

// `logline dev` serves the API with the token it printed and wrote, and
// Ctrl-C stops it cleanly.
func TestDevServesTheAPI(t *testing.T) {
	t.Parallel()
	url := testPG.TestDatabase(t, "devapi")
	data := t.TempDir()
	_, stop := startDev(t, map[string]string{"DATABASE_URL": url}, "--data", data)
	info := readDevInfo(t, data)
	require.Equal(t, url, info.DatabaseURL)
	require.Equal(t, "acme", info.Tenant)
	require.Equal(t, "alice", info.User)
	require.Regexp(t, `^http://127\.0\.0\.1:\d+$`, info.URL)
	require.NotEmpty(t, info.Token)

	// Ready once its stream listener is connected, a moment after start.
	deadline := time.Now().Add(10 * time.Second)
	code, body := call(t, http.MethodGet, info.URL+"/readyz", "", "")
	for code != http.StatusOK && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		code, body = call(t, http.MethodGet, info.URL+"/readyz", "", "")
	}
	require.Equal(t, http.StatusOK, code, body)
	code, body = call(t, http.MethodPost, info.URL+"/api/spans", info.Token, okSpan)
	require.Equal(t, http.StatusCreated, code, body)
	require.Contains(t, body, `"tenant_id":"acme"`)
	require.Contains(t, body, `"owner_id":"alice"`)
	code, _ = call(t, http.MethodGet, info.URL+"/api/spans", "", "")
	require.Equal(t, http.StatusUnauthorized, code)

	require.Equal(t, 0, stop())
	_, err := net.DialTimeout("tcp", strings.TrimPrefix(info.URL, "http://"), time.Second)
	require.Error(t, err, "the API stopped with dev")
}

func TestDevRefusesABusyPort(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	url := testPG.TestDatabase(t, "devbusy")
	fresh := filepath.Join(t.TempDir(), "fresh")
	r := cli(t, map[string]string{"DATABASE_URL": url}, "", "dev", "--data", fresh, "--addr", ln.Addr().String())
	require.Equal(t, exitUsage, r.code, r.err)
	require.Contains(t, r.err, "--addr")
	require.NoDirExists(t, fresh, "a failed first start leaves no data directory behind")
}

var servingLine = regexp.MustCompile(`(?m)^serving (http://\S+) `)

func TestServeAndTokens(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "node.key")
	require.Equal(t, 0, cli(t, nil, "", "keys", "gen", "--out", key).code)
	other := filepath.Join(dir, "other.key")
	require.Equal(t, 0, cli(t, nil, "", "keys", "gen", "--out", other).code)
	env["LOGLINE_KEY_FILE"] = key

	out, _, stop := startCmd(t, env, servingLine, "serve", "--addr", "127.0.0.1:0")
	base := servingLine.FindStringSubmatch(out.String())[1]

	// A token from the node key acts as its principal.
	r := cli(t, env, "", "token", "create", "--tenant", "globex", "--user", "bob")
	require.Equal(t, 0, r.code, r.err)
	tok := strings.TrimSpace(r.out)
	code, body := call(t, http.MethodPost, base+"/api/spans", tok, okSpan)
	require.Equal(t, http.StatusCreated, code, body)
	require.Contains(t, body, `"tenant_id":"globex"`)
	require.Contains(t, body, `"owner_id":"bob"`)
	require.Contains(t, body, `"public_key":"`, "sealed with the node key")

	// Another key's token, an expired one: 401.
	r = cli(t, env, "", "token", "create", "--key", other, "--tenant", "globex", "--user", "bob")
	require.Equal(t, 0, r.code, r.err)
	code, _ = call(t, http.MethodGet, base+"/api/spans", strings.TrimSpace(r.out), "")
	require.Equal(t, http.StatusUnauthorized, code)
	r = cli(t, env, "", "token", "create", "--ttl", "1s")
	require.Equal(t, 0, r.code, r.err)
	short := strings.TrimSpace(r.out)
	code, _ = call(t, http.MethodGet, base+"/api/spans", short, "")
	require.Equal(t, http.StatusOK, code)
	time.Sleep(2100 * time.Millisecond)
	code, _ = call(t, http.MethodGet, base+"/api/spans", short, "")
	require.Equal(t, http.StatusUnauthorized, code)

	require.Equal(t, 0, stop())
}

func TestTokenCreateUsage(t *testing.T) {
	t.Parallel()
	key := filepath.Join(t.TempDir(), "k")
	require.Equal(t, 0, cli(t, nil, "", "keys", "gen", "--out", key).code)
	for name, args := range map[string][]string{
		"no key":       {"token", "create", "--tenant", "t", "--user", "u"},
		"no principal": {"token", "create", "--key", key},
		"bad ttl":      {"token", "create", "--key", key, "--tenant", "t", "--user", "u", "--ttl", "-1h"},
		"missing key":  {"token", "create", "--key", key + ".nope", "--tenant", "t", "--user", "u"},
		"no sub":       {"token"},
	} {
		r := cli(t, nil, "", args...)
		require.Equal(t, exitUsage, r.code, "%s: %s", name, r.err)
	}
	r := cli(t, map[string]string{"LOGLINE_KEY_FILE": key}, "", "token", "create", "--tenant", "t", "--user", "u", "--ttl", "1h", "--json")
	require.Equal(t, 0, r.code, r.err)
	var out map[string]string
	require.NoError(t, json.Unmarshal([]byte(r.out), &out))
	require.Equal(t, "t", out["tenant"])
	require.Equal(t, "u", out["user"])
	require.Len(t, strings.Split(out["token"], "."), 3)
	exp, err := time.Parse(time.RFC3339, out["expires_at"])
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(time.Hour), exp, 5*time.Second)
}

func TestServeUsage(t *testing.T) {
	t.Parallel()
	r := cli(t, nil, "", "serve", "--addr", "127.0.0.1:0")
	require.Equal(t, exitUsage, r.code, "no database: %s", r.err)
	env := newEnv(t)
	r = cli(t, env, "", "serve", "--addr", "127.0.0.1:0", "--key", "/nonexistent")
	require.Equal(t, exitUsage, r.code, r.err)
	r = cli(t, env, "", "serve", "--addr", "not an address")
	require.Equal(t, exitUsage, r.code, r.err)
}

// The host refuses to start when its node key is one the manifest gives
// authority: it seals every unsigned span with it.
func TestServeRefusesANodeKeyWithAuthority(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	key := filepath.Join(t.TempDir(), "one.key")
	require.Equal(t, 0, cli(t, nil, "", "keys", "gen", "--out", key).code)
	k, err := span.LoadKey(key)
	require.NoError(t, err)
	r := cli(t, map[string]string{"DATABASE_URL": env["DATABASE_URL"]}, "", "seed", "--key", key)
	require.Equal(t, 0, r.code, r.err)
	env["LOGLINE_KEY_FILE"] = key
	r = cli(t, env, "", "serve", "--addr", "127.0.0.1:0")
	require.Equal(t, exitUsage, r.code, r.err)
	require.Contains(t, r.err, "refusing to start")
	require.Contains(t, r.err, k.PublicHex())
	require.Contains(t, r.err, "trusted_keys")
}

// --log-format json logs every request as one JSON object (never the
// token); a bad --log-level or --log-format is refused before anything
// starts, naming the flag.
func TestServeLogFlags(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	key := filepath.Join(t.TempDir(), "node.key")
	require.Equal(t, 0, cli(t, nil, "", "keys", "gen", "--out", key).code)
	env["LOGLINE_KEY_FILE"] = key
	for flag, args := range map[string][]string{
		"--log-level":  {"serve", "--addr", "127.0.0.1:0", "--log-level", "loud"},
		"--log-format": {"serve", "--addr", "127.0.0.1:0", "--log-format", "xml"},
	} {
		r := cli(t, env, "", args...)
		require.Equal(t, exitUsage, r.code, r.err)
		require.Contains(t, r.err, flag)
	}
	out, errOut, _, stop := startCmdErr(t, env, servingLine, "serve", "--addr", "127.0.0.1:0", "--log-format", "json", "--no-engine")
	base := servingLine.FindStringSubmatch(out.String())[1]
	r := cli(t, env, "", "token", "create", "--tenant", "globex", "--user", "bob")
	require.Equal(t, 0, r.code, r.err)
	tok := strings.TrimSpace(r.out)
	code, _ := call(t, http.MethodGet, base+"/api/spans", tok, "")
	require.Equal(t, http.StatusOK, code)
	var line map[string]any
	deadline := time.Now().Add(30 * time.Second)
	for found := false; !found; {
		require.True(t, time.Now().Before(deadline), "no JSON request log line in %s", errOut.String())
		time.Sleep(20 * time.Millisecond)
		found = func() bool {
			for _, l := range strings.Split(errOut.String(), "\n") {
				if json.Unmarshal([]byte(l), &line) == nil && line["msg"] == "http request" && line["route"] == "/api/spans" {
					return true
				}
			}
			return false
		}()
	}
	require.Equal(t, "globex", line["tenant"])
	require.Equal(t, "bob", line["user"])
	require.EqualValues(t, 200, line["status"])
	require.NotContains(t, errOut.String(), tok)
	require.Equal(t, 0, stop())
}

// --notify off (or LOGLINE_NOTIFY=off) serves without LISTEN: the server
// says so in its log and /readyz, and a bad --notify, LOGLINE_NOTIFY or
// --poll-interval is refused before anything starts, naming what was wrong.
func TestServeNotifyOff(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	for want, c := range map[string]struct {
		env  string
		args []string
	}{
		"--notify \"maybe\"":                   {"", []string{"--notify", "maybe"}},
		"--notify (from LOGLINE_NOTIFY) \"0\"": {"0", nil},
		"--poll-interval 1ns":                  {"", []string{"--poll-interval", "1ns"}},
	} {
		e := maps.Clone(env)
		if c.env != "" {
			e["LOGLINE_NOTIFY"] = c.env
		}
		r := cli(t, e, "", append([]string{"serve", "--addr", "127.0.0.1:0", "--no-engine"}, c.args...)...)
		require.Equal(t, exitUsage, r.code, r.err)
		require.Contains(t, r.err, want)
	}
	e := maps.Clone(env)
	e["LOGLINE_NOTIFY"] = "off"
	out, errOut, _, stop := startCmdErr(t, e, servingLine, "serve", "--addr", "127.0.0.1:0", "--no-engine", "--poll-interval", "200ms")
	base := servingLine.FindStringSubmatch(out.String())[1]
	require.Eventually(t, func() bool {
		code, body := call(t, http.MethodGet, base+"/readyz", "", "")
		return code == http.StatusOK && strings.Contains(body, "polling")
	}, 30*time.Second, 20*time.Millisecond, "/readyz says it is ready, and polls")
	require.Eventually(t, func() bool { return strings.Contains(errOut.String(), "notifications off; polling the ledger") },
		30*time.Second, 20*time.Millisecond, "the log says it polls: %s", errOut.String())
	require.Equal(t, 0, stop())
}
