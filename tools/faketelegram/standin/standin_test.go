package standin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/tools/faketelegram/standin"
)

const token = "4242:AAE-stand_in-token"

func serve(t *testing.T) (*standin.Server, string) {
	t.Helper()
	s := standin.New(token)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts.URL
}

type answer struct {
	OK          bool            `json:"ok"`
	Result      json.RawMessage `json:"result"`
	ErrorCode   int             `json:"error_code"`
	Description string          `json:"description"`
}

func call(t *testing.T, method, u, contentType, body string) (int, answer) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var a answer
	require.NoError(t, json.Unmarshal(b, &a), "%s", b)
	return resp.StatusCode, a
}

// sendMessage in JSON, as a form and in the query string answers the sent
// Message and records the call; the Bot API's refusals come in its format.
func TestSendMessage(t *testing.T) {
	t.Parallel()
	s, base := serve(t)
	st, a := call(t, "POST", base+"/bot"+token+"/sendMessage", "application/json",
		`{"chat_id":42,"text":"hello","reply_to_message_id":7}`)
	require.Equal(t, 200, st)
	require.True(t, a.OK)
	var msg struct {
		MessageID int64 `json:"message_id"`
		From      struct {
			ID    int64 `json:"id"`
			IsBot bool  `json:"is_bot"`
		} `json:"from"`
		Chat struct {
			ID   int64  `json:"id"`
			Type string `json:"type"`
		} `json:"chat"`
		Date  int64  `json:"date"`
		Text  string `json:"text"`
		Reply struct {
			MessageID int64 `json:"message_id"`
		} `json:"reply_to_message"`
	}
	require.NoError(t, json.Unmarshal(a.Result, &msg))
	require.Equal(t, int64(4242), msg.From.ID)
	require.True(t, msg.From.IsBot)
	require.Equal(t, int64(42), msg.Chat.ID)
	require.Equal(t, "private", msg.Chat.Type)
	require.Equal(t, "hello", msg.Text)
	require.Equal(t, int64(7), msg.Reply.MessageID)
	require.Equal(t, int64(standin.Date), msg.Date)

	st, _ = call(t, "POST", base+"/bot"+token+"/SENDMESSAGE", "application/x-www-form-urlencoded",
		url.Values{"chat_id": {"-100"}, "text": {"form"}}.Encode())
	require.Equal(t, 200, st, "methods are case-insensitive; forms work")
	st, _ = call(t, "GET", base+"/bot"+token+"/sendMessage?chat_id=@news&text=query", "", "")
	require.Equal(t, 200, st)

	sent := s.Sent()
	require.Len(t, sent, 3)
	require.Equal(t, standin.SendMessage{ChatID: "42", Text: "hello", ReplyTo: 7, Status: 200, MessageID: msg.MessageID}, sent[0])
	require.Equal(t, "-100", sent[1].ChatID)
	require.Equal(t, "@news", sent[2].ChatID)
	require.Greater(t, sent[1].MessageID, sent[0].MessageID)

	for _, c := range []struct {
		path, body string
		status     int
		desc       string
	}{
		{"/bot1:wrong/sendMessage", `{"chat_id":1,"text":"x"}`, 401, "Unauthorized"},
		{"/bot" + token + "/sendNothing", `{}`, 404, "Not Found"},
		{"/nobot", `{}`, 404, "Not Found"},
		{"/bot" + token + "/sendMessage", `{"text":"x"}`, 400, "Bad Request: chat_id is empty"},
		{"/bot" + token + "/sendMessage", `{"chat_id":1}`, 400, "Bad Request: message text is empty"},
		{"/bot" + token + "/sendMessage", `{"chat_id":1,"text":"` + strings.Repeat("é", standin.MaxText+1) + `"}`, 400, "Bad Request: message is too long"},
		{"/bot" + token + "/sendMessage", `{"chat_id":"x","text":"y"}`, 400, "Bad Request: chat not found"},
		{"/bot" + token + "/sendMessage", `[1]`, 400, "Bad Request: can't parse JSON object"},
	} {
		st, a := call(t, "POST", base+c.path, "application/json", c.body)
		require.Equal(t, c.status, st, c.path)
		require.False(t, a.OK)
		require.Equal(t, c.status, a.ErrorCode)
		require.Equal(t, c.desc, a.Description)
	}
	require.Len(t, s.Sent(), 3, "refused calls are not recorded")

	// A scripted failure answers in the API's format and is recorded.
	s.Fail(func(m standin.SendMessage, i int) *standin.Failure {
		if m.Text == "blocked" {
			return &standin.Failure{Status: 403, Description: "Forbidden: bot was blocked by the user"}
		}
		if i == 4 {
			return &standin.Failure{}
		}
		return nil
	})
	st, a = call(t, "POST", base+"/bot"+token+"/sendMessage", "application/json", `{"chat_id":1,"text":"blocked"}`)
	require.Equal(t, 403, st)
	require.Equal(t, answer{ErrorCode: 403, Description: "Forbidden: bot was blocked by the user"}, a)
	st, a = call(t, "POST", base+"/bot"+token+"/sendMessage", "application/json", `{"chat_id":1,"text":"five"}`)
	require.Equal(t, 500, st)
	require.Equal(t, "Internal Server Error", a.Description)
	// A hang-up: no answer at all.
	s.Fail(func(standin.SendMessage, int) *standin.Failure { return &standin.Failure{Hangup: true} })
	_, err := http.Post(base+"/bot"+token+"/sendMessage", "application/json", strings.NewReader(`{"chat_id":1,"text":"x"}`))
	require.Error(t, err)
	sent = s.Sent()
	require.Len(t, sent, 6)
	require.Equal(t, 0, sent[5].Status)
	require.Equal(t, 403, sent[3].Status)
	require.Equal(t, int64(0), sent[3].MessageID)
	require.Equal(t, 500, sent[4].Status)
	s.Reset()
	require.Empty(t, s.Sent())
}

