package api

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

func TestIssueTokenChecksItsInput(t *testing.T) {
	t.Parallel()
	k, err := span.GenerateKey()
	require.NoError(t, err)
	now := time.Now()
	_, err = IssueToken(nil, "t", "u", time.Hour, now)
	require.Error(t, err)
	_, err = IssueToken(k, "", "u", time.Hour, now)
	require.ErrorIs(t, err, ledger.ErrBadPrincipal)
	_, err = IssueToken(k, "t", "u\n", time.Hour, now)
	require.ErrorIs(t, err, ledger.ErrBadPrincipal)
	_, err = IssueToken(k, "t", "u", 0, now)
	require.Error(t, err)

	tok, err := IssueToken(k, "acme", "alice", time.Hour, now)
	require.NoError(t, err)
	// A JWT any tool can read: the key id, our algorithm, the principal.
	parts := strings.Split(tok, ".")
	require.Len(t, parts, 3)
	var hdr, claims map[string]any
	raw, err := jwt.NewParser().DecodeSegment(parts[0])
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &hdr))
	require.Equal(t, TokenAlg, hdr["alg"])
	require.Equal(t, k.PublicHex(), hdr["kid"])
	raw, err = jwt.NewParser().DecodeSegment(parts[1])
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &claims))
	require.Equal(t, "acme", claims["tenant"])
	require.Equal(t, "alice", claims["sub"])
	require.EqualValues(t, now.Add(time.Hour).Unix(), claims["exp"])
}

// 401 for every way a token can be wrong; the principal is the token's and
// nothing else.
func TestAuthentication(t *testing.T) {
	t.Parallel()
	clock := time.Now()
	b := setup(t, func(c *Config) { c.Now = func() time.Time { return clock } })
	good := b.token(t, "acme", "alice")
	stranger, err := span.GenerateKey()
	require.NoError(t, err)
	untrusted, err := IssueToken(stranger, "acme", "alice", time.Hour, clock)
	require.NoError(t, err)
	expired, err := IssueToken(b.key, "acme", "alice", time.Minute, clock.Add(-2*time.Minute))
	require.NoError(t, err)
	// A forged kid: signed by the stranger, claiming the node key.
	forged := jwt.NewWithClaims(tokenMethod, tokenClaims{Tenant: "acme", RegisteredClaims: jwt.RegisteredClaims{
		Issuer: tokenIssuer, Subject: "alice", ExpiresAt: jwt.NewNumericDate(clock.Add(time.Hour))}})
	forged.Header["kid"] = b.key.PublicHex()
	forgedTok, err := forged.SignedString(stranger)
	require.NoError(t, err)
	// Tampered claims: another tenant, the node key's signature kept.
	parts := strings.Split(good, ".")
	claims := jwt.NewWithClaims(tokenMethod, tokenClaims{Tenant: "globex", RegisteredClaims: jwt.RegisteredClaims{
		Issuer: tokenIssuer, Subject: "alice", ExpiresAt: jwt.NewNumericDate(clock.Add(time.Hour))}})
	claims.Header["kid"] = b.key.PublicHex()
	other, err := claims.SignedString(b.key)
	require.NoError(t, err)
	tampered := parts[0] + "." + strings.Split(other, ".")[1] + "." + parts[2]
	// No expiry, an HMAC token, alg none.
	noExp := jwt.NewWithClaims(tokenMethod, tokenClaims{Tenant: "acme", RegisteredClaims: jwt.RegisteredClaims{Issuer: tokenIssuer, Subject: "alice"}})
	noExp.Header["kid"] = b.key.PublicHex()
	noExpTok, err := noExp.SignedString(b.key)
	require.NoError(t, err)
	hmac, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"tenant": "acme", "sub": "alice", "iss": tokenIssuer,
		"exp": clock.Add(time.Hour).Unix()}).SignedString([]byte(b.key.PublicHex()))
	require.NoError(t, err)
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"tenant": "acme", "sub": "alice", "iss": tokenIssuer,
		"exp": clock.Add(time.Hour).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	require.NoError(t, err)

	for name, h := range map[string]string{
		"none":          "",
		"basic":         "Basic YWxpY2U6cHc=",
		"empty bearer":  "Bearer ",
		"garbage":       "Bearer not-a-token",
		"untrusted key": "Bearer " + untrusted,
		"expired":       "Bearer " + expired,
		"forged kid":    "Bearer " + forgedTok,
		"tampered":      "Bearer " + tampered,
		"no expiry":     "Bearer " + noExpTok,
		"hmac":          "Bearer " + hmac,
		"alg none":      "Bearer " + none,
	} {
		for _, path := range []string{"/api/spans", "/api/timeline", "/api/metrics", "/api/timeline/stream", "/api/spans/0190a0a0-0000-7000-8000-000000000001"} {
			r := b.do(t, http.MethodGet, path, "", map[string]string{"Authorization": h}, nil)
			require.Equal(t, http.StatusUnauthorized, r.status, "%s %s: %s", name, path, r.body)
			require.Contains(t, r.header.Get("WWW-Authenticate"), "Bearer")
			require.Equal(t, codeUnauthorized, r.problem(t).Code)
		}
	}
	require.Equal(t, http.StatusOK, b.do(t, http.MethodGet, "/api/spans", good, nil, nil).status)
	// Public routes need no token.
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/api/openapi.json"} {
		require.Equal(t, http.StatusOK, b.do(t, http.MethodGet, path, "", nil, nil).status, path)
	}

	// Expiry is enforced on a cached token too.
	r := b.do(t, http.MethodGet, "/api/spans", good, nil, nil)
	require.Equal(t, http.StatusOK, r.status)
	clock = clock.Add(2 * time.Hour)
	r = b.do(t, http.MethodGet, "/api/spans", good, nil, nil)
	require.Equal(t, http.StatusUnauthorized, r.status)
	require.Contains(t, r.problem(t).Detail, "expired")
}

