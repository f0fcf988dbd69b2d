package span

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const testSeedHex = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"

func testKey(t testing.TB) *Key {
	t.Helper()
	k, err := KeyFromSeedHex(testSeedHex)
	require.NoError(t, err)
	return k
}

func ptr[T any](v T) *T { return &v }

// fullSpan returns a complete, valid span that uses every kind of field.
func fullSpan() Span {
	return Span{
		ID:          "0190a4c2-7b1e-7cc0-9a55-3f1d2e4b5a60",
		Seq:         1,
		EntityType:  "execution",
		Who:         "edge:run_code",
		Did:         "executed",
		This:        "run_code",
		At:          "2026-11-26T12:00:00.000001Z",
		ParentID:    "00000000-0000-4000-8000-000000000001",
		RelatedTo:   []string{"00000000-0000-4000-8000-000000000001"},
		OwnerID:     "u1",
		TenantID:    "t1",
		Visibility:  VisibilityPrivate,
		Status:      "complete",
		Name:        "run",
		Description: "runs code\nand reports",
		Code:        "export default () => 1\n",
		Language:    "javascript",
		Runtime:     "quickjs",
		Input:       json.RawMessage(`{"b":[1,2.5,"x"],"a":{"z":null,"y":true}}`),
		Output:      json.RawMessage(`{"sum":4999950000}`),
		Error:       json.RawMessage(`{"code":"none"}`),
		DurationMs:  ptr(int32(12)),
		TraceID:     "tr-1",
		PrevHash:    strings.Repeat("ab", 32),
		Metadata:    json.RawMessage(`{"limit":100,"nested":{"deep":{"k":"v"}}}`),
	}
}

func mustHash(t *testing.T, s Span) string {
	t.Helper()
	h, err := s.Hash()
	require.NoError(t, err)
	return h
}

func TestCanonicalPresence(t *testing.T) {
	t.Parallel()
	min := Span{EntityType: "e", Who: "w", This: "t"}
	c, err := min.Canonical()
	require.NoError(t, err)
	// seq and is_deleted are always present; absent fields are omitted.
	require.Equal(t, `{"entity_type":"e","is_deleted":false,"seq":0,"this":"t","who":"w"}`, string(c))

	// curr_hash and signature are not hashed; public_key is.
	signed := min
	signed.CurrHash = strings.Repeat("0", 64)
	signed.Signature = strings.Repeat("1", 128)
	require.Equal(t, mustHash(t, min), mustHash(t, signed))
	signed.PublicKey = strings.Repeat("2", 64)
	require.NotEqual(t, mustHash(t, min), mustHash(t, signed))

	// A nil related_to is absent, an empty one is a present empty array.
	withEmpty := min
	withEmpty.RelatedTo = []string{}
	c, err = withEmpty.Canonical()
	require.NoError(t, err)
	require.Contains(t, string(c), `"related_to":[]`)
	require.NotEqual(t, mustHash(t, min), mustHash(t, withEmpty))

	// A top-level JSON null is absent; a nested null is kept.
	withNull := min
	withNull.Metadata = json.RawMessage(" null ")
	require.Equal(t, mustHash(t, min), mustHash(t, withNull))
	withNested := min
	withNested.Metadata = json.RawMessage(`{"a":null}`)
	c, err = withNested.Canonical()
	require.NoError(t, err)
	require.Contains(t, string(c), `"metadata":{"a":null}`)

	// duration_ms 0 is present, nil is absent.
	withZero := min
	withZero.DurationMs = ptr(int32(0))
	c, err = withZero.Canonical()
	require.NoError(t, err)
	require.Contains(t, string(c), `"duration_ms":0`)
}

func TestCanonicalRefusesWhatItCannotHashExactly(t *testing.T) {
	t.Parallel()
	bad := Span{EntityType: "e", Who: "w\xff", This: "t"}
	_, err := bad.Canonical()
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "who", fe.Field)

	bad = Span{EntityType: "e", Who: "w", This: "t", Metadata: json.RawMessage(`{"a":1,"a":2}`)}
	_, err = bad.Canonical()
	require.Error(t, err)
}

