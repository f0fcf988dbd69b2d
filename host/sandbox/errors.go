package sandbox

import (
	"errors"
	"fmt"

	"github.com/logline/logline/abi"
)

// Error is a failure of Load, or of a run, with a stable code (abi.Code*:
// invalid_module, forbidden_import, ...) and a message saying what
// happened.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// ABI returns the error as the wire type of an execution span.
func (e *Error) ABI() *abi.Error { return &abi.Error{Code: e.Code, Message: e.Message} }

// CodeOf returns the abi.Code* of an error returned by Load, or "" if err
// is not an *Error.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CallError is the error a Capabilities implementation returns to give the
// guest a specific negative code (abi.ErrNotFound, abi.ErrInvalid,
// abi.ErrLimit, abi.ErrCapabilityDenied, ...). Any other error reaches the
// guest as abi.ErrFailed with the error's text, and a deadline as
// abi.ErrTimeout.
type CallError struct {
	Code    int32 // an abi.Err* code
	Message string
}

func (e *CallError) Error() string { return abi.ErrName(e.Code) + ": " + e.Message }

// CallErrorf returns a *CallError with the given abi.Err* code.
func CallErrorf(code int32, format string, args ...any) error {
	return &CallError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Denied returns the error of a capability the embedder refuses (an URL
// outside the allowlist, a span the tenant may not write, ...).
func Denied(format string, args ...any) error {
	return CallErrorf(abi.ErrCapabilityDenied, format, args...)
}

// NotFound returns the error of a missing span, function or key.
func NotFound(format string, args ...any) error {
	return CallErrorf(abi.ErrNotFound, format, args...)
}

// Invalid returns the error of a malformed request (bad JSON, bad span).
func Invalid(format string, args ...any) error {
	return CallErrorf(abi.ErrInvalid, format, args...)
}

func knownCode(code int32) bool { return code <= abi.ErrCapabilityDenied && code >= abi.ErrTimeout }
