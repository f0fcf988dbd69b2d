package engine_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"lukechampine.com/blake3"

	"github.com/logline/logline/host/api"
	"github.com/logline/logline/host/engine"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	tg "github.com/logline/logline/tools/faketelegram/standin"
)

// The Telegram adapter end to end: the stand-in Bot API delivers updates to
// a real API server's webhook, real engines answer them and send the
// replies back to the stand-in, over the http capability.

// The host variables of the bot's secrets (set per test: not parallel).
const (
	tgTokenEnv  = "LOGLINE_TEST_TG_TOKEN"
	tgSecretEnv = "LOGLINE_TEST_TG_SECRET"
)

// logSink collects what the servers and engines log, from their goroutines.
type logSink struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *logSink) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tgWorld is a world with a stand-in Bot API on loopback that the manifest
// allows, a bot "support" bound to acme, a real API server whose webhook
// the stand-in knows (setWebhook, with the secret token) and engines
// started with startEngines.
type tgWorld struct {
	*world
	bot    *tg.Server
	tgURL  string
	token  string // distinctive: it must appear in no span and no log line
	secret string
	api    string
	logs   *logSink
}

// newTelegramWorld binds bot (the binding's answer: family or function_id,
// and more) to acme on w. allow and secrets are the manifest's lists
// besides the stand-in's.
func newTelegramWorld(t *testing.T, w *world, bot map[string]any, allow, secrets []string) *tgWorld {
	t.Helper()
	ctx := context.Background()
	tw := &tgWorld{world: w, logs: &logSink{},
		token:  "424242:TG-" + strings.ReplaceAll(t.Name(), "/", "-") + "-token-never-in-a-span",
		secret: "webhook-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	t.Setenv(tgTokenEnv, tw.token)
	t.Setenv(tgSecretEnv, tw.secret)
	tw.bot = tg.New(tw.token)
	srv := httptest.NewServer(tw.bot)
	t.Cleanup(srv.Close)
	tw.tgURL = srv.URL
	binding := map[string]any{"tenant": "acme", "user": "telegram:support", "secret_env": tgSecretEnv, "token_env": tgTokenEnv,
		"api_base": srv.URL}
	for k, v := range bot {
		binding[k] = v
	}
	w.patchManifest(t, manifestPatch{
		"http_allowlist":   append([]string{srv.URL + "/"}, allow...),
		"provider_secrets": append([]string{tgTokenEnv}, secrets...),
		"telegram":         map[string]any{"bots": map[string]any{"support": binding}},
	})

	// The API server, as `logline serve` runs it.
	node, err := span.GenerateKey()
	require.NoError(t, err)
	l, err := ledger.Open(ctx, w.url, ledger.WithKey(node))
	require.NoError(t, err)
	t.Cleanup(l.Close)
	s, err := api.New(api.Config{Ledger: l, Key: node, Logger: tw.logs.logger()})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	tw.api = "http://" + ln.Addr().String()

	// Telegram's side: the webhook and its secret.
	body := fmt.Sprintf(`{"url":%q,"secret_token":%q}`, tw.api+"/api/adapters/telegram/support", tw.secret)
	resp, err := http.Post(srv.URL+"/bot"+tw.token+"/setWebhook", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	// The server knows the bot once it answers an update (one it ignores).
	eventually(t, testTimeout, "the webhook to know the bot", func() bool {
		st, err := tw.bot.Deliver(ctx, map[string]any{"update_id": 1, "edited_message": map[string]any{}})
		return err == nil && st == http.StatusOK
	})
	return tw
}

// startEngines runs n engines on the world, logging to the world's sink.
func (tw *tgWorld) startEngines(t *testing.T, n int) {
	t.Helper()
	for range n {
		startEngine(t, tw.url, engine.Config{Telegram: 200 * time.Millisecond, Log: tw.logs.logger()})
	}
}

// deliver sends a text message update as Telegram would, and wants status.
func (tw *tgWorld) deliver(t *testing.T, update, message, user int64, text string, status int) {
	t.Helper()
	st, err := tw.bot.Deliver(context.Background(), tg.TextUpdate(update, message, user, text))
	require.NoError(t, err)
	require.Equal(t, status, st)
}

// message is the latest version of update's telegram_message, once it is
// closed (answered or error).
func (tw *tgWorld) closed(t *testing.T, update int64) span.Span {
	t.Helper()
	id := api.TelegramMessageID("acme", "support", update)
	var s span.Span
	eventually(t, testTimeout, fmt.Sprintf("update %d to be answered", update), func() bool {
		var err error
		s, err = tw.l.Latest(context.Background(), ledger.System(), id)
		return err == nil && s.Status != "received"
	})
	return s
}

func decode(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m), "%s", raw)
	return m
}

