// Package abi is the guest–host contract of LogLine, version 1, shared by the
// host (host/sandbox) and Go guests (guests/sdk/go): the import module name,
// the host function names, the result and error codes, the limits' defaults
// and the JSON wire types that cross the boundary. ABI.md is its prose.
//
// It imports only the standard library, so GOOS=wasip1 guests can use it.
package abi

import (
	"encoding/json"
	"strconv"
)

// Version is the ABI version a module is built against. A module may export
// the i32 global `logline_abi_version`; when present it must equal Version.
const Version = 1

// Module is the import module every host function lives in.
const Module = "logline"

// Entry is the export a `wasm` module runs: no params, i32 result, 0 = ok.
const Entry = "run"

// Host function names in the `logline` module. Signatures (wasm types):
//
//	log(level i32, ptr i32, len i32) -> i32
//	now() -> i64                                      unix nanoseconds, recorded
//	random(ptr i32, len i32) -> i32                   fills with seeded bytes, recorded
//	input(ptr i32, cap i32) -> i32                    copies the input, returns its full length
//	output(ptr i32, len i32) -> i32                   sets the output (replaces any earlier)
//	env(kptr i32, klen i32) -> i64                    result: the value (raw bytes)
//	sql(ptr i32, len i32) -> i64                      SQLRequest -> result SQLResult
//	insert_span(ptr i32, len i32) -> i64              span JSON -> result stored span JSON
//	lock(kptr i32, klen i32, ttl_ms i32) -> i32       0 taken, ErrBusy held by someone else
//	unlock(kptr i32, klen i32) -> i32
//	exec(ptr i32, len i32) -> i64                     ExecRequest -> result ExecResult
//	http(ptr i32, len i32) -> i64                     HTTPRequest -> result HTTPResponse
//	blake3(ptr i32, len i32, out i32) -> i32          writes 32 bytes at out
//	ed25519_verify(pub i32, msg i32, mlen i32, sig i32) -> i32   1 valid, 0 invalid
//	result(ptr i32, cap i32) -> i32                   copies the pending result, returns its length
//
// Calls that return i64 leave their answer as the run's pending result and
// return its length (>= 0), or a negative Err code; on a negative code the
// pending result holds an Error as JSON. The guest then calls result() with a
// buffer of at least that length. A later call replaces the pending result.
const (
	FnLog           = "log"
	FnNow           = "now"
	FnRandom        = "random"
	FnInput         = "input"
	FnOutput        = "output"
	FnEnv           = "env"
	FnSQL           = "sql"
	FnInsertSpan    = "insert_span"
	FnLock          = "lock"
	FnUnlock        = "unlock"
	FnExec          = "exec"
	FnHTTP          = "http"
	FnBlake3        = "blake3"
	FnEd25519Verify = "ed25519_verify"
	FnResult        = "result"
)

// Negative return codes of host functions. The pending result holds an
// Error with the same code as text and a message.
const (
	ErrCapabilityDenied = -1 // the caller's tier may not use this function
	ErrInvalid          = -2 // bad arguments: malformed JSON, a bad span, an unknown key (out-of-bounds pointers trap)
	ErrNotFound         = -3 // no such span, env key, ...
	ErrLimit            = -4 // a per-run limit (spans emitted, rows, bytes, host calls) would be exceeded
	ErrFailed           = -5 // the operation ran and failed (SQL error, HTTP error, lock lost)
	ErrBusy             = -6 // lock held by another run
	ErrTimeout          = -7 // the host call's deadline passed
)

// ErrName is the stable name of an Err* code, the text of the code of the
// Error left as the pending result: capability_denied, invalid, not_found,
// limit, failed, busy, timeout; any other code is "error(N)".
func ErrName(code int32) string {
	switch code {
	case ErrCapabilityDenied:
		return "capability_denied"
	case ErrInvalid:
		return "invalid"
	case ErrNotFound:
		return "not_found"
	case ErrLimit:
		return "limit"
	case ErrFailed:
		return "failed"
	case ErrBusy:
		return "busy"
	case ErrTimeout:
		return "timeout"
	}
	return "error(" + strconv.Itoa(int(code)) + ")"
}

// Log levels for log().
const (
	LogDebug = 0
	LogInfo  = 1
	LogWarn  = 2
	LogError = 3
)

// Error codes recorded on execution spans (error.code), contract §5.
const (
	CodeFuelExhausted    = "fuel_exhausted"
	CodeMemoryLimit      = "memory_limit"
	CodeOutputLimit      = "output_limit"
	CodeHostCallLimit    = "host_call_limit"
	CodeTimeout          = "timeout"
	CodeTrap             = "trap"
	CodeGuestError       = "guest_error"
	CodeForbiddenImport  = "forbidden_import"
	CodeInvalidModule    = "invalid_module"
	CodeHashMismatch     = "hash_mismatch"
	CodeUnsigned         = "unsigned"
	CodeNotAllowed       = "not_allowed"
	CodeCapabilityDenied = "capability_denied"
	CodeQuotaExceeded    = "quota_exceeded"
	// CodeInvalidOutput: the run handed back (output, or a span it emitted)
	// something the ledger cannot store: NUL, an unpaired surrogate, JSON
	// too deep or too large, a number with no exact canonical form.
	CodeInvalidOutput = "invalid_output"
)