// getMe, and setWebhook then Deliver: Telegram's side of a webhook, the
// secret token in its header.
func TestWebhook(t *testing.T) {
	t.Parallel()
	s, base := serve(t)
	st, a := call(t, "GET", base+"/bot"+token+"/getMe", "", "")
	require.Equal(t, 200, st)
	require.JSONEq(t, `{"id":4242,"is_bot":true,"first_name":"LogLine stand-in","username":"logline_standin_bot",
		"can_join_groups":true,"can_read_all_group_messages":false,"supports_inline_queries":false}`, string(a.Result))

	_, err := s.Deliver(context.Background(), map[string]any{})
	require.Error(t, err, "no webhook yet")
	var got struct {
		secret string
		body   []byte
	}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.secret = r.Header.Get("X-Telegram-Bot-Api-Secret-Token")
		got.body, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(hook.Close)
	st, a = call(t, "POST", base+"/bot"+token+"/setWebhook", "application/json", `{"url":"`+hook.URL+`","secret_token":"s3cr3t"}`)
	require.Equal(t, 200, st)
	require.Equal(t, "Webhook was set", a.Description)
	st, a = call(t, "POST", base+"/bot"+token+"/setWebhook", "application/json", `{"url":"`+hook.URL+`","secret_token":"no spaces"}`)
	require.Equal(t, 400, st)
	require.Contains(t, a.Description, "secret token")
	st, a = call(t, "GET", base+"/bot"+token+"/getWebhookInfo", "", "")
	require.Equal(t, 200, st)
	require.Contains(t, string(a.Result), hook.URL)

	status, err := s.Deliver(context.Background(), standin.TextUpdate(9, 3, 77, "hi"))
	require.NoError(t, err)
	require.Equal(t, http.StatusTeapot, status)
	require.Equal(t, "s3cr3t", got.secret)
	require.JSONEq(t, `{"update_id":9,"message":{"message_id":3,"date":1700000000,"text":"hi",
		"from":{"id":77,"is_bot":false,"first_name":"User 77","username":"user77","language_code":"en"},
		"chat":{"id":77,"type":"private","first_name":"User 77","username":"user77"}}}`, string(got.body))

	st, _ = call(t, "POST", base+"/bot"+token+"/deleteWebhook", "", "")
	require.Equal(t, 200, st)
	u, _ := s.Webhook()
	require.Empty(t, u)
}
