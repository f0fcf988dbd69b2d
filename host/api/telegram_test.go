package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

// The webhook's bots read their secrets from these host variables (set per
// test with t.Setenv: the tests are not parallel).
const (
	tgSecretEnv = "LOGLINE_API_TEST_TG_SECRET"
	tgTokenEnv  = "LOGLINE_API_TEST_TG_TOKEN"
	tgUnsetEnv  = "LOGLINE_API_TEST_TG_NEVER_SET"
	tgSecret    = "webhook-secret_of-support-0123456789"
)

var tgBot = ledger.User("acme", "telegram:support")

// telegramManifest is a manifest binding bot "support" to acme (and
// "unset", whose secret variable the host does not have).
func telegramManifest(bots map[string]any) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"http_allowlist":   []string{"https://api.telegram.org/"},
		"provider_secrets": []string{tgTokenEnv},
		"telegram":         map[string]any{"bots": bots},
	})
	return b
}

func supportBots() map[string]any {
	bot := func(secretEnv string) map[string]any {
		return map[string]any{"tenant": "acme", "user": "telegram:support", "secret_env": secretEnv, "token_env": tgTokenEnv,
			"function_id": "00000000-0000-4000-8000-00000000f001"}
	}
	return map[string]any{"support": bot(tgSecretEnv), "unset": bot(tgUnsetEnv)}
}

// telegramBundle is a server whose manifest binds the bots, once the
// server has read it.
func telegramBundle(t *testing.T) *bundle {
	t.Helper()
	t.Setenv(tgSecretEnv, tgSecret)
	t.Setenv(tgTokenEnv, "1:never-read-by-the-api")
	b := setup(t)
	op := ledger.User("logline", "operator")
	b.appendAs(t, op, span.Span{ID: stage0.ManifestID, EntityType: "manifest", Who: "operator", This: "manifest",
		Visibility: "public", Metadata: telegramManifest(supportBots())})
	eventually(t, func() bool {
		return b.hook(t, "support", tgSecret, `{"update_id":1,"edited_message":{}}`).status == http.StatusOK
	})
	return b
}

// hook posts body to bot's webhook with secret ("" for no header).
func (b *bundle) hook(t *testing.T, bot, secret string, body any) reply {
	t.Helper()
	h := map[string]string{}
	if secret != "" {
		h[TelegramSecretHeader] = secret
	}
	return b.do(t, http.MethodPost, "/api/adapters/telegram/"+bot, "", h, body)
}

const textUpdate = `{"update_id":4200,"message":{"message_id":17,"date":1700000000,"text":"Hi <there> & \"you\"",
	"from":{"id":99,"is_bot":false,"first_name":"Ann","username":"ann","language_code":"en"},
	"chat":{"id":99,"type":"private","first_name":"Ann","username":"ann"}}}`

// A forged, absent or empty secret, an unknown bot and a bot whose secret
// the host does not have are one and the same 401, and nothing is written.
func TestTelegramWebhookRefuses(t *testing.T) {
	b := telegramBundle(t)
	before := b.rows(t)
	want := problem{}
	for i, c := range []struct{ bot, secret string }{
		{"support", "forged"},
		{"support", tgSecret + "x"},
		{"support", tgSecret[:len(tgSecret)-1]},
		{"support", ""},
		{"nobody", tgSecret},
		{"nobody", ""},
		{"unset", tgSecret},
		{"unset", ""},
		{"Support", tgSecret},
	} {
		r := b.hook(t, c.bot, c.secret, textUpdate)
		require.Equal(t, http.StatusUnauthorized, r.status, "%+v: %s", c, r.body)
		p := r.problem(t)
		p.Detail = strings.TrimSpace(p.Detail)
		if i == 0 {
			want = p
			require.Equal(t, codeUnauthorized, p.Code)
			require.Equal(t, TelegramSecretHeader, p.Field)
		}
		require.Equal(t, want, p, "%+v: the same answer, whatever was wrong", c)
	}
	// A secret too long for the Bot API is refused as a bad header.
	r := b.hook(t, "support", strings.Repeat("a", maxTelegramSecret+1), textUpdate)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, TelegramSecretHeader, r.problem(t).Field)
	require.Equal(t, before, b.rows(t), "nothing written")

	// A manifest that does not check binds nothing (fail closed); a good
	// one binds again; dropping the bot refuses its updates.
	op := ledger.User("logline", "operator")
	manifest := func(seq int32, bots map[string]any) {
		b.appendAs(t, op, span.Span{ID: stage0.ManifestID, Seq: seq, EntityType: "manifest", Who: "operator", This: "manifest",
			Visibility: "public", Metadata: telegramManifest(bots)})
	}
	bad := supportBots()
	delete(bad["support"].(map[string]any), "tenant")
	manifest(1, bad)
	eventually(t, func() bool {
		return b.hook(t, "support", tgSecret, `{"update_id":2}`).status == http.StatusUnauthorized
	})
	manifest(2, supportBots())
	eventually(t, func() bool { return b.hook(t, "support", tgSecret, `{"update_id":3}`).status == http.StatusOK })
	manifest(3, map[string]any{})
	eventually(t, func() bool {
		return b.hook(t, "support", tgSecret, `{"update_id":4}`).status == http.StatusUnauthorized
	})
	require.Equal(t, http.StatusUnauthorized, b.hook(t, "support", tgSecret, textUpdate).status)
	require.Equal(t, before+3, b.rows(t), "the manifests, and no message")
}

