package api

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// The console's files: index.html with a CSP that allows no inline script
// and no other origin, its hashed assets gzipped and cached for good, and
// nothing else.
func TestConsoleAssets(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.do(t, http.MethodGet, "/", "", map[string]string{"Accept-Encoding": ""}, nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "text/html; charset=utf-8", r.header.Get("Content-Type"))
	csp := r.header.Get("Content-Security-Policy")
	require.Contains(t, csp, "script-src 'self'")
	require.Contains(t, csp, "connect-src 'self'")
	require.Contains(t, csp, "frame-ancestors 'none'")
	require.NotContains(t, csp, "unsafe-inline")
	require.Equal(t, "nosniff", r.header.Get("X-Content-Type-Options"))
	require.Equal(t, "no-cache", r.header.Get("Cache-Control"))
	require.NotContains(t, string(r.body), "<script>", "no inline script")
	refs := regexp.MustCompile(`(?:src|href)="(/assets/[^"]+)"`).FindAllStringSubmatch(string(r.body), -1)
	require.Len(t, refs, 2, "index.html loads one script and one stylesheet: %s", r.body)

	for _, ref := range refs {
		plain := b.do(t, http.MethodGet, ref[1], "", map[string]string{"Accept-Encoding": ""}, nil)
		require.Equal(t, http.StatusOK, plain.status, ref[1])
		require.Contains(t, plain.header.Get("Cache-Control"), "immutable")
		require.Empty(t, plain.header.Get("Content-Encoding"))
		// The client does not decompress what it asked for itself.
		req, err := http.NewRequest(http.MethodGet, b.url+ref[1], nil)
		require.NoError(t, err)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		require.NoError(t, err)
		gz, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, "gzip", resp.Header.Get("Content-Encoding"))
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		require.NoError(t, err)
		unz, err := io.ReadAll(zr)
		require.NoError(t, err)
		require.Equal(t, plain.body, unz)
		require.Less(t, len(gz), len(plain.body))

		etag := plain.header.Get("ETag")
		require.NotEmpty(t, etag)
		require.Equal(t, http.StatusNotModified, b.do(t, http.MethodGet, ref[1], "", map[string]string{"If-None-Match": etag}, nil).status)
	}
	for _, p := range []string{"/assets/nope.js", "/assets/../console.go", "/index.html", "/src/main.js"} {
		require.Equal(t, http.StatusNotFound, b.do(t, http.MethodGet, p, "", nil, nil).status, p)
	}
}

// A sign-in link's code is traded for its token once; a used, unknown or
// expired code is a 401 that says nothing more; nothing is written.
func TestSigninLink(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	link, err := b.srv.SigninLink(tok)
	require.NoError(t, err)
	require.Regexp(t, `^/#signin=[A-Za-z0-9_-]{43}$`, link)
	code := strings.TrimPrefix(link, "/#signin=")
	rows := b.rows(t)

	r := b.do(t, http.MethodPost, "/api/signin", "", nil, map[string]string{"code": code})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	var got signinResult
	r.json(t, &got)
	require.Equal(t, signinResult{Token: tok, Tenant: "acme", User: "alice"}, got)

	again := b.do(t, http.MethodPost, "/api/signin", "", nil, map[string]string{"code": code})
	require.Equal(t, http.StatusUnauthorized, again.status)
	unknown := b.do(t, http.MethodPost, "/api/signin", "", nil, map[string]string{"code": "x" + code[1:]})
	require.Equal(t, http.StatusUnauthorized, unknown.status)
	require.Equal(t, again.problem(t), unknown.problem(t), "a used code and an unknown one look the same")

	require.Equal(t, "code", b.do(t, http.MethodPost, "/api/signin", "", nil, `{"code":"a","code":"b"}`).problem(t).Field)
	require.Equal(t, "code", b.do(t, http.MethodPost, "/api/signin", "", nil, `{}`).problem(t).Field)
	require.Equal(t, http.StatusBadRequest, b.do(t, http.MethodPost, "/api/signin", "", nil, `{"code":"a","token":"b"}`).status)
	require.Equal(t, rows, b.rows(t), "signing in writes nothing")

	// Expired: the clock moves past the link's 15 minutes.
	link, err = b.srv.SigninLink(tok)
	require.NoError(t, err)
	b.srv.cfg.Now = func() time.Time { return time.Now().Add(signinTTL + time.Minute) }
	r = b.do(t, http.MethodPost, "/api/signin", "", nil, map[string]string{"code": strings.TrimPrefix(link, "/#signin=")})
	require.Equal(t, http.StatusUnauthorized, r.status)
}

