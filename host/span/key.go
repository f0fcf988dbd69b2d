package span

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
)

// Key is an Ed25519 signing key. Its String, GoString and Format methods
// print only the public key, so a Key in a log line or an error never leaks
// the private half.
type Key struct {
	priv   ed25519.PrivateKey
	pubHex string // public_key form of the public half, set with priv
}

func newKey(priv ed25519.PrivateKey) *Key {
	return &Key{priv: priv, pubHex: hex.EncodeToString(priv.Public().(ed25519.PublicKey))}
}

// GenerateKey returns a new random key.
func GenerateKey() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("error generating key: %w", err)
	}
	return newKey(priv), nil
}

// KeyFromSeedHex builds a key from its 32-byte seed written as 64 hex
// characters.
func KeyFromSeedHex(seedHex string) (*Key, error) {
	// The error never quotes the input: it is a secret.
	if len(seedHex) != 2*ed25519.SeedSize {
		return nil, fmt.Errorf("key seed must be %d hex characters, got %d characters", 2*ed25519.SeedSize, len(seedHex))
	}
	seed, err := hex.DecodeString(seedHex)
	if err != nil {
		return nil, errors.New("key seed must be hex characters only")
	}
	return newKey(ed25519.NewKeyFromSeed(seed)), nil
}

// maxKeyFile bounds what LoadKey reads: a seed, a newline, and some slack to
// tell a wrong file from a right one.
const maxKeyFile = 256

// LoadKey reads a key file: the seed as 64 hex characters with an optional
// trailing newline. It refuses a file that group or others may read.
func LoadKey(path string) (*Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("error loading key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("error loading key %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("error loading key %s: not a regular file", path)
	}
	// Mode bits mean nothing on Windows; everywhere else they are the guard.
	if perm := st.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("error loading key %s: file mode %04o lets group or others read it; run chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("error loading key %s: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("error loading key %s: file is too large to be a key seed", path)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	k, err := KeyFromSeedHex(string(b))
	if err != nil {
		return nil, fmt.Errorf("error loading key %s: %w", path, err)
	}
	return k, nil
}

// WriteKeyFile writes k's seed as 64 hex characters and a newline to a new
// file with mode 0600. It refuses to overwrite an existing file (the error
// wraps fs.ErrExist), so a key is never lost by accident.
func WriteKeyFile(path string, k *Key) error {
	if !k.valid() {
		return fmt.Errorf("error writing key file: %w", errNoKey)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("error writing key file: refusing to overwrite %s: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("error writing key file: %w", err)
	}
	// OpenFile's mode passes through the umask, which can only narrow it;
	// Chmod makes the file exactly 0600 whatever the umask.
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.WriteString(hex.EncodeToString(k.priv.Seed()) + "\n")
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("error writing key file %s: %w", path, err)
	}
	return nil
}

// valid reports whether k holds a usable private key (a zero Key does not).
func (k *Key) valid() bool {
	return k != nil && len(k.priv) == ed25519.PrivateKeySize
}

var errNoKey = errors.New("span.Key holds no private key; use GenerateKey, KeyFromSeedHex or LoadKey")

// Public returns the public key, or nil for a zero Key.
func (k *Key) Public() ed25519.PublicKey {
	if !k.valid() {
		return nil
	}
	return k.priv.Public().(ed25519.PublicKey)
}

// PublicHex returns the public key as 64 lowercase hex characters, the form
// of the public_key column.
func (k *Key) PublicHex() string {
	if k.valid() && k.pubHex != "" {
		return k.pubHex
	}
	return hex.EncodeToString(k.Public())
}

// String prints only the public key. String, GoString and Format have value
// receivers so that a Key printed by value is covered too.
func (k Key) String() string {
	if !k.valid() {
		return "span.Key(<none>)"
	}
	return "span.Key(public " + k.PublicHex() + ")"
}

// GoString prints only the public key, for %#v.
func (k Key) GoString() string { return k.String() }

// Format prints only the public key whatever the verb, so %x or %+v cannot
// dump the private bytes either.
func (k Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

// SignHash signs a curr_hash given as 64 hex characters: the signature covers
// the 32 raw digest bytes, not the hex text. It returns the signature as 128
// lowercase hex characters.
func (k *Key) SignHash(hashHex string) (string, error) {
	if !k.valid() {
		return "", errNoKey
	}
	d, err := decodeHash(hashHex)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(sign(k.priv, d)), nil
}

// Seal signs the span with k: it sets PublicKey (which is part of the
// canonical form, so the key is bound into the hash), then CurrHash and
// Signature. At must already be set, since the hash covers it, and the span
// must pass Validate. On error the span is left unchanged.
//
// For an unsigned span, set CurrHash from Hash instead.
func (k *Key) Seal(s *Span) error {
	if !k.valid() {
		return fmt.Errorf("error sealing span: %w", errNoKey)
	}
	if s.At == "" {
		return fmt.Errorf("error sealing span: %w", fieldErr("at", "must be set before sealing (use FormatTime)"))
	}
	c := *s
	c.PublicKey = k.PublicHex()
	c.CurrHash, c.Signature = "", ""
	// One pass over the jsonb fields: validation leaves them parsed in st
	// and the canonical form is written from there.
	st := getCanon()
	defer putCanon(st)
	if fe := c.validateWith(st); fe != nil {
		return fmt.Errorf("error sealing span: %w", fe)
	}
	d, err := c.digestWith(st, true)
	if err != nil {
		return fmt.Errorf("error sealing span: %w", err)
	}
	s.PublicKey = c.PublicKey
	s.CurrHash = hexString(d[:])
	s.Signature = hexString(sign(k.priv, d[:]))
	return nil
}
