package stage0

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/guests/quickjs"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/span"
)

// quickjs loads the code of a `quickjs` span: the QuickJS guest (embedded
// in the binary, compiled once per runtime) prepared with the span's source,
// so that the source is compiled once, before the snapshot every run starts
// from. The span's metadata.module_hash, if any, is the BLAKE3 of the
// source; it is also the hash the execution span records.
func (h *Host) quickjs(ctx context.Context, s *span.Span) (*program, error) {
	var kind quickjs.Kind
	switch s.EntityType {
	case "function":
		kind = quickjs.KindFunction
	case "policy":
		kind = quickjs.KindPolicy
	case "kernel":
		kind = quickjs.KindKernel
	default:
		return nil, refuse(abi.CodeInvalidModule, "span %s: a %s cannot run JavaScript (want a function, policy or kernel)", s.ID, s.EntityType)
	}
	hash := ModuleHash([]byte(s.Code))
	var meta struct {
		ModuleHash string `json:"module_hash"`
	}
	if len(s.Metadata) > 0 {
		_ = json.Unmarshal(s.Metadata, &meta)
	}
	if meta.ModuleHash != "" && meta.ModuleHash != hash {
		return nil, refuse(abi.CodeHashMismatch, "span %s seq %d: source hashes to %s, the span declares %s", s.ID, s.Seq, hash, meta.ModuleHash)
	}
	base, err := h.quickjsModule(ctx)
	if err != nil {
		return nil, err // the embedded guest always loads: this is the runtime failing
	}
	m, err := h.rt.Prepare(ctx, base, quickjs.Init(kind, s.Code, jsFileName(s)))
	if err != nil {
		var se *sandbox.Error
		if errors.As(err, &se) {
			// A syntax error (with its line and column) or a source that
			// fails at load: the span's code cannot run, as a module that
			// does not load.
			return nil, refuse(se.Code, "span %s: %s", s.ID, se.Message)
		}
		return nil, err
	}
	return &program{hash: hash, call: func(ctx context.Context, req sandbox.Request) sandbox.Result {
		return h.rt.Run(ctx, m, req)
	}}, nil
}

// jsFileName is the name a span's source goes by in JavaScript errors and
// stack traces: its name, else its id, as a .js file.
func jsFileName(s *span.Span) string {
	n := s.Name
	if n == "" {
		n = s.ID
	}
	if n == "" {
		n = s.EntityType
	}
	if !strings.HasSuffix(n, ".js") && !strings.HasSuffix(n, ".mjs") {
		n += ".js"
	}
	return n
}

// quickjsModule is the QuickJS guest, loaded once per Host: Load hashes
// the 800 KB module, which would otherwise cost every run of every
// JavaScript span half a millisecond. (An evicted module stays usable: it
// recompiles when next run.)
func (h *Host) quickjsModule(ctx context.Context) (*sandbox.Module, error) {
	h.qjsMu.Lock()
	defer h.qjsMu.Unlock()
	if h.qjs != nil {
		return h.qjs, nil
	}
	m, err := h.rt.Load(ctx, quickjs.Wasm)
	if err != nil {
		return nil, err
	}
	h.qjs = m
	return m, nil
}
