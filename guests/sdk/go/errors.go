package logline

import (
	"errors"

	"github.com/logline/logline/abi"
)

// Error is a host call that returned a negative code (abi.Err*). Message is
// the host's explanation from the call's pending result (an abi.Error).
//
// Compare with errors.Is against the sentinels below, which match on Code:
//
//	if errors.Is(err, logline.ErrCapabilityDenied) { ... }
type Error struct {
	Op      string // host function, an abi.Fn* name ("sql", "lock", ...)
	Code    int32  // abi.Err* code, negative
	Name    string // stable name of Code: "capability_denied", "not_found", ...
	Message string // what the host said
}

func (e *Error) Error() string {
	s := "logline"
	if e.Op != "" {
		s += ": " + e.Op
	}
	s += ": " + e.Name
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is reports whether target is an *Error with the same Code, so that
// errors.Is(err, ErrBusy) holds whatever the operation or message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is, one per abi.Err* code.
var (
	ErrCapabilityDenied = sentinel(abi.ErrCapabilityDenied) // the run's tier may not use the function
	ErrInvalid          = sentinel(abi.ErrInvalid)          // bad arguments, malformed JSON, bad span
	ErrNotFound         = sentinel(abi.ErrNotFound)         // no such span, env key, lock ...
	ErrLimit            = sentinel(abi.ErrLimit)            // a per-run limit would be exceeded
	ErrFailed           = sentinel(abi.ErrFailed)           // the operation ran and failed
	ErrBusy             = sentinel(abi.ErrBusy)             // a lock held by another run
	ErrTimeout          = sentinel(abi.ErrTimeout)          // the host call's deadline passed
)

// ErrTruncated accompanies the rows of SQL and SQLInto when the host cut the
// result at its row or byte cap: the rows returned are a prefix.
var ErrTruncated = errors.New("logline: sql: result truncated at the host's row or byte cap")

// CodeName is the stable name of an abi.Err* code, as in abi/ABI.md
// (abi.ErrName).
func CodeName(code int32) string { return abi.ErrName(code) }

func sentinel(code int32) *Error { return &Error{Code: code, Name: CodeName(code)} }
