package standin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/tools/fakellm/standin"
)

type resp struct {
	status int
	header http.Header
	body   string
}

func serve(t *testing.T, key string) (*standin.Server, *httptest.Server) {
	t.Helper()
	s := standin.New(key)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts
}

func do(t *testing.T, ctx context.Context, method, url, auth, body string) (resp, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return resp{}, err
	}
	return resp{res.StatusCode, res.Header, string(b)}, nil
}

func post(t *testing.T, url, auth, body string) resp {
	t.Helper()
	r, err := do(t, context.Background(), http.MethodPost, url, auth, body)
	require.NoError(t, err)
	return r
}

// chatBody is a minimal chat request with one user message.
func chatBody(user string) string {
	b, _ := json.Marshal(map[string]any{"model": "m", "messages": []map[string]string{{"role": "user", "content": user}}})
	return string(b)
}

// openAIContent posts one user message to the OpenAI route and returns the
// assistant content.
func openAIContent(t *testing.T, ts *httptest.Server, user string) string {
	t.Helper()
	r := post(t, ts.URL+"/v1/chat/completions", "", chatBody(user))
	require.Equal(t, http.StatusOK, r.status, r.body)
	var v struct {
		Choices []struct {
			Message struct{ Content string }
		}
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &v))
	require.Len(t, v.Choices, 1)
	return v.Choices[0].Message.Content
}

func TestOpenAIWire(t *testing.T) {
	s, ts := serve(t, "")
	s.Script("hello", standin.Reply{Content: "Hi there, friend."})
	r := post(t, ts.URL+"/v1/chat/completions", "Bearer whatever", `{"model":"gpt-x","temperature":0.25,"max_tokens":64,
		"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hello you"}]}`)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	require.JSONEq(t, `{"id":"chatcmpl-0","object":"chat.completion","created":1700000000,"model":"gpt-x",
		"choices":[{"index":0,"message":{"role":"assistant","content":"Hi there, friend."},"finish_reason":"stop"}],
		"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}`, r.body)
	require.NotContains(t, r.body, "tool_calls")

	reqs := s.Requests()
	require.Len(t, reqs, 1)
	q := reqs[0]
	require.Equal(t, "openai", q.API)
	require.Equal(t, "gpt-x", q.Model)
	require.Equal(t, []standin.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "hello you"}}, q.Messages)
	require.NotNil(t, q.Temperature)
	require.Equal(t, 0.25, *q.Temperature)
	require.Equal(t, 64, q.MaxTokens)
	require.Equal(t, "Bearer whatever", q.Auth)

	// A second call gets the next id; no temperature means nil; max_completion_tokens counts.
	post(t, ts.URL+"/v1/chat/completions", "", `{"model":"gpt-x","max_completion_tokens":9,"messages":[{"role":"user","content":"x"}]}`)
	q = s.Requests()[1]
	require.Nil(t, q.Temperature)
	require.Equal(t, 9, q.MaxTokens)
	require.Equal(t, "", q.Auth)
}

func TestOpenAIContentParts(t *testing.T) {
	s, ts := serve(t, "")
	r := post(t, ts.URL+"/v1/chat/completions", "", `{"model":"m","messages":[
		{"role":"user","content":[{"type":"text","text":"part one"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"part two"}]},
		{"role":"assistant","content":null}]}`)
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Equal(t, []standin.Message{{Role: "user", Content: "part one\npart two"}, {Role: "assistant"}}, s.Requests()[0].Messages)
}

