package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

// The Telegram adapter's webhook: POST /api/adapters/telegram/{bot} takes
// the Bot API's webhook updates for a bot the manifest binds to a tenant
// (stage0.TelegramBot) and appends each text message as a telegram_message
// span of that tenant, as the bot's user — never as anything the body says.
// The engine's telegram_worker answers it (guests/kernels/telegram_worker.js);
// nothing is answered here: Telegram retries an update until it gets a 2xx,
// so the webhook only records, fast.
//
// Authentication is the secret token Telegram sends in
// X-Telegram-Bot-Api-Secret-Token (setWebhook's secret_token), compared in
// constant time with the value of the bot's secret_env. An unknown bot, a
// bot whose variable is unset, a wrong or absent header: the same 401, with
// the same work done (a digest compared against a dummy when there is no
// secret to compare with), and nothing read or written.

// TelegramSecretHeader carries a webhook's secret token.
const TelegramSecretHeader = "X-Telegram-Bot-Api-Secret-Token"

// MaxTelegramBody bounds an update: a message's text is at most 4096
// characters, so a real update is a few KB.
const MaxTelegramBody = 1 << 20

// maxTelegramSecret is the Bot API's bound on a secret token.
const maxTelegramSecret = 256

// telegramNS is the UUIDv5 namespace of telegram_message ids.
var telegramNS = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://logline.dev/api/adapters/telegram"))

// TelegramMessageID is the id of the telegram_message span of update
// updateID of bot in tenant: a redelivered update names the same id, so the
// ledger's own uniqueness makes the webhook idempotent. The tenant is part
// of it, so rebinding a bot to another tenant never collides.
func TelegramMessageID(tenant, bot string, updateID int64) string {
	return uuid.NewSHA1(telegramNS, []byte(tenant+"\x00"+bot+"\x00"+strconv.FormatInt(updateID, 10))).String()
}

// telegramBot finds bot in the latest manifest and checks secret against
// its secret_env's value, in constant time whether the bot exists or not.
func (a *authenticator) telegramBot(name, secret string) (stage0.TelegramBot, bool) {
	a.mu.RLock()
	m := a.manifest
	a.mu.RUnlock()
	var bot stage0.TelegramBot
	known := false
	if m != nil {
		bot, known = m.Telegram.Bots[name]
	}
	env := bot.SecretEnv
	if !known {
		env = "LOGLINE_TELEGRAM_NO_SUCH_BOT" // the same lookup, for the same time
	}
	want := os.Getenv(env)
	// Digests, so the comparison takes the same time whatever the lengths.
	w := sha256.Sum256([]byte("logline telegram webhook\x00" + want))
	g := sha256.Sum256([]byte("logline telegram webhook\x00" + secret))
	same := subtle.ConstantTimeCompare(w[:], g[:]) == 1
	return bot, known && want != "" && secret != "" && same
}

// The Update, as far as the adapter reads it (core.telegram.org/bots/api#update):
// unknown fields are ignored, as the Bot API adds them over time.
type tgUpdate struct {
	UpdateID *int64     `json:"update_id"`
	Message  *tgMessage `json:"message"`
}

type tgMessage struct {
	MessageID *int64  `json:"message_id"`
	Date      int64   `json:"date"`
	Text      *string `json:"text"`
	Chat      *tgChat `json:"chat"`
	From      *tgUser `json:"from,omitempty"`
}

type tgChat struct {
	ID        int64  `json:"id"`
	Type      string `json:"type"`
	Title     string `json:"title,omitempty"`
	Username  string `json:"username,omitempty"`
	FirstName string `json:"first_name,omitempty"`
	LastName  string `json:"last_name,omitempty"`
}

type tgUser struct {
	ID           int64  `json:"id"`
	IsBot        bool   `json:"is_bot"`
	FirstName    string `json:"first_name,omitempty"`
	LastName     string `json:"last_name,omitempty"`
	Username     string `json:"username,omitempty"`
	LanguageCode string `json:"language_code,omitempty"`
}

