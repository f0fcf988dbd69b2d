// Package standin is a stand-in of the Telegram Bot API: an http.Handler
// that speaks its wire format — POST (or GET) /bot<token>/<method> with
// parameters as JSON, a form or the query string, answered
// {"ok":true,"result":...} or {"ok":false,"error_code":N,"description":"..."}
// — and records what it was sent. Tests use it where the real API would
// need a bot, a phone and the network; `go run ./tools/faketelegram` serves
// it as a command for the README's tour.
//
// Methods: sendMessage, getMe, setWebhook, deleteWebhook, getWebhookInfo.
// A request with another token is 401 Unauthorized, an unknown method 404,
// as the real API answers. Deliver plays Telegram's side of a webhook: it
// posts an update to the URL setWebhook registered, with its secret token.
package standin

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/logline/logline/tools/internal/serve"
)

const (
	maxBody = 1 << 20
	// MaxText is the Bot API's limit on a message's text, in characters.
	MaxText = 4096
	// Date is the fixed date of every message the stand-in sends (Unix
	// 1700000000), so answers are reproducible.
	Date = 1700000000
	// BotName is the bot's first_name and Username its username (getMe).
	BotName  = "LogLine stand-in"
	Username = "logline_standin_bot"
)

// SendMessage is one sendMessage call as the stand-in understood it.
type SendMessage struct {
	// ChatID is chat_id as sent: a number's decimal text, or "@channel".
	ChatID string
	Text   string
	// ReplyTo is reply_to_message_id (or reply_parameters.message_id), 0
	// when absent.
	ReplyTo int64
	// Status is the HTTP status the stand-in answered (200, or the
	// failure's; 0 for a hang-up); MessageID the sent message's id when it
	// answered ok.
	Status    int
	MessageID int64
}

// Failure is an error answer: HTTP Status, the same error_code and
// Description, as the Bot API answers them ("Forbidden: bot was blocked by
// the user", 403). A Status of 0 is a 500. Hangup answers nothing: the
// connection is closed, as a proxy or a crash would (the client sees EOF).
type Failure struct {
	Status      int
	Description string
	Hangup      bool
}

// Server is the stand-in; make it with New. It is safe for concurrent use.
type Server struct {
	token string
	botID int64

	mu      sync.Mutex
	sent    []SendMessage
	nextID  int64
	fail    func(SendMessage, int) *Failure
	hookURL string
	secret  string
}

// New returns a stand-in of the bot whose token is token ("<bot id>:<key>",
// as @BotFather makes them; the id is the part before the colon, 0 if it is
// not a number).
func New(token string) *Server {
	id, _ := strconv.ParseInt(strings.SplitN(token, ":", 2)[0], 10, 64)
	return &Server{token: token, botID: id, nextID: 1000}
}

// Fail sets a hook asked before every well-formed sendMessage with the call
// and its index (0-based, over every sendMessage since New or Reset):
// returning a Failure answers it instead of sending. nil removes it.
func (s *Server) Fail(fn func(SendMessage, int) *Failure) {
	s.mu.Lock()
	s.fail = fn
	s.mu.Unlock()
}

// Sent returns every well-formed, authenticated sendMessage call, however it
// was answered, oldest first (a copy).
func (s *Server) Sent() []SendMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SendMessage(nil), s.sent...)
}

// Reset forgets the calls, the hook and the webhook.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent, s.fail, s.hookURL, s.secret, s.nextID = nil, nil, "", "", 1000
}

// Webhook is what setWebhook registered ("" when none).
func (s *Server) Webhook() (url, secretToken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hookURL, s.secret
}

