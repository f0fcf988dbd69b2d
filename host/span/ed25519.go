package span

import (
	"crypto/ed25519"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// Ed25519 (RFC 8032) goes through curve25519-voi rather than crypto/ed25519:
// the signatures are the same bytes (signing is deterministic, and
// ed25519_test.go checks them against crypto/ed25519), and on amd64 voi
// signs and verifies in about half the time (13 µs against 27 µs a
// signature on the 2-core CI machine). Sealing is most of the host's CPU per
// appended span, so this is the ledger's append rate (RATIONALE, issue 15).

// stdlibRules makes verification accept exactly what crypto/ed25519 accepts
// (cofactorless, small-order and non-canonical A allowed): a span valid
// yesterday stays valid, and one refused stays refused.
var stdlibRules = &voi.Options{Verify: voi.VerifyOptionsStdLib}

// sign signs msg with priv.
func sign(priv ed25519.PrivateKey, msg []byte) []byte {
	return voi.Sign(voi.PrivateKey(priv), msg)
}

// VerifyEd25519 reports whether sig is pub's Ed25519 signature of msg, by
// crypto/ed25519's rules. A key or signature of the wrong length is false.
func VerifyEd25519(pub, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	return voi.VerifyWithOptions(voi.PublicKey(pub), msg, sig, stdlibRules)
}