// The seed hashed with JSON.stringify(obj, topLevelKeys), which dropped
// every nested key: nested content must change the hash.
func TestNestedContentChangesHash(t *testing.T) {
	t.Parallel()
	base := fullSpan()
	h := mustHash(t, base)
	for name, mutate := range map[string]func(*Span){
		"metadata deep value": func(s *Span) { s.Metadata = json.RawMessage(`{"limit":100,"nested":{"deep":{"k":"w"}}}`) },
		"metadata deep key":   func(s *Span) { s.Metadata = json.RawMessage(`{"limit":100,"nested":{"deep":{"j":"v"}}}`) },
		"input nested bool":   func(s *Span) { s.Input = json.RawMessage(`{"b":[1,2.5,"x"],"a":{"z":null,"y":false}}`) },
		"input nested null":   func(s *Span) { s.Input = json.RawMessage(`{"b":[1,2.5,"x"],"a":{"y":true}}`) },
		"input array order":   func(s *Span) { s.Input = json.RawMessage(`{"b":[2.5,1,"x"],"a":{"z":null,"y":true}}`) },
		"output number":       func(s *Span) { s.Output = json.RawMessage(`{"sum":4999950001}`) },
		"error nested":        func(s *Span) { s.Error = json.RawMessage(`{"code":"oops"}`) },
	} {
		s := base
		mutate(&s)
		require.NotEqual(t, h, mustHash(t, s), name)
	}
	// What JCS normalises does not change it: key order, whitespace, number
	// spelling, string escapes.
	for name, mutate := range map[string]func(*Span){
		"key order": func(s *Span) { s.Metadata = json.RawMessage(`{"nested":{"deep":{"k":"v"}},"limit":100}`) },
		"whitespace": func(s *Span) {
			s.Metadata = json.RawMessage("{ \"limit\" : 100 ,\n \"nested\":{\"deep\":{\"k\":\"v\"}}}")
		},
		"number form": func(s *Span) { s.Metadata = json.RawMessage(`{"limit":1e2,"nested":{"deep":{"k":"v"}}}`) },
		"escapes":     func(s *Span) { s.Metadata = json.RawMessage(`{"limit":100,"nested":{"deep":{"\u006b":"\u0076"}}}`) },
	} {
		s := base
		mutate(&s)
		require.Equal(t, h, mustHash(t, s), name)
	}
}