func TestToolCalls(t *testing.T) {
	s, ts := serve(t, "")
	s.Script("tools", standin.Reply{ToolCalls: 2}, standin.Reply{ToolCalls: 1, FinishReason: "length"})

	r := post(t, ts.URL+"/v1/chat/completions", "", chatBody("tools please"))
	require.JSONEq(t, `{"id":"chatcmpl-0","object":"chat.completion","created":1700000000,"model":"m",
		"choices":[{"index":0,"message":{"role":"assistant","content":"","tool_calls":[
			{"id":"call_0","type":"function","function":{"name":"lookup","arguments":"{}"}},
			{"id":"call_1","type":"function","function":{"name":"lookup","arguments":"{}"}}]},
		"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":2,"completion_tokens":0,"total_tokens":2}}`, r.body)
	r = post(t, ts.URL+"/v1/chat/completions", "", chatBody("tools please"))
	require.Contains(t, r.body, `"finish_reason":"length"`)
	require.Equal(t, 1, strings.Count(r.body, `"call_`))

	s.Script("ollama tools", standin.Reply{ToolCalls: 2})
	s.Script("tools", standin.Reply{Content: "ignored"}) // replaces in place: still first
	r = post(t, ts.URL+"/api/chat", "", chatBody("ollama tools"))
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"model":"m","created_at":"2023-11-14T22:13:20Z","message":{"role":"assistant","content":"ignored"},
		"done":true,"done_reason":"stop","prompt_eval_count":2,"eval_count":1}`, r.body)
	s.Reset()
	s.Script("ollama tools", standin.Reply{ToolCalls: 2})
	r = post(t, ts.URL+"/api/chat", "", chatBody("ollama tools"))
	require.JSONEq(t, `{"model":"m","created_at":"2023-11-14T22:13:20Z","message":{"role":"assistant","content":"",
		"tool_calls":[{"function":{"name":"lookup","arguments":{}}},{"function":{"name":"lookup","arguments":{}}}]},
		"done":true,"done_reason":"stop","prompt_eval_count":2,"eval_count":0}`, r.body)
}

func TestOllamaWire(t *testing.T) {
	s, ts := serve(t, "secret") // the Ollama route never asks for auth
	s.Script("ping", standin.Reply{Content: "pong pong", FinishReason: "length"})
	r := post(t, ts.URL+"/api/chat", "", `{"model":"llama3","stream":false,"options":{"temperature":0,"num_predict":12},
		"messages":[{"role":"user","content":"ping me now"}]}`)
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	require.JSONEq(t, `{"model":"llama3","created_at":"2023-11-14T22:13:20Z","message":{"role":"assistant","content":"pong pong"},
		"done":true,"done_reason":"length","prompt_eval_count":3,"eval_count":2}`, r.body)
	q := s.Requests()[0]
	require.Equal(t, "ollama", q.API)
	require.Equal(t, "llama3", q.Model)
	require.NotNil(t, q.Temperature)
	require.Equal(t, 0.0, *q.Temperature)
	require.Equal(t, 12, q.MaxTokens)
}

func TestModels(t *testing.T) {
	_, ts := serve(t, "k")
	r, err := do(t, context.Background(), http.MethodGet, ts.URL+"/v1/models", "Bearer k", "")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"object":"list","data":[{"id":"stand-in","object":"model","created":1700000000,"owned_by":"logline"}]}`, r.body)
	r, err = do(t, context.Background(), http.MethodGet, ts.URL+"/v1/models", "", "")
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, r.status)
}

func TestAuth(t *testing.T) {
	s, ts := serve(t, "s3cret")
	url := ts.URL + "/v1/chat/completions"
	for _, auth := range []string{"", "Bearer wrong", "s3cret", "Bearer s3cretX", "bearer s3cret"} {
		r := post(t, url, auth, chatBody("hi"))
		require.Equal(t, http.StatusUnauthorized, r.status, "auth %q", auth)
		var e struct {
			Error struct{ Message, Type, Code string }
		}
		require.NoError(t, json.Unmarshal([]byte(r.body), &e), r.body)
		require.Equal(t, "invalid_request_error", e.Error.Type)
		require.Equal(t, "invalid_api_key", e.Error.Code)
		require.NotEmpty(t, e.Error.Message)
	}
	require.Equal(t, 0, s.Calls(), "a 401 is not a call")

	r := post(t, url, "Bearer s3cret", chatBody("hi"))
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Equal(t, 1, s.Calls())
	require.Equal(t, "Bearer s3cret", s.Requests()[0].Auth)

	// Without a key anything goes.
	open, ts2 := serve(t, "")
	require.Equal(t, http.StatusOK, post(t, ts2.URL+"/v1/chat/completions", "", chatBody("hi")).status)
	require.Equal(t, 1, open.Calls())
}

