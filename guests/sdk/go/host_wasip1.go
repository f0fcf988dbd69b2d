//go:build wasip1

package logline

import "unsafe"

// The raw imports of the `logline` module, one per abi.Fn* name, with the
// wasm signatures of abi/abi.go. Pointers are offsets into this module's
// linear memory; Go's wasm garbage collector does not move objects, and
// every caller keeps its buffers alive across the call (runtime.KeepAlive).

//go:wasmimport logline log
func hostLog(level int32, ptr unsafe.Pointer, n int32) int32

//go:wasmimport logline now
func hostNow() int64

//go:wasmimport logline random
func hostRandom(ptr unsafe.Pointer, n int32) int32

//go:wasmimport logline input
func hostInput(ptr unsafe.Pointer, capacity int32) int32

//go:wasmimport logline output
func hostOutput(ptr unsafe.Pointer, n int32) int32

//go:wasmimport logline env
func hostEnv(kptr unsafe.Pointer, klen int32) int64

//go:wasmimport logline sql
func hostSQL(ptr unsafe.Pointer, n int32) int64

//go:wasmimport logline insert_span
func hostInsertSpan(ptr unsafe.Pointer, n int32) int64

//go:wasmimport logline lock
func hostLock(kptr unsafe.Pointer, klen int32, ttlMs int32) int32

//go:wasmimport logline unlock
func hostUnlock(kptr unsafe.Pointer, klen int32) int32

//go:wasmimport logline exec
func hostExec(ptr unsafe.Pointer, n int32) int64

//go:wasmimport logline http
func hostHTTP(ptr unsafe.Pointer, n int32) int64

//go:wasmimport logline blake3
func hostBlake3(ptr unsafe.Pointer, n int32, out unsafe.Pointer) int32

//go:wasmimport logline ed25519_verify
func hostEd25519Verify(pub unsafe.Pointer, msg unsafe.Pointer, mlen int32, sig unsafe.Pointer) int32

//go:wasmimport logline result
func hostResult(ptr unsafe.Pointer, capacity int32) int32
