package sandbox

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"lukechampine.com/blake3"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/span"
)

// Fuel the host charges for its own work, so that a run's fuel stays a
// function of the module and the input only.
const (
	hostCallFuel = 100    // every call to the logline module
	copyShift    = 4      // bytes moved: one unit per 16 bytes, as memory.copy
	hashShift    = 2      // bytes hashed or generated: one unit per 4 bytes
	verifyFuel   = 20_000 // one ed25519 verification
)

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

// exportHostFuncs defines the `logline` module: every function of
// abi/abi.go with exactly its signature.
func exportHostFuncs(b wazero.HostModuleBuilder) {
	def := func(name string, f api.GoModuleFunc, params []api.ValueType, result api.ValueType) {
		b.NewFunctionBuilder().WithGoModuleFunction(f, params, []api.ValueType{result}).WithName(name).Export(name)
	}
	def(abi.FnLog, hostLog, []api.ValueType{i32, i32, i32}, i32)
	def(abi.FnNow, hostNow, nil, i64)
	def(abi.FnRandom, hostRandom, []api.ValueType{i32, i32}, i32)
	def(abi.FnInput, hostInput, []api.ValueType{i32, i32}, i32)
	def(abi.FnOutput, hostOutput, []api.ValueType{i32, i32}, i32)
	def(abi.FnEnv, hostEnv, []api.ValueType{i32, i32}, i64)
	def(abi.FnSQL, hostSQL, []api.ValueType{i32, i32}, i64)
	def(abi.FnInsertSpan, hostInsertSpan, []api.ValueType{i32, i32}, i64)
	def(abi.FnLock, hostLock, []api.ValueType{i32, i32, i32}, i32)
	def(abi.FnUnlock, hostUnlock, []api.ValueType{i32, i32}, i32)
	def(abi.FnExec, hostExec, []api.ValueType{i32, i32}, i64)
	def(abi.FnHTTP, hostHTTP, []api.ValueType{i32, i32}, i64)
	def(abi.FnBlake3, hostBlake3, []api.ValueType{i32, i32, i32}, i32)
	def(abi.FnEd25519Verify, hostEd25519Verify, []api.ValueType{i32, i32, i32, i32}, i32)
	def(abi.FnResult, hostResult, []api.ValueType{i32, i32}, i32)
}

// state returns the run a host function serves. Every call into a guest
// carries one; a call without (a bug) traps the guest, never the host.
func state(ctx context.Context) *runState {
	if c, ok := ctx.(*runCtx); ok {
		return c.rs
	}
	rs, _ := ctx.Value(runKey{}).(*runState)
	if rs == nil {
		panic(errors.New("sandbox: host function called outside a run"))
	}
	return rs
}

// enter counts a logline call and charges its base fuel.
func enter(ctx context.Context) *runState {
	rs := state(ctx)
	rs.hostCalls++
	if rs.hostCalls > rs.lim.HostCalls {
		rs.abort(abi.CodeHostCallLimit, "host call limit of %d reached", rs.lim.HostCalls)
	}
	rs.charge(hostCallFuel)
	return rs
}

// view returns guest memory [ptr, ptr+n) or traps: an out-of-bounds pointer
// is a guest bug, as an out-of-bounds load would be.
func (rs *runState) view(fn string, ptr, n uint32) []byte {
	buf := rs.inst.mem.buf
	end := uint64(ptr) + uint64(n)
	if end > uint64(len(buf)) {
		rs.abort(abi.CodeTrap, "%s: memory access [%d, %d) out of bounds (memory is %d bytes)", fn, ptr, end, len(buf))
	}
	return buf[ptr:end:end]
}

// writable is view for memory the host is about to write, which the
// restore after the run must then copy back (see dirty.go).
func (rs *runState) writable(fn string, ptr, n uint32) []byte {
	b := rs.view(fn, ptr, n)
	rs.inst.st.MarkHost(uint64(ptr), uint64(ptr)+uint64(n))
	return b
}

