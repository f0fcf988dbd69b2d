// Package standin is a stand-in model provider: an http.Handler that speaks the
// OpenAI chat-completions and Ollama chat wire formats and answers from scripts,
// a hook, or a small deterministic default brain. Tests, benchmarks and the
// README tour use it where a real provider would be slow, costly or
// nondeterministic; `go run ./tools/fakellm` serves it as a command.
//
// Routes: POST /v1/chat/completions and GET /v1/models (OpenAI; bearer auth
// when the server has a key), POST /api/chat (Ollama; never authenticated).
// Only non-streaming answers are served: `"stream": true` is a 400, and an
// Ollama body without "stream" is answered as stream=false (real Ollama would
// stream).
package standin

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/logline/logline/tools/internal/serve"
)

const (
	// Fixed timestamps keep answers byte-for-byte reproducible (both are Unix 1700000000).
	created   = 1700000000
	createdAt = "2023-11-14T22:13:20Z"

	keepRequests = 1000     // Requests() keeps the last this many
	maxBody      = 16 << 20 // a larger request body is a 413

	// ModelID is the one model GET /v1/models lists.
	ModelID = "stand-in"

	apiOpenAI = "openai"
	apiOllama = "ollama"
)

// Reply is one scripted answer. The zero Reply is a 200 with empty content.
// In a script file it is an object with the snake_case keys below, the delay
// given as "delay_ms" (milliseconds, may be fractional).
type Reply struct {
	Content string `json:"content,omitempty"`
	// Status other than 0 or 200 answers that status with an error body and
	// wins over Garbage. Valid: 0 or 200..599.
	Status int `json:"status,omitempty"`
	// Delay is slept before answering; if the request's context ends first
	// the handler aborts (panics with http.ErrAbortHandler), so no answer is
	// written.
	Delay time.Duration `json:"-"`
	// ToolCalls > 0 adds that many calls of a function "lookup" with empty
	// arguments, and makes the OpenAI finish_reason "tool_calls" by default.
	ToolCalls int `json:"tool_calls,omitempty"`
	// FinishReason overrides "stop" (OpenAI finish_reason, Ollama done_reason).
	FinishReason string `json:"finish_reason,omitempty"`
	// Garbage answers 200 text/event-stream with a truncated, non-JSON body,
	// so a client's parse fails.
	Garbage bool `json:"garbage,omitempty"`
	// Token counts reported in usage; 0 means computed: input = words over
	// all request messages, output = words of Content.
	InputTokens  int `json:"input_tokens,omitempty"`
	OutputTokens int `json:"output_tokens,omitempty"`
}

// replyFields is Reply without its methods, so replyJSON can embed it.
type replyFields Reply

// replyJSON is Reply's JSON form: Delay travels as "delay_ms".
type replyJSON struct {
	replyFields
	DelayMS float64 `json:"delay_ms,omitempty"`
}

// MarshalJSON writes the script-file form ("delay_ms" in milliseconds).
func (r Reply) MarshalJSON() ([]byte, error) {
	return json.Marshal(replyJSON{replyFields(r), float64(r.Delay) / float64(time.Millisecond)})
}

// UnmarshalJSON reads the script-file form. Unknown keys are an error naming
// the key, so a typo in a script never silently becomes a default.
func (r *Reply) UnmarshalJSON(b []byte) error {
	var v replyJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return err
	}
	if v.DelayMS < 0 || v.DelayMS > float64(math.MaxInt64/int64(time.Millisecond)) {
		return fmt.Errorf("delay_ms %v out of range", v.DelayMS)
	}
	*r = Reply(v.replyFields)
	r.Delay = time.Duration(v.DelayMS * float64(time.Millisecond))
	return nil
}

func (r Reply) validate() error {
	switch {
	case r.Status != 0 && (r.Status < 200 || r.Status > 599):
		return fmt.Errorf("status %d: want 0 or 200..599", r.Status)
	case r.Delay < 0:
		return fmt.Errorf("negative delay %v", r.Delay)
	case r.ToolCalls < 0 || r.InputTokens < 0 || r.OutputTokens < 0:
		return errors.New("tool_calls, input_tokens and output_tokens must not be negative")
	}
	return nil
}

// Message is one chat message as received. OpenAI content given as an array
// of parts is flattened to its text parts joined by newlines.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Request is one chat call as the server understood it.
type Request struct {
	API         string // "openai" or "ollama"
	Model       string
	Messages    []Message
	Temperature *float64 // nil when not sent (Ollama: options.temperature)
	MaxTokens   int      // 0 when not sent (OpenAI max_tokens or max_completion_tokens; Ollama options.num_predict)
	Auth        string   // the Authorization header as received
}

