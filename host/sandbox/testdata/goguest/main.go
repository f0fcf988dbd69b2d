//go:build wasip1

// Command goguest is the Go guest of the sandbox tests: a reactor
// (-buildmode=c-shared) that exports run and declares the logline imports
// itself. Its input is a command word, optionally followed by a space and an
// argument; see run.
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

//go:wasmimport logline input
func hostInput(ptr unsafe.Pointer, capacity int32) int32

//go:wasmimport logline output
func hostOutput(ptr unsafe.Pointer, n int32) int32

//go:wasmimport logline log
func hostLog(level int32, ptr unsafe.Pointer, n int32) int32

//go:wasmimport logline now
func hostNow() int64

//go:wasmimport logline random
func hostRandom(ptr unsafe.Pointer, n int32) int32

//go:wasmimport logline env
func hostEnv(kptr unsafe.Pointer, klen int32) int64

//go:wasmimport logline sql
func hostSQL(ptr unsafe.Pointer, n int32) int64

//go:wasmimport logline result
func hostResult(ptr unsafe.Pointer, capacity int32) int32

// counter survives between runs only if the host fails to restore the
// instance's snapshot.
var counter int

// ballast is live heap kept by the guest.
var ballast [][]byte

func bytesPtr(b []byte) (unsafe.Pointer, int32) {
	return unsafe.Pointer(unsafe.SliceData(b)), int32(len(b))
}

func input() string {
	n := hostInput(nil, 0)
	buf := make([]byte, n)
	p, c := bytesPtr(buf)
	hostInput(p, c)
	return string(buf)
}

func output(s string) {
	b := []byte(s)
	p, n := bytesPtr(b)
	hostOutput(p, n)
}

func log(s string) {
	b := []byte(s)
	p, n := bytesPtr(b)
	hostLog(1, p, n)
}

// pending reads the pending result of a call that returned n.
func pending(n int64) string {
	if n < 0 {
		n = int64(hostResult(nil, 0))
	}
	buf := make([]byte, n)
	p, c := bytesPtr(buf)
	hostResult(p, c)
	return string(buf)
}

// work sorts and hashes rounds × 1000 pseudo-random ints.
func work(rounds int) string {
	var sum [32]byte
	for r := 0; r < rounds; r++ {
		x := uint32(12345 + r)
		a := make([]int, 1000)
		for i := range a {
			x = x*1664525 + 1013904223
			a[i] = int(x >> 8)
		}
		sort.Ints(a)
		buf := make([]byte, 0, 8*len(a)+len(sum))
		for _, v := range a {
			buf = binary.LittleEndian.AppendUint64(buf, uint64(v))
		}
		sum = sha256.Sum256(append(buf, sum[:]...))
	}
	return hex.EncodeToString(sum[:])
}

//go:wasmexport run
func run() int32 {
	cmd, arg, _ := strings.Cut(input(), " ")
	switch cmd {
	case "echo":
		output(arg)
	case "counter":
		counter++
		output(strconv.Itoa(counter))
	case "work":
		n, _ := strconv.Atoi(arg)
		output(work(n))
	case "panic":
		panic("guest panicked on purpose")
	case "exit":
		os.Exit(3)
	case "fail":
		log("failing on purpose")
		return 7
	case "alloc":
		// Keep allocating until the host refuses memory.
		for {
			ballast = append(ballast, make([]byte, 1<<20))
		}
	case "print":
		fmt.Println("to stdout")
		fmt.Fprintln(os.Stderr, "to stderr")
		output("printed")
	case "time":
		t0 := time.Now()
		time.Sleep(1500 * time.Millisecond)
		output(fmt.Sprintf("%d %d %d", hostNow(), t0.UnixNano(), time.Since(t0).Milliseconds()))
	case "random":
		b := make([]byte, 8)
		p, n := bytesPtr(b)
		hostRandom(p, n)
		output(hex.EncodeToString(b))
	case "env":
		k := []byte(arg)
		p, n := bytesPtr(k)
		output(pending(hostEnv(p, n)))
	case "sql":
		q := []byte(`{"query":"select 1"}`)
		p, n := bytesPtr(q)
		r := hostSQL(p, n)
		output(strconv.FormatInt(r, 10) + " " + pending(r))
	case "fs":
		_, err := os.ReadFile("/etc/passwd")
		if err == nil {
			output("read the host's /etc/passwd")
			return 0
		}
		output(err.Error())
		return 1
	default:
		output("unknown command " + strconv.Quote(cmd))
		return 2
	}
	return 0
}

func main() {}
