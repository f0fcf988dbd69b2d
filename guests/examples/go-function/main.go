//go:build wasip1

// Command go-function is a user function (tier function, pure): it reads
// {"a": number, "b": number} and outputs {"sum": a+b}.
package main

import (
	"encoding/hex"
	"errors"
	"fmt"

	logline "github.com/logline/logline/guests/sdk/go"
)

type input struct {
	A *float64 `json:"a"`
	B *float64 `json:"b"`
}

//go:wasmexport run
func run() int32 {
	return logline.Run(func() error {
		raw := logline.Input()
		digest := logline.Blake3(raw)
		logline.Logf(logline.LevelInfo, "go-function at %s: input blake3 %s, nonce %s",
			logline.Now().Format("2006-01-02T15:04:05.000000Z07:00"),
			hex.EncodeToString(digest[:]), hex.EncodeToString(logline.Random(8)))

		var in input
		if err := logline.InputJSON(&in); err != nil {
			return fmt.Errorf("bad input: %w", err)
		}
		if in.A == nil || in.B == nil {
			return errors.New(`bad input: want {"a": number, "b": number}`)
		}
		return logline.OutputJSON(map[string]float64{"sum": *in.A + *in.B})
	})
}

// main is required by package main; a c-shared (reactor) module never calls it.
func main() {}