func (rs *runState) chargeBytes(n int, shift uint) { rs.charge(int64(n) >> shift) }

// fail leaves an abi.Error as the pending result and returns code.
func (rs *runState) fail(code int32, format string, args ...any) int32 {
	msg := clip(fmt.Sprintf(format, args...))
	rs.pending, _ = json.Marshal(abi.Error{Code: abi.ErrName(code), Message: msg})
	return code
}

// succeed leaves b as the pending result and returns its length.
func (rs *runState) succeed(b []byte) int64 {
	rs.pending = b
	rs.chargeBytes(len(b), copyShift)
	return int64(len(b))
}

// allowed checks the tier of a capability call; a denial is left as the
// pending result, noted in the log and remembered for the classification.
func (rs *runState) allowed(fn string) bool {
	var why string
	switch {
	case rs.tier.Pure():
		why = fmt.Sprintf("%s: capability denied: tier %q may not call it", fn, rs.tier)
	case rs.caps == nil:
		why = fmt.Sprintf("%s: capability denied: this run has no capabilities", fn)
	default:
		return true
	}
	rs.deny(why)
	rs.fail(abi.ErrCapabilityDenied, "%s", why)
	return false
}

func (rs *runState) deny(why string) {
	if rs.denied == "" {
		rs.denied = why
	}
	rs.logs.add(abi.LogWarn, "host", []byte(why))
}

// capCall runs a capability with the per-call deadline and maps its error
// to a code (0 when it succeeded).
func (rs *runState) capCall(fn string, call func(context.Context) error) int32 {
	deadline := time.Now().Add(rs.lim.HostCallTimeout)
	if rs.deadline.Before(deadline) || fn == abi.FnExec {
		// exec runs code under limits of its own (fuel, its own wall
		// clock): only the caller's wall clock bounds it, not the
		// deadline of a host call, which an array of cold runs on a
		// loaded machine can pass without anything being wrong.
		deadline = rs.deadline
	}
	ctx, cancel := context.WithDeadline(rs.ctx, deadline)
	err := SafeCall(func() error { return call(ctx) })
	expired := errors.Is(ctx.Err(), context.DeadlineExceeded)
	cancel()
	if cause := rs.expired(); cause != nil {
		rs.abortErr = rs.timeoutError(cause, fn)
		panic(errAbort)
	}
	if err == nil {
		return 0
	}
	var ce *CallError
	var end *Error
	switch {
	case errors.As(err, &end):
		rs.abort(end.Code, "%s", end.Message) // does not return
		return 0
	case errors.As(err, &ce):
		code := ce.Code
		if !knownCode(code) {
			code = abi.ErrFailed
		}
		if code == abi.ErrCapabilityDenied {
			rs.deny(fn + ": capability denied: " + ce.Message)
		}
		return rs.fail(code, "%s", ce.Message)
	case expired || errors.Is(err, context.DeadlineExceeded):
		return rs.fail(abi.ErrTimeout, "%s: deadline of %s passed", fn, rs.lim.HostCallTimeout)
	default:
		return rs.fail(abi.ErrFailed, "%s: %v", fn, err)
	}
}

// decode parses a JSON request from guest memory.
func (rs *runState) decode(fn string, ptr, n uint32, v any) int32 {
	body := rs.view(fn, ptr, n)
	rs.chargeBytes(len(body), copyShift)
	if err := json.Unmarshal(body, v); err != nil {
		return rs.fail(abi.ErrInvalid, "%s: malformed request: %v", fn, err)
	}
	return 0
}

func setI32(stack []uint64, v int32) { stack[0] = api.EncodeI32(v) }
func setI64(stack []uint64, v int64) { stack[0] = api.EncodeI64(v) }

func hostLog(ctx context.Context, _ api.Module, stack []uint64) {
	rs := enter(ctx)
	level := api.DecodeI32(stack[0])
	text := rs.view(abi.FnLog, uint32(stack[1]), uint32(stack[2]))
	rs.chargeBytes(len(text), copyShift)
	rs.logs.add(level, "log", text)
	setI32(stack, 0)
}