// Keys the manifest trusts sign tokens too, standard EdDSA ones included;
// a key the manifest stops trusting stops working as soon as the new
// manifest version is appended.
func TestTokensByManifestKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = 7
	admin, err := span.KeyFromSeedHex(hex.EncodeToString(seed))
	require.NoError(t, err)
	edPriv := ed25519.NewKeyFromSeed(seed)

	ours, err := IssueToken(admin, "acme", "alice", time.Hour, time.Now())
	require.NoError(t, err)
	std := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"tenant": "acme", "sub": "alice", "iss": tokenIssuer,
		"exp": time.Now().Add(time.Hour).Unix()})
	std.Header["kid"] = admin.PublicHex()
	stdTok, err := std.SignedString(edPriv)
	require.NoError(t, err)

	for _, tok := range []string{ours, stdTok} {
		require.Equal(t, http.StatusUnauthorized, b.do(t, http.MethodGet, "/api/spans", tok, nil, nil).status)
	}
	op := ledger.User("logline", "operator")
	man := b.appendAs(t, op, span.Span{ID: stage0.ManifestID, EntityType: "manifest", Who: "operator", This: "manifest",
		Visibility: "public", Metadata: json.RawMessage(`{"trusted_keys":["` + admin.PublicHex() + `"]}`)})[0]
	eventually(t, func() bool { return b.do(t, http.MethodGet, "/api/spans", ours, nil, nil).status == http.StatusOK })
	require.Equal(t, http.StatusOK, b.do(t, http.MethodGet, "/api/spans", stdTok, nil, nil).status)

	b.appendAs(t, op, span.Span{ID: stage0.ManifestID, Seq: 1, EntityType: "manifest", Who: "operator", This: "manifest",
		Visibility: "public", Metadata: json.RawMessage(`{"trusted_keys":[]}`)})
	_ = man
	eventually(t, func() bool {
		return b.do(t, http.MethodGet, "/api/spans", ours, nil, nil).status == http.StatusUnauthorized
	})
	require.Equal(t, http.StatusUnauthorized, b.do(t, http.MethodGet, "/api/spans", stdTok, nil, nil).status)
	// The node key is trusted whatever the manifest says.
	require.Equal(t, http.StatusOK, b.do(t, http.MethodGet, "/api/spans", b.token(t, "acme", "alice"), nil, nil).status)
}

func eventually(t testing.TB, cond func() bool) {
	t.Helper()
	eventuallyFor(t, 10*time.Second, cond)
}

// eventuallyFor is eventually with a bound of its own, for steps that move
// megabytes and may crawl on a loaded machine: the bound only limits how
// long a failing test takes, never what passes.
func eventuallyFor(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("condition not met in %s", d)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
