package span

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
)

// Outcomes of Verify that callers branch on with errors.Is. Each returned
// error wraps one of them with the detail.
var (
	// ErrMissingHash: the span has no curr_hash.
	ErrMissingHash = errors.New("span has no curr_hash")
	// ErrHashMismatch: curr_hash is not the hash of the span's content.
	ErrHashMismatch = errors.New("span curr_hash does not match its content")
	// ErrIncompleteSignature: signature without public_key, or the reverse.
	ErrIncompleteSignature = errors.New("span signature and public_key must be both present or both absent")
	// ErrBadSignature: the signature, or the key it claims, does not check.
	ErrBadSignature = errors.New("span signature is invalid")
	// ErrUntrustedKey: the span is signed, but not by the expected key.
	ErrUntrustedKey = errors.New("span is not signed by the trusted key")
	// ErrUnsigned: a signature was required and the span has none.
	ErrUnsigned = errors.New("span is not signed")
)

// Verify recomputes the span's hash and compares it with CurrHash, then, if
// the span is signed, checks Signature against PublicKey. An unsigned span
// with a correct hash verifies; a span whose content has no canonical form
// fails with ErrHashMismatch. Verify proves integrity, not authorship: any
// key verifies its own signature, so code that trusts a particular signer
// (Stage-0, the manifest) must use VerifySignedBy.
func Verify(s *Span) error {
	if s.CurrHash == "" {
		return ErrMissingHash
	}
	h, err := s.Hash()
	if err != nil {
		// Content that has no canonical form cannot match any hash.
		return fmt.Errorf("%w: stored %s, none computable: %w", ErrHashMismatch, s.CurrHash, err)
	}
	if h != s.CurrHash {
		return fmt.Errorf("%w: stored %s, computed %s", ErrHashMismatch, s.CurrHash, h)
	}
	switch {
	case s.Signature == "" && s.PublicKey == "":
		return nil
	case s.Signature == "":
		return fmt.Errorf("%w: public_key without signature", ErrIncompleteSignature)
	case s.PublicKey == "":
		return fmt.Errorf("%w: signature without public_key", ErrIncompleteSignature)
	}
	return VerifySignature(s.PublicKey, s.CurrHash, s.Signature)
}

// VerifySignedBy is Verify that also requires a signature by publicKeyHex.
func VerifySignedBy(s *Span, publicKeyHex string) error {
	if err := Verify(s); err != nil {
		return err
	}
	if s.Signature == "" {
		return ErrUnsigned
	}
	if s.PublicKey != publicKeyHex {
		return fmt.Errorf("%w: signed by %s, want %s", ErrUntrustedKey, s.PublicKey, publicKeyHex)
	}
	return nil
}

// VerifySignature checks an Ed25519 signature (128 hex characters) by
// publicKeyHex (64 hex characters) over the raw digest bytes of hashHex (64
// hex characters). Malformed input counts as a bad signature.
func VerifySignature(publicKeyHex, hashHex, signatureHex string) error {
	if !isLowerHex(publicKeyHex, 2*ed25519.PublicKeySize) {
		return fmt.Errorf("%w: public_key must be %d lowercase hex characters", ErrBadSignature, 2*ed25519.PublicKeySize)
	}
	if !isLowerHex(signatureHex, 2*ed25519.SignatureSize) {
		return fmt.Errorf("%w: signature must be %d lowercase hex characters", ErrBadSignature, 2*ed25519.SignatureSize)
	}
	d, err := decodeHash(hashHex)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	pub, _ := hex.DecodeString(publicKeyHex)
	sig, _ := hex.DecodeString(signatureHex)
	if !VerifyEd25519(pub, d, sig) {
		return fmt.Errorf("%w: does not verify under public_key %s", ErrBadSignature, publicKeyHex)
	}
	return nil
}

// decodeHash turns a curr_hash into its raw digest bytes.
func decodeHash(hashHex string) ([]byte, error) {
	if !isLowerHex(hashHex, 2*HashSize) {
		return nil, fmt.Errorf("hash must be %d lowercase hex characters", 2*HashSize)
	}
	d, _ := hex.DecodeString(hashHex)
	return d, nil
}