// noSecrets: the bot token (and the webhook secret) are in no row of the
// ledger (every row's JSON, read as the owner) and in no log line.
func (tw *tgWorld) noSecrets(t *testing.T, more ...string) {
	t.Helper()
	for _, s := range append([]string{tw.token, tw.secret}, more...) {
		require.Zero(t, tw.count(t, `SELECT count(*) FROM ledger.universal_registry r WHERE to_jsonb(r)::text LIKE '%' || $1 || '%'`, s))
		require.NotContains(t, tw.logs.String(), s)
	}
	require.Positive(t, tw.count(t, `SELECT count(*) FROM ledger.universal_registry`))
	require.NotEmpty(t, tw.logs.String(), "the logs were captured")
}

// sentTexts counts the sendMessage calls by text.
func (tw *tgWorld) sentTexts() map[string]int {
	out := map[string]int{}
	for _, m := range tw.bot.Sent() {
		out[m.Text]++
	}
	return out
}

// A function bot: a message in, exactly one reply out with the right chat
// and text, recorded as a reply span; the function's run is an execution;
// a redelivered update changes nothing; two engines at once still send
// each reply once; the token is in no span and no log line.
func TestTelegramFunctionBot(t *testing.T) {
	w := newWorld(t, nil)
	fn := w.append(t, alice, jsFunction(`return { text: 'echo: ' + input.text + ' (chat ' + input.chat_id + ', from ' + input.from.username + ')' };`,
		"active", nil))[0]
	tw := newTelegramWorld(t, w, map[string]any{"function_id": fn.ID}, nil, nil)
	tw.startEngines(t, 2)

	tw.deliver(t, 100, 3, 77, "hello", http.StatusCreated)
	msg := tw.closed(t, 100)
	require.Equal(t, "answered", msg.Status, "%s", msg.Error)
	require.Equal(t, int32(1), msg.Seq)
	require.Equal(t, "acme", msg.TenantID)
	require.Equal(t, "telegram:support", msg.OwnerID, "the bot's principal, from the manifest")
	sent := tw.bot.Sent()
	require.Len(t, sent, 1)
	require.Equal(t, tg.SendMessage{ChatID: "77", Text: "echo: hello (chat 77, from user77)", ReplyTo: 3, Status: 200, MessageID: sent[0].MessageID}, sent[0])

	m := meta(t, msg)
	replyID := m["reply_id"].(string)
	require.Equal(t, "function", m["answered_by"])
	reply := w.latest(t, replyID)
	require.Equal(t, "telegram_reply", reply.EntityType)
	require.Equal(t, "sent", reply.Status)
	require.Equal(t, msg.ID, reply.ParentID)
	require.JSONEq(t, `{"chat_id":77,"text":"echo: hello (chat 77, from user77)","reply_to_message_id":3}`, string(reply.Input))
	require.EqualValues(t, sent[0].MessageID, decode(t, reply.Output)["message_id"])
	ex := w.latest(t, m["execution_id"].(string))
	require.Equal(t, "execution", ex.EntityType)
	require.Equal(t, "complete", ex.Status)
	require.Equal(t, fn.ID, ex.ParentID)
	require.Contains(t, ex.RelatedTo, msg.ID)
	require.Contains(t, reply.RelatedTo, ex.ID)

	// Telegram redelivers: the same span, nothing written, nothing sent.
	tw.deliver(t, 100, 3, 77, "hello", http.StatusOK)
	// A burst of messages, from several users, with two engines running:
	// each one answered once.
	const n = 8
	for i := range int64(n) {
		tw.deliver(t, 200+i, 10+i, 500+i%3, fmt.Sprintf("burst %d", i), http.StatusCreated)
	}
	for i := range int64(n) {
		require.Equal(t, "answered", tw.closed(t, 200+i).Status)
	}
	counts := tw.sentTexts()
	require.Len(t, tw.bot.Sent(), n+1, "one send per message: %v", counts)
	for text, c := range counts {
		require.Equal(t, 1, c, "%q sent %d times", text, c)
	}
	for i := range int64(n) {
		require.Equal(t, 1, counts[fmt.Sprintf("echo: burst %d (chat %d, from user%d)", i, 500+i%3, 500+i%3)])
	}
	require.Equal(t, n+1, w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE entity_type = 'telegram_reply'`))
	require.Equal(t, n+1, w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE entity_type = 'telegram_message' AND seq = 0`))
	tw.noSecrets(t)
}

