package stage0

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"
	"lukechampine.com/blake3"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/sandbox/extism"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/telemetry"
)

// Host boots kernels and runs functions. It is safe for concurrent use.
type Host struct {
	ledger *ledger.Ledger
	rt     *sandbox.Runtime
	ext    *extism.Runtime

	qjsMu sync.Mutex
	qjs   *sandbox.Module // the QuickJS guest, once loaded

	sigs sigCache
}

// sigCache remembers signatures that verified: (public key, hash,
// signature) verifies or not for ever, and the engine reads and checks the
// manifest, a kernel and the functions it runs on every pass (an Ed25519
// verification is ~70 µs; the hash, recomputed every time, ~5).
type sigCache struct {
	mu sync.Mutex
	ok map[string]struct{}
}

const sigCacheSize = 4096

// verify is span.Verify, with the signature check remembered.
func (h *Host) verify(s *span.Span) error {
	if s.Signature == "" || s.PublicKey == "" {
		return span.Verify(s)
	}
	key := s.PublicKey + s.CurrHash + s.Signature
	h.sigs.mu.Lock()
	_, known := h.sigs.ok[key]
	h.sigs.mu.Unlock()
	if known {
		// The content must still hash to curr_hash, which the remembered
		// signature covers.
		if hash, err := s.Hash(); err == nil && hash == s.CurrHash {
			return nil
		}
	}
	if err := span.Verify(s); err != nil {
		return err
	}
	h.sigs.mu.Lock()
	if h.sigs.ok == nil || len(h.sigs.ok) >= sigCacheSize {
		h.sigs.ok = map[string]struct{}{}
	}
	h.sigs.ok[key] = struct{}{}
	h.sigs.mu.Unlock()
	return nil
}

// New makes a Host. The ledger should carry the node key (ledger.WithKey):
// boot events and execution spans are signed with it. ext runs `extism`
// spans; nil refuses them.
func New(l *ledger.Ledger, rt *sandbox.Runtime, ext *extism.Runtime) *Host {
	return &Host{ledger: l, rt: rt, ext: ext}
}

// program is loaded code of any runtime, ready to run.
type program struct {
	hash string
	call func(context.Context, sandbox.Request) sandbox.Result
}

// run runs the program once. What it hands back is made recordable: every
// path that records a run (an execution span, an exec answer a kernel
// records, a policy's actions) gets the same verdict on the same output.
func (p *program) run(ctx context.Context, req sandbox.Request) sandbox.Result {
	res := p.call(ctx, req)
	recordable(&res)
	return res
}

// recordable makes a run's result storable in the ledger, whatever the
// guest did: an output the ledger cannot store (NUL, an unpaired surrogate,
// too deep, too large, a number with no exact canonical form) ends the run
// with invalid_output instead of failing the append of the span that would
// carry it (and, in a kernel's batch, of every span beside it); an error
// message, which may quote the guest, becomes valid UTF-8 without NUL.
func recordable(res *sandbox.Result) {
	if res.Err == nil && len(res.Output) > 0 {
		if err := span.CheckJSON("output", asJSON(res.Output)); err != nil {
			var fe *span.FieldError
			msg := err.Error()
			if errors.As(err, &fe) {
				msg = "output " + fe.Reason
			}
			res.Output = nil
			res.Err = &abi.Error{Code: abi.CodeInvalidOutput, Message: span.CleanText(msg)}
		}
	}
	if res.Err != nil {
		res.Err.Message = span.CleanText(res.Err.Message)
	}
}

// Runtimes of code spans.
const (
	RuntimeWasm    = "wasm"    // code is the module, base64 (std encoding)
	RuntimeExtism  = "extism"  // code is the plugin, base64
	RuntimeQuickJS = "quickjs" // code is JavaScript source
)

// EncodeModule is how a wasm module is stored in a span's code column (a
// text column cannot hold raw bytes).
func EncodeModule(wasm []byte) string { return base64.StdEncoding.EncodeToString(wasm) }

// ModuleHash is the hash recorded in metadata.module_hash when a module is
// published: lowercase hex BLAKE3-256 of the module bytes.
func ModuleHash(wasm []byte) string {
	h := blake3.Sum256(wasm)
	return fmt.Sprintf("%x", h[:])
}