func TestScriptsCyclePerMatch(t *testing.T) {
	s, ts := serve(t, "")
	s.Script("alpha", standin.Reply{Content: "a0"}, standin.Reply{Content: "a1"}, standin.Reply{Content: "a2"})
	s.Script("beta", standin.Reply{Content: "b0"}, standin.Reply{Content: "b1"})

	var got []string
	for _, q := range []string{"alpha", "beta", "x alpha x", "beta", "beta", "alpha", "alpha", "alpha and beta", "beta"} {
		got = append(got, openAIContent(t, ts, q))
	}
	// Each match counts its own calls; "alpha and beta" goes to alpha, the first registered.
	require.Equal(t, []string{"a0", "b0", "a1", "b1", "b0", "a2", "a0", "a1", "b1"}, got)

	// Matching sees all user messages joined, and only user messages.
	r := post(t, ts.URL+"/v1/chat/completions", "", `{"model":"m","messages":[
		{"role":"system","content":"beta"},{"role":"user","content":"gam"},{"role":"user","content":"ma"}]}`)
	require.Contains(t, r.body, `"content":"{\"answer\":\"ok\",\"confidence\":0.5}"`, "no match: default brain")
	s.Script("gam\nma", standin.Reply{Content: "joined"})
	r = post(t, ts.URL+"/v1/chat/completions", "", `{"model":"m","messages":[
		{"role":"system","content":"beta"},{"role":"user","content":"gam"},{"role":"user","content":"ma"}]}`)
	require.Contains(t, r.body, `"content":"joined"`)

	// Re-scripting a match replaces its replies and restarts its count.
	s.Script("beta", standin.Reply{Content: "B"})
	require.Equal(t, "B", openAIContent(t, ts, "beta"))
	require.Equal(t, "B", openAIContent(t, ts, "beta"))

	require.Panics(t, func() { s.Script("none") })
	require.Panics(t, func() { s.Script("bad", standin.Reply{Status: 42}) })
}

func TestHook(t *testing.T) {
	s, ts := serve(t, "")
	s.Script("q", standin.Reply{Content: "scripted"})
	var mu sync.Mutex
	var seen []int
	s.Handle(func(r standin.Request, i int) (standin.Reply, bool) {
		mu.Lock()
		seen = append(seen, i)
		mu.Unlock()
		if i%2 == 1 {
			return standin.Reply{}, false
		}
		return standin.Reply{Content: fmt.Sprintf("hook %d %s %s", i, r.API, r.Messages[0].Content)}, true
	})
	require.Equal(t, "hook 0 openai q", openAIContent(t, ts, "q"))
	require.Equal(t, "scripted", openAIContent(t, ts, "q"))
	r := post(t, ts.URL+"/api/chat", "", chatBody("q"))
	require.Contains(t, r.body, `"content":"hook 2 ollama q"`)
	require.Equal(t, []int{0, 1, 2}, seen)

	s.Handle(func(standin.Request, int) (standin.Reply, bool) { return standin.Reply{Status: 99}, true })
	r = post(t, ts.URL+"/v1/chat/completions", "", chatBody("q"))
	require.Equal(t, http.StatusInternalServerError, r.status)
	require.Contains(t, r.body, "status 99")

	s.Handle(nil)
	require.Equal(t, "scripted", openAIContent(t, ts, "q"))
}

func TestErrorStatus(t *testing.T) {
	s, ts := serve(t, "")
	s.Script("boom", standin.Reply{Status: 503, Content: "unused"}, standin.Reply{Status: 429, Garbage: true}, standin.Reply{Status: 200, Content: "fine"})
	r := post(t, ts.URL+"/v1/chat/completions", "", chatBody("boom"))
	require.Equal(t, http.StatusServiceUnavailable, r.status)
	require.JSONEq(t, `{"error":{"message":"stand-in error","type":"server_error"}}`, r.body)
	r = post(t, ts.URL+"/v1/chat/completions", "", chatBody("boom"))
	require.Equal(t, http.StatusTooManyRequests, r.status, "status wins over garbage")
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	require.Equal(t, "fine", openAIContent(t, ts, "boom"), "status 200 is an ordinary answer")

	// Ollama errors come in Ollama's own shape.
	r = post(t, ts.URL+"/api/chat", "", chatBody("boom"))
	require.Equal(t, http.StatusServiceUnavailable, r.status)
	require.JSONEq(t, `{"error":"stand-in error"}`, r.body)
}

