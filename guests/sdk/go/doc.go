// Package logline is the Go SDK for LogLine guests: kernels, policies and
// user functions compiled to WebAssembly (GOOS=wasip1 GOARCH=wasm,
// -buildmode=c-shared) and run by the LogLine host under the ABI of
// github.com/logline/logline/abi (prose: abi/ABI.md). It wraps every host
// function of the `logline` import module in plain Go: byte and JSON
// arguments, the pending-result protocol, and negative codes as *Error values
// that errors.Is matches against ErrCapabilityDenied, ErrBusy and the rest.
//
// A module exports `run` and hands its body to Run, which turns a returned
// error or a panic into a non-zero result (guest_error) and logs it:
//
//	//go:build wasip1
//
//	package main
//
//	import logline "github.com/logline/logline/guests/sdk/go"
//
//	//go:wasmexport run
//	func run() int32 {
//		return logline.Run(func() error {
//			var in struct{ Name string }
//			if err := logline.InputJSON(&in); err != nil {
//				return err
//			}
//			logline.Logf(logline.LevelInfo, "hello %s", in.Name)
//			return logline.OutputJSON(map[string]string{"greeting": "hello " + in.Name})
//		})
//	}
//
//	func main() {} // package main needs one; a c-shared module never calls it
//
// Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o hello.wasm .
//
// The host calls `_initialize` once (Go's runtime and package init) and
// snapshots the instance, then every run starts from that snapshot: package
// variables set during a run do not carry over to the next.
//
// Tiers: kernels may call everything; policies and functions may call Log,
// Now, Random/Rand/UUID, Input, Output, Env, Blake3 and Ed25519Verify, and get
// ErrCapabilityDenied from SQL, InsertSpan, Lock, Unlock, Exec and HTTP.
//
// Outside GOOS=wasip1 the package builds, so that a repository's go vet and
// go build keep working, but every function panics: there is no host.
//
// The SDK imports only the standard library and package abi.
package logline