// module decodes and loads the code of a span, checking it against the
// module_hash the span declares.
func (h *Host) module(ctx context.Context, s *span.Span) (*program, error) {
	switch {
	case s.Runtime == RuntimeWasm:
	case s.Runtime == RuntimeExtism && h.ext != nil:
	case s.Runtime == RuntimeQuickJS:
		return h.quickjs(ctx, s)
	case s.Runtime == RuntimeExtism:
		return nil, refuse(abi.CodeInvalidModule, "span %s: runtime %q is not available on this host", s.ID, s.Runtime)
	default:
		return nil, refuse(abi.CodeInvalidModule, "span %s: unknown runtime %q (want wasm, extism or quickjs)", s.ID, s.Runtime)
	}
	wasm, err := base64.StdEncoding.DecodeString(s.Code)
	if err != nil {
		return nil, refuse(abi.CodeInvalidModule, "span %s: code is not base64: %v", s.ID, err)
	}
	var meta struct {
		ModuleHash string `json:"module_hash"`
	}
	if len(s.Metadata) > 0 {
		_ = json.Unmarshal(s.Metadata, &meta)
	}
	if meta.ModuleHash != "" && meta.ModuleHash != ModuleHash(wasm) {
		return nil, refuse(abi.CodeHashMismatch, "span %s seq %d: module hashes to %s, the span declares %s",
			s.ID, s.Seq, ModuleHash(wasm), meta.ModuleHash)
	}
	var p *program
	if s.Runtime == RuntimeExtism {
		pl, lerr := h.ext.Load(ctx, wasm)
		err = lerr
		if err == nil {
			p = &program{hash: pl.Hash, call: func(ctx context.Context, req sandbox.Request) sandbox.Result {
				return h.ext.Run(ctx, pl, req)
			}}
		}
	} else {
		m, lerr := h.rt.Load(ctx, wasm)
		err = lerr
		if err == nil {
			p = &program{hash: m.Hash, call: func(ctx context.Context, req sandbox.Request) sandbox.Result {
				return h.rt.Run(ctx, m, req)
			}}
		}
	}
	if err != nil {
		var se *sandbox.Error
		if errors.As(err, &se) {
			return nil, refuse(se.Code, "span %s: %s", s.ID, se.Message)
		}
		return nil, err
	}
	return p, nil
}

// Boot is Stage-0: it runs kernel id (its latest seq) if the manifest allows
// it, after verifying its hash and, when the manifest requires it, its
// signature by a trusted key. It appends a boot_event, runs the kernel under
// its tenant's service principal with env, and appends and returns the
// execution span. A refusal is a *Refusal saying why, and nothing runs.
func (h *Host) Boot(ctx context.Context, id string, env map[string]string) (span.Span, error) {
	k, m, mod, err := h.kernel(ctx, id)
	if err != nil {
		return span.Span{}, err
	}
	if _, ok := env["TENANT"]; !ok {
		// The tenant a kernel works for, as the engine passes it: a
		// kernel booted by hand runs for its own tenant.
		env = maps.Clone(env)
		if env == nil {
			env = map[string]string{}
		}
		env["TENANT"] = k.TenantID
	}
	p := ledger.Service(k.TenantID, "edge:stage0")
	envKeys := make([]string, 0, len(env))
	for key := range env {
		envKeys = append(envKeys, key)
	}
	input, _ := json.Marshal(map[string]any{"boot_id": id, "seq": k.Seq, "env": envKeys})
	boot := span.Span{
		EntityType: "boot_event", Who: "edge:stage0", Did: "booted", This: "stage0", Status: "complete",
		Input: input, OwnerID: k.OwnerID, Visibility: k.Visibility, RelatedTo: []string{k.ID},
	}
	if _, err := h.ledger.Append(ctx, p, boot); err != nil {
		return span.Span{}, fmt.Errorf("error recording the boot event: %w", err)
	}
	caps := &kernelCaps{h: h, p: p, m: m}
	defer caps.release(ctx) // leases end with the run, whatever the sandbox did
	req := sandbox.Request{Tenant: k.TenantID, Tier: abi.TierKernel, Env: env, Limits: h.limits(m, k), Caps: caps}
	trace := traced(&req)
	res := mod.run(ctx, req)
	return h.record(ctx, p, k.OwnerID, k, mod, req, trace, res, nil)
}

