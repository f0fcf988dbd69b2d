package sandbox

// Hand-written guests of the tests.

// loopModule spins forever.
func loopModule() []byte {
	return newBuilder().run(nil, op(opLoop, bt0), br(0), op(opEnd), i32c(0)).bytes()
}

// recursionModule recurses without bound.
func recursionModule() []byte {
	b := newBuilder()
	f := b.fn(nil, nil, nil, call(0))
	return b.run(nil, call(f), i32c(0)).bytes()
}

// growBombModule grows its memory 16 pages at a time, fills every new
// megabyte (so that it is really resident), and traps once a grow fails.
func growBombModule() []byte {
	return newBuilder().mem(1).run([][]byte{local(1, tI32)},
		op(opLoop, bt0),
		i32c(16), memGrow(), ltee(0), i32c(-1), op(opI32Eq),
		op(opIf, bt0), op(opUnreachable), op(opEnd),
		lget(0), i32c(16), op(0x74), // i32.shl: the old size in bytes
		i32c(0xab), i32c(16<<16), op(0xfc, 11, 0), // memory.fill
		br(0),
		op(opEnd),
		i32c(0)).bytes()
}

// outputBombModule asks to output 100 MB.
func outputBombModule() []byte {
	b := newBuilder()
	output := b.importFunc("logline", "output", pI32x2, rI32)
	return b.mem(1).run(nil, i32c(0), i32c(100<<20), call(output)).bytes()
}

// stdoutFloodModule writes 1 MiB to stdout 100 times.
func stdoutFloodModule() []byte {
	b := newBuilder()
	fdWrite := b.importFunc("wasi_snapshot_preview1", "fd_write", []byte{tI32, tI32, tI32, tI32}, rI32)
	return b.mem(16).run([][]byte{local(1, tI32)},
		i32c(0), i32c(16), store(0), // iovec: ptr 16
		i32c(0), i32c(1<<20-16), store(4), // len
		op(opLoop, bt0),
		i32c(1), i32c(0), i32c(1), i32c(8), call(fdWrite), op(opDrop),
		lget(0), i32c(1), op(opI32Add), ltee(0), i32c(100), op(opI32LtS), brIf(0),
		op(opEnd),
		i32c(0)).bytes()
}

// hostCallBombModule calls now() a million times.
func hostCallBombModule() []byte {
	b := newBuilder()
	now := b.importFunc("logline", "now", nil, rI64)
	return b.run([][]byte{local(1, tI32)},
		op(opLoop, bt0),
		call(now), op(opDrop),
		lget(0), i32c(1), op(opI32Add), ltee(0), i32c(1_000_000), op(opI32LtS), brIf(0),
		op(opEnd),
		i32c(0)).bytes()
}

// wasiModule calls path_open on "etc/passwd" relative to descriptor 3 (the
// first preopen, if there were one) and sock_accept on descriptor 3 (the
// first listener, if there were one), and returns their errnos as
// path_open*1000 + sock_accept.
func wasiModule() []byte {
	b := newBuilder()
	pathOpen := b.importFunc("wasi_snapshot_preview1", "path_open",
		[]byte{tI32, tI32, tI32, tI32, tI32, tI64, tI64, tI32, tI32}, rI32)
	sockAccept := b.importFunc("wasi_snapshot_preview1", "sock_accept", pI32x3, rI32)
	b.mem(1).dataAt(100, []byte("etc/passwd"))
	return b.run(nil,
		i32c(3), i32c(0), i32c(100), i32c(10), i32c(0), i64c(-1), i64c(-1), i32c(0), i32c(200), call(pathOpen),
		i32c(1000), op(opI32Mul),
		i32c(3), i32c(0), i32c(204), call(sockAccept),
		op(opI32Add)).bytes()
}

// counterModule increments a global and a word of memory and outputs both
// (8 bytes, little endian).
func counterModule() []byte {
	b := newBuilder()
	output := b.importFunc("logline", "output", pI32x2, rI32)
	g := b.global(tI32, true, i32c(0))
	return b.mem(1).run(nil,
		gget(g), i32c(1), op(opI32Add), gset(g),
		i32c(0), i32c(0), load(0), i32c(1), op(opI32Add), store(0),
		i32c(16), gget(g), store(0),
		i32c(20), i32c(0), load(0), store(0),
		i32c(16), i32c(8), call(output), op(opDrop),
		i32c(0)).bytes()
}

// leakModule outputs what is at [100, 164) and then copies its input there:
// from a pristine instance, the output is always 64 zero bytes.
func leakModule() []byte {
	b := newBuilder()
	input := b.importFunc("logline", "input", pI32x2, rI32)
	output := b.importFunc("logline", "output", pI32x2, rI32)
	return b.mem(1).run(nil,
		i32c(100), i32c(64), call(output), op(opDrop),
		i32c(100), i32c(64), call(input), op(opDrop),
		i32c(0)).bytes()
}

// tableSetModule writes its table: it can only run on fresh instances.
func tableSetModule() []byte {
	b := newBuilder()
	output := b.importFunc("logline", "output", pI32x2, rI32)
	g := b.global(tI32, true, i32c(0))
	b.mem(1)
	run := b.fn(nil, rI32, nil,
		i32c(0), op(0xd0, 0x70), op(0x26, 0), // table.set 0 (ref.null func)
		gget(g), i32c(1), op(opI32Add), gset(g),
		i32c(0), gget(g), store(0),
		i32c(0), i32c(4), call(output), op(opDrop),
		i32c(0))
	b.export("run", 0, run)
	b.table = true
	return b.bytes()
}