// derivedID is lib.js's derivedId: a UUIDv8 from the BLAKE3 of the parts.
func derivedID(parts ...string) string {
	sum := blake3.Sum256([]byte(strings.Join(parts, "\x00")))
	h := hex.EncodeToString(sum[:])
	v, _ := strconv.ParseUint(h[16:17], 16, 8)
	return h[0:8] + "-" + h[8:12] + "-8" + h[13:16] + "-" + strconv.FormatUint(v&3|8, 16) + h[17:20] + "-" + h[20:32]
}

// A family bot answers through the prompt runner (the fake LLM provider
// stand-in): the run is recorded with a prompt_request of its own and the
// parsed answer is what the bot sends.
func TestTelegramFamilyBot(t *testing.T) {
	pw := newPromptWorld(t, nil)
	// acme routes its family to its own variant (a bandit's decision, as
	// the runner reads it: the id derives from tenant and family).
	pw.append(t, alice, span.Span{ID: derivedID("prompt_routing", "acme", "faq_answerer"), EntityType: "prompt_routing",
		Who: "kernel:prompt_bandit", This: "prompt.routing", Status: "active", Visibility: "tenant",
		Metadata: mustJSON(t, map[string]any{"family": "faq_answerer", "weights": map[string]any{pw.variant: 1}})})
	tw := newTelegramWorld(t, pw.world, map[string]any{"family": "faq_answerer", "context": "Founded in 2012. Sells tea."},
		[]string{pw.url + "/"}, []string{promptKeyEnv})
	tw.startEngines(t, 1)

	tw.deliver(t, 7, 70, 9, "When was it founded?", http.StatusCreated)
	msg := tw.closed(t, 7)
	require.Equal(t, "answered", msg.Status, "%s", msg.Error)
	sent := tw.bot.Sent()
	require.Len(t, sent, 1)
	require.Equal(t, "Founded in 2012.", sent[0].Text)
	require.Equal(t, "9", sent[0].ChatID)
	require.Equal(t, int64(70), sent[0].ReplyTo)
	llm := pw.llm.Requests()
	require.Len(t, llm, 1)
	require.Contains(t, llm[0].Messages[len(llm[0].Messages)-1].Content, "When was it founded?")
	require.Contains(t, llm[0].Messages[len(llm[0].Messages)-1].Content, "Founded in 2012. Sells tea.")

	m := meta(t, msg)
	require.Equal(t, "prompt", m["answered_by"])
	run := pw.latest(t, m["prompt_run_id"].(string))
	require.Equal(t, "prompt_run", run.EntityType)
	require.Equal(t, "complete", run.Status)
	require.Equal(t, pw.variant, run.ParentID)
	req := pw.latest(t, meta(t, run)["request_id"].(string))
	require.Equal(t, "prompt_request", req.EntityType)
	require.Equal(t, "complete", req.Status, "the run's request is closed with it")
	require.Contains(t, req.RelatedTo, msg.ID)
	reply := pw.latest(t, m["reply_id"].(string))
	require.Equal(t, "sent", reply.Status)
	require.Contains(t, reply.RelatedTo, run.ID)
	tw.noSecrets(t, pw.key)
}