func TestSealVerify(t *testing.T) {
	t.Parallel()
	k := testKey(t)
	s := fullSpan()
	require.NoError(t, k.Seal(&s))
	require.Equal(t, k.PublicHex(), s.PublicKey)
	require.Len(t, s.CurrHash, 64)
	require.Len(t, s.Signature, 128)
	require.NoError(t, Verify(&s))
	require.NoError(t, VerifySignedBy(&s, k.PublicHex()))
	require.NoError(t, s.ValidateComplete())

	// The signature covers the 32 raw digest bytes, as SignHash does.
	sig, err := k.SignHash(s.CurrHash)
	require.NoError(t, err)
	require.Equal(t, sig, s.Signature)

	// Any single-field tamper breaks the hash.
	for name, tamper := range map[string]func(*Span){
		"metadata nested": func(s *Span) { s.Metadata = json.RawMessage(`{"limit":100,"nested":{"deep":{"k":"V"}}}`) },
		"at":              func(s *Span) { s.At = "2026-11-26T12:00:00.000002Z" },
		"seq":             func(s *Span) { s.Seq++ },
		"code":            func(s *Span) { s.Code += " " },
		"is_deleted":      func(s *Span) { s.IsDeleted = true },
		"related_to":      func(s *Span) { s.RelatedTo = nil },
		"duration_ms":     func(s *Span) { s.DurationMs = nil },
		"visibility":      func(s *Span) { s.Visibility = VisibilityPublic },
		"tenant_id":       func(s *Span) { s.TenantID = "t2" },
		"prev_hash":       func(s *Span) { s.PrevHash = "" },
		"public_key":      func(s *Span) { s.PublicKey = mustGenerate(t).PublicHex() },
	} {
		c := s
		tamper(&c)
		err := Verify(&c)
		require.ErrorIs(t, err, ErrHashMismatch, name)
		require.Contains(t, err.Error(), s.CurrHash, name)
	}

	// A signature that belongs to another span fails as a bad signature.
	other := fullSpan()
	other.Seq = 7
	require.NoError(t, k.Seal(&other))
	swapped := s
	swapped.Signature = other.Signature
	require.ErrorIs(t, Verify(&swapped), ErrBadSignature)

	// Re-hashing a tampered span without the key leaves the signature wrong.
	rehashed := s
	rehashed.Code = "evil()"
	rehashed.CurrHash = mustHash(t, rehashed)
	require.ErrorIs(t, Verify(&rehashed), ErrBadSignature)

	noKey := s
	noKey.PublicKey = ""
	noKey.CurrHash = mustHash(t, noKey)
	require.ErrorIs(t, Verify(&noKey), ErrIncompleteSignature)
	noSig := s
	noSig.Signature = ""
	require.ErrorIs(t, Verify(&noSig), ErrIncompleteSignature)

	noHash := s
	noHash.CurrHash = ""
	require.ErrorIs(t, Verify(&noHash), ErrMissingHash)

	garbled := s
	garbled.Metadata = json.RawMessage(`{"a":`)
	require.ErrorIs(t, Verify(&garbled), ErrHashMismatch)

	// Verify proves integrity only; VerifySignedBy pins the signer.
	stranger := mustGenerate(t)
	require.ErrorIs(t, VerifySignedBy(&s, stranger.PublicHex()), ErrUntrustedKey)
	unsigned := fullSpan()
	unsigned.CurrHash = mustHash(t, unsigned)
	require.NoError(t, Verify(&unsigned))
	require.ErrorIs(t, VerifySignedBy(&unsigned, k.PublicHex()), ErrUnsigned)
}

func mustGenerate(t *testing.T) *Key {
	t.Helper()
	k, err := GenerateKey()
	require.NoError(t, err)
	return k
}

func TestSealRefusals(t *testing.T) {
	t.Parallel()
	k := testKey(t)

	noAt := fullSpan()
	noAt.At = ""
	before := noAt
	err := k.Seal(&noAt)
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "at", fe.Field)
	require.Equal(t, before, noAt, "a failed Seal leaves the span unchanged")

	invalid := fullSpan()
	invalid.Seq = -1
	require.ErrorAs(t, k.Seal(&invalid), &fe)
	require.Equal(t, "seq", fe.Field)
	require.Empty(t, invalid.CurrHash)

	// Sealing replaces a stale hash, signature and key.
	resealed := fullSpan()
	require.NoError(t, mustGenerate(t).Seal(&resealed))
	require.NoError(t, k.Seal(&resealed))
	require.NoError(t, VerifySignedBy(&resealed, k.PublicHex()))

	var zero Key
	require.Error(t, zero.Seal(&resealed))
	_, err = zero.SignHash(resealed.CurrHash)
	require.Error(t, err)
	_, err = k.SignHash("not a hash")
	require.Error(t, err)
}

func TestVerifySignatureMalformed(t *testing.T) {
	t.Parallel()
	h := strings.Repeat("ab", 32)
	k := testKey(t)
	sig, err := k.SignHash(h)
	require.NoError(t, err)
	require.NoError(t, VerifySignature(k.PublicHex(), h, sig))
	for name, args := range map[string][3]string{
		"short key":     {k.PublicHex()[:62], h, sig},
		"uppercase key": {strings.ToUpper(k.PublicHex()), h, sig},
		"short sig":     {k.PublicHex(), h, sig[:126]},
		"bad hash":      {k.PublicHex(), "xyz", sig},
		"other hash":    {k.PublicHex(), strings.Repeat("cd", 32), sig},
	} {
		require.ErrorIs(t, VerifySignature(args[0], args[1], args[2]), ErrBadSignature, name)
	}
}