// telegramMessageInput is the input of a telegram_message span: what the
// worker needs to answer, and who asked.
type telegramMessageInput struct {
	Bot       string  `json:"bot"`
	UpdateID  int64   `json:"update_id"`
	MessageID int64   `json:"message_id"`
	Date      int64   `json:"date"`
	Chat      tgChat  `json:"chat"`
	From      *tgUser `json:"from,omitempty"`
	Text      string  `json:"text"`
}

// telegramResult is the webhook's answer. Telegram reads only the status
// (a JSON body with a "method" would be a Bot API call: this has none).
type telegramResult struct {
	OK      bool   `json:"ok"`
	Status  string `json:"status"`            // received, duplicate, ignored
	SpanID  string `json:"span_id,omitempty"` // the telegram_message
	Ignored string `json:"ignored,omitempty"` // the update's kind, when ignored
}

// maxJSONInt is the largest integer a span may hold exactly (JCS).
const maxJSONInt = 1<<53 - 1

// decodeUpdate parses an update: what is not JSON or has a wrong type is
// 400, what the ledger cannot hold exactly is 422, each naming the field.
// kind is the update's kind when it is not a text message (ignored).
func decodeUpdate(body []byte) (upd tgUpdate, kind string, prob *problem) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return upd, "", fail(codeMalformed, "body", "an update is a JSON object: %v", err)
	}
	if err := json.Unmarshal(body, &upd); err != nil {
		field := "body"
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			field = te.Field
		}
		return upd, "", fail(codeMalformed, field, "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if upd.UpdateID == nil {
		return upd, "", fail(codeMalformed, "update_id", "update_id (an integer) is required")
	}
	if *upd.UpdateID < 0 || *upd.UpdateID > maxJSONInt {
		return upd, "", fail(codeInvalid, "update_id", "update_id must be an integer from 0 to 2^53-1")
	}
	if upd.Message == nil {
		kinds := make([]string, 0, len(raw))
		for k := range raw {
			if k != "update_id" {
				kinds = append(kinds, k)
			}
		}
		sort.Strings(kinds)
		kind = "unknown"
		if len(kinds) > 0 {
			kind = kinds[0]
		}
		return upd, kind, nil
	}
	m := upd.Message
	if m.Text == nil {
		return upd, "message without text", nil
	}
	switch {
	case m.MessageID == nil:
		return upd, "", fail(codeMalformed, "message.message_id", "message.message_id (an integer) is required")
	case m.Chat == nil:
		return upd, "", fail(codeMalformed, "message.chat", "message.chat (an object with an id) is required")
	case !exactInt(*m.MessageID):
		return upd, "", fail(codeInvalid, "message.message_id", "message.message_id is beyond 2^53-1")
	case !exactInt(m.Chat.ID):
		return upd, "", fail(codeInvalid, "message.chat.id", "message.chat.id is beyond 2^53-1")
	case m.From != nil && !exactInt(m.From.ID):
		return upd, "", fail(codeInvalid, "message.from.id", "message.from.id is beyond 2^53-1")
	case !exactInt(m.Date):
		return upd, "", fail(codeInvalid, "message.date", "message.date is beyond 2^53-1")
	}
	return upd, "", nil
}

// exactInt reports whether n survives a span's canonical form (JCS hashes
// numbers as doubles).
func exactInt(n int64) bool { return n >= -maxJSONInt && n <= maxJSONInt }

