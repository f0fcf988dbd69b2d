package extism

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	extism "github.com/extism/go-sdk"
	"lukechampine.com/blake3"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/sandbox/meter"
	"github.com/logline/logline/host/span"
)

// Fuel the host charges for its own work, as package sandbox does.
const (
	hostCallFuel = 100    // every call to the logline namespace
	copyShift    = 4      // bytes moved: one unit per 16 bytes
	hashShift    = 2      // bytes hashed or generated: one unit per 4 bytes
	verifyFuel   = 20_000 // one ed25519 verification
	maxRandom    = 1 << 20
)

// answer is what a logline function leaves in a new Extism block: exactly
// one of the JSON objects {"ok": value} and {"error": {"code", "message"}}.
type answer []byte

type handler func(rs *runState, req []byte) answer

func hostFunctions() []extism.HostFunction {
	fns := map[string]handler{
		abi.FnLog:           hLog,
		abi.FnNow:           hNow,
		abi.FnRandom:        hRandom,
		abi.FnEnv:           hEnv,
		abi.FnBlake3:        hBlake3,
		abi.FnEd25519Verify: hVerify,
		abi.FnSQL:           hSQL,
		abi.FnInsertSpan:    hInsertSpan,
		abi.FnLock:          hLock,
		abi.FnUnlock:        hUnlock,
		abi.FnExec:          hExec,
		abi.FnHTTP:          hHTTP,
	}
	var out []extism.HostFunction
	for _, name := range Functions {
		h := fns[name]
		f := extism.NewHostFunctionWithStack(name, func(ctx context.Context, p *extism.CurrentPlugin, stack []uint64) {
			stack[0] = call(ctx, p, name, h, stack[0])
		}, []extism.ValueType{extism.ValueTypePTR}, []extism.ValueType{extism.ValueTypePTR})
		f.SetNamespace(abi.Module)
		out = append(out, f)
	}
	f := extism.NewHostFunctionWithStack(meter.RefuelName, refuel, nil, nil)
	f.SetNamespace(meter.RefuelModule)
	return append(out, f)
}

// call reads the request block, runs the handler and writes its answer to
// a new block, whose offset it returns.
func call(ctx context.Context, p *extism.CurrentPlugin, name string, h handler, offset uint64) uint64 {
	rs, _ := ctx.Value(runKey{}).(*runState)
	if rs == nil {
		panic(errors.New("extism: logline host function called outside a run"))
	}
	rs.hostCalls++
	if rs.hostCalls > rs.lim.HostCalls {
		rs.abort(abi.CodeHostCallLimit, "host call limit of %d reached", rs.lim.HostCalls)
	}
	rs.charge(hostCallFuel)
	var req []byte
	if offset != 0 {
		var err error
		req, err = p.ReadBytes(offset)
		if err != nil {
			rs.abort(abi.CodeTrap, "%s: reading the request block at %d: %v", name, offset, err)
		}
		rs.charge(int64(len(req)) >> copyShift)
	}
	ans := h(rs, req)
	rs.charge(int64(len(ans)) >> copyShift)
	ptr, err := p.AllocWithContext(ctx, uint64(len(ans)))
	if err != nil || ptr == 0 {
		if rs.memRefused() {
			rs.abort(abi.CodeMemoryLimit, "%s: no room for the answer (%d bytes) in Extism memory", name, len(ans))
		}
		rs.abort(abi.CodeTrap, "%s: allocating the answer (%d bytes) failed: %v", name, len(ans), err)
	}
	if !p.Memory().Write(uint32(ptr), ans) {
		rs.abort(abi.CodeTrap, "%s: writing the answer at %d failed", name, ptr)
	}
	return ptr
}

func okJSON(v []byte) answer {
	out := make([]byte, 0, len(v)+7)
	out = append(out, `{"ok":`...)
	out = append(out, v...)
	return append(out, '}')
}

func okValue(v any) answer {
	b, err := json.Marshal(v)
	if err != nil {
		return fail(abi.ErrFailed, "encoding the answer: %v", err)
	}
	return okJSON(b)
}

func fail(code int32, format string, args ...any) answer {
	b, _ := json.Marshal(struct {
		Error abi.Error `json:"error"`
	}{abi.Error{Code: abi.ErrName(code), Message: clip(fmt.Sprintf(format, args...))}})
	return b
}

// allowed checks the tier of a capability call; a denial is noted in the
// log and remembered for the classification, as in package sandbox.
func (rs *runState) allowed(fn string) (answer, bool) {
	var why string
	switch {
	case rs.tier.Pure():
		why = fmt.Sprintf("%s: capability denied: tier %q may not call it", fn, rs.tier)
	case rs.caps == nil:
		why = fmt.Sprintf("%s: capability denied: this run has no capabilities", fn)
	default:
		return nil, true
	}
	rs.deny(why)
	return fail(abi.ErrCapabilityDenied, "%s", why), false
}

