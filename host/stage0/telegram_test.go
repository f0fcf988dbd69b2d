package stage0

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/sandbox"
)

// telegramManifest is a manifest with one valid bot, as JSON to edit.
func telegramManifest() map[string]any {
	return map[string]any{
		"http_allowlist":   []any{"https://api.telegram.org/"},
		"provider_secrets": []any{"SUPPORT_BOT_TOKEN"},
		"telegram": map[string]any{"bots": map[string]any{"support": map[string]any{
			"tenant": "acme", "user": "telegram:support", "secret_env": "SUPPORT_WEBHOOK_SECRET",
			"token_env": "SUPPORT_BOT_TOKEN", "family": "faq_answerer",
		}}},
	}
}

func parse(t *testing.T, meta map[string]any) (*Manifest, error) {
	t.Helper()
	b, err := json.Marshal(meta)
	require.NoError(t, err)
	return ParseManifest(b)
}

// A valid binding parses (api_base defaulted); every broken field is
// refused with an error naming it.
func TestTelegramManifestCheck(t *testing.T) {
	t.Parallel()
	m, err := parse(t, telegramManifest())
	require.NoError(t, err)
	bot := m.Telegram.Bots["support"]
	require.Equal(t, "https://api.telegram.org/bot{auth}/sendMessage", bot.SendURL())
	require.Equal(t, []string{"acme"}, m.TelegramTenants())

	bot1 := func(meta map[string]any) map[string]any {
		return meta["telegram"].(map[string]any)["bots"].(map[string]any)["support"].(map[string]any)
	}
	cases := []struct {
		name, field, reason string
		edit                func(m, bot map[string]any)
	}{
		{"no tenant", "telegram.bots.support.tenant", "required", func(_, b map[string]any) { delete(b, "tenant") }},
		{"no user", "telegram.bots.support.user", "required", func(_, b map[string]any) { delete(b, "user") }},
		{"control character in user", "telegram.bots.support.user", "control", func(_, b map[string]any) { b["user"] = "a\tb" }},
		{"no secret env", "telegram.bots.support.secret_env", "required", func(_, b map[string]any) { delete(b, "secret_env") }},
		{"bad env name", "telegram.bots.support.token_env", "not an environment variable", func(_, b map[string]any) { b["token_env"] = "1X" }},
		{"same variable", "telegram.bots.support.secret_env", "different", func(_, b map[string]any) { b["secret_env"] = "SUPPORT_BOT_TOKEN" }},
		{"token not a provider secret", "telegram.bots.support.token_env", "provider_secrets", func(m, _ map[string]any) { m["provider_secrets"] = []any{} }},
		{"webhook secret a provider secret", "telegram.bots.support.secret_env", "provider_secrets", func(m, _ map[string]any) {
			m["provider_secrets"] = []any{"SUPPORT_BOT_TOKEN", "SUPPORT_WEBHOOK_SECRET"}
		}},
		{"api host not allowed", "telegram.bots.support.api_base", "http_allowlist", func(_, b map[string]any) { b["api_base"] = "https://tg.example.com" }},
		{"api base with a query", "telegram.bots.support.api_base", "without user, query", func(_, b map[string]any) { b["api_base"] = "https://api.telegram.org/?x=1" }},
		{"api base not http", "telegram.bots.support.api_base", "http(s) URL", func(_, b map[string]any) { b["api_base"] = "ftp://api.telegram.org" }},
		{"neither answer", "telegram.bots.support.family", "required", func(_, b map[string]any) { delete(b, "family") }},
		{"both answers", "telegram.bots.support.family", "not both", func(_, b map[string]any) { b["function_id"] = "00000000-0000-4000-8000-00000000f001" }},
		{"bad family", "telegram.bots.support.family", "family name", func(_, b map[string]any) { b["family"] = "a b" }},
		{"bad function id", "telegram.bots.support.function_id", "lowercase UUID", func(_, b map[string]any) {
			delete(b, "family")
			b["function_id"] = "00000000-0000-4000-8000-00000000F001"
		}},
		{"context of a function bot", "telegram.bots.support.context", "prompt", func(_, b map[string]any) {
			delete(b, "family")
			b["function_id"], b["context"] = "00000000-0000-4000-8000-00000000f001", "x"
		}},
		{"unknown key", "telegram.bots.support", "secret_evn", func(_, b map[string]any) { b["secret_evn"] = "X" }},
		{"wrong type", "telegram.bots.support", "tenant", func(_, b map[string]any) { b["tenant"] = 7 }},
		{"unknown section key", "telegram.bot", "unknown key", func(m, _ map[string]any) { m["telegram"].(map[string]any)["bot"] = map[string]any{} }},
		{"bad bot name", "telegram.bots.a/b", "bot name", func(m, b map[string]any) {
			m["telegram"].(map[string]any)["bots"] = map[string]any{"a/b": b}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			meta := telegramManifest()
			c.edit(meta, bot1(meta))
			_, err := parse(t, meta)
			var fe *ManifestError
			require.True(t, errors.As(err, &fe), "%v", err)
			require.Equal(t, c.field, fe.Field, "%v", err)
			require.Contains(t, fe.Reason, c.reason)
		})
	}
	// No section, an empty one: nothing bound.
	m, err = parse(t, map[string]any{"telegram": map[string]any{"bots": map[string]any{}}})
	require.NoError(t, err)
	require.Empty(t, m.TelegramTenants())
	m, err = ParseManifest(nil)
	require.NoError(t, err)
	require.Empty(t, m.Telegram.Bots)
}