// Rule is one entry of a script: calls whose user text contains Match answer
// Replies in turn.
type Rule struct {
	Match   string  `json:"match"`
	Replies []Reply `json:"replies"`
}

type rule struct {
	match   string
	replies []Reply
	n       int // calls this rule has answered
}

// Server is the stand-in provider; the zero value is not usable, call New.
// It is safe for concurrent use.
type Server struct {
	want []byte // "Bearer KEY", nil when no auth is required

	mu    sync.Mutex
	calls int
	reqs  []Request // ring of the last keepRequests
	next  int       // oldest entry of reqs once it is full
	hook  func(Request, int) (Reply, bool)
	rules []*rule
}

// New returns a server. With key != "", the OpenAI routes answer 401 unless
// the request carries "Authorization: Bearer KEY"; the Ollama route never
// asks for auth, as Ollama does not.
func New(key string) *Server {
	s := &Server{}
	if key != "" {
		s.want = []byte("Bearer " + key)
	}
	return s
}

// Script makes a chat call whose user-message text (all user messages joined
// by newlines) contains match answer replies[n % len(replies)], n counting
// from 0 the calls this match has answered. The first registered match that
// matches wins; scripting a match again replaces its replies in place and
// restarts its count. An empty match matches every call. Script panics on no
// replies or an invalid reply (status outside 200..599, negative counts).
func (s *Server) Script(match string, replies ...Reply) {
	if len(replies) == 0 {
		panic(fmt.Sprintf("standin: Script(%q) needs at least one reply", match))
	}
	for i, r := range replies {
		if err := r.validate(); err != nil {
			panic(fmt.Sprintf("standin: Script(%q) reply %d: %v", match, i, err))
		}
	}
	rs := append([]Reply(nil), replies...)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.rules {
		if r.match == match {
			r.replies, r.n = rs, 0
			return
		}
	}
	s.rules = append(s.rules, &rule{match: match, replies: rs})
}

// Load scripts each rule in order, as Script does (rules from LoadScript are
// already valid; others may panic as Script does).
func (s *Server) Load(rules []Rule) {
	for _, r := range rules {
		s.Script(r.Match, r.Replies...)
	}
}

// Handle sets a hook consulted before the scripts for every chat call, with
// the call's index (0-based, over all calls since New or Reset); returning
// false falls through to the scripts and the default brain. The hook runs
// concurrently for concurrent calls and must not modify the Request. nil
// removes it. A reply the hook returns that Script would refuse is a 500.
func (s *Server) Handle(fn func(Request, int) (Reply, bool)) {
	s.mu.Lock()
	s.hook = fn
	s.mu.Unlock()
}

// Calls is the number of chat calls accepted: authenticated and well-formed
// (a 401 or 400 is not counted), however they were answered.
func (s *Server) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Requests returns the last 1000 accepted chat calls, oldest first (a copy).
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, 0, len(s.reqs))
	out = append(out, s.reqs[s.next:]...)
	out = append(out, s.reqs[:s.next]...)
	for i := range out {
		out[i].Messages = append([]Message(nil), out[i].Messages...)
		if t := out[i].Temperature; t != nil {
			v := *t
			out[i].Temperature = &v
		}
	}
	return out
}

// Reset returns the server to the state New left it in (the key stays):
// call counts, recorded requests, scripts and the hook are cleared.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls, s.reqs, s.next, s.hook, s.rules = 0, nil, 0, nil, nil
}

// LoadScript reads a script file: a JSON array of {"match": "...", "replies":
// [Reply, ...]}. Unknown keys, a missing match, an empty replies list and
// invalid replies are errors naming the rule.
func LoadScript(r io.Reader) ([]Rule, error) {
	var raw []struct {
		Match   *string           `json:"match"`
		Replies []json.RawMessage `json:"replies"`
	}
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("script: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("script: data after the top-level array")
	}
	rules := make([]Rule, len(raw))
	for i, x := range raw {
		if x.Match == nil {
			return nil, fmt.Errorf("script: rule %d: missing \"match\" (\"\" matches every call)", i)
		}
		name := fmt.Sprintf("script: rule %d (match %q)", i, *x.Match)
		if len(x.Replies) == 0 {
			return nil, fmt.Errorf("%s: \"replies\" must be a non-empty array", name)
		}
		rules[i] = Rule{Match: *x.Match, Replies: make([]Reply, len(x.Replies))}
		for j, b := range x.Replies {
			rep := &rules[i].Replies[j]
			if err := json.Unmarshal(b, rep); err != nil {
				return nil, fmt.Errorf("%s: reply %d: %w", name, j, err)
			}
			if err := rep.validate(); err != nil {
				return nil, fmt.Errorf("%s: reply %d: %w", name, j, err)
			}
		}
	}
	return rules, nil
}

