// Package stage0 is the only code outside the ledger that decides what runs:
// it reads the latest manifest, refuses kernels the manifest does not allow,
// verifies a kernel's hash and (when required) its signature by a trusted key,
// records a boot_event, and runs the kernel in the sandbox with the full ABI
// under its tenant's service principal. It also runs single functions and
// policies as tier-2 sandboxes (logline run) and records every run as a
// signed execution span.
//
// It imports host/ledger, host/sandbox, host/span and abi; never HTTP.
package stage0

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// ManifestID is the manifest's stable id (seed §6, Appendix A).
const ManifestID = "00000000-0000-4000-8000-0000000000aa"

// Manifest is the governance document in the manifest span's metadata.
type Manifest struct {
	Kernels        map[string]string `json:"kernels"`
	AllowedBootIDs []string          `json:"allowed_boot_ids"`
	TrustedKeys    []string          `json:"trusted_keys"`
	// OverridePubkeyHex signs functions whose metadata.force runs them past
	// the daily quota (the request_worker kernel checks it).
	OverridePubkeyHex    string `json:"override_pubkey_hex"`
	RequireSignedKernels bool   `json:"require_signed_kernels"`
	Limits               struct {
		Fuel        int64  `json:"fuel,omitempty"`
		MemoryPages uint32 `json:"memory_pages,omitempty"`
		// MaxFuel bounds what a kernel or function may ask for in its own
		// metadata.limits.fuel (default DefaultMaxFuel).
		MaxFuel int64 `json:"max_fuel,omitempty"`
		// MaxKernelFuel bounds a kernel's own request (default and floor
		// DefaultMaxKernelFuel).
		MaxKernelFuel int64 `json:"max_kernel_fuel,omitempty"`
	} `json:"limits"`
	HTTPAllowlist []string `json:"http_allowlist"`
	// ProviderSecrets are the host environment variables a kernel's http
	// call may name as auth_env (the host adds them as a bearer token).
	ProviderSecrets []string `json:"provider_secrets"`
	// GlobalPolicies are public policies the policy agent of every tenant
	// evaluates (the stock ones).
	GlobalPolicies []string `json:"global_policies"`
	// Engine holds the intervals of the engine's loops (the seed's
	// playbook: observer and request_worker every 2–10 s, policy_agent
	// every 5–30 s); notifications wake them sooner. RequestLanes is how
	// many request_worker passes of one tenant may run at once, each on a
	// share of its requests (0: the default of 2; at most 8, the lanes the
	// kernels count quotas over).
	Engine struct {
		ObserverMs      int `json:"observer_ms,omitempty"`
		RequestWorkerMs int `json:"request_worker_ms,omitempty"`
		PolicyAgentMs   int `json:"policy_agent_ms,omitempty"`
		RequestLanes    int `json:"request_lanes,omitempty"`
		PromptWorkerMs  int `json:"prompt_worker_ms,omitempty"`
		// TelegramWorkerMs is the telegram_worker's sweep, for tenants
		// with a bot bound (telegram.go).
		TelegramWorkerMs int `json:"telegram_worker_ms,omitempty"`
	} `json:"engine"`
	// Telegram binds Telegram bots to tenants (telegram.go). It is read
	// strictly, apart from the rest, by ParseManifest.
	Telegram TelegramSection `json:"-"`

	span span.Span
}

// Span is the manifest span it was read from.
func (m *Manifest) Span() span.Span { return m.span }

// Allowed reports whether id may boot.
func (m *Manifest) Allowed(id string) bool { return slices.Contains(m.AllowedBootIDs, id) }

// AllowsURL reports whether raw is under an entry of http_allowlist: the
// same scheme and host (port included) and a path under the entry's path.
// A plain string prefix would let "https://api.example.com" admit
// "https://api.example.com.evil.net".
func (m *Manifest) AllowsURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.User != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == "." || seg == ".." {
			return false // a server would resolve it out from under the prefix
		}
	}
	for _, entry := range m.HTTPAllowlist {
		a, err := url.Parse(entry)
		if err != nil || a.Host == "" {
			continue
		}
		if !strings.EqualFold(a.Scheme, u.Scheme) || !strings.EqualFold(a.Host, u.Host) {
			continue
		}
		prefix := strings.TrimSuffix(a.EscapedPath(), "/")
		p := u.EscapedPath()
		if prefix == "" || p == prefix || strings.HasPrefix(p, prefix+"/") {
			return true
		}
	}
	return false
}

