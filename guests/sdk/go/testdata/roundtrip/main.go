//go:build wasip1

// Command roundtrip is the SDK's test guest: it calls every wrapper and
// reports what it got as its output JSON. The input's "mode" picks a scenario.
package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/logline/logline/abi"
	logline "github.com/logline/logline/guests/sdk/go"
)

type request struct {
	Mode string `json:"mode"`
	Pub  string `json:"pub"`
	Msg  string `json:"msg"`
	Sig  string `json:"sig"`
	Blob string `json:"blob"`
}

// errInfo is how the report shows an error.
type errInfo struct {
	Text      string `json:"text"`
	Code      int32  `json:"code"`
	Name      string `json:"name"`
	Message   string `json:"message"`
	Op        string `json:"op"`
	Denied    bool   `json:"denied"`    // errors.Is(err, logline.ErrCapabilityDenied)
	NotFound  bool   `json:"not_found"` // errors.Is(err, logline.ErrNotFound)
	Failed    bool   `json:"failed"`    // errors.Is(err, logline.ErrFailed)
	Truncated bool   `json:"truncated"` // errors.Is(err, logline.ErrTruncated)
}

func info(err error) *errInfo {
	if err == nil {
		return nil
	}
	e := &errInfo{
		Text:      err.Error(),
		Denied:    errors.Is(err, logline.ErrCapabilityDenied),
		NotFound:  errors.Is(err, logline.ErrNotFound),
		Failed:    errors.Is(err, logline.ErrFailed),
		Truncated: errors.Is(err, logline.ErrTruncated),
	}
	var le *logline.Error
	if errors.As(err, &le) {
		e.Code, e.Name, e.Message, e.Op = le.Code, le.Name, le.Message, le.Op
	}
	return e
}

//go:wasmexport run
func run() int32 {
	return logline.Run(func() error {
		var req request
		if err := logline.InputJSON(&req); err != nil {
			return err
		}
		switch req.Mode {
		case "all":
			return all(req)
		case "denied":
			return denied()
		case "big":
			return big(req)
		case "goroutines":
			return goroutines()
		case "error":
			return fmt.Errorf("requested failure: %w", logline.ErrInvalid)
		case "panic":
			panic("requested panic")
		}
		return fmt.Errorf("unknown mode %q", req.Mode)
	})
}

func all(req request) error {
	r := map[string]any{}

	for l := logline.LevelDebug; l <= logline.LevelError; l++ {
		logline.Log(l, "level "+l.String())
	}
	logline.Logf(logline.LevelInfo, "formatted %d %s", 42, "ok")

	r["now"] = logline.Now().Format(time.RFC3339Nano)
	r["random"] = hex.EncodeToString(logline.Random(16))
	buf := make([]byte, 5)
	n, err := logline.Rand.Read(buf)
	r["rand_read"] = map[string]any{"n": n, "hex": hex.EncodeToString(buf), "err": info(err)}
	r["uuid"] = logline.UUID()

	r["input"] = string(logline.Input())
	val, ok := logline.Env("GREETING")
	r["env"] = map[string]any{"value": val, "ok": ok}
	val, ok = logline.Env("EMPTY")
	r["env_empty"] = map[string]any{"value": val, "ok": ok}
	val, ok = logline.Env("MISSING")
	r["env_missing"] = map[string]any{"value": val, "ok": ok}

	rows, err := logline.SQL("SELECT 1 AS one, $1::text AS echo, $2::int AS n", "hi", 7)
	r["sql"] = map[string]any{"rows": rows, "err": info(err)}
	var typed []struct {
		One  int    `json:"one"`
		Echo string `json:"echo"`
	}
	err = logline.SQLInto(&typed, "SELECT 1 AS one, $1::text AS echo, $2::int AS n", "typed", 1)
	r["sql_into"] = map[string]any{"rows": typed, "err": info(err)}
	rows, err = logline.SQL("truncated")
	r["sql_truncated"] = map[string]any{"rows": rows, "err": info(err)}
	rows, err = logline.SQL("bad")
	r["sql_bad"] = map[string]any{"rows": rows, "err": info(err)}
	rows, err = logline.SQL("empty")
	r["sql_empty"] = map[string]any{"rows": rows, "nil": rows == nil, "err": info(err)}

	span, err := logline.InsertSpan(map[string]any{"entity_type": "note", "who": "roundtrip", "this": "note"})
	r["insert_span"] = map[string]any{"span": span, "err": info(err)}
	span, err = logline.InsertSpan([]byte(`{"entity_type":"note","who":"raw","this":"note"}`))
	r["insert_span_raw"] = map[string]any{"span": span, "err": info(err)}
	_, err = logline.InsertSpan(map[string]any{"who": "nobody"})
	r["insert_span_invalid"] = map[string]any{"err": info(err)}

	taken, err := logline.Lock("k1", 1500*time.Millisecond)
	r["lock"] = map[string]any{"taken": taken, "err": info(err)}
	taken, err = logline.Lock("busy", time.Minute)
	r["lock_busy"] = map[string]any{"taken": taken, "err": info(err)}
	r["unlock"] = map[string]any{"err": info(logline.Unlock("k1"))}
	r["unlock_not_held"] = map[string]any{"err": info(logline.Unlock("k1"))}

	res, err := logline.Exec("fn-1", map[string]int{"a": 2, "b": 3})
	r["exec"] = map[string]any{"result": res, "err": info(err)}
	res, err = logline.Exec("fn-1", json.RawMessage(`{"a":"x"}`))
	r["exec_failing"] = map[string]any{"result": res, "err": info(err)}
	_, err = logline.Exec("no-such-span", nil)
	r["exec_missing"] = map[string]any{"err": info(err)}

	resp, err := logline.HTTP(abi.HTTPRequest{Method: "POST", URL: "https://example.test/x", Headers: map[string]string{"X-A": "1"}, Body: "ping"})
	r["http"] = map[string]any{"response": resp, "err": info(err)}

	abc := logline.Blake3([]byte("abc"))
	empty := logline.Blake3(nil)
	r["blake3"] = map[string]any{"abc": hex.EncodeToString(abc[:]), "empty": hex.EncodeToString(empty[:])}

	pub, _ := hex.DecodeString(req.Pub)
	sig, _ := hex.DecodeString(req.Sig)
	tampered := append([]byte(nil), sig...)
	tampered[0] ^= 1
	r["ed25519"] = map[string]any{
		"valid":     logline.Ed25519Verify(pub, []byte(req.Msg), sig),
		"wrong_msg": logline.Ed25519Verify(pub, []byte(req.Msg+"!"), sig),
		"tampered":  logline.Ed25519Verify(pub, []byte(req.Msg), tampered),
		"short_key": logline.Ed25519Verify(pub[:31], []byte(req.Msg), sig),
		"empty_msg": logline.Ed25519Verify(pub, nil, sig),
	}

	// The last Output wins.
	if err := logline.Output([]byte(`"replaced"`)); err != nil {
		return err
	}
	return logline.OutputJSON(r)
}