func hostNow(ctx context.Context, _ api.Module, stack []uint64) {
	rs := enter(ctx)
	v := rs.wall()
	rs.recordNow(v)
	setI64(stack, v)
}

func hostRandom(ctx context.Context, _ api.Module, stack []uint64) {
	rs := enter(ctx)
	dst := rs.writable(abi.FnRandom, uint32(stack[0]), uint32(stack[1]))
	rs.chargeBytes(len(dst), hashShift)
	rs.random(dst)
	rs.recordRandom(dst)
	setI32(stack, 0)
}

func hostInput(ctx context.Context, _ api.Module, stack []uint64) {
	rs := enter(ctx)
	n := min(uint64(uint32(stack[1])), uint64(len(rs.input)))
	dst := rs.writable(abi.FnInput, uint32(stack[0]), uint32(n))
	rs.chargeBytes(len(dst), copyShift)
	copy(dst, rs.input)
	setI32(stack, int32(min(len(rs.input), math.MaxInt32)))
}

func hostOutput(ctx context.Context, _ api.Module, stack []uint64) {
	rs := enter(ctx)
	n := uint32(stack[1])
	if uint64(n) > uint64(rs.lim.OutputBytes) {
		rs.abort(abi.CodeOutputLimit, "output of %d bytes exceeds the limit of %d bytes", n, rs.lim.OutputBytes)
	}
	src := rs.view(abi.FnOutput, uint32(stack[0]), n)
	rs.chargeBytes(len(src), copyShift)
	rs.output = append(rs.output[:0:0], src...)
	setI32(stack, 0)
}

func hostEnv(ctx context.Context, _ api.Module, stack []uint64) {
	rs := enter(ctx)
	key := rs.view(abi.FnEnv, uint32(stack[0]), uint32(stack[1]))
	v, ok := rs.env[string(key)]
	if !ok {
		setI64(stack, int64(rs.fail(abi.ErrNotFound, "env: %q is not set", key)))
		return
	}
	setI64(stack, rs.succeed([]byte(v)))
}

func hostResult(ctx context.Context, _ api.Module, stack []uint64) {
	rs := enter(ctx)
	n := min(uint64(uint32(stack[1])), uint64(len(rs.pending)))
	dst := rs.writable(abi.FnResult, uint32(stack[0]), uint32(n))
	rs.chargeBytes(len(dst), copyShift)
	copy(dst, rs.pending)
	setI32(stack, int32(min(len(rs.pending), math.MaxInt32)))
}

func hostSQL(ctx context.Context, _ api.Module, stack []uint64) {
	rs := enter(ctx)
	if !rs.allowed(abi.FnSQL) {
		setI64(stack, abi.ErrCapabilityDenied)
		return
	}
	var req abi.SQLRequest
	if code := rs.decode(abi.FnSQL, uint32(stack[0]), uint32(stack[1]), &req); code < 0 {
		setI64(stack, int64(code))
		return
	}
	var out []byte
	code := rs.capCall(abi.FnSQL, func(ctx context.Context) (err error) {
		out, err = rs.caps.SQL(ctx, req)
		return err
	})
	if code < 0 {
		setI64(stack, int64(code))
		return
	}
	setI64(stack, rs.succeed(out))
}

