package span

import (
	"encoding/json"
	"strings"
	"testing"
)

// BenchmarkSeal measures validate + canonicalise + hash + sign of a typical
// span of about 1 KB on the wire.
func BenchmarkSeal(b *testing.B) {
	k, err := KeyFromSeedHex(testSeedHex)
	if err != nil {
		b.Fatal(err)
	}
	s := fullSpan()
	s.Code = strings.Repeat("export const f = (x) => x + 1;\n", 16)
	s.Metadata = json.RawMessage(`{"limit":100,"today":3,"tags":["a","b","c"],"nested":{"deep":{"k":"v","n":1.5}}}`)
	wire, err := json.Marshal(&s)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		c := s
		if err := k.Seal(&c); err != nil {
			b.Fatal(err)
		}
	}
}