// Sealing and verifying share nothing mutable: hammer them from several
// goroutines under -race.
func TestSealConcurrent(t *testing.T) {
	t.Parallel()
	k := testKey(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				s := fullSpan()
				s.Seq = int32(g*1000 + i)
				if err := k.Seal(&s); err != nil {
					errs <- err
					return
				}
				if err := Verify(&s); err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestFormatTime(t *testing.T) {
	t.Parallel()
	paris := time.FixedZone("CET", 3600)
	for _, tc := range []struct {
		in   time.Time
		want string
	}{
		{time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC), "2026-01-02T03:04:05.123456Z"},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "2026-01-02T03:04:05.000000Z"},
		{time.Date(2026, 1, 2, 3, 4, 5, 999999999, time.UTC), "2026-01-02T03:04:05.999999Z"}, // truncated
		{time.Date(2026, 1, 1, 0, 30, 0, 1000, paris), "2025-12-31T23:30:00.000001Z"},        // to UTC
	} {
		got := FormatTime(tc.in)
		require.Equal(t, tc.want, got)
		back, err := ParseTime(got)
		require.NoError(t, err)
		require.True(t, back.Equal(tc.in.Truncate(time.Microsecond)))
		require.Equal(t, got, FormatTime(back))
	}
	for _, bad := range []string{
		"2026-01-02T03:04:05Z",
		"2026-01-02T03:04:05.123Z",
		"2026-01-02T03:04:05.1234567Z",
		"2026-01-02T03:04:05.123456+00:00",
		"2026-01-02 03:04:05.123456Z",
		"2026-13-02T03:04:05.123456Z",
		"2026-02-30T03:04:05.123456Z",
		"0000-01-01T00:00:00.000000Z",
		"2026-01-02t03:04:05.123456z",
	} {
		_, err := ParseTime(bad)
		require.Error(t, err, bad)
	}
}

func TestWireFormRoundTrip(t *testing.T) {
	t.Parallel()
	k := testKey(t)
	s := fullSpan()
	s.RelatedTo = []string{} // present and empty must survive
	require.NoError(t, k.Seal(&s))
	wire, err := json.Marshal(&s)
	require.NoError(t, err)
	require.Contains(t, string(wire), `"related_to":[]`)
	require.Contains(t, string(wire), `"curr_hash":"`+s.CurrHash+`"`)

	var back Span
	require.NoError(t, json.Unmarshal(wire, &back))
	require.NoError(t, Verify(&back))
	require.NotNil(t, back.RelatedTo)

	// Absent fields stay off the wire.
	wire, err = json.Marshal(&Span{EntityType: "e", Who: "w", This: "t"})
	require.NoError(t, err)
	require.JSONEq(t, `{"seq":0,"entity_type":"e","who":"w","this":"t","is_deleted":false}`, string(wire))
}

func TestUnmarshalJSONErrors(t *testing.T) {
	t.Parallel()
	var s Span
	err := json.Unmarshal([]byte(`{"who":"w","bogus":1}`), &s)
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "bogus", fe.Field)

	var list []Span
	require.NoError(t, json.Unmarshal([]byte(`[{"who":"w","metadata":null},null]`), &list))
	require.Len(t, list, 2)
	require.Nil(t, list[0].Metadata)

	require.True(t, errors.As(s.UnmarshalJSON([]byte(`{"who":"w"} x`)), &fe))
	require.True(t, errors.As(s.UnmarshalJSON([]byte(`[1]`)), &fe))
	require.Equal(t, "span", fe.Field)
}