// A text message is appended as the bot's principal (tenant and user from
// the manifest, whatever the body says), once however often Telegram
// delivers it; other updates are acknowledged and ignored; bad bodies are
// refused naming the field, and nothing is written.
func TestTelegramWebhookRecords(t *testing.T) {
	b := telegramBundle(t)
	before := b.rows(t)

	r := b.hook(t, "support", tgSecret, textUpdate)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	var res telegramResult
	r.json(t, &res)
	id := TelegramMessageID("acme", "support", 4200)
	require.Equal(t, telegramResult{OK: true, Status: "received", SpanID: id}, res)
	require.Equal(t, before+1, b.rows(t))

	got, err := b.ledger.Latest(context.Background(), tgBot, id)
	require.NoError(t, err, "the bot's own principal reads its message")
	require.Equal(t, "telegram_message", got.EntityType)
	require.Equal(t, "received", got.Status)
	require.Equal(t, "acme", got.TenantID)
	require.Equal(t, "telegram:support", got.OwnerID)
	require.Equal(t, "telegram:support", got.Who)
	require.Equal(t, span.VisibilityPrivate, got.Visibility)
	require.NotEmpty(t, got.TraceID)
	require.JSONEq(t, `{"bot":"support","update_id":4200,"message_id":17,"date":1700000000,"text":"Hi <there> & \"you\"",
		"chat":{"id":99,"type":"private","first_name":"Ann","username":"ann"},
		"from":{"id":99,"is_bot":false,"first_name":"Ann","username":"ann","language_code":"en"}}`, string(got.Input))
	require.JSONEq(t, `{"bot":"support","update_id":4200,"chat_id":99}`, string(got.Metadata))
	require.NoError(t, span.Verify(&got))
	// Another user of acme does not see the bot's private message.
	_, err = b.ledger.Latest(context.Background(), ledger.User("acme", "alice"), id)
	require.ErrorIs(t, err, ledger.ErrNotFound)

	// Redelivered: 200, the same id, nothing written.
	r = b.hook(t, "support", tgSecret, textUpdate)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	r.json(t, &res)
	require.Equal(t, telegramResult{OK: true, Status: "duplicate", SpanID: id}, res)
	require.Equal(t, before+1, b.rows(t))

	// A body that names another tenant or owner changes nothing: the
	// principal is the manifest's.
	r = b.hook(t, "support", tgSecret, `{"update_id":4201,"tenant_id":"globex","owner_id":"mallory",
		"message":{"message_id":18,"text":"x","tenant_id":"globex","chat":{"id":5,"type":"private"}}}`)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	got, err = b.ledger.Latest(context.Background(), tgBot, TelegramMessageID("acme", "support", 4201))
	require.NoError(t, err)
	require.Equal(t, "acme", got.TenantID)
	require.Equal(t, "telegram:support", got.OwnerID)
	require.NotContains(t, string(got.Input), "globex")
	_, err = b.ledger.Latest(context.Background(), ledger.System(), TelegramMessageID("globex", "support", 4201))
	require.ErrorIs(t, err, ledger.ErrNotFound)
	require.Equal(t, before+2, b.rows(t))

	// Other kinds of update, and messages without text: acknowledged.
	for body, kind := range map[string]string{
		`{"update_id":5000,"edited_message":{"message_id":1,"text":"x","chat":{"id":1}}}`: "edited_message",
		`{"update_id":5001,"callback_query":{"id":"q"}}`:                                  "callback_query",
		`{"update_id":5002,"message":{"message_id":2,"chat":{"id":1},"photo":[]}}`:        "message without text",
		`{"update_id":5003}`: "unknown",
		`{"update_id":5004,"my_chat_member":{},"channel_post":{"message_id":1,"text":"x"}}`: "channel_post",
	} {
		r := b.hook(t, "support", tgSecret, body)
		require.Equal(t, http.StatusOK, r.status, "%s: %s", body, r.body)
		res = telegramResult{}
		r.json(t, &res)
		require.Equal(t, telegramResult{OK: true, Status: "ignored", Ignored: kind}, res, body)
	}
	require.Equal(t, before+2, b.rows(t))

	// Refused, naming what was wrong; nothing written.
	for _, c := range []struct {
		body         any
		header       map[string]string
		status       int
		field, code  string
		detailPrefix string
	}{
		{`not json`, nil, 400, "body", codeMalformed, "an update is a JSON object"},
		{`[1]`, nil, 400, "body", codeMalformed, ""},
		{`{"message":{"message_id":1,"text":"x","chat":{"id":1}}}`, nil, 400, "update_id", codeMalformed, "update_id"},
		{`{"update_id":"7"}`, nil, 400, "update_id", codeMalformed, ""},
		{`{"update_id":7,"message":{"message_id":1.5,"text":"x","chat":{"id":1}}}`, nil, 400, "message.message_id", codeMalformed, ""},
		{`{"update_id":7,"message":{"text":"x","chat":{"id":1}}}`, nil, 400, "message.message_id", codeMalformed, ""},
		{`{"update_id":7,"message":{"message_id":1,"text":"x"}}`, nil, 400, "message.chat", codeMalformed, ""},
		{`{"update_id":7,"message":{"message_id":1,"text":7,"chat":{"id":1}}}`, nil, 400, "message.text", codeMalformed, ""},
		{`{"update_id":-1}`, nil, 422, "update_id", codeInvalid, ""},
		{`{"update_id":7,"message":{"message_id":1,"text":"x","chat":{"id":9007199254740993}}}`, nil, 422, "message.chat.id", codeInvalid, ""},
		{`{"update_id":7,"message":{"message_id":1,"text":"a\u0000b","chat":{"id":1}}}`, nil, 422, "message.text", codeInvalid, ""},
		{textUpdate, map[string]string{"Content-Type": "text/plain"}, 415, "Content-Type", codeUnsupported, ""},
		{`{"update_id":7,"message":{"message_id":1,"chat":{"id":1},"text":"` + strings.Repeat("x", MaxTelegramBody) + `"}}`, nil, 413, "body", codeTooLarge, ""},
	} {
		h := map[string]string{TelegramSecretHeader: tgSecret}
		for k, v := range c.header {
			h[k] = v
		}
		r := b.do(t, http.MethodPost, "/api/adapters/telegram/support", "", h, c.body)
		label := c.body
		if s, ok := label.(string); ok && len(s) > 80 {
			label = s[:80]
		}
		require.Equal(t, c.status, r.status, "%v: %s", label, r.body)
		p := r.problem(t)
		require.Equal(t, c.field, p.Field, "%v: %s", label, r.body)
		require.Equal(t, c.code, p.Code)
		require.True(t, strings.HasPrefix(p.Detail, c.detailPrefix), "%q", p.Detail)
	}
	require.Equal(t, before+2, b.rows(t), "nothing written by a refused update")
}

// The message id is a function of (tenant, bot, update_id) only.
func TestTelegramMessageID(t *testing.T) {
	t.Parallel()
	a := TelegramMessageID("acme", "support", 1)
	require.Equal(t, a, TelegramMessageID("acme", "support", 1))
	require.True(t, isUUID(a))
	for _, other := range []string{TelegramMessageID("acme", "support", 2), TelegramMessageID("acme", "sales", 1),
		TelegramMessageID("globex", "support", 1), TelegramMessageID("acme\x00support", "", 1)} {
		require.NotEqual(t, a, other)
	}
}
