package stage0

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/google/uuid"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/ledger"
)

// The manifest's telegram section binds Telegram bots to tenants: the
// webhook POST /api/adapters/telegram/{bot} appends the messages a bot
// receives as spans of its tenant, and the stock telegram_worker kernel
// answers them through the Bot API (guests/kernels/telegram_worker.js).
//
//	"telegram": {"bots": {"<name>": {"tenant": "acme", "user": "telegram:support",
//	    "secret_env": "SUPPORT_WEBHOOK_SECRET", "token_env": "SUPPORT_BOT_TOKEN",
//	    "api_base": "https://api.telegram.org", "family": "faq_answerer" | "function_id": "<uuid>",
//	    "context": "..."}}}
//
// Secrets are host environment variables the manifest names, never values:
// secret_env holds the webhook's secret token (what Telegram sends in
// X-Telegram-Bot-Api-Secret-Token, set with setWebhook's secret_token), read
// only by the API; token_env the bot token, which only the http capability
// reads (so it must be in provider_secrets) and puts in the URL's path.

// TelegramBot is one bot of the manifest's telegram.bots.
type TelegramBot struct {
	// Tenant and User are the bot's principal: the webhook appends its
	// messages as this user of this tenant, never as anything a body says.
	Tenant string `json:"tenant"`
	User   string `json:"user"`
	// SecretEnv names the host variable holding the webhook secret token.
	SecretEnv string `json:"secret_env"`
	// TokenEnv names the host variable holding the bot token.
	TokenEnv string `json:"token_env"`
	// APIBase is the Bot API's base URL (default DefaultTelegramAPI); its
	// sendMessage URL must be in the http_allowlist.
	APIBase string `json:"api_base,omitempty"`
	// Family answers by the prompt runner (the tenant's routing of the
	// family); FunctionID by running that function with {text, chat_id,
	// from}. Exactly one of them.
	Family     string `json:"family,omitempty"`
	FunctionID string `json:"function_id,omitempty"`
	// Context is the prompt's {{context}} slot for a family bot (what the
	// bot knows), default empty.
	Context string `json:"context,omitempty"`
}

// DefaultTelegramAPI is the Bot API's base URL when a bot names none.
const DefaultTelegramAPI = "https://api.telegram.org"

// TelegramSendPath is the path of sendMessage under a bot's api_base, with
// the token's placeholder (the http capability's auth_in "path").
const TelegramSendPath = "/bot" + abi.AuthPlaceholder + "/sendMessage"

// SendURL is the bot's sendMessage URL as a kernel writes it: the token's
// place is abi.AuthPlaceholder.
func (b TelegramBot) SendURL() string {
	return strings.TrimRight(b.base(), "/") + TelegramSendPath
}

func (b TelegramBot) base() string {
	if b.APIBase == "" {
		return DefaultTelegramAPI
	}
	return b.APIBase
}

// Principal is the user the bot's messages are appended as.
func (b TelegramBot) Principal() ledger.Principal { return ledger.User(b.Tenant, b.User) }

// TelegramTenants are the tenants with a bot bound, sorted.
func (m *Manifest) TelegramTenants() []string {
	var out []string
	for _, b := range m.Telegram.Bots {
		if !slices.Contains(out, b.Tenant) {
			out = append(out, b.Tenant)
		}
	}
	sort.Strings(out)
	return out
}

// CodeInvalidManifest is the refusal of a manifest that does not check
// (Manifest.Check); its message names the field.
const CodeInvalidManifest = "invalid_manifest"

// ManifestError is a manifest field that does not check.
type ManifestError struct {
	Field  string // dotted, e.g. telegram.bots.support.token_env
	Reason string
}

func (e *ManifestError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, a ...any) *ManifestError {
	return &ManifestError{Field: field, Reason: fmt.Sprintf(format, a...)}
}