// Tick runs kernel id (verified as Boot verifies it) for tenant, under that
// tenant's service principal, as the engine does on every interval and
// wake-up: it appends no boot_event, and an execution span only when the
// run failed (so idle ticks leave no trace, and every failure does), with
// note, if any, in its metadata as "engine" (the engine's back-off). It
// returns the run's result.
func (h *Host) Tick(ctx context.Context, id, tenant string, env map[string]string, note map[string]any) (sandbox.Result, error) {
	k, m, mod, err := h.kernel(ctx, id)
	if err != nil {
		return sandbox.Result{}, err
	}
	name := k.Name
	if name == "" {
		name = k.ID
	}
	p := ledger.Service(tenant, "edge:"+name)
	if err := p.Validate(); err != nil {
		return sandbox.Result{}, err
	}
	caps := &kernelCaps{h: h, p: p, m: m}
	req := sandbox.Request{Tenant: tenant, Tier: abi.TierKernel, Env: env, Limits: h.limits(m, k), Caps: caps}
	trace := traced(&req)
	res := mod.run(ctx, req)
	caps.release(ctx)
	if res.Err != nil {
		if _, err := h.record(ctx, p, p.User, k, mod, req, trace, res, note); err != nil {
			return res, err
		}
	}
	return res, nil
}

// traceRun is the run as an OpenTelemetry span in the ledger's trace of
// its execution span (nothing unless telemetry is on).
func traceRun(ctx context.Context, trace string, code *span.Span, req sandbox.Request, res sandbox.Result) {
	end := time.Now()
	// In the ledger's trace, linked to what ran it (an engine pass).
	_, sp := telemetry.Tracer().Start(telemetry.InTrace(ctx, trace), "execution "+code.EntityType, oteltrace.WithTimestamp(end.Add(-res.Duration)),
		oteltrace.WithLinks(oteltrace.LinkFromContext(ctx)),
		oteltrace.WithAttributes(attribute.String("logline.code_id", code.ID), attribute.Int64("logline.code_seq", int64(code.Seq)),
			attribute.String("logline.tier", string(req.Tier)), attribute.String("logline.tenant", req.Tenant),
			attribute.Int64("logline.fuel_used", res.FuelUsed), attribute.String("logline.trace_id", trace)))
	if res.Err != nil {
		sp.SetStatus(codes.Error, res.Err.Code)
		sp.SetAttributes(attribute.String("error.type", res.Err.Code))
	}
	sp.End(oteltrace.WithTimestamp(end))
}

// SandboxStats are the counters of the host's wasm runtime (zero without
// one), for metrics.
func (h *Host) SandboxStats() sandbox.Stats {
	if h.rt == nil {
		return sandbox.Stats{}
	}
	return h.rt.Stats()
}

// Warm finds, verifies and loads kernel id (compiling the sandbox module
// and, for JavaScript, the source) without running it, so that the first
// pass of an engine that just started does not pay for that.
func (h *Host) Warm(ctx context.Context, id string) error {
	_, _, _, err := h.kernel(ctx, id)
	return err
}

