package logline

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"runtime/debug"
	"sync"
	"time"
	"unsafe"

	"github.com/logline/logline/abi"
)

// Run is the body of a module's `run` export: it calls fn and returns 0 when
// fn returns nil. An error is logged at LevelError and returned as 1, a panic
// is logged with its stack and returned as 2; the host records either as
// error.code guest_error.
//
//	//go:wasmexport run
//	func run() int32 { return logline.Run(body) }
func Run(fn func() error) (code int32) {
	defer func() {
		if r := recover(); r != nil {
			Log(LevelError, fmt.Sprintf("panic: %v\n%s", r, debug.Stack()))
			code = 2
		}
	}()
	if err := fn(); err != nil {
		Log(LevelError, err.Error())
		return 1
	}
	return 0
}

// Level is the severity of a log line.
type Level int32

const (
	LevelDebug Level = abi.LogDebug
	LevelInfo  Level = abi.LogInfo
	LevelWarn  Level = abi.LogWarn
	LevelError Level = abi.LogError
)

func (l Level) String() string {
	switch l {
	case LevelDebug:
		return "debug"
	case LevelInfo:
		return "info"
	case LevelWarn:
		return "warn"
	case LevelError:
		return "error"
	}
	return fmt.Sprintf("level(%d)", int32(l))
}

// Log writes one line to the run's log. Logging is best effort: past the
// run's log byte cap the host clips and drops lines (and notes that it did).
func Log(level Level, msg string) {
	callMu.Lock()
	defer callMu.Unlock()
	p, n := stringArg(msg)
	hostLog(int32(level), p, n)
	runtime.KeepAlive(msg)
}

// Logf is Log with fmt.Sprintf formatting.
func Logf(level Level, format string, args ...any) {
	Log(level, fmt.Sprintf(format, args...))
}

// Now is the run's clock, in UTC: the run's start time, recorded, moved
// only by the guest's own sleeps, so a replay sees the same times. (time.Now
// reads the same virtual clock through WASI.)
func Now() time.Time {
	return time.Unix(0, hostNow()).UTC()
}