// Deliver posts update (any JSON value) to the registered webhook as
// Telegram does — application/json, the secret token in
// X-Telegram-Bot-Api-Secret-Token — and returns the status it answered.
func (s *Server) Deliver(ctx context.Context, update any) (int, error) {
	url, secret := s.Webhook()
	if url == "" {
		return 0, errors.New("standin: no webhook set (setWebhook)")
	}
	body, err := json.Marshal(update)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if secret != "" {
		req.Header.Set("X-Telegram-Bot-Api-Secret-Token", secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// ServeHTTP answers /bot<token>/<method>.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/bot")
	token, method, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || method == "" || strings.Contains(method, "/") {
		fail(w, http.StatusNotFound, "Not Found")
		return
	}
	if subtle.ConstantTimeCompare([]byte(token), []byte(s.token)) != 1 {
		fail(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		fail(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	params, err := readParams(w, r)
	if err != nil {
		fail(w, http.StatusBadRequest, "Bad Request: "+err.Error())
		return
	}
	// Method names are case-insensitive in the Bot API.
	switch strings.ToLower(method) {
	case "sendmessage":
		s.sendMessage(w, params)
	case "getme":
		ok200(w, s.me())
	case "setwebhook":
		s.setWebhook(w, params)
	case "deletewebhook":
		s.mu.Lock()
		s.hookURL, s.secret = "", ""
		s.mu.Unlock()
		serve.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "result": true, "description": "Webhook was deleted"})
	case "getwebhookinfo":
		url, _ := s.Webhook()
		ok200(w, map[string]any{"url": url, "has_custom_certificate": false, "pending_update_count": 0})
	default:
		fail(w, http.StatusNotFound, "Not Found")
	}
}

func (s *Server) me() map[string]any {
	return map[string]any{"id": s.botID, "is_bot": true, "first_name": BotName, "username": Username,
		"can_join_groups": true, "can_read_all_group_messages": false, "supports_inline_queries": false}
}

func (s *Server) sendMessage(w http.ResponseWriter, p params) {
	chat, _ := p.text("chat_id")
	text, _ := p.text("text")
	switch {
	case chat == "":
		fail(w, http.StatusBadRequest, "Bad Request: chat_id is empty")
		return
	case text == "":
		fail(w, http.StatusBadRequest, "Bad Request: message text is empty")
		return
	case utf8.RuneCountInString(text) > MaxText:
		fail(w, http.StatusBadRequest, "Bad Request: message is too long")
		return
	}
	chatNum, numeric := int64(0), false
	if n, err := strconv.ParseInt(chat, 10, 64); err == nil {
		chatNum, numeric = n, true
	} else if !strings.HasPrefix(chat, "@") {
		fail(w, http.StatusBadRequest, "Bad Request: chat not found")
		return
	}
	replyTo, err := p.integer("reply_to_message_id")
	if err != nil {
		fail(w, http.StatusBadRequest, "Bad Request: "+err.Error())
		return
	}
	if replyTo == 0 {
		if rp, ok := p["reply_parameters"]; ok {
			var v struct {
				MessageID int64 `json:"message_id"`
			}
			if json.Unmarshal(rp, &v) != nil {
				fail(w, http.StatusBadRequest, "Bad Request: can't parse reply parameters JSON object")
				return
			}
			replyTo = v.MessageID
		}
	}
	call := SendMessage{ChatID: chat, Text: text, ReplyTo: replyTo, Status: http.StatusOK}
	s.mu.Lock()
	idx, hook := len(s.sent), s.fail
	s.sent = append(s.sent, call)
	s.mu.Unlock()
	if hook != nil {
		if f := hook(call, idx); f != nil {
			if f.Hangup {
				s.mu.Lock()
				s.sent[idx].Status = 0
				s.mu.Unlock()
				panic(http.ErrAbortHandler) // net/http closes the connection, answering nothing
			}
			st := f.Status
			if st == 0 {
				st = http.StatusInternalServerError
			}
			desc := f.Description
			if desc == "" {
				desc = http.StatusText(st)
			}
			s.mu.Lock()
			s.sent[idx].Status = st
			s.mu.Unlock()
			fail(w, st, desc)
			return
		}
	}
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.sent[idx].MessageID = id
	s.mu.Unlock()
	chatObj := map[string]any{"id": chat, "type": "channel"}
	if numeric {
		kind := "private"
		if chatNum < 0 {
			kind = "group"
		}
		chatObj = map[string]any{"id": chatNum, "type": kind}
	}
	msg := map[string]any{"message_id": id, "from": map[string]any{"id": s.botID, "is_bot": true, "first_name": BotName, "username": Username},
		"chat": chatObj, "date": Date, "text": text}
	if replyTo != 0 {
		msg["reply_to_message"] = map[string]any{"message_id": replyTo, "chat": chatObj, "date": Date}
	}
	ok200(w, msg)
}

// secretRE is what setWebhook accepts as secret_token.
var secretRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)

func (s *Server) setWebhook(w http.ResponseWriter, p params) {
	url, _ := p.text("url")
	secret, _ := p.text("secret_token")
	if url != "" && !strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://") {
		fail(w, http.StatusBadRequest, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
		return
	}
	if secret != "" && !secretRE.MatchString(secret) {
		fail(w, http.StatusBadRequest, "Bad Request: secret token contains unallowed characters")
		return
	}
	s.mu.Lock()
	s.hookURL, s.secret = url, secret
	s.mu.Unlock()
	desc := "Webhook was set"
	if url == "" {
		desc = "Webhook was deleted"
	}
	serve.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "result": true, "description": desc})
}