func TestGarbage(t *testing.T) {
	s, ts := serve(t, "")
	s.Script("junk", standin.Reply{Garbage: true, Content: "never sent"})
	var bodies []string
	for _, path := range []string{"/v1/chat/completions", "/api/chat"} {
		r := post(t, ts.URL+path, "", chatBody("junk"))
		require.Equal(t, http.StatusOK, r.status)
		require.Equal(t, "text/event-stream", r.header.Get("Content-Type"))
		require.True(t, strings.HasPrefix(r.body, `data: {"choices":[{"delta":`), r.body)
		require.False(t, json.Valid([]byte(r.body)))
		require.NotContains(t, r.body, "never sent")
		var v map[string]any
		require.Error(t, json.Unmarshal([]byte(r.body), &v))
		// Not even the payload after "data: " parses.
		require.False(t, json.Valid([]byte(strings.TrimPrefix(r.body, "data: "))))
		bodies = append(bodies, r.body)
	}
	// Deterministic: the same call index gives the same bytes.
	s.Reset()
	s.Script("junk", standin.Reply{Garbage: true})
	r := post(t, ts.URL+"/v1/chat/completions", "", chatBody("junk"))
	require.Equal(t, bodies[0], r.body)
}

func TestDelay(t *testing.T) {
	s, ts := serve(t, "")
	s.Script("slow", standin.Reply{Delay: 150 * time.Millisecond, Content: "late"})
	start := time.Now()
	require.Equal(t, "late", openAIContent(t, ts, "slow"))
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)

	s.Script("stuck", standin.Reply{Delay: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err := do(t, ctx, http.MethodPost, ts.URL+"/api/chat", "", chatBody("stuck"))
	require.Error(t, err)
	require.True(t, errors.Is(err, context.DeadlineExceeded), err)
	// Close waits for outstanding handlers, so this also proves the handler
	// returned when the client went away rather than sleeping a minute.
	ts.Close()
	require.Less(t, time.Since(start), 10*time.Second)
	require.Equal(t, 2, s.Calls())
}

func TestDefaultBrain(t *testing.T) {
	_, ts := serve(t, "")
	answer := func(user string) map[string]any {
		t.Helper()
		c := openAIContent(t, ts, user)
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(c), &v), c)
		return v
	}
	faq := "You answer from the context only.\nQuestion: How long do refunds take?\nContext: Refunds take 5 days. Ask support for more.\nAlso see the FAQ."
	require.Equal(t, `{"answer":"Refunds take 5 days.","confidence":0.9,"citations":["context"]}`, openAIContent(t, ts, faq))

	// The context may start on the next line and span several; decimals do not end a sentence.
	v := answer("Question: price?\nContext:\n\n  The plan costs 3.50 euros a month! Cheap.\nMore text.")
	require.Equal(t, "The plan costs 3.50 euros a month!", v["answer"])
	// Without a sentence mark the first line is the sentence; JSON escaping is done properly.
	v = answer("Question: q\nContext: Use \"quotes\" & <tags>\nsecond line")
	require.Equal(t, `Use "quotes" & <tags>`, v["answer"])
	require.Equal(t, 0.9, v["confidence"])
	require.Equal(t, []any{"context"}, v["citations"])
	// A question after the context ends it.
	v = answer("Context: Shipping is free\nQuestion: Is shipping free?")
	require.Equal(t, "Shipping is free", v["answer"])

	for _, empty := range []string{
		"Question: How long?\nContext:",
		"Question: How long?\nContext:   \n\t\n  ",
		"Context: \nQuestion: anything?",
	} {
		require.Equal(t, `{"error":"Insufficient evidence."}`, openAIContent(t, ts, empty), "%q", empty)
	}
	for _, other := range []string{"hello", "Question: only a question", "Context: only a context", "Questions: no\nContexts: no"} {
		require.Equal(t, `{"answer":"ok","confidence":0.5}`, openAIContent(t, ts, other), "%q", other)
	}

	// The brain reads the last user message; Ollama gets the same answer.
	r := post(t, ts.URL+"/api/chat", "", `{"model":"m","messages":[{"role":"user","content":"Question: a\nContext: Old."},
		{"role":"assistant","content":"x"},{"role":"user","content":"Question: b\nContext: New one. Two."}]}`)
	var o struct{ Message struct{ Content string } }
	require.NoError(t, json.Unmarshal([]byte(r.body), &o))
	require.Equal(t, `{"answer":"New one.","confidence":0.9,"citations":["context"]}`, o.Message.Content)
}