// Tier says what a run may do. The host enforces it on every call.
type Tier string

const (
	// TierKernel: whitelisted by the manifest and verified; the full ABI.
	TierKernel Tier = "kernel"
	// TierPolicy: span in, actions out; pure (no sql, insert_span, lock,
	// exec or http).
	TierPolicy Tier = "policy"
	// TierFunction: a user function, input in, output out; pure.
	TierFunction Tier = "function"
)

// Pure reports whether the tier is limited to computation (log, now, random,
// input, output, env, blake3, ed25519_verify, result).
func (t Tier) Pure() bool { return t != TierKernel }

// Error is the JSON of a failed host call's pending result and of an
// execution span's error column.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// SQLRequest is one read-only, parameterised SELECT. The host wraps it: it
// runs under the caller's principal, read-only, with a statement timeout
// and caps on rows and bytes; it cannot change settings or roles or run a
// second statement.
type SQLRequest struct {
	Query  string `json:"query"`
	Params []any  `json:"params,omitempty"`
}

// SQLResult holds the rows as JSON objects keyed by column name.
type SQLResult struct {
	Rows      []map[string]any `json:"rows"`
	Truncated bool             `json:"truncated,omitempty"`
}

// InsertRequest is the envelope form of an insert_span request: the spans
// (an array) and what to answer. A guest that appends many spans and does
// not need them back asks for Result "refs" and gets one SpanRef per span
// instead of the stored spans, which it would otherwise have to parse.
//
// With Check, nothing is appended: the answer is a JSON array with one
// entry per span, null where insert_span would take it, else the Error
// saying why not (code "invalid", "forbidden" or "conflict"). A kernel whose
// batch was refused finds with it the items at fault, so that one bad item
// does not fail its neighbours. Checks do not count against Limits.Spans.
type InsertRequest struct {
	Spans  json.RawMessage `json:"spans"`
	Result string          `json:"result,omitempty"` // "" (the spans as stored) | "refs"
	Check  bool            `json:"check,omitempty"`
}

// InsertResultRefs is the InsertRequest.Result asking for SpanRefs.
const InsertResultRefs = "refs"

// SpanRef names one appended span.
type SpanRef struct {
	ID       string `json:"id"`
	Seq      int64  `json:"seq"`
	CurrHash string `json:"curr_hash"`
}

// ExecRequest runs a function span (its latest seq) as a tier-2 sandbox.
type ExecRequest struct {
	SpanID string `json:"span_id"`
	Input  any    `json:"input,omitempty"`
	// TraceID is the ledger trace the run belongs to (the request's, for
	// the request worker): its telemetry span joins that trace. Optional.
	TraceID string `json:"trace_id,omitempty"`
}

// ExecResult is the outcome of an exec.
type ExecResult struct {
	Status     string `json:"status"` // complete | error
	Output     any    `json:"output,omitempty"`
	Error      *Error `json:"error,omitempty"`
	FuelUsed   int64  `json:"fuel_used"`
	DurationMs int64  `json:"duration_ms"`
	// The code that ran: its seq and module hash (for the execution span).
	CodeSeq    int    `json:"code_seq"`
	ModuleHash string `json:"module_hash,omitempty"`
}

// HTTPRequest is an outbound request (kernels only; the URL must match the
// allowlist of the manifest or the provider span).
type HTTPRequest struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body,omitempty"`
	// AuthEnv names a host environment variable (listed in the manifest's
	// provider_secrets) whose value the host sends as
	// "Authorization: Bearer <value>": the secret never enters the guest.
	AuthEnv string `json:"auth_env,omitempty"`
	// AuthIn says where the host puts AuthEnv's value: AuthInHeader (""
	// is the same) as a bearer token, or AuthInPath in place of the one
	// AuthPlaceholder in the URL's path (APIs that carry the key in the
	// path, as Telegram's Bot API does: /bot<token>/sendMessage).
	AuthIn string `json:"auth_in,omitempty"`
	// TimeoutMs shortens the call's deadline (it never extends the host's).
	TimeoutMs int `json:"timeout_ms,omitempty"`
}

// Where an http call's secret goes (HTTPRequest.AuthIn).
const (
	AuthInHeader = "header"
	AuthInPath   = "path"
	// AuthPlaceholder marks, with AuthInPath, where the secret goes in the
	// URL's path; the host substitutes it (path-escaped) after the
	// allowlist check, and no answer, error or log carries the result.
	AuthPlaceholder = "{auth}"
)

// HTTPResponse is the reply, with the body capped.
type HTTPResponse struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body"`
	// DurationMs is the call's wall time, measured by the host (the
	// guest's own clock stands still during a run).
	DurationMs int64 `json:"duration_ms"`
}
