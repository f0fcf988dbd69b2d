// Package quickjs is the QuickJS guest: the QuickJS interpreter (2021-03-27)
// and a small harness (harness.c, prelude.js) compiled to one wasm32-wasi
// reactor module that runs JavaScript spans (runtime `quickjs`) under the
// LogLine ABI, in the same sandbox, with the same limits and tiers, as every
// other module.
//
// The module is built by tools/quickjs/build.sh (`make quickjs`) from pinned
// sources and committed, so building and testing LogLine need no C
// toolchain. The host loads Wasm once, then prepares it per JavaScript source
// (sandbox.Runtime.Prepare with Init): the source is compiled in the
// module's logline_prepare export, before the snapshot, so every run starts
// with the code ready. abi/ABI.md ("JavaScript guests") describes the JS
// surfaces; guests/sdk/js types them.
//
// This package imports only the standard library: it is the module's bytes
// and the shape of its init, nothing that runs it.
package quickjs

import (
	_ "embed"
	"encoding/json"
)

// Wasm is the QuickJS guest module. Do not modify it: runtimes cache
// compiled modules by hash.
//
//go:embed quickjs.wasm
var Wasm []byte

// Kind is what a JavaScript source is, which decides how it is compiled and
// called.
type Kind string

const (
	// KindFunction is a function body receiving `input` (the seed's
	// new Function('input', code)); its output is the JSON of what it
	// returns (or resolves to).
	KindFunction Kind = "function"
	// KindPolicy is a module exporting default function on(span) (or a
	// script setting globalThis.default, or defining function on); its
	// output is the actions, or one entry per span for a batch input.
	KindPolicy Kind = "policy"
	// KindKernel is a module exporting default async function main(ctx)
	// (or a script setting globalThis.default, or defining main).
	KindKernel Kind = "kernel"
)

// Init is the input of the module's logline_prepare export: the kind, the
// source and the file name its error messages and stack traces use ("" for
// "<kind>.js").
func Init(kind Kind, source, name string) []byte {
	b, _ := json.Marshal(struct {
		Kind   Kind   `json:"kind"`
		Source string `json:"source"`
		Name   string `json:"name,omitempty"`
	}{kind, source, name})
	return b
}
