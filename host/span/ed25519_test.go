package span

import (
	"crypto/ed25519"
	"encoding/binary"
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// The signer is a drop-in for crypto/ed25519: the same signature bytes, and
// verification that accepts and refuses exactly what crypto/ed25519 does,
// on valid signatures, tampered ones and the encodings where Ed25519
// implementations are known to differ (RFC 8032's non-canonical S,
// small-order and non-canonical points).
func TestEd25519MatchesStdlib(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	agree := func(pub, msg, sig []byte) bool {
		t.Helper()
		want := len(pub) == ed25519.PublicKeySize && len(sig) == ed25519.SignatureSize &&
			ed25519.Verify(ed25519.PublicKey(pub), msg, sig)
		require.Equal(t, want, VerifyEd25519(pub, msg, sig), "pub %x msg %x sig %x", pub, msg, sig)
		return want
	}
	for i := range 300 {
		seed := make([]byte, ed25519.SeedSize)
		for j := range seed {
			seed[j] = byte(rng.Uint32())
		}
		msg := make([]byte, rng.IntN(200))
		for j := range msg {
			msg[j] = byte(rng.Uint32())
		}
		priv := ed25519.NewKeyFromSeed(seed)
		pub := []byte(priv.Public().(ed25519.PublicKey))
		sig := sign(priv, msg)
		require.Equal(t, ed25519.Sign(priv, msg), sig, "signature %d", i)
		require.True(t, agree(pub, msg, sig))

		flip := func(b []byte) []byte {
			c := append([]byte(nil), b...)
			if len(c) > 0 {
				k := rng.IntN(len(c))
				c[k] ^= 1 << rng.IntN(8)
			}
			return c
		}
		require.False(t, agree(pub, flip(msg), sig), "tampered message")
		require.False(t, agree(pub, msg, flip(sig)), "tampered signature")
		agree(flip(pub), msg, sig)
		require.False(t, agree(pub[:31], msg, sig), "short key")
		require.False(t, agree(pub, msg, sig[:63]), "short signature")

		// S + L: the same scalar mod L, refused by RFC 8032 (S must be < L).
		s := new(big.Int).SetBytes(reverse(sig[32:]))
		s.Add(s, groupOrder)
		if s.BitLen() <= 256 {
			wide := append(append([]byte(nil), sig[:32]...), reverse(s.FillBytes(make([]byte, 32)))...)
			require.False(t, agree(pub, msg, wide), "non-canonical S")
		}
	}

	// Small-order and non-canonical points as A and R.
	identity := make([]byte, 32)
	identity[0] = 1
	nonCanonical := make([]byte, 32) // y = p + 1 ≡ 1: the identity, spelled with y ≥ p
	binary.LittleEndian.PutUint64(nonCanonical[0:], 0xffffffffffffffee)
	for k := 8; k < 31; k++ {
		nonCanonical[k] = 0xff
	}
	binary.LittleEndian.PutUint64(nonCanonical[24:], 0x7fffffffffffffff)
	order2 := make([]byte, 32) // (0, -1), of order 2
	order2[0] = 0xec
	for k := 1; k < 31; k++ {
		order2[k] = 0xff
	}
	order2[31] = 0x7f
	zeroS := make([]byte, 32)
	for _, a := range [][]byte{identity, nonCanonical, order2} {
		for _, r := range [][]byte{identity, nonCanonical, order2} {
			agree(a, []byte("m"), append(append([]byte(nil), r...), zeroS...))
		}
	}
	require.True(t, agree(identity, []byte("m"), append(append([]byte(nil), identity...), zeroS...)),
		"crypto/ed25519 accepts the identity as key and commitment with S = 0, and so must we")
}

var groupOrder, _ = new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)

func reverse(b []byte) []byte {
	c := make([]byte, len(b))
	for i := range b {
		c[len(b)-1-i] = b[i]
	}
	return c
}
