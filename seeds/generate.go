package seeds

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Stock is one stock kernel or policy: a span whose code is the JavaScript
// source of guests/kernels or guests/policies (kernels get guests/kernels/lib.js
// prepended), under the seed's stable ID.
type Stock struct {
	ID, Kind, Name, Source string
	Fuel                   int64 // metadata.limits.fuel, 0 for the default
	// Libs are more shared sources of guests/kernels, prepended after
	// lib.js (the prompt kernels share prompt.js).
	Libs []string
	// Wall is metadata.limits.wall_ms, 0 for the default: the prompt
	// kernels that run evals call a provider hundreds of times in one run,
	// each up to its timeout.
	Wall time.Duration
}

// Kernels and Policies are the stock code, in the order they are seeded. The
// seed's invalid UUIDs map to valid ones as RATIONALE.md documents (contract
// §8): "ppol00000003" → "0b0100000003".
var (
	Kernels = []Stock{
		{"00000000-0000-4000-8000-000000000001", "kernel", "run_code_kernel", "run_code.js", 200_000_000, nil, 0},
		{"00000000-0000-4000-8000-000000000002", "kernel", "observer_bot_kernel", "observer.js", 200_000_000, nil, 0},
		{"00000000-0000-4000-8000-000000000003", "kernel", "request_worker_kernel", "request_worker.js", 200_000_000, nil, 0},
		{"00000000-0000-4000-8000-000000000004", "kernel", "policy_agent_kernel", "policy_agent.js", 200_000_000, nil, 0},
		{"00000000-0000-4000-8000-000000000005", "kernel", "provider_exec_kernel", "provider_exec.js", 0, nil, 0},
		// The prompt system (seed §4): the seed's ids bldp/runp/eval/band
		// mapped to hex tags (RATIONALE.md, "Stage-0").
		{"c0c0c0c0-0000-4000-8000-0b1d00000001", "kernel", "build_prompt_kernel", "build_prompt.js", 200_000_000, promptLib, 0},
		{"c0c0c0c0-0000-4000-8000-0e7e00000001", "kernel", "prompt_runner_kernel", "prompt_runner.js", 200_000_000, promptLib, 0},
		{"c0c0c0c0-0000-4000-8000-0e7a00000001", "kernel", "prompt_eval_kernel", "prompt_eval.js", 4_000_000_000, promptLib, evalWall},
		{"c0c0c0c0-0000-4000-8000-0ba700000001", "kernel", "prompt_bandit_kernel", "prompt_bandit.js", 1_000_000_000, promptLib, 0},
		{"00000000-0000-4000-8000-000000000006", "kernel", "prompt_worker_kernel", "prompt_worker.js", 4_000_000_000, promptLib, evalWall},
		// The Telegram adapter's worker: a family bot answers through the
		// prompt runner, so it carries prompt.js too.
		{"00000000-0000-4000-8000-000000000007", "kernel", "telegram_worker_kernel", "telegram_worker.js", 1_000_000_000, promptLib, telegramWall},
	}
	Policies = []Stock{
		{"00000000-0000-4000-8000-000000000401", "policy", "slow_exec_policy", "slow_exec.js", 0, nil, 0},
		{"00000000-0000-4000-8000-000000000402", "policy", "metrics_exec_duration_policy", "metrics_exec_duration.js", 0, nil, 0},
		{"00000000-0000-4000-8000-000000000403", "policy", "daily_exec_rollup_policy", "daily_exec_rollup.js", 0, nil, 0},
		{"00000000-0000-4000-8000-000000000404", "policy", "error_report_policy", "error_report.js", 0, nil, 0},
		{"00000000-0000-4000-8000-000000000405", "policy", "throttle_policy", "throttle.js", 0, nil, 0},
		{"00000000-0000-4000-8000-0b0100000003", "policy", "ttl_reaper_policy", "ttl_reaper.js", 0, nil, 0},
		{"00000000-0000-4000-8000-0b0100000001", "policy", "prompt_circuit_breaker_policy", "prompt_circuit_breaker.js", 0, nil, 0},
		{"00000000-0000-4000-8000-0b0100000002", "policy", "prompt_confidence_escalation_policy", "prompt_confidence_escalation.js", 0, nil, 0},
	}
	// Judges are the stock policies' declarations (metadata.judges, by
	// source; host/span/judges.go): what each judges, so that the policy
	// agent shows it only those spans and the engine boots the agent only
	// when one arrives. Their code stays the seed's: a declaration is a
	// superset of what the code acts on (slow_exec also skips run_code's
	// own executions, the prompt policies all but a run's first version).
	Judges = map[string]string{
		"slow_exec.js":                    `{"entity_types":["execution"],"where":{"status":"complete"}}`,
		"metrics_exec_duration.js":        `{"entity_types":["execution"]}`,
		"daily_exec_rollup.js":            `{"entity_types":["execution"]}`,
		"error_report.js":                 `{"entity_types":["execution"],"where":{"status":"error"}}`,
		"throttle.js":                     `{"entity_types":["policy_violation"],"where":{"this":"quota.exec.per_tenant.daily"}}`,
		"ttl_reaper.js":                   `{"entity_types":["prompt_block"]}`,
		"prompt_circuit_breaker.js":       `{"entity_types":["prompt_run"]}`,
		"prompt_confidence_escalation.js": `{"entity_types":["prompt_run"]}`,
	}
	promptLib = []string{"prompt.js"}
	evalWall  = 20 * time.Minute
	// A telegram_worker pass answers up to 16 messages, each a provider
	// call (up to prompt.timeout_ms) and a send (up to 10 s).
	telegramWall = 15 * time.Minute
)

