//go:build !wasip1

package logline_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	logline "github.com/logline/logline/guests/sdk/go"
)

// Outside wasip1 the SDK builds but refuses to run.
func TestStubsPanic(t *testing.T) {
	t.Parallel()
	const msg = "logline: the guest SDK works only inside a GOOS=wasip1 GOARCH=wasm module run by the LogLine host"
	assert.PanicsWithValue(t, msg, func() { logline.Now() })
	assert.PanicsWithValue(t, msg, func() { logline.Log(logline.LevelInfo, "x") })
	assert.PanicsWithValue(t, msg, func() { _, _ = logline.SQL("SELECT 1") })
}