// ServeHTTP routes the OpenAI and Ollama endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v1/chat/completions":
		if s.method(w, r, apiOpenAI, http.MethodPost) && s.authorized(w, r) {
			s.chat(w, r, apiOpenAI)
		}
	case "/v1/models":
		if s.method(w, r, apiOpenAI, http.MethodGet) && s.authorized(w, r) {
			serve.WriteJSON(w, http.StatusOK, modelList)
		}
	case "/api/chat":
		if s.method(w, r, apiOllama, http.MethodPost) {
			s.chat(w, r, apiOllama)
		}
	default:
		api := apiOpenAI
		if strings.HasPrefix(r.URL.Path, "/api/") {
			api = apiOllama
		}
		writeError(w, api, http.StatusNotFound, "invalid_request_error", "no route "+r.URL.Path)
	}
}

var modelList = struct {
	Object string `json:"object"`
	Data   []any  `json:"data"`
}{"list", []any{struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}{ModelID, "model", created, "logline"}}}

func (s *Server) method(w http.ResponseWriter, r *http.Request, api, want string) bool {
	if r.Method == want {
		return true
	}
	w.Header().Set("Allow", want)
	writeError(w, api, http.StatusMethodNotAllowed, "invalid_request_error", r.Method+" not allowed; use "+want)
	return false
}

func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.want == nil || subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), s.want) == 1 {
		return true
	}
	serve.WriteJSON(w, http.StatusUnauthorized, errorBody{errorDetail{
		Message: "Incorrect API key provided. Send Authorization: Bearer <key>.",
		Type:    "invalid_request_error",
		Code:    "invalid_api_key",
	}})
	return false
}

// chat answers one chat call: hook, then scripts, then the default brain.
func (s *Server) chat(w http.ResponseWriter, r *http.Request, api string) {
	req, status, err := decodeRequest(w, r, api)
	if err != nil {
		writeError(w, api, status, "invalid_request_error", err.Error())
		return
	}
	idx, hook := s.record(req)
	rep, ok := Reply{}, false
	if hook != nil {
		rep, ok = hook(req, idx)
		if ok {
			if err := rep.validate(); err != nil {
				writeError(w, api, http.StatusInternalServerError, "server_error", "stand-in: hook reply: "+err.Error())
				return
			}
		}
	}
	if !ok {
		rep, ok = s.scripted(userText(req.Messages))
	}
	if !ok {
		rep.Content = brain(req.Messages)
	}
	if rep.Delay > 0 {
		t := time.NewTimer(rep.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			// Abort rather than return: returning would send an empty 200
			// when the context ended for a server shutdown.
			panic(http.ErrAbortHandler)
		}
	}
	switch {
	case rep.Status != 0 && rep.Status != http.StatusOK:
		writeError(w, api, rep.Status, "server_error", "stand-in error")
	case rep.Garbage:
		b := garbage(idx)
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
	default:
		in, out := rep.InputTokens, rep.OutputTokens
		if in == 0 {
			for _, m := range req.Messages {
				in += words(m.Content)
			}
		}
		if out == 0 {
			out = words(rep.Content)
		}
		if api == apiOllama {
			serve.WriteJSON(w, http.StatusOK, ollamaAnswer(req, rep, in, out))
		} else {
			serve.WriteJSON(w, http.StatusOK, openAIAnswer(req, rep, idx, in, out))
		}
	}
}

