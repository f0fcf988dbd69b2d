package logline_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/logline/logline/abi"
	logline "github.com/logline/logline/guests/sdk/go"
)

func TestError(t *testing.T) {
	t.Parallel()
	var err error = fmt.Errorf("looking up: %w", &logline.Error{
		Op: abi.FnSQL, Code: abi.ErrCapabilityDenied, Name: "capability_denied", Message: "sql is not available",
	})
	assert.EqualError(t, err, "looking up: logline: sql: capability_denied: sql is not available")
	assert.ErrorIs(t, err, logline.ErrCapabilityDenied)
	assert.NotErrorIs(t, err, logline.ErrNotFound)
	assert.NotErrorIs(t, err, logline.ErrTruncated)
	var le *logline.Error
	assert.True(t, errors.As(err, &le))
	assert.EqualValues(t, -1, le.Code)

	for code, name := range map[int32]string{
		abi.ErrCapabilityDenied: "capability_denied", abi.ErrInvalid: "invalid", abi.ErrNotFound: "not_found",
		abi.ErrLimit: "limit", abi.ErrFailed: "failed", abi.ErrBusy: "busy", abi.ErrTimeout: "timeout", -99: "error(-99)",
	} {
		assert.Equal(t, name, logline.CodeName(code))
	}
	assert.EqualError(t, logline.ErrBusy, "logline: busy")
}

func TestLevelString(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "debug info warn error level(7)", fmt.Sprint(logline.LevelDebug, logline.LevelInfo,
		logline.LevelWarn, logline.LevelError, logline.Level(7)))
}

func ExampleError() {
	// What a function-tier guest gets back from logline.SQL.
	var err error = &logline.Error{Op: "sql", Code: -1, Name: "capability_denied",
		Message: "sql is not available to function-tier modules"}
	fmt.Println(errors.Is(err, logline.ErrCapabilityDenied))
	fmt.Println(err)
	// Output:
	// true
	// logline: sql: capability_denied: sql is not available to function-tier modules
}