// Random returns n bytes from the run's seeded, recorded random source (not
// for keys: a replay reproduces them). It panics if the host refuses, which
// only a broken host does; Run turns that into guest_error.
func Random(n int) []byte {
	b := make([]byte, n)
	if _, err := Rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

// Rand reads the run's seeded, recorded random source, as an io.Reader.
var Rand io.Reader = randReader{}

type randReader struct{}

func (randReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if _, err := call32(abi.FnRandom, func() int32 {
		ptr, n := bytesArg(p)
		r := hostRandom(ptr, n)
		runtime.KeepAlive(p)
		return r
	}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// UUID returns a random (version 4) UUID from Rand.
func UUID() string {
	b := Random(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Input returns the run's input: a function's input JSON, a policy's span
// JSON, a kernel's boot input. It is nil when there is none.
func Input() []byte {
	callMu.Lock()
	defer callMu.Unlock()
	// One call when the input fits a first guess, two otherwise.
	buf := make([]byte, 4096)
	ptr, capacity := bytesArg(buf)
	n := hostInput(ptr, capacity)
	if n <= 0 {
		return nil
	}
	if n <= capacity {
		return buf[:n]
	}
	buf = make([]byte, n)
	ptr, capacity = bytesArg(buf)
	m := hostInput(ptr, capacity)
	runtime.KeepAlive(buf)
	if m < 0 {
		return nil
	}
	return buf[:min(m, n)]
}

// InputJSON decodes the run's input into v.
func InputJSON(v any) error {
	in := Input()
	if len(in) == 0 {
		return fmt.Errorf("logline: decoding input: no input")
	}
	if err := json.Unmarshal(in, v); err != nil {
		return fmt.Errorf("logline: decoding input: %w", err)
	}
	return nil
}

// Output sets the run's output to b, replacing any earlier one. Write JSON:
// an execution span's output is JSON. Output longer than the run's cap ends
// the run there (output_limit): the call does not return.
func Output(b []byte) error {
	_, err := call32(abi.FnOutput, func() int32 {
		ptr, n := bytesArg(b)
		r := hostOutput(ptr, n)
		runtime.KeepAlive(b)
		return r
	})
	return err
}

// OutputJSON sets the run's output to v as JSON.
func OutputJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("logline: encoding output: %w", err)
	}
	return Output(b)
}

// Env returns a value the host passes to the run (a kernel's boot env such as
// SPAN_ID, never the host's environment). It reports false when the key is
// unset or the call fails.
func Env(key string) (string, bool) {
	b, err := call(abi.FnEnv, func() int64 {
		p, n := stringArg(key)
		r := hostEnv(p, n)
		runtime.KeepAlive(key)
		return r
	})
	if err != nil {
		return "", false
	}
	return string(b), true
}

// SQL runs one read-only, parameterised SELECT under the run's principal and
// returns its rows as JSON objects keyed by column name (numbers decode as
// float64). Placeholders $1, $2, ... are bound to params in order, each sent
// as JSON: strings, numbers, booleans and nil, or maps and slices (bound as
// jsonb); cast ($1::int) where Postgres cannot infer a type. The host wraps
// the statement: it cannot write, change settings or roles, or run a second
// statement, and it has a statement timeout and row and byte caps. If the
// host cut the result at a cap, SQL returns the rows it got together with
// ErrTruncated. Postgres errors are ErrFailed, timeouts ErrTimeout.
// Kernels only: other tiers get ErrCapabilityDenied.
func SQL(query string, params ...any) ([]map[string]any, error) {
	var rows []map[string]any
	if err := SQLInto(&rows, query, params...); err != nil {
		return rows, err
	}
	if rows == nil {
		rows = []map[string]any{}
	}
	return rows, nil
}

// SQLInto is SQL decoding the rows (a JSON array of objects) into dst, for
// example a *[]struct{ ID string `json:"id"` }.
func SQLInto(dst any, query string, params ...any) error {
	req, err := json.Marshal(abi.SQLRequest{Query: query, Params: params})
	if err != nil {
		return fmt.Errorf("logline: sql: encoding request: %w", err)
	}
	raw, err := callJSON(abi.FnSQL, hostSQL, req)
	if err != nil {
		return err
	}
	var res struct {
		Rows      json.RawMessage `json:"rows"`
		Truncated bool            `json:"truncated"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("logline: sql: decoding result: %w", err)
	}
	if len(res.Rows) > 0 && string(res.Rows) != "null" {
		if err := json.Unmarshal(res.Rows, dst); err != nil {
			return fmt.Errorf("logline: sql: decoding rows: %w", err)
		}
	}
	if res.Truncated {
		return ErrTruncated
	}
	return nil
}

// InsertSpan appends a span (any value that encodes to a JSON object, or the
// JSON itself as []byte or json.RawMessage) and returns the span as stored:
// the host validates tenant, owner, visibility and schema, fills id, seq,
// at and the hashes, and signs it. Kernels only.
func InsertSpan(span any) (json.RawMessage, error) {
	req, err := marshalValue(span)
	if err != nil {
		return nil, fmt.Errorf("logline: insert_span: encoding span: %w", err)
	}
	raw, err := callJSON(abi.FnInsertSpan, hostInsertSpan, req)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(raw), nil
}

// Lock tries to take the tenant-wide lock key for at most ttl (at least
// 1ms; the host caps it). It returns true when taken (or renewed,
// if this run already held it) and false, with no error, when another run
// holds it. The host releases every lock a run still holds when the run
// ends. Kernels only.
func Lock(key string, ttl time.Duration) (bool, error) {
	ms := ttl.Milliseconds()
	switch {
	case ttl > 0 && ms == 0:
		ms = 1
	case ms > math.MaxInt32:
		ms = math.MaxInt32
	}
	callMu.Lock()
	defer callMu.Unlock()
	p, n := stringArg(key)
	code := hostLock(p, n, int32(ms))
	runtime.KeepAlive(key)
	switch {
	case code == 0:
		return true, nil
	case code == abi.ErrBusy:
		return false, nil
	case code < 0:
		return false, hostErrorLocked(abi.FnLock, int64(code))
	}
	return false, &Error{Op: abi.FnLock, Code: abi.ErrInvalid, Name: CodeName(abi.ErrInvalid),
		Message: fmt.Sprintf("unexpected return code %d", code)}
}

// Unlock releases a lock this run holds. It fails with ErrNotFound if the run
// does not hold key and ErrFailed if the lock was lost (its ttl passed).
// Kernels only.
func Unlock(key string) error {
	_, err := call32(abi.FnUnlock, func() int32 {
		p, n := stringArg(key)
		r := hostUnlock(p, n)
		runtime.KeepAlive(key)
		return r
	})
	return err
}

// Exec runs the function span spanID (its latest seq) in a function-tier
// sandbox with input (any JSON value; []byte and json.RawMessage are taken
// as JSON text) and returns the outcome. A function that ran and failed is
// not an error here: it is a result with Status "error" and Error set. The
// error is for the exec call itself (no such span, denied, limit). Kernels
// only.
func Exec(spanID string, input any) (abi.ExecResult, error) {
	var res abi.ExecResult
	er := abi.ExecRequest{SpanID: spanID}
	if input != nil {
		in, err := marshalValue(input)
		if err != nil {
			return res, fmt.Errorf("logline: exec: encoding input: %w", err)
		}
		er.Input = json.RawMessage(in)
	}
	req, err := json.Marshal(er)
	if err != nil {
		return res, fmt.Errorf("logline: exec: encoding request: %w", err)
	}
	raw, err := callJSON(abi.FnExec, hostExec, req)
	if err != nil {
		return res, err
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return res, fmt.Errorf("logline: exec: decoding result: %w", err)
	}
	return res, nil
}

// HTTP makes an outbound request; its URL must match the allowlist of the
// manifest or provider span. Any HTTP status is a response; the error is for
// a request that could not be made (ErrFailed), timed out (ErrTimeout) or
// was refused (ErrCapabilityDenied, ErrInvalid). The body is capped by the
// host. Kernels only.
func HTTP(req abi.HTTPRequest) (abi.HTTPResponse, error) {
	var res abi.HTTPResponse
	b, err := json.Marshal(req)
	if err != nil {
		return res, fmt.Errorf("logline: http: encoding request: %w", err)
	}
	raw, err := callJSON(abi.FnHTTP, hostHTTP, b)
	if err != nil {
		return res, err
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return res, fmt.Errorf("logline: http: decoding response: %w", err)
	}
	return res, nil
}

// Blake3 returns the BLAKE3-256 digest of data, computed by the host (the
// hash of span proofs). It panics if the host refuses, which only a broken
// host does; Run turns that into guest_error.
func Blake3(data []byte) [32]byte {
	var out [32]byte
	if _, err := call32(abi.FnBlake3, func() int32 {
		p, n := bytesArg(data)
		r := hostBlake3(p, n, unsafe.Pointer(&out))
		runtime.KeepAlive(data)
		return r
	}); err != nil {
		panic(err)
	}
	return out
}

// Ed25519Verify reports whether sig is a valid Ed25519 signature of msg by
// pub. Keys of other than 32 bytes and signatures of other than 64 are
// invalid.
func Ed25519Verify(pub, msg, sig []byte) bool {
	if len(pub) != 32 || len(sig) != 64 {
		return false
	}
	callMu.Lock()
	defer callMu.Unlock()
	mp, mn := bytesArg(msg)
	code := hostEd25519Verify(unsafe.Pointer(unsafe.SliceData(pub)), mp, mn, unsafe.Pointer(unsafe.SliceData(sig)))
	runtime.KeepAlive(pub)
	runtime.KeepAlive(msg)
	runtime.KeepAlive(sig)
	return code == 1
}

// callMu keeps a call and the result() that reads its pending result
// together, should a guest call the SDK from several goroutines.
var callMu sync.Mutex

// call runs a host call that leaves a pending result and returns it.
func call(op string, f func() int64) ([]byte, error) {
	callMu.Lock()
	defer callMu.Unlock()
	n := f()
	if n < 0 {
		return nil, hostErrorLocked(op, n)
	}
	if n > math.MaxInt32 {
		return nil, &Error{Op: op, Code: abi.ErrInvalid, Name: CodeName(abi.ErrInvalid),
			Message: fmt.Sprintf("pending result of %d bytes", n)}
	}
	buf := make([]byte, n)
	if n == 0 {
		return buf, nil
	}
	p, c := bytesArg(buf)
	got := hostResult(p, c)
	runtime.KeepAlive(buf)
	if got < 0 {
		return nil, hostErrorLocked(abi.FnResult, int64(got))
	}
	if int64(got) != n {
		return nil, &Error{Op: op, Code: abi.ErrInvalid, Name: CodeName(abi.ErrInvalid),
			Message: fmt.Sprintf("pending result is %d bytes, the call announced %d", got, n)}
	}
	return buf, nil
}

// callJSON is call for the functions that take one JSON request.
func callJSON(op string, fn func(unsafe.Pointer, int32) int64, req []byte) ([]byte, error) {
	return call(op, func() int64 {
		p, n := bytesArg(req)
		r := fn(p, n)
		runtime.KeepAlive(req)
		return r
	})
}

// maxErrorResult bounds what the SDK reads of an error's pending result.
const maxErrorResult = 64 << 10

// call32 runs a host call that returns an i32 code, reading the error on a
// negative one.
func call32(op string, f func() int32) (int32, error) {
	callMu.Lock()
	defer callMu.Unlock()
	r := f()
	if r < 0 {
		return r, hostErrorLocked(op, int64(r))
	}
	return r, nil
}

// hostErrorLocked turns a negative code into an *Error carrying the host's
// message from the pending result. The caller holds callMu.
func hostErrorLocked(op string, code int64) *Error {
	c := int32(max(code, math.MinInt32))
	e := &Error{Op: op, Code: c, Name: CodeName(c)}
	n := hostResult(nil, 0)
	if n <= 0 || n > maxErrorResult {
		return e
	}
	buf := make([]byte, n)
	p, capacity := bytesArg(buf)
	got := hostResult(p, capacity)
	runtime.KeepAlive(buf)
	if got != n {
		return e
	}
	var ae abi.Error
	if json.Unmarshal(buf, &ae) == nil {
		e.Message = ae.Message
	} else {
		e.Message = string(buf)
	}
	return e
}

// marshalValue encodes v as JSON, taking []byte and json.RawMessage as JSON
// text already. nil encodes as null.
func marshalValue(v any) ([]byte, error) {
	switch b := v.(type) {
	case json.RawMessage:
		if len(b) == 0 {
			return []byte("null"), nil
		}
		if !json.Valid(b) {
			return nil, fmt.Errorf("invalid JSON")
		}
		return b, nil
	case []byte:
		return marshalValue(json.RawMessage(b))
	}
	return json.Marshal(v)
}

func bytesArg(b []byte) (unsafe.Pointer, int32) {
	if len(b) == 0 {
		return nil, 0
	}
	if len(b) > math.MaxInt32 {
		panic("logline: buffer larger than 2 GiB")
	}
	return unsafe.Pointer(unsafe.SliceData(b)), int32(len(b))
}

func stringArg(s string) (unsafe.Pointer, int32) {
	if len(s) == 0 {
		return nil, 0
	}
	if len(s) > math.MaxInt32 {
		panic("logline: string larger than 2 GiB")
	}
	return unsafe.Pointer(unsafe.StringData(s)), int32(len(s))
}
