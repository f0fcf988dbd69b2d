package span_test

import (
	"fmt"
	"time"

	"github.com/logline/logline/host/span"
)

func ExampleSpan_Hash() {
	s := span.Span{
		ID:         "00000000-0000-4000-8000-000000000001",
		EntityType: "function",
		Who:        "daniel",
		Did:        "defined",
		This:       "function",
		At:         "2026-01-02T03:04:05.123456Z",
		Visibility: span.VisibilityTenant,
		OwnerID:    "daniel",
		TenantID:   "voulezvous",
		Status:     "active",
		Name:       "run_code_kernel",
		Code:       "globalThis.default = async function main(ctx){ return 1 }",
		Language:   "javascript",
		Runtime:    "quickjs",
	}
	h, err := s.Hash()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(h)
	// Output: 5601bc947c46c20523b6050fa6df36af90eedb72e827667d689a48b17f02ea33
}

func ExampleFormatTime() {
	cet := time.FixedZone("CET", 3600)
	fmt.Println(span.FormatTime(time.Date(2026, 1, 2, 4, 4, 5, 123456789, cet)))
	fmt.Println(span.FormatTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)))
	// Output:
	// 2026-01-02T03:04:05.123456Z
	// 2026-01-02T03:04:05.000000Z
}

func ExampleKey_Seal() {
	k, err := span.KeyFromSeedHex("0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20")
	if err != nil {
		fmt.Println(err)
		return
	}
	s := span.Span{EntityType: "note", Who: "daniel", This: "hello", At: span.FormatTime(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC))}
	if err := k.Seal(&s); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(span.Verify(&s))
	s.This = "goodbye"
	fmt.Println(span.Verify(&s) != nil)
	// Output:
	// <nil>
	// true
}