func (rs *runState) deny(why string) {
	if rs.denied == "" {
		rs.denied = why
	}
	rs.logs.add(abi.LogWarn, "host", []byte(why))
}

// capCall runs a capability with the per-call deadline; a non-nil answer
// is the failure to hand back.
func (rs *runState) capCall(fn string, f func(context.Context) error) answer {
	ctx, cancel := context.WithTimeout(rs.ctx, rs.lim.HostCallTimeout)
	err := sandbox.SafeCall(func() error { return f(ctx) })
	expired := errors.Is(ctx.Err(), context.DeadlineExceeded)
	cancel()
	if rs.ctx.Err() != nil {
		if errors.Is(rs.ctx.Err(), context.Canceled) {
			rs.abort(abi.CodeTimeout, "run canceled by the host during %s", fn)
		}
		rs.abort(abi.CodeTimeout, "wall clock limit of %s passed during %s", rs.lim.Wall, fn)
	}
	if err == nil {
		return nil
	}
	var ce *sandbox.CallError
	var end *sandbox.Error
	switch {
	case errors.As(err, &end):
		rs.abort(end.Code, "%s", end.Message) // does not return
		return nil
	case errors.As(err, &ce):
		code := ce.Code
		if code > abi.ErrCapabilityDenied || code < abi.ErrTimeout {
			code = abi.ErrFailed
		}
		if code == abi.ErrCapabilityDenied {
			rs.deny(fn + ": capability denied: " + ce.Message)
		}
		return fail(code, "%s", ce.Message)
	case expired || errors.Is(err, context.DeadlineExceeded):
		return fail(abi.ErrTimeout, "%s: deadline of %s passed", fn, rs.lim.HostCallTimeout)
	default:
		return fail(abi.ErrFailed, "%s: %v", fn, err)
	}
}

func decode(fn string, req []byte, v any) answer {
	if err := json.Unmarshal(req, v); err != nil {
		return fail(abi.ErrInvalid, "%s: malformed request: %v", fn, err)
	}
	return nil
}

func hLog(rs *runState, req []byte) answer {
	var r struct {
		Level   *int32 `json:"level"`
		Message string `json:"message"`
	}
	if a := decode(abi.FnLog, req, &r); a != nil {
		return a
	}
	level := int32(abi.LogInfo)
	if r.Level != nil {
		level = *r.Level
	}
	rs.logs.add(level, "log", []byte(r.Message))
	return okJSON([]byte("null"))
}

func hNow(rs *runState, _ []byte) answer {
	rs.rec.AddNow(rs.start)
	return okJSON(strconv.AppendInt(nil, rs.start, 10))
}

func hRandom(rs *runState, req []byte) answer {
	var r struct {
		Len int `json:"len"`
	}
	if a := decode(abi.FnRandom, req, &r); a != nil {
		return a
	}
	if r.Len < 0 || r.Len > maxRandom {
		return fail(abi.ErrInvalid, "random: len must be in [0, %d], got %d", maxRandom, r.Len)
	}
	rs.charge(int64(r.Len) >> hashShift)
	b := make([]byte, r.Len)
	_, _ = rs.rng.Read(b)
	rs.rec.AddRandom(b)
	return okValue(hex.EncodeToString(b))
}

func hEnv(rs *runState, req []byte) answer {
	v, found := rs.env[string(req)]
	if !found {
		return fail(abi.ErrNotFound, "env: %q is not set", req)
	}
	return okValue(v)
}

func hBlake3(rs *runState, req []byte) answer {
	rs.charge(int64(len(req)) >> hashShift)
	sum := blake3.Sum256(req)
	return okValue(hex.EncodeToString(sum[:]))
}

func hVerify(rs *runState, req []byte) answer {
	var r struct {
		PublicKey []byte `json:"public_key"`
		Message   []byte `json:"message"`
		Signature []byte `json:"signature"`
	}
	if a := decode(abi.FnEd25519Verify, req, &r); a != nil {
		return a
	}
	rs.charge(verifyFuel + int64(len(r.Message))>>hashShift)
	valid := span.VerifyEd25519(r.PublicKey, r.Message, r.Signature)
	return okValue(valid)
}