// Trusted reports whether publicKeyHex is a key the manifest trusts.
func (m *Manifest) Trusted(publicKeyHex string) bool {
	return slices.Contains(m.TrustedKeys, publicKeyHex)
}

// CodeNodeKeyIsAuthority is the refusal of a manifest that names the
// host's own node key as an authority.
const CodeNodeKeyIsAuthority = "node_key_is_authority"

// CheckAuthority refuses a manifest under which the node key (hex, "" for
// none) would confer authority. The host seals every span that arrives
// unsigned with its node key, so a span it sealed would otherwise count as
// signed by a trusted key (a kernel that boots, a function forced past the
// quota) on nobody's authority but the host's.
func (m *Manifest) CheckAuthority(node string) error {
	if node == "" {
		return nil
	}
	node = strings.ToLower(node)
	var roles []string
	if strings.ToLower(strings.TrimSpace(m.OverridePubkeyHex)) == node {
		roles = append(roles, "override_pubkey_hex")
	}
	for _, k := range m.TrustedKeys {
		if strings.ToLower(strings.TrimSpace(k)) == node {
			roles = append(roles, "trusted_keys")
			break
		}
	}
	if len(roles) == 0 {
		return nil
	}
	return refuse(CodeNodeKeyIsAuthority, "the node key %s is also the manifest's %s: the host seals every unsigned span "+
		"with its node key, so that key must confer no authority. Keep authority (seeds, kernels, force overrides) "+
		"with an operator key of its own (logline keys gen) and serve with a different node key",
		node, strings.Join(roles, " and "))
}

// Refusal is why Stage-0 would not run something: its Code is one of the
// abi.Code* strings (not_allowed, hash_mismatch, unsigned, invalid_module,
// forbidden_import) or "not_found".
type Refusal struct {
	Code    string
	Message string
}

func (r *Refusal) Error() string { return r.Code + ": " + r.Message }

// CodeNotFound is the refusal code for a span that does not exist (or is
// not visible).
const CodeNotFound = "not_found"

func refuse(code, format string, a ...any) *Refusal {
	return &Refusal{Code: code, Message: fmt.Sprintf(format, a...)}
}

// ParseManifest reads a manifest's metadata and checks it (Check): a
// *ManifestError names the field at fault. `logline seed` checks the seeded
// manifest with it before appending anything.
func ParseManifest(metadata json.RawMessage) (*Manifest, error) {
	m := &Manifest{}
	if len(metadata) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(metadata, m); err != nil {
		return nil, err
	}
	var sections struct {
		Telegram json.RawMessage `json:"telegram"`
	}
	if err := json.Unmarshal(metadata, &sections); err != nil {
		return nil, err
	}
	var err error
	if m.Telegram, err = decodeTelegram(sections.Telegram); err != nil {
		return nil, err
	}
	if err := m.Check(); err != nil {
		return nil, err
	}
	return m, nil
}

// LoadManifest reads the latest version of the manifest. The manifest is
// trusted only if it verifies; a manifest whose hash does not match refuses
// everything.
func (h *Host) LoadManifest(ctx context.Context) (*Manifest, error) {
	s, err := h.ledger.Latest(ctx, ledger.System(), ManifestID)
	if errors.Is(err, ledger.ErrNotFound) {
		return nil, refuse(CodeNotFound, "no manifest %s: run `logline seed`", ManifestID)
	}
	if err != nil {
		return nil, err
	}
	if err := h.verify(&s); err != nil {
		return nil, refuse(abi.CodeHashMismatch, "manifest %s seq %d does not verify: %v", s.ID, s.Seq, err)
	}
	m, err := ParseManifest(s.Metadata)
	if err != nil {
		var fe *ManifestError
		if errors.As(err, &fe) {
			// A manifest that does not check refuses everything, as one
			// that does not verify does: nothing runs on half a manifest.
			return nil, refuse(CodeInvalidManifest, "manifest %s seq %d: %v", s.ID, s.Seq, fe)
		}
		return nil, fmt.Errorf("manifest %s seq %d: malformed metadata: %w", s.ID, s.Seq, err)
	}
	m.span = s
	// Also at run time: a later manifest that names the node key stops
	// everything that reads it rather than letting the host's seal count.
	if err := m.CheckAuthority(h.ledger.NodeKey()); err != nil {
		return nil, err
	}
	return m, nil
}