// record counts and keeps an accepted call, returning its index and the hook.
func (s *Server) record(req Request) (int, func(Request, int) (Reply, bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := s.calls
	s.calls++
	if len(s.reqs) < keepRequests {
		s.reqs = append(s.reqs, req)
	} else {
		s.reqs[s.next] = req
		s.next = (s.next + 1) % keepRequests
	}
	return idx, s.hook
}

func (s *Server) scripted(text string) (Reply, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.rules {
		if strings.Contains(text, r.match) {
			rep := r.replies[r.n%len(r.replies)]
			r.n++
			return rep, true
		}
	}
	return Reply{}, false
}

// userText joins the user messages by newlines (no copy for the usual one).
func userText(msgs []Message) string {
	text, n := "", 0
	for _, m := range msgs {
		if m.Role != "user" {
			continue
		}
		if n == 0 {
			text = m.Content
		} else {
			text += "\n" + m.Content
		}
		n++
	}
	return text
}

// Wire forms of the request bodies; fields not listed are ignored, as
// providers ignore what they do not use.
type wireRequest struct {
	Model               string        `json:"model"`
	Messages            []wireMessage `json:"messages"`
	Temperature         *float64      `json:"temperature"`
	MaxTokens           int           `json:"max_tokens"`
	MaxCompletionTokens int           `json:"max_completion_tokens"`
	Stream              bool          `json:"stream"`
	Options             struct {
		Temperature *float64 `json:"temperature"`
		NumPredict  int      `json:"num_predict"`
	} `json:"options"`
}

type wireMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

func decodeRequest(w http.ResponseWriter, r *http.Request, api string) (Request, int, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return Request{}, http.StatusRequestEntityTooLarge, fmt.Errorf("request body larger than %d bytes", maxBody)
		}
		return Request{}, http.StatusBadRequest, fmt.Errorf("reading request body: %v", err)
	}
	var wr wireRequest
	if err := json.Unmarshal(body, &wr); err != nil {
		return Request{}, http.StatusBadRequest, fmt.Errorf("malformed JSON body: %v", err)
	}
	if len(wr.Messages) == 0 {
		return Request{}, http.StatusBadRequest, errors.New("messages: must be a non-empty array")
	}
	if wr.Stream {
		return Request{}, http.StatusBadRequest, errors.New("stream: the stand-in answers only \"stream\": false")
	}
	req := Request{API: api, Model: wr.Model, Messages: make([]Message, len(wr.Messages)), Auth: r.Header.Get("Authorization")}
	for i, m := range wr.Messages {
		c, err := content(m.Content)
		if err != nil {
			return Request{}, http.StatusBadRequest, fmt.Errorf("messages[%d].content: %v", i, err)
		}
		req.Messages[i] = Message{Role: m.Role, Content: c}
	}
	if api == apiOllama {
		req.Temperature, req.MaxTokens = wr.Options.Temperature, wr.Options.NumPredict
	} else {
		req.Temperature, req.MaxTokens = wr.Temperature, wr.MaxTokens
		if req.MaxTokens == 0 {
			req.MaxTokens = wr.MaxCompletionTokens
		}
	}
	return req, 0, nil
}

// content reads a message's content: a string, null/absent, or OpenAI's array
// of parts (text parts joined by newlines, other parts ignored).
func content(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("must be a string or an array of content parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// Default brain answers, fixed so tests can compare them byte for byte.
const (
	// BrainNoEvidence answers a FAQ prompt whose context is empty.
	BrainNoEvidence = `{"error":"Insufficient evidence."}`
	// BrainOK answers a prompt that is not a FAQ prompt.
	BrainOK = `{"answer":"ok","confidence":0.5}`
)

// brain is the default answer for a call no hook or script took. A FAQ
// prompt is a last user message with a "Question:" line and a "Context:" line;
// the context runs from after "Context:" to the end of the message (or to a
// later "Question:" line, for templates that put the question last).
func brain(msgs []Message) string {
	var user string
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" {
			user = msgs[i].Content
			break
		}
	}
	ctx, ok := faqContext(user)
	if !ok {
		return BrainOK
	}
	ctx = strings.TrimSpace(ctx)
	if ctx == "" {
		return BrainNoEvidence
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(struct {
		Answer     string   `json:"answer"`
		Confidence float64  `json:"confidence"`
		Citations  []string `json:"citations"`
	}{firstSentence(ctx), 0.9, []string{"context"}})
	return strings.TrimSuffix(b.String(), "\n")
}

// faqContext finds the context of a FAQ prompt; ok is false unless the
// message has both a "Question:" and a "Context:" line (leading blanks allowed).
func faqContext(msg string) (ctx string, ok bool) {
	question, start, end := false, -1, len(msg)
	for off := 0; off < len(msg); {
		line, next := msg[off:], len(msg)
		if i := strings.IndexByte(line, '\n'); i >= 0 {
			line, next = line[:i], off+i+1
		}
		t := strings.TrimLeft(line, " \t")
		switch {
		case strings.HasPrefix(t, "Question:"):
			question = true
			if start >= 0 {
				end = off
			}
		case start < 0 && strings.HasPrefix(t, "Context:"):
			start = off + len(line) - len(t) + len("Context:")
		}
		if question && start >= 0 && end < len(msg) {
			break
		}
		off = next
	}
	if !question || start < 0 {
		return "", false
	}
	return msg[start:end], true
}

// firstSentence is s up to and including the first '.', '!' or '?' followed
// by a blank or the end, or up to the first line break, whichever comes first.
func firstSentence(s string) string {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\n', '\r':
			return strings.TrimSpace(s[:i])
		case '.', '!', '?':
			if i+1 == len(s) || isBlank(s[i+1]) {
				return s[:i+1]
			}
		}
	}
	return s
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// words counts whitespace-separated words as strings.Fields would, without
// allocating.
func words(s string) int {
	n, in := 0, false
	for _, r := range s {
		sp := unicode.IsSpace(r)
		if !sp && !in {
			n++
		}
		in = !sp
	}
	return n
}