func (s *Server) telegramWebhook(c echo.Context) error {
	name := c.Param("bot")
	bot, ok := s.auth.telegramBot(name, c.Request().Header.Get(TelegramSecretHeader))
	if !ok {
		return fail(codeUnauthorized, TelegramSecretHeader, "unknown bot or wrong secret token")
	}
	p := bot.Principal()
	c.Set(principalKey, p) // the request log names the bot's principal
	if _, err := mediaType(c, mimeJSON); err != nil {
		return err
	}
	body, err := readBodyMax(c, MaxTelegramBody)
	if err != nil {
		return err
	}
	upd, kind, prob := decodeUpdate(body)
	if prob != nil {
		return prob
	}
	if kind != "" {
		// Telegram sends what the bot's allowed_updates ask for; anything
		// but a text message is acknowledged, or it would come back.
		return writeJSON(c, http.StatusOK, mimeJSON, telegramResult{OK: true, Status: "ignored", Ignored: kind})
	}
	m := upd.Message
	in := telegramMessageInput{Bot: name, UpdateID: *upd.UpdateID, MessageID: *m.MessageID, Date: m.Date,
		Chat: *m.Chat, From: m.From, Text: *m.Text}
	input, err := json.Marshal(in)
	if err != nil {
		return err
	}
	meta, err := json.Marshal(map[string]any{"bot": name, "update_id": in.UpdateID, "chat_id": in.Chat.ID})
	if err != nil {
		return err
	}
	sp := span.Span{ID: TelegramMessageID(p.Tenant, name, in.UpdateID), EntityType: "telegram_message", Who: p.User,
		Did: "received", This: "telegram.message", Status: "received", Visibility: span.VisibilityPrivate,
		TraceID: traceID(c), Input: input, Metadata: meta}
	if err := sp.Validate(); err != nil {
		var fe *span.FieldError
		if errors.As(err, &fe) {
			// The input is what the message said: its text, mostly.
			field := fe.Field
			if field == "input" {
				field = "message.text"
			}
			return fail(codeInvalid, field, "%s", fe.Reason)
		}
		return fail(codeInvalid, "", "%v", err)
	}
	if _, err := s.l.Append(c.Request().Context(), p, sp); err != nil {
		if errors.Is(err, ledger.ErrSeqConflict) {
			// A redelivery (or a second server of the same update):
			// already recorded, nothing written.
			return writeJSON(c, http.StatusOK, mimeJSON, telegramResult{OK: true, Status: "duplicate", SpanID: sp.ID})
		}
		return err
	}
	return writeJSON(c, http.StatusCreated, mimeJSON, telegramResult{OK: true, Status: "received", SpanID: sp.ID})
}

// telegramSchemas are the webhook's components of the OpenAPI document.
func telegramSchemas() schema {
	integer := schema{"type": "integer"}
	return schema{
		"TelegramUpdate": schema{
			"type": "object",
			"description": "A Bot API Update (core.telegram.org/bots/api#update). Only message (with text) is recorded; " +
				"every other kind is acknowledged and ignored; unknown fields are ignored.",
			"properties": schema{
				"update_id": schema{"type": "integer", "minimum": 0},
				"message": schema{"type": "object", "properties": schema{
					"message_id": integer, "date": integer, "text": schema{"type": "string"},
					"chat": schema{"type": "object", "properties": schema{"id": integer, "type": str("")}, "required": []string{"id"}},
					"from": schema{"type": "object", "properties": schema{"id": integer, "is_bot": schema{"type": "boolean"},
						"first_name": str(""), "username": str("")}},
				}, "required": []string{"message_id", "chat"}},
			},
			"required": []string{"update_id"},
		},
		"TelegramWebhookResult": object(schema{
			"ok": schema{"type": "boolean", "const": true},
			"status": schema{"type": "string", "enum": []string{"received", "duplicate", "ignored"},
				"description": "received (201): appended. duplicate (200): this update was recorded before; nothing written. " +
					"ignored (200): not a text message; nothing written."},
			"span_id": schema{"type": "string", "format": "uuid", "description": "The telegram_message span (received, duplicate)."},
			"ignored": str("The update's kind (edited_message, callback_query, …, or \"message without text\")."),
		}, "ok", "status"),
	}
}