// divModule divides by zero.
func divModule() []byte {
	return newBuilder().run(nil, i32c(1), i32c(0), op(0x6d)).bytes()
}

// oobHostModule hands output() a range past the end of memory.
func oobHostModule() []byte {
	b := newBuilder()
	output := b.importFunc("logline", "output", pI32x2, rI32)
	return b.mem(1).run(nil, i32c(65530), i32c(100), call(output)).bytes()
}

// logFloodModule logs 1000 bytes 200 times.
func logFloodModule() []byte {
	b := newBuilder()
	log := b.importFunc("logline", "log", pI32x3, rI32)
	return b.mem(1).run([][]byte{local(1, tI32)},
		op(opLoop, bt0),
		i32c(1), i32c(0), i32c(1000), call(log), op(opDrop),
		lget(0), i32c(1), op(opI32Add), ltee(0), i32c(200), op(opI32LtS), brIf(0),
		op(opEnd),
		i32c(0)).bytes()
}

// capModule calls an i64-returning capability (sql, insert_span, exec,
// http, env) with req at 1024. On success it outputs the pending result and
// returns 0; on a negative code it outputs the pending error and returns
// onError.
func capModule(fn, req string, onError int32) []byte {
	b := newBuilder()
	capFn := b.importFunc("logline", fn, pI32x2, rI64)
	result := b.importFunc("logline", "result", pI32x2, rI32)
	output := b.importFunc("logline", "output", pI32x2, rI32)
	b.mem(1).dataAt(1024, []byte(req))
	return b.run([][]byte{local(1, tI64)},
		i32c(1024), i32c(int32(len(req))), call(capFn), lset(0),
		i32c(4096),
		i32c(4096), i32c(8192), call(result),
		call(output), op(opDrop),
		lget(0), i64c(0), op(opI64LtS),
		op(opIf, tI32), i32c(onError), op(opElse), i32c(0), op(opEnd)).bytes()
}

// lockModule takes the lock "k" for 1 s, then returns lock's code, or
// traps after taking it if trap is set.
func lockModule(trap bool) []byte {
	b := newBuilder()
	lock := b.importFunc("logline", "lock", pI32x3, rI32)
	b.mem(1).dataAt(0, []byte("k"))
	code := [][]byte{i32c(0), i32c(1), i32c(1000), call(lock)}
	if trap {
		code = append(code, op(opDrop), op(opUnreachable))
	}
	return b.run(nil, code...).bytes()
}

// cryptoModule hashes "abc" with blake3 into 32 bytes at 200 and verifies
// the signature at 400 of the message at 300 (len 5) with the key at 500;
// it outputs the digest followed by the verification result byte.
func cryptoModule(pub, msg, sig []byte) []byte {
	b := newBuilder()
	blake := b.importFunc("logline", "blake3", pI32x3, rI32)
	verify := b.importFunc("logline", "ed25519_verify", []byte{tI32, tI32, tI32, tI32}, rI32)
	output := b.importFunc("logline", "output", pI32x2, rI32)
	b.mem(1).dataAt(100, []byte("abc")).dataAt(300, msg).dataAt(400, sig).dataAt(500, pub)
	return b.run(nil,
		i32c(100), i32c(3), i32c(200), call(blake), op(opDrop),
		i32c(232),
		i32c(500), i32c(300), i32c(int32(len(msg))), i32c(400), call(verify),
		store8(0),
		i32c(200), i32c(33), call(output)).bytes()
}

// scribbleModule takes an address a (4 bytes) and a byte count n (4 bytes)
// as input, which it reads to [0, 8); outputs its whole memory; then
// stores 8 bytes of ones at a and fills [a+8, a+8+n) with ones (so the
// run's writes land wherever the caller says, across chunk boundaries).
// From a pristine instance the output is the memory as instantiated, with
// the input at [0, 8).
func scribbleModule() []byte {
	b := newBuilder()
	input := b.importFunc("logline", "input", pI32x2, rI32)
	output := b.importFunc("logline", "output", pI32x2, rI32)
	return b.mem(4).run(nil,
		i32c(0), i32c(8), call(input), op(opDrop),
		i32c(0), i32c(4*65536), call(output), op(opDrop),
		i32c(0), op(0x28, 0x02, 0x00), // i32.load: a
		op(0x42, 0x7f), op(0x37, 0x03, 0x00), // i64.store of -1
		i32c(0), op(0x28, 0x02, 0x00), i32c(8), op(opI32Add), // a+8
		i32c(0xff),
		i32c(4), op(0x28, 0x02, 0x00), // n
		op(0xfc, 11, 0x00), // memory.fill
		i32c(0)).bytes()
}

// fdstatModule outputs [5000, 5024) and then has wazero's fd_fdstat_get
// write stdout's status there: from a pristine instance the output is
// zeros.
func fdstatModule() []byte {
	b := newBuilder()
	output := b.importFunc("logline", "output", pI32x2, rI32)
	fdstat := b.importFunc("wasi_snapshot_preview1", "fd_fdstat_get", pI32x2, rI32)
	return b.mem(1).run(nil,
		i32c(5000), i32c(24), call(output), op(opDrop),
		i32c(1), i32c(5000), call(fdstat), op(opDrop),
		i32c(0)).bytes()
}