var (
	botNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	familyRE  = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,100}$`)
)

// MaxTelegramContext bounds a family bot's context text.
const MaxTelegramContext = 32768

// decodeTelegram reads the telegram section strictly: an unknown key is
// an error naming it (a typo must not silently unbind a bot's secret).
func decodeTelegram(raw json.RawMessage) (TelegramSection, error) {
	var out TelegramSection
	if len(raw) == 0 || string(raw) == "null" {
		return out, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return out, fieldErr("telegram", "must be an object {\"bots\": {...}}: %v", err)
	}
	for k := range top {
		if k != "bots" {
			return out, fieldErr("telegram."+k, "unknown key (the section has only bots)")
		}
	}
	var bots map[string]json.RawMessage
	if b := top["bots"]; len(b) > 0 && string(b) != "null" {
		if err := json.Unmarshal(b, &bots); err != nil {
			return out, fieldErr("telegram.bots", "must be an object of bot name → binding: %v", err)
		}
	}
	out.Bots = map[string]TelegramBot{}
	for name, b := range bots {
		field := "telegram.bots." + name
		var bot TelegramBot
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&bot); err != nil {
			return out, fieldErr(field, "%s", strings.TrimPrefix(err.Error(), "json: "))
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return out, fieldErr(field, "trailing data")
		}
		out.Bots[name] = bot
	}
	return out, nil
}

// TelegramSection is the manifest's telegram section: bots by name.
type TelegramSection struct {
	Bots map[string]TelegramBot `json:"bots,omitempty"`
}

// Check validates what the host acts on beyond the plain fields: today the
// telegram section. The first problem found is returned, naming its field
// (bots in name order, so the message is stable).
func (m *Manifest) Check() error {
	names := make([]string, 0, len(m.Telegram.Bots))
	for n := range m.Telegram.Bots {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := m.checkBot(name, m.Telegram.Bots[name]); err != nil {
			return err
		}
	}
	return nil
}

func (m *Manifest) checkBot(name string, b TelegramBot) error {
	f := func(k string) string { return "telegram.bots." + name + "." + k }
	if !botNameRE.MatchString(name) {
		return fieldErr("telegram.bots."+name, "a bot name is 1 to 64 letters, digits, _ or - (it is the webhook's path segment)")
	}
	if b.Tenant == "" {
		return fieldErr(f("tenant"), "required: the tenant the bot talks to")
	}
	if b.User == "" {
		return fieldErr(f("user"), "required: the user its messages are appended as")
	}
	if err := b.Principal().Validate(); err != nil {
		field := f("user")
		if strings.Contains(err.Error(), "tenant") {
			field = f("tenant")
		}
		return fieldErr(field, "%v", err)
	}
	for _, e := range []struct{ key, v string }{{"secret_env", b.SecretEnv}, {"token_env", b.TokenEnv}} {
		if e.v == "" {
			return fieldErr(f(e.key), "required: the name of a host environment variable")
		}
		if !envNameRE.MatchString(e.v) {
			return fieldErr(f(e.key), "%q is not an environment variable name (letters, digits, _; not starting with a digit)", e.v)
		}
	}
	if b.SecretEnv == b.TokenEnv {
		return fieldErr(f("secret_env"), "the webhook secret and the bot token must be different variables")
	}
	if !slices.Contains(m.ProviderSecrets, b.TokenEnv) {
		return fieldErr(f("token_env"), "%s is not in provider_secrets: the http capability sends only the secrets listed there", b.TokenEnv)
	}
	if slices.Contains(m.ProviderSecrets, b.SecretEnv) {
		return fieldErr(f("secret_env"), "%s is in provider_secrets: a kernel could then send the webhook secret out; only the API reads it", b.SecretEnv)
	}
	u, err := url.Parse(b.base())
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fieldErr(f("api_base"), "%q must be an http(s) URL without user, query or fragment", b.APIBase)
	}
	if !m.AllowsURL(b.SendURL()) {
		return fieldErr(f("api_base"), "%s is not in http_allowlist (add %s/)", b.SendURL(), strings.TrimRight(b.base(), "/"))
	}
	switch {
	case b.Family != "" && b.FunctionID != "":
		return fieldErr(f("family"), "give family or function_id, not both")
	case b.Family == "" && b.FunctionID == "":
		return fieldErr(f("family"), "family or function_id is required: what answers the bot's messages")
	case b.Family != "" && !familyRE.MatchString(b.Family):
		return fieldErr(f("family"), "%q is not a family name (1 to 100 letters, digits, _ . -)", b.Family)
	case b.FunctionID != "":
		if id, err := uuid.Parse(b.FunctionID); err != nil || id.String() != b.FunctionID {
			return fieldErr(f("function_id"), "%q is not a lowercase UUID", b.FunctionID)
		}
		if b.Context != "" {
			return fieldErr(f("context"), "context is the prompt's; a function bot gets {text, chat_id, from}")
		}
	}
	if len(b.Context) > MaxTelegramContext {
		return fieldErr(f("context"), "%d bytes, more than %d", len(b.Context), MaxTelegramContext)
	}
	return nil
}
