package span

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// proofVectors is testdata/span_proofs.json.
type proofVectors struct {
	SeedHex   string `json:"ed25519_private_seed_hex"`
	PublicKey string `json:"public_key_hex"`
	Vectors   []struct {
		Span      json.RawMessage `json:"span"`
		Canonical string          `json:"canonical"`
		CurrHash  string          `json:"curr_hash"`
		Signature string          `json:"signature"`
	} `json:"vectors"`
}

// loadVectors reads testdata/span_proofs.json, the proof vectors any
// implementation must reproduce byte for byte (the contract, RATIONALE.md
// §3). A missing file fails the test: the vectors are the contract.
func loadVectors(t *testing.T) proofVectors {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "span_proofs.json"))
	require.NoError(t, err, "the span proof vectors must be at host/span/testdata/span_proofs.json")
	var v proofVectors
	require.NoError(t, json.Unmarshal(b, &v))
	require.NotEmpty(t, v.Vectors)
	return v
}

func TestProofVectors(t *testing.T) {
	t.Parallel()
	pv := loadVectors(t)
	key, err := KeyFromSeedHex(pv.SeedHex)
	require.NoError(t, err)
	require.Equal(t, pv.PublicKey, key.PublicHex())

	for i, v := range pv.Vectors {
		// Through Decode (the CLI path, with Validate) and through
		// json.Unmarshal (Span.UnmarshalJSON).
		spans, err := Decode(bytes.NewReader(v.Span))
		require.NoError(t, err, "vector %d", i)
		require.Len(t, spans, 1)
		var viaUnmarshal Span
		require.NoError(t, json.Unmarshal(v.Span, &viaUnmarshal), "vector %d", i)
		require.Equal(t, spans[0], viaUnmarshal, "vector %d", i)

		s := spans[0]
		c, err := s.Canonical()
		require.NoError(t, err, "vector %d", i)
		require.Equal(t, v.Canonical, string(c), "vector %d canonical", i)

		h, err := s.Hash()
		require.NoError(t, err)
		require.Equal(t, v.CurrHash, h, "vector %d curr_hash", i)

		sig, err := key.SignHash(h)
		require.NoError(t, err)
		require.Equal(t, v.Signature, sig, "vector %d signature", i)
		require.NoError(t, VerifySignature(pv.PublicKey, v.CurrHash, v.Signature), "vector %d", i)

		// The hash verifies as stored; the wire form round-trips to the same hash.
		s.CurrHash = h
		require.NoError(t, Verify(&s), "vector %d", i)
		wire, err := json.Marshal(&s)
		require.NoError(t, err)
		back, err := Decode(bytes.NewReader(wire))
		require.NoError(t, err)
		require.NoError(t, Verify(&back[0]), "vector %d after a wire round trip", i)
	}

	// prev_hash of (id, seq>0) is curr_hash of (id, seq-1).
	var v3 Span
	require.NoError(t, json.Unmarshal(pv.Vectors[2].Span, &v3))
	require.Equal(t, pv.Vectors[0].CurrHash, v3.PrevHash)
}
