package extism

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lukechampine.com/blake3"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/sandbox"
)

// The AssemblyScript toolchain the test installs (once per machine, under
// os.UserCacheDir()/logline-test/as).
const (
	asPackages   = "assemblyscript@0.28 @extism/as-pdk@1.0.0"
	npmTimeout   = 4 * time.Minute
	ascTimeout   = 2 * time.Minute
	asCacheStamp = "installed-v1" // written after a complete install
)

// asPlugin is an Extism plugin in AssemblyScript: it hashes its input with
// logline.blake3, reads logline.now, logs through logline.log, and outputs
// {"blake3": <answer>, "now": <answer>}. A call the tier denies comes back
// as an error answer, which it outputs too.
const asPlugin = `import { Host, Memory } from "@extism/as-pdk";

@external("logline", "blake3")
declare function logline_blake3(req: u64): u64;
@external("logline", "now")
declare function logline_now(req: u64): u64;
@external("logline", "log")
declare function logline_log(req: u64): u64;
@external("logline", "sql")
declare function logline_sql(req: u64): u64;
@external("extism:host/env", "length")
declare function extism_length(offs: u64): u64;

function answer(off: u64): string {
  return new Memory(off, extism_length(off)).toString();
}

function myAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  unreachable();
}

export function run(): i32 {
  const input = Host.input();
  const hash = answer(logline_blake3(Memory.allocateBytes(input).offset));
  const now = answer(logline_now(0));
  answer(logline_log(Memory.allocateString('{"level":1,"message":"from assemblyscript"}').offset));
  const sql = answer(logline_sql(Memory.allocateString('{"query":"select 1"}').offset));
  Host.outputString('{"blake3":' + hash + ',"now":' + now + ',"sql":' + sql + '}');
  return 0;
}
`

// asToolchain returns a directory with node_modules holding asc and the
// PDK, installing them on first use; it skips the test when npm or the
// registry is unavailable.
func asToolchain(t *testing.T) string {
	t.Helper()
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm is not on PATH: skipping the AssemblyScript plugin test")
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "logline-test", "as")
	if _, err := os.Stat(filepath.Join(dir, asCacheStamp)); err == nil {
		return dir
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Skipf("cannot create the npm cache directory: %v", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "as-install-")
	if err != nil {
		t.Skipf("cannot create a temp dir: %v", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "package.json"), []byte(`{"name":"logline-as-test","private":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), npmTimeout)
	defer cancel()
	args := append([]string{"install", "--no-audit", "--no-fund"}, strings.Fields(asPackages)...)
	cmd := exec.CommandContext(ctx, npm, args...)
	cmd.Dir = tmp
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("npm install %s failed (no network or registry refused?), skipping: %v\n%s", asPackages, err, tail(out))
	}
	if err := os.WriteFile(filepath.Join(tmp, asCacheStamp), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.RemoveAll(dir) // an incomplete earlier install
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, asCacheStamp)); serr == nil {
			return dir // another test process won the race
		}
		t.Fatalf("installing the toolchain into %s: %v", dir, err)
	}
	return dir
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// buildAS compiles src with asc as the PDK documents it.
func buildAS(t *testing.T, src string) []byte {
	t.Helper()
	dir := asToolchain(t)
	// The source sits next to node_modules so that asc resolves the PDK.
	srcDir, err := os.MkdirTemp(dir, "src-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(srcDir)
	if err := os.WriteFile(filepath.Join(srcDir, "plugin.ts"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ascTimeout)
	defer cancel()
	asc := filepath.Join(dir, "node_modules", ".bin", "asc")
	cmd := exec.CommandContext(ctx, asc, "plugin.ts", "--outFile", "plugin.wasm", "--use", "abort=plugin/myAbort", "--optimize")
	cmd.Dir = srcDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			t.Skipf("cannot run asc: %v", err)
		}
		t.Fatalf("asc: %v\n%s", err, tail(out))
	}
	wasm, err := os.ReadFile(filepath.Join(srcDir, "plugin.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return wasm
}

func TestAssemblyScriptPlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a plugin with npm and asc")
	}
	wasm := buildAS(t, asPlugin)
	r := newRuntime(t)
	p := load(t, r, wasm)
	input := []byte("hashed by the host for an AssemblyScript plugin")
	req := sandbox.Request{Input: input, Clock: fixedClock, Seed: 1, Tier: abi.TierFunction, Caps: &fakeCaps{}}
	res := r.Run(context.Background(), p, req)
	mustOK(t, res)
	var out struct {
		Blake3 envelope `json:"blake3"`
		Now    envelope `json:"now"`
		SQL    envelope `json:"sql"`
	}
	if err := json.Unmarshal(res.Output, &out); err != nil {
		t.Fatalf("output %q: %v", res.Output, err)
	}
	sum := blake3.Sum256(input)
	if string(out.Blake3.OK) != `"`+hex.EncodeToString(sum[:])+`"` {
		t.Fatalf("blake3 answer %s", out.Blake3.OK)
	}
	if string(out.Now.OK) != "1704164645000000006" {
		t.Fatalf("now answer %s", out.Now.OK)
	}
	if out.SQL.Error == nil || out.SQL.Error.Code != "capability_denied" {
		t.Fatalf("sql answer for a function: %+v", out.SQL)
	}
	logged := false
	for _, l := range res.Logs {
		logged = logged || l.Source == "log" && l.Text == "from assemblyscript"
	}
	if !logged {
		t.Fatalf("logs %+v", res.Logs)
	}
	// Same fuel and output on a second run; a kernel reaches the fake.
	res2 := r.Run(context.Background(), p, req)
	mustOK(t, res2)
	if res2.FuelUsed != res.FuelUsed || !bytes.Equal(res2.Output, res.Output) {
		t.Fatalf("second run: fuel %d vs %d", res2.FuelUsed, res.FuelUsed)
	}
	caps := &fakeCaps{}
	req.Tier, req.Caps = abi.TierKernel, caps
	res3 := r.Run(context.Background(), p, req)
	mustOK(t, res3)
	if !bytes.Contains(res3.Output, []byte(`"sql":{"ok":{"rows":[{"n":1}]}}`)) || len(caps.Calls()) != 1 {
		t.Fatalf("kernel output %s, calls %v", res3.Output, caps.Calls())
	}
	// Little fuel: the AssemblyScript plugin runs out.
	req.Limits.Fuel = 500
	wantCode(t, r.Run(context.Background(), p, req), abi.CodeFuelExhausted)
	t.Logf("AssemblyScript plugin: %d bytes, fuel %d, %s", len(wasm), res.FuelUsed, res.Duration)
}
