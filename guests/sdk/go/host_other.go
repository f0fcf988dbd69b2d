//go:build !wasip1

package logline

import "unsafe"

// Outside a GOOS=wasip1 module there is no LogLine host to import from: these
// stand-ins keep the package building (and vetted) on the host's platform,
// and fail loudly if a guest function is ever called there.

const notWasm = "logline: the guest SDK works only inside a GOOS=wasip1 GOARCH=wasm module run by the LogLine host"

func hostLog(int32, unsafe.Pointer, int32) int32                                    { panic(notWasm) }
func hostNow() int64                                                                { panic(notWasm) }
func hostRandom(unsafe.Pointer, int32) int32                                        { panic(notWasm) }
func hostInput(unsafe.Pointer, int32) int32                                         { panic(notWasm) }
func hostOutput(unsafe.Pointer, int32) int32                                        { panic(notWasm) }
func hostEnv(unsafe.Pointer, int32) int64                                           { panic(notWasm) }
func hostSQL(unsafe.Pointer, int32) int64                                           { panic(notWasm) }
func hostInsertSpan(unsafe.Pointer, int32) int64                                    { panic(notWasm) }
func hostLock(unsafe.Pointer, int32, int32) int32                                   { panic(notWasm) }
func hostUnlock(unsafe.Pointer, int32) int32                                        { panic(notWasm) }
func hostExec(unsafe.Pointer, int32) int64                                          { panic(notWasm) }
func hostHTTP(unsafe.Pointer, int32) int64                                          { panic(notWasm) }
func hostBlake3(unsafe.Pointer, int32, unsafe.Pointer) int32                        { panic(notWasm) }
func hostEd25519Verify(unsafe.Pointer, unsafe.Pointer, int32, unsafe.Pointer) int32 { panic(notWasm) }
func hostResult(unsafe.Pointer, int32) int32                                        { panic(notWasm) }