// garbage is a truncated SSE frame followed by deterministic junk (seeded by
// the call index): it can never parse as JSON, since it starts with "data:".
func garbage(seed int) []byte {
	const prefix = `data: {"choices":[{"delta":`
	const junk = `{[":,}]\ qvxz017#~`
	b := make([]byte, len(prefix), len(prefix)+40)
	copy(b, prefix)
	x := uint32(seed)*2654435761 + 12345
	for range 40 {
		x = x*1664525 + 1013904223
		b = append(b, junk[(x>>24)%uint32(len(junk))])
	}
	return b
}

type openAIResponse struct {
	ID      string         `json:"id"`
	Object  string         `json:"object"`
	Created int64          `json:"created"`
	Model   string         `json:"model"`
	Choices []openAIChoice `json:"choices"`
	Usage   struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

type openAIChoice struct {
	Index   int `json:"index"`
	Message struct {
		Role      string           `json:"role"`
		Content   string           `json:"content"`
		ToolCalls []openAIToolCall `json:"tool_calls,omitempty"`
	} `json:"message"`
	FinishReason string `json:"finish_reason"`
}

type openAIToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

func openAIAnswer(req Request, rep Reply, idx, in, out int) *openAIResponse {
	a := &openAIResponse{ID: "chatcmpl-" + strconv.Itoa(idx), Object: "chat.completion", Created: created, Model: req.Model}
	a.Choices = make([]openAIChoice, 1)
	c := &a.Choices[0]
	c.Message.Role, c.Message.Content = "assistant", rep.Content
	c.FinishReason = rep.FinishReason
	if rep.ToolCalls > 0 {
		c.Message.ToolCalls = make([]openAIToolCall, rep.ToolCalls)
		for i := range c.Message.ToolCalls {
			t := &c.Message.ToolCalls[i]
			t.ID, t.Type = "call_"+strconv.Itoa(i), "function"
			t.Function.Name, t.Function.Arguments = "lookup", "{}"
		}
		if c.FinishReason == "" {
			c.FinishReason = "tool_calls"
		}
	}
	if c.FinishReason == "" {
		c.FinishReason = "stop"
	}
	a.Usage.PromptTokens, a.Usage.CompletionTokens, a.Usage.TotalTokens = in, out, in+out
	return a
}

type ollamaResponse struct {
	Model     string `json:"model"`
	CreatedAt string `json:"created_at"`
	Message   struct {
		Role      string           `json:"role"`
		Content   string           `json:"content"`
		ToolCalls []ollamaToolCall `json:"tool_calls,omitempty"`
	} `json:"message"`
	Done            bool   `json:"done"`
	DoneReason      string `json:"done_reason"`
	PromptEvalCount int    `json:"prompt_eval_count"`
	EvalCount       int    `json:"eval_count"`
}

type ollamaToolCall struct {
	Function struct {
		Name      string   `json:"name"`
		Arguments struct{} `json:"arguments"`
	} `json:"function"`
}

func ollamaAnswer(req Request, rep Reply, in, out int) *ollamaResponse {
	a := &ollamaResponse{Model: req.Model, CreatedAt: createdAt, Done: true, DoneReason: rep.FinishReason,
		PromptEvalCount: in, EvalCount: out}
	a.Message.Role, a.Message.Content = "assistant", rep.Content
	if rep.ToolCalls > 0 {
		a.Message.ToolCalls = make([]ollamaToolCall, rep.ToolCalls)
		for i := range a.Message.ToolCalls {
			a.Message.ToolCalls[i].Function.Name = "lookup"
		}
	}
	if a.DoneReason == "" {
		a.DoneReason = "stop"
	}
	return a
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    string `json:"code,omitempty"`
}

// writeError answers in the route's own error format: OpenAI's
// {"error":{"message","type"}}, or Ollama's {"error":"message"}.
func writeError(w http.ResponseWriter, api string, status int, typ, msg string) {
	if api == apiOllama {
		serve.WriteJSON(w, status, struct {
			Error string `json:"error"`
		}{msg})
		return
	}
	serve.WriteJSON(w, status, errorBody{errorDetail{Message: msg, Type: typ}})
}