// Generated names the seed files tools/seedgen writes, relative to the
// repository root, and how: the stock code from guests/, the prompt seeds
// (seed §9) from the readable seeds/prompts.json.
var Generated = map[string]func(root string) ([]byte, error){
	"seeds/kernels.ndjson":  func(root string) ([]byte, error) { return Generate(root, Kernels) },
	"seeds/policies.ndjson": func(root string) ([]byte, error) { return Generate(root, Policies) },
	"seeds/prompts.ndjson":  GeneratePrompts,
}

// GeneratePrompts renders seeds/prompts.json (an array of spans, written
// for people) as NDJSON, one span per line, in its order.
func GeneratePrompts(root string) ([]byte, error) {
	raw, err := os.ReadFile(filepath.Join(root, "seeds", "prompts.json"))
	if err != nil {
		return nil, err
	}
	var spans []json.RawMessage
	if err := json.Unmarshal(raw, &spans); err != nil {
		return nil, fmt.Errorf("seeds/prompts.json: %w", err)
	}
	var out bytes.Buffer
	for i, s := range spans {
		var c bytes.Buffer
		if err := json.Compact(&c, s); err != nil {
			return nil, fmt.Errorf("seeds/prompts.json: span %d: %w", i, err)
		}
		out.Write(c.Bytes())
		out.WriteByte('\n')
	}
	return out.Bytes(), nil
}

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
			for _, name := range s.Libs {
				b, err := os.ReadFile(filepath.Join(root, "guests", "kernels", name))
				if err != nil {
					return nil, err
				}
				code += string(b) + "\n"
			}
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
		if j, ok := Judges[s.Source]; ok && s.Kind == "policy" {
			meta["judges"] = json.RawMessage(j)
		}
		if s.Fuel > 0 {
			// A kernel pass appends what it did as one array: up to a
			// batch of requests, executions and cursors.
			limits := map[string]any{"fuel": s.Fuel, "spans": 1000}
			if s.Wall > 0 {
				limits["wall_ms"] = s.Wall.Milliseconds()
			}
			meta["limits"] = limits
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