// A send that fails — the Bot API answers 500, or ok:false — closes its
// message with a typed error, is never retried, and the next message is
// still answered; an answer that fails or is empty is not sent at all.
func TestTelegramFailures(t *testing.T) {
	w := newWorld(t, manifestPatch{"global_policies": []string{}})
	fn := w.append(t, alice, jsFunction(`if (input.text === 'boom') throw new Error('the function broke');
		if (input.text === 'silent') return {};
		return { reply: input.text.toUpperCase() };`, "active", nil))[0]
	tw := newTelegramWorld(t, w, map[string]any{"function_id": fn.ID}, nil, nil)
	tw.bot.Fail(func(m tg.SendMessage, _ int) *tg.Failure {
		switch m.Text {
		case "DOWN":
			return &tg.Failure{Status: http.StatusInternalServerError}
		case "BLOCKED":
			return &tg.Failure{Status: http.StatusForbidden, Description: "Forbidden: bot was blocked by the user"}
		case "HANGUP":
			return &tg.Failure{Hangup: true}
		}
		return nil
	})
	tw.deliver(t, 1000, 1, 5, "down", http.StatusCreated)
	tw.deliver(t, 1001, 2, 5, "blocked", http.StatusCreated)
	tw.deliver(t, 1002, 3, 5, "boom", http.StatusCreated)
	tw.deliver(t, 1003, 4, 5, "silent", http.StatusCreated)
	tw.deliver(t, 1004, 5, 5, "hangup", http.StatusCreated)
	tw.deliver(t, 1005, 6, 5, "fine", http.StatusCreated)
	tw.startEngines(t, 1)

	errorOf := func(s span.Span) map[string]any {
		require.Equal(t, "error", s.Status)
		return decode(t, s.Error)
	}
	down := tw.closed(t, 1000)
	e := errorOf(down)
	require.Equal(t, "send_failed", e["code"])
	require.Contains(t, e["message"], "HTTP 500")
	reply := w.latest(t, meta(t, down)["reply_id"].(string))
	require.Equal(t, "error", reply.Status, "the attempt is recorded")
	require.Equal(t, "send_failed", decode(t, reply.Error)["code"])

	e = errorOf(tw.closed(t, 1001))
	require.Equal(t, "send_failed", e["code"])
	require.Contains(t, e["message"], "Forbidden: bot was blocked by the user")
	require.Contains(t, e["message"], "error_code 403")

	boom := tw.closed(t, 1002)
	e = errorOf(boom)
	require.Equal(t, "answer_failed", e["code"])
	require.Contains(t, e["message"], "the function broke")
	ex := w.latest(t, meta(t, boom)["execution_id"].(string))
	require.Equal(t, "error", ex.Status, "the failed run is an execution too")
	require.NotContains(t, meta(t, boom), "reply_id", "nothing to send, no reply")
	_, err := w.l.Latest(context.Background(), ledger.System(), derivedID("telegram_reply", boom.ID))
	require.ErrorIs(t, err, ledger.ErrNotFound, "nothing to send, no reply")

	require.Equal(t, "empty_answer", errorOf(tw.closed(t, 1003))["code"])
	// A connection that dies: Go's client error quotes the URL it sent,
	// which carried the token; the error names the URL the kernel wrote.
	e = errorOf(tw.closed(t, 1004))
	require.Equal(t, "send_failed", e["code"])
	require.Contains(t, e["message"], tw.tgURL+"/bot{auth}/sendMessage")
	require.Equal(t, "answered", tw.closed(t, 1005).Status, "the next message is still answered")

	// Each send was tried once: no retries of the failed ones.
	require.Equal(t, map[string]int{"DOWN": 1, "BLOCKED": 1, "HANGUP": 1, "FINE": 1}, tw.sentTexts())
	tw.noSecrets(t)
}