// tokenServer is a stand-in that answers 200 only on /bot<token>/x and
// echoes the request's path and the Authorization header.
func tokenServer(t *testing.T, token string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/bot"+token+"/x" {
			http.Error(w, "wrong path "+r.URL.Path, http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, "path "+r.URL.Path+" auth "+r.Header.Get("Authorization"))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// auth_in path: the host puts the secret where the placeholder is, the
// guest never sees it (answers, headers and errors of every kind are
// redacted, the URL an error names is the guest's), and a secret cannot
// take the request out of the allowlist. The bearer default is unchanged.
func TestHTTPSecretInPath(t *testing.T) {
	const token = "123456:AAH-secret_token-for-the-path"
	t.Setenv("LOGLINE_TEST_PATH_TOKEN", token)
	t.Setenv("LOGLINE_TEST_SLASH_TOKEN", "../../admin")
	srv := tokenServer(t, token)
	// A port nothing listens on, for a connection error that quotes the URL.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := "http://" + ln.Addr().String()
	require.NoError(t, ln.Close())
	c := &kernelCaps{m: &Manifest{HTTPAllowlist: []string{srv.URL + "/", dead + "/", "http://127.0.0.2:1/bot"},
		ProviderSecrets: []string{"LOGLINE_TEST_PATH_TOKEN", "LOGLINE_TEST_SLASH_TOKEN"}}}
	ctx := context.Background()
	call := func(req abi.HTTPRequest) (abi.HTTPResponse, *abi.Error) {
		resp, err := c.HTTP(ctx, req)
		if err == nil {
			return resp, nil
		}
		var ce *sandbox.CallError
		require.True(t, errors.As(err, &ce), "%T %v", err, err)
		require.NotContains(t, ce.Error(), token)
		return resp, &abi.Error{Code: abi.ErrName(ce.Code), Message: ce.Message}
	}

	resp, e := call(abi.HTTPRequest{Method: "POST", URL: srv.URL + "/bot{auth}/x", AuthEnv: "LOGLINE_TEST_PATH_TOKEN", AuthIn: abi.AuthInPath})
	require.Nil(t, e)
	require.Equal(t, 200, resp.Status)
	require.Equal(t, "path /bot[redacted]/x auth ", resp.Body, "the path carried the token, no bearer header, the echo redacted")

	// The default is still the bearer header.
	resp, e = call(abi.HTTPRequest{URL: srv.URL + "/other", AuthEnv: "LOGLINE_TEST_PATH_TOKEN"})
	require.Nil(t, e)
	require.Equal(t, 401, resp.Status)
	require.Equal(t, "wrong path /other\n", resp.Body)
	resp, e = call(abi.HTTPRequest{URL: srv.URL + "/bot" + "{auth}/x", AuthEnv: "LOGLINE_TEST_PATH_TOKEN", AuthIn: abi.AuthInHeader})
	require.Nil(t, e)
	require.Equal(t, 401, resp.Status, "auth_in header leaves the placeholder alone")

	// A connection error quotes the URL: the guest's, with the placeholder.
	_, e = call(abi.HTTPRequest{Method: "POST", URL: dead + "/bot{auth}/sendMessage", AuthEnv: "LOGLINE_TEST_PATH_TOKEN", AuthIn: abi.AuthInPath})
	require.NotNil(t, e)
	require.Equal(t, "failed", e.Code)
	require.Contains(t, e.Message, dead+"/bot{auth}/sendMessage")

	for _, bad := range []struct {
		req        abi.HTTPRequest
		code, what string
	}{
		{abi.HTTPRequest{URL: srv.URL + "/bot/x", AuthEnv: "LOGLINE_TEST_PATH_TOKEN", AuthIn: abi.AuthInPath}, "invalid", "exactly one {auth}"},
		{abi.HTTPRequest{URL: srv.URL + "/{auth}/{auth}", AuthEnv: "LOGLINE_TEST_PATH_TOKEN", AuthIn: abi.AuthInPath}, "invalid", "exactly one"},
		{abi.HTTPRequest{URL: srv.URL + "/x?t={auth}", AuthEnv: "LOGLINE_TEST_PATH_TOKEN", AuthIn: abi.AuthInPath}, "invalid", "path"},
		{abi.HTTPRequest{URL: srv.URL + "/x#{auth}", AuthEnv: "LOGLINE_TEST_PATH_TOKEN", AuthIn: abi.AuthInPath}, "invalid", "path"},
		{abi.HTTPRequest{URL: srv.URL + "/bot{auth}/x", AuthIn: abi.AuthInPath}, "invalid", "needs auth_env"},
		{abi.HTTPRequest{URL: srv.URL + "/bot{auth}/x", AuthEnv: "LOGLINE_TEST_PATH_TOKEN", AuthIn: "query"}, "invalid", "auth_in"},
		{abi.HTTPRequest{URL: srv.URL + "/bot{auth}/x", AuthEnv: "HOME", AuthIn: abi.AuthInPath}, "capability_denied", "provider_secrets"},
		// A secret that would climb out of the allowed prefix, as a whole
		// segment or escaped ("..%2F.." decodes to segments a server
		// resolves), is refused.
		{abi.HTTPRequest{URL: "http://127.0.0.2:1/bot/{auth}", AuthEnv: "LOGLINE_TEST_SLASH_TOKEN", AuthIn: abi.AuthInPath}, "capability_denied", "with the secret in its path"},
	} {
		_, e := call(bad.req)
		require.NotNil(t, e, "%+v", bad.req)
		require.Equal(t, bad.code, e.Code, "%v", e)
		require.Contains(t, e.Message, bad.what)
	}
	c.m.HTTPAllowlist = append(c.m.HTTPAllowlist, "http://127.0.0.3:1/a/b")
	t.Setenv("LOGLINE_TEST_SLASH_TOKEN", "..")
	_, e = call(abi.HTTPRequest{URL: "http://127.0.0.3:1/a/b/{auth}/c", AuthEnv: "LOGLINE_TEST_SLASH_TOKEN", AuthIn: abi.AuthInPath})
	require.NotNil(t, e)
	require.Equal(t, "capability_denied", e.Code, "a secret of .. as a whole segment would climb out of /a/b: %v", e)
	require.Contains(t, e.Message, "with the secret in its path")
}

// The redactor removes every form a secret travels in.
func TestRedactor(t *testing.T) {
	t.Parallel()
	hide := redactor("a b/c")
	require.Equal(t, "x [redacted] [redacted] [redacted] y", hide("x a b/c a%20b%2Fc a+b%2Fc y"))
	require.Equal(t, "same", redactor("")("same"))
}
