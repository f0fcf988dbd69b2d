package api

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"lukechampine.com/blake3"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

// Tokens are JWTs (RFC 7519) bound to one (tenant, user). The ones we issue
// use the JWS algorithm TokenAlg: Ed25519 over the BLAKE3-256 digest of the
// signing input, the node key's one signing primitive (span.Key signs
// digests, never raw messages, which is how it keeps its private half to
// itself). Standard EdDSA tokens signed by a trusted key are accepted too.
const (
	TokenAlg    = "EdDSA-BLAKE3"
	tokenIssuer = "logline"
	// tokenDomain separates token digests from span digests: a span's
	// canonical form starts with '{', so no token input hashes like a span.
	tokenDomain = "logline api token v1\x00"
)

// tokenClaims are the claims of a LogLine token: sub is the user.
type tokenClaims struct {
	Tenant string `json:"tenant"`
	jwt.RegisteredClaims
}

// signingMethod is TokenAlg for golang-jwt. Sign takes a *span.Key, Verify
// a public key as lowercase hex.
type signingMethod struct{}

func (signingMethod) Alg() string { return TokenAlg }

func tokenDigest(signingString string) string {
	sum := blake3.Sum256([]byte(tokenDomain + signingString))
	return hex.EncodeToString(sum[:])
}

func (signingMethod) Sign(signingString string, key any) ([]byte, error) {
	k, ok := key.(*span.Key)
	if !ok || k == nil {
		return nil, jwt.ErrInvalidKeyType
	}
	sig, err := k.SignHash(tokenDigest(signingString))
	if err != nil {
		return nil, err
	}
	return hex.DecodeString(sig)
}

func (signingMethod) Verify(signingString string, sig []byte, key any) error {
	pub, ok := key.(string)
	if !ok {
		return jwt.ErrInvalidKeyType
	}
	if err := span.VerifySignature(pub, tokenDigest(signingString), hex.EncodeToString(sig)); err != nil {
		return jwt.ErrSignatureInvalid
	}
	return nil
}

var tokenMethod = signingMethod{}

func init() { jwt.RegisterSigningMethod(TokenAlg, func() jwt.SigningMethod { return tokenMethod }) }

// IssueToken makes a bearer token for user in tenant, signed by k and valid
// for ttl from now. The server accepts it while k is its node key or a key
// the manifest trusts.
func IssueToken(k *span.Key, tenant, user string, ttl time.Duration, now time.Time) (string, error) {
	if k == nil {
		return "", errors.New("issuing a token needs a key")
	}
	if err := ledger.User(tenant, user).Validate(); err != nil {
		return "", err
	}
	if ttl <= 0 {
		return "", fmt.Errorf("token ttl must be positive, got %s", ttl)
	}
	now = now.Truncate(time.Second)
	t := jwt.NewWithClaims(tokenMethod, tokenClaims{Tenant: tenant, RegisteredClaims: jwt.RegisteredClaims{
		Issuer: tokenIssuer, Subject: user,
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}})
	t.Header["kid"] = k.PublicHex()
	return t.SignedString(k)
}

// authenticator turns bearer tokens into principals. Trusted keys are the
// node key and the latest manifest's trusted_keys, refreshed whenever the
// manifest gets a new version. Verified tokens are cached until they
// expire, so a request pays a map lookup, not a signature check.
type authenticator struct {
	node  string // node public key, hex; "" when the server has none
	man   *stage0.Host
	now   func() time.Time
	log   interface{ Warn(string, ...any) }
	parse *jwt.Parser

	mu      sync.RWMutex
	trusted map[string]bool
	cache   map[string]cachedToken
	// manifest is the latest manifest read, nil when none is usable: the
	// Telegram webhook finds its bots there (telegram.go).
	manifest *stage0.Manifest
}

type cachedToken struct {
	p   ledger.Principal
	exp time.Time
}

// maxCachedTokens bounds the cache; past it, the cache starts over.
const maxCachedTokens = 10000

func newAuthenticator(node *span.Key, man *stage0.Host, now func() time.Time, log interface{ Warn(string, ...any) }) *authenticator {
	a := &authenticator{man: man, now: now, log: log, trusted: map[string]bool{}, cache: map[string]cachedToken{}}
	if node != nil {
		a.node = node.PublicHex()
		a.trusted[a.node] = true
	}
	a.parse = jwt.NewParser(
		jwt.WithValidMethods([]string{TokenAlg, "EdDSA"}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(tokenIssuer),
		jwt.WithTimeFunc(now),
	)
	return a
}

// refresh reloads the manifest's trusted keys and forgets cached tokens, so
// a key the manifest stops trusting stops working at once.
func (a *authenticator) refresh(ctx context.Context) {
	trusted := map[string]bool{}
	if a.node != "" {
		trusted[a.node] = true
	}
	m, err := a.man.LoadManifest(ctx)
	if ctx.Err() != nil {
		return // shutting down
	}
	if err != nil {
		var r *stage0.Refusal
		if !errors.As(err, &r) || r.Code != stage0.CodeNotFound {
			a.log.Warn("tokens: manifest not usable, trusting the node key only", "err", err)
		}
	} else {
		for _, k := range m.TrustedKeys {
			trusted[strings.ToLower(k)] = true
		}
	}
	if err != nil {
		m = nil
	}
	a.mu.Lock()
	a.trusted = trusted
	a.cache = map[string]cachedToken{}
	a.manifest = m
	a.mu.Unlock()
}

// principal authenticates an Authorization header value.
func (a *authenticator) principal(header string) (ledger.Principal, *problem) {
	scheme, tok, ok := strings.Cut(header, " ")
	if header == "" {
		return ledger.Principal{}, fail(codeUnauthorized, "Authorization", "a bearer token is required (Authorization: Bearer <token>; logline token create)")
	}
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return ledger.Principal{}, fail(codeUnauthorized, "Authorization", "want Authorization: Bearer <token>")
	}
	tok = strings.TrimSpace(tok)
	now := a.now()
	a.mu.RLock()
	c, hit := a.cache[tok]
	a.mu.RUnlock()
	if hit && now.Before(c.exp) {
		return c.p, nil
	}
	var cl tokenClaims
	_, err := a.parse.ParseWithClaims(tok, &cl, a.key)
	if err != nil {
		return ledger.Principal{}, fail(codeUnauthorized, "Authorization", "invalid token: %v", err)
	}
	p := ledger.User(cl.Tenant, cl.Subject)
	if err := p.Validate(); err != nil {
		return ledger.Principal{}, fail(codeUnauthorized, "Authorization", "invalid token: %v", err)
	}
	a.mu.Lock()
	if len(a.cache) >= maxCachedTokens {
		a.cache = map[string]cachedToken{}
	}
	a.cache[tok] = cachedToken{p: p, exp: cl.ExpiresAt.Time}
	a.mu.Unlock()
	return p, nil
}

// key is the jwt.Keyfunc: the token names its key (kid, hex) and the key
// must be trusted.
func (a *authenticator) key(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	kid = strings.ToLower(kid)
	a.mu.RLock()
	ok := a.trusted[kid]
	a.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("signed by a key that is not trusted (kid %q)", kid)
	}
	if t.Method.Alg() == TokenAlg {
		return kid, nil
	}
	raw, err := hex.DecodeString(kid)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("kid %q is not an Ed25519 public key in hex", kid)
	}
	return ed25519.PublicKey(raw), nil
}