// kernel finds kernel id's latest seq and checks that it may boot: allowed
// by the manifest, its hash (and signature, when required) verified, its
// code loadable.
func (h *Host) kernel(ctx context.Context, id string) (*span.Span, *Manifest, *program, error) {
	m, err := h.LoadManifest(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	if !m.Allowed(id) {
		return nil, nil, nil, refuse(abi.CodeNotAllowed, "kernel %s is not in the manifest's allowed_boot_ids", id)
	}
	k, err := h.ledger.Latest(ctx, ledger.System(), id)
	if errors.Is(err, ledger.ErrNotFound) {
		return nil, nil, nil, refuse(CodeNotFound, "kernel %s: no such span", id)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	if err := h.verify(&k); err != nil {
		return nil, nil, nil, refuse(abi.CodeHashMismatch, "kernel %s seq %d: %v", k.ID, k.Seq, err)
	}
	if m.RequireSignedKernels {
		if k.Signature == "" {
			return nil, nil, nil, refuse(abi.CodeUnsigned, "kernel %s seq %d is unsigned and the manifest requires signed kernels", k.ID, k.Seq)
		}
		if !m.Trusted(k.PublicKey) {
			return nil, nil, nil, refuse(abi.CodeUnsigned, "kernel %s seq %d is signed by %s, a key the manifest does not trust", k.ID, k.Seq, k.PublicKey)
		}
	}
	mod, err := h.module(ctx, &k)
	if err != nil {
		return nil, nil, nil, err
	}
	return &k, m, mod, nil
}

// Run runs a function or policy span (its latest seq visible to p) once as a
// tier-2 sandbox with input, and appends and returns its execution span.
func (h *Host) Run(ctx context.Context, p ledger.Principal, id string, input json.RawMessage) (span.Span, error) {
	if len(input) > 0 {
		// The input is recorded in the execution span: refuse, before
		// anything runs, what could not be.
		if err := span.CheckJSON("input", input); err != nil {
			return span.Span{}, fmt.Errorf("%w: %w", ledger.ErrInvalid, err)
		}
	}
	inv, err := h.invoke(ctx, p, id, input, nil)
	if err != nil {
		return span.Span{}, err
	}
	trace := traced(&inv.req)
	res := inv.mod.run(ctx, inv.req)
	return h.record(ctx, p, inv.owner, &inv.code, inv.mod, inv.req, trace, res, nil)
}

// invocation is a function or policy, loaded and ready to run for a
// principal.
type invocation struct {
	code  span.Span
	mod   *program
	req   sandbox.Request
	owner string // of the execution span
}

// invoke finds, verifies and loads the function or policy id visible to p.
// m is the manifest, or nil to read it.
func (h *Host) invoke(ctx context.Context, p ledger.Principal, id string, input json.RawMessage, m *Manifest) (*invocation, error) {
	f, err := h.ledger.Latest(ctx, p, id)
	if errors.Is(err, ledger.ErrNotFound) {
		return nil, refuse(CodeNotFound, "span %s: no such function or policy visible to %s", id, p)
	}
	if err != nil {
		return nil, err
	}
	tier := abi.TierFunction
	switch f.EntityType {
	case "function":
	case "policy":
		tier = abi.TierPolicy
	default:
		return nil, refuse(abi.CodeNotAllowed, "span %s is a %s, not a function or policy", id, f.EntityType)
	}
	if err := h.verify(&f); err != nil {
		return nil, refuse(abi.CodeHashMismatch, "span %s seq %d: %v", f.ID, f.Seq, err)
	}
	if m == nil {
		m, err = h.LoadManifest(ctx)
		if err != nil {
			var r *Refusal
			if !errors.As(err, &r) || r.Code != CodeNotFound {
				return nil, err
			}
			m = &Manifest{} // no manifest yet: default limits
		}
	}
	mod, err := h.module(ctx, &f)
	if err != nil {
		return nil, err
	}
	// The run is the caller's: its execution span is written in the
	// caller's tenant, owned by the caller — or, for a kernel running its
	// own tenant's code, by the code's owner. Running another tenant's
	// public function never writes into that tenant.
	owner := p.User
	if p.Kind == ledger.KindService && f.TenantID == p.Tenant {
		owner = f.OwnerID
	}
	req := sandbox.Request{Tenant: p.Tenant, Tier: tier, Input: input, Limits: h.limits(m, &f)}
	return &invocation{code: f, mod: mod, req: req, owner: owner}, nil
}

// DefaultMaxFuel bounds a span's own fuel request when the manifest sets no
// limits.max_fuel.
const DefaultMaxFuel = 100_000_000

// MaxSpans bounds a span's own request for spans emitted per run
// (metadata.limits.spans; the default is sandbox.DefaultSpans).
const MaxSpans = 5000

// DefaultMaxKernelFuel bounds what a kernel may ask for in its own
// metadata.limits.fuel unless the manifest's limits.max_kernel_fuel says
// more.
const DefaultMaxKernelFuel = 4_000_000_000

// MaxWall bounds a span's own request for a longer wall clock
// (metadata.limits.wall_ms) than sandbox.DefaultWall.
const MaxWall = 30 * time.Minute

// limits are the sandbox defaults, then the manifest's, then the code span's
// own metadata.limits.fuel (a kernel or function that needs more than the
// default asks for it in its span, which its hash and signature cover),
// bounded by the manifest's max_fuel.
func (h *Host) limits(m *Manifest, code *span.Span) sandbox.Limits {
	lim := sandbox.DefaultLimits()
	if m.Limits.Fuel > 0 {
		lim.Fuel = m.Limits.Fuel
	}
	if m.Limits.MemoryPages > 0 {
		lim.MemoryPages = m.Limits.MemoryPages
	}
	var own struct {
		Limits struct {
			Fuel   int64 `json:"fuel"`
			Spans  int   `json:"spans"`
			WallMs int64 `json:"wall_ms"`
		} `json:"limits"`
	}
	if len(code.Metadata) > 0 && json.Unmarshal(code.Metadata, &own) == nil {
		if own.Limits.Fuel > 0 {
			maxFuel := m.Limits.MaxFuel
			if maxFuel <= 0 {
				maxFuel = DefaultMaxFuel
			}
			if code.EntityType == "kernel" {
				// A kernel (whitelisted, verified) may ask for more: an
				// eval is hundreds of provider calls in one run. Functions
				// and policies stay under max_fuel.
				maxFuel = max(maxFuel, m.Limits.MaxKernelFuel, DefaultMaxKernelFuel)
			}
			lim.Fuel = min(own.Limits.Fuel, maxFuel)
		}
		if own.Limits.Spans > 0 {
			lim.Spans = min(own.Limits.Spans, MaxSpans)
		}
		if own.Limits.WallMs > 0 && code.EntityType == "kernel" {
			// An eval makes hundreds of provider calls, each up to its
			// timeout: its kernel asks for more than the default. Only a
			// kernel (whitelisted, verified) may; functions and policies
			// make no calls that wait.
			lim.Wall = min(time.Duration(own.Limits.WallMs)*time.Millisecond, MaxWall)
		}
	}
	return lim
}

// record appends the execution span of a run of code, written by p for
// owner, signed by the node key; note, if any, goes into its metadata as
// "engine".
func (h *Host) record(ctx context.Context, p ledger.Principal, owner string, code *span.Span, mod *program, req sandbox.Request, trace string, res sandbox.Result, note map[string]any) (span.Span, error) {
	traceRun(ctx, trace, code, req, res)
	dur := int32(res.Duration.Milliseconds())
	m := map[string]any{
		"fuel_used": res.FuelUsed, "host_calls": res.HostCalls, "code_seq": code.Seq, "tier": string(req.Tier),
		"module_hash": mod.hash,
	}
	if len(note) > 0 {
		m["engine"] = note
	}
	meta, _ := json.Marshal(m)
	ex := span.Span{
		EntityType: "execution", Who: "edge:stage0", Did: "executed", This: code.Name, Status: "complete",
		ParentID: code.ID, RelatedTo: []string{code.ID}, OwnerID: owner, Visibility: "private",
		DurationMs: &dur, TraceID: trace, Metadata: meta,
	}
	if ex.This == "" {
		ex.This = code.EntityType
	}
	if len(req.Input) > 0 {
		ex.Input = asJSON(req.Input)
	}
	if res.Err != nil {
		ex.Status = "error"
		ex.Error, _ = json.Marshal(res.Err)
	} else if len(res.Output) > 0 {
		ex.Output = asJSON(res.Output)
	}
	out, err := h.ledger.Append(ctx, p, ex)
	var fe *span.FieldError
	if err != nil && errors.As(err, &fe) && res.Err == nil {
		// Belt and braces: recordable should have caught whatever the
		// guest handed back that the ledger refuses. The run is still
		// recorded, as failed, rather than lost.
		ex.Status, ex.Output = "error", nil
		ex.Error, _ = json.Marshal(&abi.Error{Code: abi.CodeInvalidOutput, Message: span.CleanText("the execution cannot be stored as it ran: " + fe.Error())})
		out, err = h.ledger.Append(ctx, p, ex)
	}
	if err != nil {
		return span.Span{}, fmt.Errorf("error recording the execution of %s: %w", code.ID, err)
	}
	return out[0], nil
}

// asJSON is how an output is recorded: JSON as JSON, anything else as
// a JSON string, so any bytes a guest outputs can be recorded.
func asJSON(b []byte) json.RawMessage {
	if json.Valid(b) {
		return json.RawMessage(b)
	}
	s, _ := json.Marshal(string(b))
	return s
}

// traced gives a run a new trace id, and the seed of its randomness derived
// from it (unless the request has one).
func traced(req *sandbox.Request) string {
	trace := uuid.NewString()
	if req.Seed == 0 {
		req.Seed = seedFrom(trace)
	}
	return trace
}

func seedFrom(trace string) uint64 {
	h := blake3.Sum256([]byte(trace))
	var s uint64
	for _, b := range h[:8] {
		s = s<<8 | uint64(b)
	}
	return s
}

// Check refuses code that could never run, before it is published: a wasm
// module or Extism plugin must decode, load and import only what the host
// provides; JavaScript must compile (a syntax error names its line and
// column).
func (h *Host) Check(ctx context.Context, s *span.Span) error {
	_, err := h.module(ctx, s)
	return err
}