// params are a call's parameters, each as raw JSON.
type params map[string]json.RawMessage

// text is a parameter as text: a JSON string's value, a number's digits.
func (p params) text(name string) (string, bool) {
	raw, ok := p[name]
	if !ok {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String(), true
	}
	return strings.TrimSpace(string(raw)), true
}

func (p params) integer(name string) (int64, error) {
	v, ok := p.text(name)
	if !ok || v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("field %q must be of type Integer", name)
	}
	return n, nil
}

// readParams reads the query string, then the body: a JSON object or a
// form (urlencoded or multipart), as the Bot API takes them.
func readParams(w http.ResponseWriter, r *http.Request) (params, error) {
	p := params{}
	str := func(v string) json.RawMessage { b, _ := json.Marshal(v); return b }
	for k, vs := range r.URL.Query() {
		p[k] = str(vs[0])
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/json":
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(body)) == 0 {
			return p, nil
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(body, &obj); err != nil {
			return nil, errors.New("can't parse JSON object")
		}
		for k, v := range obj {
			p[k] = v
		}
	case "application/x-www-form-urlencoded", "multipart/form-data":
		if err := r.ParseMultipartForm(maxBody); err != nil && !errors.Is(err, http.ErrNotMultipart) {
			return nil, err
		}
		for k, vs := range r.PostForm {
			p[k] = str(vs[0])
		}
	}
	return p, nil
}

func ok200(w http.ResponseWriter, result any) {
	serve.WriteJSON(w, http.StatusOK, map[string]any{"ok": true, "result": result})
}

func fail(w http.ResponseWriter, status int, description string) {
	serve.WriteJSON(w, status, map[string]any{"ok": false, "error_code": status, "description": description})
}

// TextUpdate is an Update as Telegram sends it for a text message from a
// user (id userID, first name "User <id>", username "user<id>") in the
// private chat of that user: chat.id = userID.
func TextUpdate(updateID, messageID, userID int64, text string) map[string]any {
	from := map[string]any{"id": userID, "is_bot": false, "first_name": fmt.Sprintf("User %d", userID),
		"username": fmt.Sprintf("user%d", userID), "language_code": "en"}
	chat := map[string]any{"id": userID, "type": "private", "first_name": from["first_name"], "username": from["username"]}
	return map[string]any{"update_id": updateID, "message": map[string]any{"message_id": messageID, "from": from,
		"chat": chat, "date": Date, "text": text}}
}