// denied calls every kernel-only function from a lower tier, then shows the
// pure ones still work.
func denied() error {
	r := map[string]any{}
	_, err := logline.SQL("SELECT 1")
	r["sql"] = info(err)
	_, err = logline.InsertSpan(map[string]any{"entity_type": "note"})
	r["insert_span"] = info(err)
	_, err = logline.Lock("k", time.Second)
	r["lock"] = info(err)
	r["unlock"] = info(logline.Unlock("k"))
	_, err = logline.Exec("fn-1", nil)
	r["exec"] = info(err)
	_, err = logline.HTTP(abi.HTTPRequest{Method: "GET", URL: "https://example.test/"})
	r["http"] = info(err)
	d := logline.Blake3([]byte("still pure"))
	r["blake3"] = hex.EncodeToString(d[:])
	return logline.OutputJSON(r)
}

// big moves buffers past the SDK's first guesses.
func big(req request) error {
	in := logline.Input()
	val, ok := logline.Env("BIG")
	d := logline.Blake3([]byte(val))
	_, err := logline.SQL("big")
	return logline.OutputJSON(map[string]any{
		"input_len":   len(in),
		"blob_len":    len(req.Blob),
		"env_len":     len(val),
		"env_ok":      ok,
		"env_blake3":  hex.EncodeToString(d[:]),
		"err_message": info(err).Message,
		"echo":        strings.Repeat("y", 200_000),
	})
}

// goroutines calls the SDK from several goroutines at once.
func goroutines() error {
	const workers, rounds = 8, 25
	var wg sync.WaitGroup
	bad := make(chan string, workers*rounds)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				key := fmt.Sprintf("W%d", w)
				if v, ok := logline.Env(key); !ok || v != strings.Repeat(key, 10) {
					bad <- fmt.Sprintf("env %s = %q %v", key, v, ok)
				}
				rows, err := logline.SQL("SELECT 1 AS one, $1::text AS echo, $2::int AS n", key, i)
				if err != nil || len(rows) != 1 || rows[0]["echo"] != key {
					bad <- fmt.Sprintf("sql %s: %v %v", key, rows, err)
				}
				if _, err := logline.Exec("no-such-span", nil); !errors.Is(err, logline.ErrNotFound) {
					bad <- fmt.Sprintf("exec: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	close(bad)
	var msgs []string
	for m := range bad {
		msgs = append(msgs, m)
	}
	return logline.OutputJSON(map[string]any{"calls": workers * rounds, "bad": msgs})
}

func main() {}