// The console's read endpoints answer for the principal's tenant only.
func TestConsoleReads(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {
		c.Version = "v9.9.9"
		c.EngineStatus = func(tenant string) any { return []map[string]string{{"loop": "observer", "tenant": tenant}} }
	})
	alice, bob := b.token(t, "acme", "alice"), b.token(t, "other", "bob")

	var who map[string]string
	b.do(t, http.MethodGet, "/api/whoami", alice, nil, nil).json(t, &who)
	require.Equal(t, map[string]string{"tenant": "acme", "user": "alice"}, who)
	require.Equal(t, http.StatusUnauthorized, b.do(t, http.MethodGet, "/api/whoami", "", nil, nil).status)

	var st struct {
		Version, Notifications string
		ABI                    int `json:"abi_version"`
		Engine                 []map[string]string
	}
	b.do(t, http.MethodGet, "/api/status", bob, nil, nil).json(t, &st)
	require.Equal(t, "v9.9.9", st.Version)
	require.Contains(t, []string{"listening", "polling"}, st.Notifications)
	require.Equal(t, "other", st.Engine[0]["tenant"], "the engine's status is asked for the principal's tenant")

	// Executions per hour: alice's tenant's only.
	dur := int32(7)
	ex := func(p ledger.Principal, status string) {
		b.appendAs(t, p, span.Span{EntityType: "execution", Who: "t", This: "run", Status: status, DurationMs: &dur,
			Visibility: "tenant", Metadata: json.RawMessage(`{"fuel_used": 11}`)})
	}
	ex(ledger.User("acme", "alice"), "complete")
	ex(ledger.User("acme", "alice"), "error")
	ex(ledger.User("other", "bob"), "complete")
	var hourly struct {
		Hours []struct {
			Counts map[string]int64
			Fuel   int64
		}
	}
	b.do(t, http.MethodGet, "/api/metrics/hourly?hours=2", alice, nil, nil).json(t, &hourly)
	total := map[string]int64{}
	var fuel int64
	for _, h := range hourly.Hours {
		for k, n := range h.Counts {
			total[k] += n
		}
		fuel += h.Fuel
	}
	require.Equal(t, map[string]int64{"complete": 1, "error": 1}, total)
	require.Equal(t, int64(22), fuel)
	require.Equal(t, "hours", b.do(t, http.MethodGet, "/api/metrics/hourly?hours=0", alice, nil, nil).problem(t).Field)

	// Verify, a page at a time, over what the principal reads.
	for i := range 5 {
		b.appendAs(t, ledger.User("acme", "alice"), note("n"+string(rune('a'+i)), "tenant"))
	}
	type report struct {
		OK              bool
		Checked, Signed int
		Next            string
		More            bool
		Failures        []struct{ ID string }
	}
	// A page ends at the horizon of transactions still running (other
	// tests'): wait until ours are behind it.
	require.NoError(t, b.ledger.Settle(t.Context()))
	var checked int
	cursor := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 10)
		var rep report
		b.do(t, http.MethodGet, "/api/verify?limit=2&cursor="+cursor, alice, nil, nil).json(t, &rep)
		require.True(t, rep.OK, "%+v", rep)
		checked += rep.Checked
		cursor = rep.Next
		if !rep.More {
			break
		}
	}
	require.Equal(t, 7, checked, "alice's 2 executions and 5 notes, none of bob's")
	// A tampered span fails (as the superuser, triggers off).
	_, err := b.admin.Exec(t.Context(), `SET session_replication_role = replica;
		UPDATE ledger.universal_registry SET name = 'evil' WHERE name = 'nc'`)
	require.NoError(t, err)
	var rep report
	b.do(t, http.MethodGet, "/api/verify", alice, nil, nil).json(t, &rep)
	require.False(t, rep.OK)
	require.Len(t, rep.Failures, 1)
	var bobs report
	b.do(t, http.MethodGet, "/api/verify", bob, nil, nil).json(t, &bobs)
	require.True(t, bobs.OK, "bob's tenant is untouched")
	require.Equal(t, 1, bobs.Checked)

	// No manifest in this database: not found, for anyone.
	require.Equal(t, http.StatusNotFound, b.do(t, http.MethodGet, "/api/manifest", alice, nil, nil).status)

	// Prompt families: each tenant's own.
	variant := func(p ledger.Principal, family string) {
		b.appendAs(t, p, span.Span{EntityType: "prompt_variant", Who: "t", This: "variant", Visibility: "tenant",
			Metadata: json.RawMessage(`{"family":"` + family + `","template":"{{user_input}}"}`)})
	}
	variant(ledger.User("acme", "alice"), "support")
	variant(ledger.User("acme", "alice"), "support")
	variant(ledger.User("acme", "alice"), "sales")
	variant(ledger.User("other", "bob"), "secret-family")
	var fams struct{ Families []FamilyCount }
	b.do(t, http.MethodGet, "/api/prompts", alice, nil, nil).json(t, &fams)
	require.Equal(t, []FamilyCount{{"sales", 1}, {"support", 2}}, fams.Families)
	b.do(t, http.MethodGet, "/api/prompts", bob, nil, nil).json(t, &fams)
	require.Equal(t, []FamilyCount{{"secret-family", 1}}, fams.Families)
}