func hostInsertSpan(ctx context.Context, _ api.Module, stack []uint64) {
	rs := enter(ctx)
	if !rs.allowed(abi.FnInsertSpan) {
		setI64(stack, abi.ErrCapabilityDenied)
		return
	}
	body := rs.view(abi.FnInsertSpan, uint32(stack[0]), uint32(stack[1]))
	rs.chargeBytes(len(body), copyShift)
	req, err := ParseInsertRequest(body)
	if err != nil {
		setI64(stack, int64(rs.fail(abi.ErrInvalid, "insert_span: %v", err)))
		return
	}
	if req.Check {
		var out []byte
		code := rs.capCall(abi.FnInsertSpan, func(ctx context.Context) (err error) {
			out, err = rs.caps.CheckSpans(ctx, slices.Clone(req.Spans))
			return err
		})
		if code < 0 {
			setI64(stack, int64(code))
			return
		}
		setI64(stack, rs.succeed(out))
		return
	}
	n := req.N
	if rs.spans+n > rs.lim.Spans {
		setI64(stack, int64(rs.fail(abi.ErrLimit, "insert_span: %d more span(s) would pass the limit of %d (%d appended)", n, rs.lim.Spans, rs.spans)))
		return
	}
	span := slices.Clone(req.Spans)
	var out []byte
	code := rs.capCall(abi.FnInsertSpan, func(ctx context.Context) (err error) {
		if out, err = rs.caps.InsertSpan(ctx, span); err == nil && req.Refs {
			out, err = RefsOf(out)
		}
		return err
	})
	if code < 0 {
		setI64(stack, int64(code))
		return
	}
	rs.spans += n
	setI64(stack, rs.succeed(out))
}

func hostLock(ctx context.Context, _ api.Module, stack []uint64) {
	rs := enter(ctx)
	if !rs.allowed(abi.FnLock) {
		setI32(stack, abi.ErrCapabilityDenied)
		return
	}
	key := string(rs.view(abi.FnLock, uint32(stack[0]), uint32(stack[1])))
	ttl := api.DecodeI32(stack[2])
	if ttl <= 0 {
		setI32(stack, rs.fail(abi.ErrInvalid, "lock: ttl_ms must be positive, got %d", ttl))
		return
	}
	var taken bool
	code := rs.capCall(abi.FnLock, func(ctx context.Context) (err error) {
		taken, err = rs.caps.Lock(ctx, key, time.Duration(ttl)*time.Millisecond)
		// Remembered at once, so that it is released even if the run
		// ends before this call returns to the guest.
		if err == nil && taken && !slices.Contains(rs.locks, key) {
			rs.locks = append(rs.locks, key)
		}
		return err
	})
	switch {
	case code < 0:
		setI32(stack, code)
	case !taken:
		setI32(stack, rs.fail(abi.ErrBusy, "lock: %q is held by another run", key))
	default:
		setI32(stack, 0)
	}
}

func hostUnlock(ctx context.Context, _ api.Module, stack []uint64) {
	rs := enter(ctx)
	if !rs.allowed(abi.FnUnlock) {
		setI32(stack, abi.ErrCapabilityDenied)
		return
	}
	key := string(rs.view(abi.FnUnlock, uint32(stack[0]), uint32(stack[1])))
	if !slices.Contains(rs.locks, key) {
		setI32(stack, rs.fail(abi.ErrNotFound, "unlock: this run does not hold %q", key))
		return
	}
	code := rs.capCall(abi.FnUnlock, func(ctx context.Context) error {
		return rs.caps.Unlock(ctx, key)
	})
	if code == 0 {
		rs.locks = slices.DeleteFunc(rs.locks, func(k string) bool { return k == key })
	}
	setI32(stack, code)
}

// jsonCapability is a kernel capability that takes a JSON request and
// answers JSON through the pending result (exec, http).
func jsonCapability[Req, Resp any](fn string, call func(*runState, context.Context, Req) (Resp, error)) api.GoModuleFunc {
	return func(ctx context.Context, _ api.Module, stack []uint64) {
		rs := enter(ctx)
		if !rs.allowed(fn) {
			setI64(stack, abi.ErrCapabilityDenied)
			return
		}
		var req Req
		if code := rs.decode(fn, uint32(stack[0]), uint32(stack[1]), &req); code < 0 {
			setI64(stack, int64(code))
			return
		}
		var out Resp
		code := rs.capCall(fn, func(ctx context.Context) (err error) {
			out, err = call(rs, ctx, req)
			return err
		})
		setI64(stack, rs.answer(fn, code, out))
	}
}