func hSQL(rs *runState, req []byte) answer {
	if a, ok := rs.allowed(abi.FnSQL); !ok {
		return a
	}
	var r abi.SQLRequest
	if a := decode(abi.FnSQL, req, &r); a != nil {
		return a
	}
	var out []byte
	if a := rs.capCall(abi.FnSQL, func(ctx context.Context) (err error) {
		out, err = rs.caps.SQL(ctx, r)
		return err
	}); a != nil {
		return a
	}
	return okRaw(abi.FnSQL, out)
}

// okRaw wraps the JSON a capability returned.
func okRaw(fn string, v []byte) answer {
	if !json.Valid(v) {
		return fail(abi.ErrFailed, "%s: the host's answer is not valid JSON", fn)
	}
	return okJSON(v)
}

func hInsertSpan(rs *runState, req []byte) answer {
	if a, ok := rs.allowed(abi.FnInsertSpan); !ok {
		return a
	}
	ir, err := sandbox.ParseInsertRequest(req)
	if err != nil {
		return fail(abi.ErrInvalid, "insert_span: %v", err)
	}
	if ir.Check {
		var out []byte
		if a := rs.capCall(abi.FnInsertSpan, func(ctx context.Context) (err error) {
			out, err = rs.caps.CheckSpans(ctx, slices.Clone(ir.Spans))
			return err
		}); a != nil {
			return a
		}
		return okRaw(abi.FnInsertSpan, out)
	}
	if rs.spans+ir.N > rs.lim.Spans {
		return fail(abi.ErrLimit, "insert_span: %d more span(s) would pass the limit of %d (%d appended)", ir.N, rs.lim.Spans, rs.spans)
	}
	span := slices.Clone(ir.Spans)
	var out []byte
	if a := rs.capCall(abi.FnInsertSpan, func(ctx context.Context) (err error) {
		if out, err = rs.caps.InsertSpan(ctx, span); err == nil && ir.Refs {
			out, err = sandbox.RefsOf(out)
		}
		return err
	}); a != nil {
		return a
	}
	rs.spans += ir.N
	return okRaw(abi.FnInsertSpan, out)
}

func hLock(rs *runState, req []byte) answer {
	if a, ok := rs.allowed(abi.FnLock); !ok {
		return a
	}
	var r struct {
		Key   string `json:"key"`
		TTLMs int64  `json:"ttl_ms"`
	}
	if a := decode(abi.FnLock, req, &r); a != nil {
		return a
	}
	if r.TTLMs <= 0 || r.TTLMs > 1<<31-1 {
		return fail(abi.ErrInvalid, "lock: ttl_ms must be in [1, 2^31-1], got %d", r.TTLMs)
	}
	var taken bool
	if a := rs.capCall(abi.FnLock, func(ctx context.Context) (err error) {
		taken, err = rs.caps.Lock(ctx, r.Key, time.Duration(r.TTLMs)*time.Millisecond)
		return err
	}); a != nil {
		return a
	}
	if !taken {
		return fail(abi.ErrBusy, "lock: %q is held by another run", r.Key)
	}
	if !slices.Contains(rs.locks, r.Key) {
		rs.locks = append(rs.locks, r.Key)
	}
	return okJSON([]byte("null"))
}

func hUnlock(rs *runState, req []byte) answer {
	if a, ok := rs.allowed(abi.FnUnlock); !ok {
		return a
	}
	var r struct {
		Key string `json:"key"`
	}
	if a := decode(abi.FnUnlock, req, &r); a != nil {
		return a
	}
	if a := rs.capCall(abi.FnUnlock, func(ctx context.Context) error {
		return rs.caps.Unlock(ctx, r.Key)
	}); a != nil {
		return a
	}
	rs.locks = slices.DeleteFunc(rs.locks, func(k string) bool { return k == r.Key })
	return okJSON([]byte("null"))
}

func hExec(rs *runState, req []byte) answer {
	if a, ok := rs.allowed(abi.FnExec); !ok {
		return a
	}
	var r abi.ExecRequest
	if a := decode(abi.FnExec, req, &r); a != nil {
		return a
	}
	var out abi.ExecResult
	if a := rs.capCall(abi.FnExec, func(ctx context.Context) (err error) {
		out, err = rs.caps.Exec(ctx, r)
		return err
	}); a != nil {
		return a
	}
	return okValue(out)
}

func hHTTP(rs *runState, req []byte) answer {
	if a, ok := rs.allowed(abi.FnHTTP); !ok {
		return a
	}
	var r abi.HTTPRequest
	if a := decode(abi.FnHTTP, req, &r); a != nil {
		return a
	}
	var out abi.HTTPResponse
	if a := rs.capCall(abi.FnHTTP, func(ctx context.Context) (err error) {
		out, err = rs.caps.HTTP(ctx, r)
		return err
	}); a != nil {
		return a
	}
	return okValue(out)
}
