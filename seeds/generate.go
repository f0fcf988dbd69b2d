package seeds

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Stock is one stock kernel or policy: a span whose code is the JavaScript
// source of guests/kernels or guests/policies (kernels get guests/kernels/lib.js
// prepended), under the seed's stable ID.
type Stock struct {
	ID, Kind, Name, Source string
	Fuel                   int64 // metadata.limits.fuel, 0 for the default
}

// Kernels and Policies are the stock code, in the order they are seeded. The
// seed's invalid UUIDs map to valid ones as RATIONALE.md documents (contract
// §8): "ppol00000003" → "0b0100000003".
var (
	Kernels = []Stock{
		{"00000000-0000-4000-8000-000000000001", "kernel", "run_code_kernel", "run_code.js", 200_000_000},
		{"00000000-0000-4000-8000-000000000002", "kernel", "observer_bot_kernel", "observer.js", 200_000_000},
		{"00000000-0000-4000-8000-000000000003", "kernel", "request_worker_kernel", "request_worker.js", 200_000_000},
		{"00000000-0000-4000-8000-000000000004", "kernel", "policy_agent_kernel", "policy_agent.js", 200_000_000},
		{"00000000-0000-4000-8000-000000000005", "kernel", "provider_exec_kernel", "provider_exec.js", 0},
	}
	Policies = []Stock{
		{"00000000-0000-4000-8000-000000000401", "policy", "slow_exec_policy", "slow_exec.js", 0},
		{"00000000-0000-4000-8000-000000000402", "policy", "metrics_exec_duration_policy", "metrics_exec_duration.js", 0},
		{"00000000-0000-4000-8000-000000000403", "policy", "daily_exec_rollup_policy", "daily_exec_rollup.js", 0},
		{"00000000-0000-4000-8000-000000000404", "policy", "error_report_policy", "error_report.js", 0},
		{"00000000-0000-4000-8000-000000000405", "policy", "throttle_policy", "throttle.js", 0},
		{"00000000-0000-4000-8000-0b0100000003", "policy", "ttl_reaper_policy", "ttl_reaper.js", 0},
	}
)

// Generated names the seed files Generate writes, relative to the
// repository root.
var Generated = map[string][]Stock{"seeds/kernels.ndjson": Kernels, "seeds/policies.ndjson": Policies}

// Generate renders the NDJSON of stock spans from the sources under root
// (the repository root). `go run ./tools/seedgen` writes it; a test fails
// when the committed files differ.
func Generate(root string, stock []Stock) ([]byte, error) {
	lib, err := os.ReadFile(filepath.Join(root, "guests", "kernels", "lib.js"))
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for _, s := range stock {
		dir, code := "policies", ""
		if s.Kind == "kernel" {
			dir, code = "kernels", string(lib)+"\n"
		}
		src, err := os.ReadFile(filepath.Join(root, "guests", dir, s.Source))
		if err != nil {
			return nil, err
		}
		code += string(src)
		vis := "public" // stock policies apply to every tenant (manifest global_policies)
		if s.Kind == "kernel" {
			vis = "tenant"
		}
		meta := map[string]any{"source": "guests/" + dir + "/" + s.Source}
		if s.Fuel > 0 {
			// A kernel pass appends what it did as one array: up to a
			// batch of requests, executions and cursors.
			meta["limits"] = map[string]any{"fuel": s.Fuel, "spans": 1000}
		}
		line, err := json.Marshal(map[string]any{
			"id": s.ID, "seq": 0, "entity_type": s.Kind, "who": "operator", "did": "defined", "this": s.Kind,
			"status": "active", "name": s.Name, "language": "javascript", "runtime": "quickjs",
			"visibility": vis, "code": code, "metadata": meta,
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Name, err)
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	return out.Bytes(), nil
}