// IsJSONArray reports whether valid JSON b is an array: insert_span and
// exec take one request or an array of them.
func IsJSONArray(b []byte) bool {
	t := bytes.TrimLeft(b, " \t\r\n")
	return len(t) > 0 && t[0] == '['
}

// MaxExecBatch bounds the requests of one exec call given an array.
const MaxExecBatch = 256

// execRequests is exec's request: one abi.ExecRequest, or an array of them,
// which the host runs concurrently (a kernel serving many requests is not
// held to one core by its own single thread).
type execRequests struct {
	list  []abi.ExecRequest
	array bool
}

func (e *execRequests) UnmarshalJSON(b []byte) error {
	if IsJSONArray(b) {
		e.array = true
		if err := json.Unmarshal(b, &e.list); err != nil {
			return err
		}
		if len(e.list) == 0 || len(e.list) > MaxExecBatch {
			return fmt.Errorf("an array of 1 to %d requests, got %d", MaxExecBatch, len(e.list))
		}
		return nil
	}
	e.list = make([]abi.ExecRequest, 1)
	return json.Unmarshal(b, &e.list[0])
}

// execAll runs the requests, at most GOMAXPROCS at a time. In an array, a
// request the embedder refuses (no such span, ...) is that element's error,
// not the call's.
func execAll(rs *runState, ctx context.Context, req execRequests) (any, error) {
	if !req.array {
		return rs.caps.Exec(ctx, req.list[0])
	}
	out := make([]abi.ExecResult, len(req.list))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, r := range req.list {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var res abi.ExecResult
			err := SafeCall(func() (err error) { res, err = rs.caps.Exec(ctx, r); return err })
			if err != nil {
				code := int32(abi.ErrFailed)
				var ce *CallError
				if errors.As(err, &ce) && knownCode(ce.Code) {
					code = ce.Code
				}
				res = abi.ExecResult{Status: "error", Error: &abi.Error{Code: abi.ErrName(code), Message: err.Error()}}
			}
			out[i] = res
		}()
	}
	wg.Wait()
	return out, nil
}

var (
	hostExec = jsonCapability(abi.FnExec, execAll)
	hostHTTP = jsonCapability(abi.FnHTTP, func(rs *runState, ctx context.Context, req abi.HTTPRequest) (abi.HTTPResponse, error) {
		return rs.caps.HTTP(ctx, req)
	})
)

// answer leaves the JSON of a capability's reply as the pending result.
func (rs *runState) answer(fn string, code int32, v any) int64 {
	if code < 0 {
		return int64(code)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return int64(rs.fail(abi.ErrFailed, "%s: encoding the reply: %v", fn, err))
	}
	return rs.succeed(b)
}

func hostBlake3(ctx context.Context, _ api.Module, stack []uint64) {
	rs := enter(ctx)
	src := rs.view(abi.FnBlake3, uint32(stack[0]), uint32(stack[1]))
	dst := rs.writable(abi.FnBlake3, uint32(stack[2]), 32)
	rs.chargeBytes(len(src), hashShift)
	sum := blake3.Sum256(src)
	copy(dst, sum[:])
	setI32(stack, 0)
}

func hostEd25519Verify(ctx context.Context, _ api.Module, stack []uint64) {
	rs := enter(ctx)
	pub := rs.view(abi.FnEd25519Verify, uint32(stack[0]), ed25519.PublicKeySize)
	msg := rs.view(abi.FnEd25519Verify, uint32(stack[1]), uint32(stack[2]))
	sig := rs.view(abi.FnEd25519Verify, uint32(stack[3]), ed25519.SignatureSize)
	rs.charge(verifyFuel + int64(len(msg))>>hashShift)
	ok := span.VerifyEd25519(pub, msg, sig)
	setI32(stack, int32(boolInt(ok)))
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