func TestTokenCounts(t *testing.T) {
	s, ts := serve(t, "")
	s.Script("count", standin.Reply{Content: "  three little\twords \n"}, standin.Reply{Content: "x", InputTokens: 100, OutputTokens: 7})
	body := `{"model":"m","messages":[{"role":"system","content":"one  two\nthree"},{"role":"user","content":" count\u00a0me "}]}`
	var u struct {
		Usage struct {
			Prompt     int `json:"prompt_tokens"`
			Completion int `json:"completion_tokens"`
			Total      int `json:"total_tokens"`
		} `json:"usage"`
	}
	r := post(t, ts.URL+"/v1/chat/completions", "", body)
	require.NoError(t, json.Unmarshal([]byte(r.body), &u))
	require.Equal(t, 5, u.Usage.Prompt)
	require.Equal(t, 3, u.Usage.Completion)
	require.Equal(t, 8, u.Usage.Total)

	r = post(t, ts.URL+"/api/chat", "", body)
	var o struct {
		Prompt int `json:"prompt_eval_count"`
		Eval   int `json:"eval_count"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &o))
	require.Equal(t, 100, o.Prompt)
	require.Equal(t, 7, o.Eval)
}

func TestBadRequests(t *testing.T) {
	s, ts := serve(t, "")
	for _, c := range []struct{ path, body, want string }{
		{"/v1/chat/completions", `{"model":"m","messages":[`, "malformed JSON"},
		{"/v1/chat/completions", ``, "malformed JSON"},
		{"/v1/chat/completions", `{"model":"m"}`, "messages"},
		{"/v1/chat/completions", `{"model":"m","messages":[]}`, "messages"},
		{"/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":7}]}`, "messages[0].content"},
		{"/v1/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}`, "stream"},
		{"/api/chat", `not json`, "malformed JSON"},
		{"/api/chat", `{"model":"m","messages":null}`, "messages"},
	} {
		r := post(t, ts.URL+c.path, "", c.body)
		require.Equal(t, http.StatusBadRequest, r.status, "%s %s", c.path, c.body)
		var msg string
		if c.path == "/api/chat" {
			var e struct{ Error string }
			require.NoError(t, json.Unmarshal([]byte(r.body), &e), r.body)
			msg = e.Error
		} else {
			var e struct {
				Error struct{ Message, Type string }
			}
			require.NoError(t, json.Unmarshal([]byte(r.body), &e), r.body)
			require.Equal(t, "invalid_request_error", e.Error.Type)
			msg = e.Error.Message
		}
		require.Contains(t, msg, c.want, "%s %s", c.path, c.body)
	}
	r, err := do(t, context.Background(), http.MethodGet, ts.URL+"/v1/chat/completions", "", "")
	require.NoError(t, err)
	require.Equal(t, http.StatusMethodNotAllowed, r.status)
	require.Equal(t, http.MethodPost, r.header.Get("Allow"))
	require.Equal(t, http.StatusNotFound, post(t, ts.URL+"/v2/nothing", "", chatBody("x")).status)
	require.Equal(t, 0, s.Calls())
	require.Empty(t, s.Requests())
}

func TestLoadScript(t *testing.T) {
	rules, err := standin.LoadScript(strings.NewReader(`[
		{"match":"refund","replies":[{"content":"a","delay_ms":1.5},{"status":503},{"garbage":true,"tool_calls":2,
			"finish_reason":"length","input_tokens":3,"output_tokens":4}]},
		{"match":"","replies":[{}]}]`))
	require.NoError(t, err)
	require.Equal(t, []standin.Rule{
		{Match: "refund", Replies: []standin.Reply{
			{Content: "a", Delay: 1500 * time.Microsecond},
			{Status: 503},
			{Garbage: true, ToolCalls: 2, FinishReason: "length", InputTokens: 3, OutputTokens: 4},
		}},
		{Match: "", Replies: []standin.Reply{{}}},
	}, rules)

	// The JSON form round-trips.
	b, err := json.Marshal(rules)
	require.NoError(t, err)
	require.Contains(t, string(b), `"delay_ms":1.5`)
	again, err := standin.LoadScript(bytes.NewReader(b))
	require.NoError(t, err)
	require.Equal(t, rules, again)

	for _, c := range []struct{ script, want string }{
		{`[{"match":"a","replies":[{"content":"x","dealy_ms":5}]}]`, `unknown field "dealy_ms"`},
		{`[{"match":"a","replies":[{"content":"x"}],"matches":"b"}]`, `unknown field "matches"`},
		{`[{"replies":[{}]}]`, `missing "match"`},
		{`[{"match":"a","replies":[]}]`, `rule 0 (match "a"): "replies"`},
		{`[{"match":"a","replies":[{}]},{"match":"b","replies":[{"status":700}]}]`, `rule 1 (match "b"): reply 0: status 700`},
		{`[{"match":"a","replies":[{"delay_ms":-1}]}]`, `delay_ms`},
		{`[{"match":"a","replies":[{"tool_calls":-1}]}]`, `negative`},
		{`[{"match":"a","replies":[{}]}] []`, `after the top-level array`},
		{`{"match":"a"}`, `script`},
	} {
		_, err := standin.LoadScript(strings.NewReader(c.script))
		require.Error(t, err, c.script)
		require.Contains(t, err.Error(), c.want, c.script)
	}

	// Loaded rules serve like Script.
	s, ts := serve(t, "")
	s.Load(rules)
	require.Equal(t, "a", openAIContent(t, ts, "refund?"))
	require.Equal(t, http.StatusServiceUnavailable, post(t, ts.URL+"/v1/chat/completions", "", chatBody("refund?")).status)
	require.Equal(t, "", openAIContent(t, ts, "anything else"), `"" matches every call`)
}

func TestConcurrency(t *testing.T) {
	s, ts := serve(t, "")
	s.Script("even", standin.Reply{Content: "e0"}, standin.Reply{Content: "e1"})
	const workers, each = 40, 25
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				path, q := "/v1/chat/completions", "even"
				if (w+i)%2 == 1 {
					path, q = "/api/chat", fmt.Sprintf("Question: q\nContext: worker %d call %d.", w, i)
				}
				r, err := do(t, context.Background(), http.MethodPost, ts.URL+path, "", chatBody(q))
				if err == nil && r.status != http.StatusOK {
					err = fmt.Errorf("status %d: %s", r.status, r.body)
				}
				if err != nil {
					errs <- err
					return
				}
				var v struct {
					Choices []struct{ Message struct{ Content string } }
					Message struct{ Content string }
				}
				if err := json.Unmarshal([]byte(r.body), &v); err != nil {
					errs <- err
					return
				}
				c := v.Message.Content
				if len(v.Choices) == 1 {
					c = v.Choices[0].Message.Content
				}
				if q != "even" && c != fmt.Sprintf(`{"answer":"worker %d call %d.","confidence":0.9,"citations":["context"]}`, w, i) {
					errs <- fmt.Errorf("worker %d call %d: %s", w, i, c)
					return
				}
				mu.Lock()
				counts[c]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, workers*each, s.Calls())
	require.Len(t, s.Requests(), workers*each)
	// Half the calls were "even": the script's two replies alternate exactly.
	require.Equal(t, workers*each/4, counts["e0"])
	require.Equal(t, workers*each/4, counts["e1"])
}

func TestRequestsKeepsLast1000AndReset(t *testing.T) {
	s := standin.New("")
	for i := range 1005 {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/chat", strings.NewReader(chatBody(fmt.Sprint(i)))))
		require.Equal(t, http.StatusOK, rec.Code)
	}
	reqs := s.Requests()
	require.Len(t, reqs, 1000)
	require.Equal(t, "5", reqs[0].Messages[0].Content)
	require.Equal(t, "1004", reqs[999].Messages[0].Content)
	require.Equal(t, 1005, s.Calls())
	reqs[0].Messages[0].Content = "changed" // a copy
	require.Equal(t, "5", s.Requests()[0].Messages[0].Content)

	s.Script("", standin.Reply{Content: "scripted"})
	s.Handle(func(standin.Request, int) (standin.Reply, bool) { return standin.Reply{Content: "hooked"}, true })
	s.Reset()
	require.Equal(t, 0, s.Calls())
	require.Empty(t, s.Requests())
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(chatBody("hi"))))
	require.Contains(t, rec.Body.String(), `"id":"chatcmpl-0"`)
	require.Contains(t, rec.Body.String(), `{\"answer\":\"ok\",\"confidence\":0.5}`, "scripts and hook are gone")
}
