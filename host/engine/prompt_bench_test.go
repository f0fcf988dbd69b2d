package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/engine"
	"github.com/logline/logline/host/span"
)

func p50(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkPrompt: a warm build of a variant of 8 blocks against
// concatenating the same strings in Go; the runner's overhead per run
// against a direct Go HTTP call of the same request to the same
// zero-latency stand-in, and the engine's prompt runs per second; an eval
// of 50 fixtures × 5 repeats.
func BenchmarkPrompt(b *testing.B) {
	for range b.N {
		benchPrompt(b)
	}
}

func benchPrompt(b *testing.B) {
	tt := b // testing.TB for the helpers
	pw := newPromptWorld(b, nil)
	h := pw.host(tt)
	ctx := context.Background()

	// Build: 8 blocks (the 4 stock ones and 4 of the tenant's).
	var extra []string
	var texts []string
	for i := range 4 {
		text := strings.Repeat(fmt.Sprintf("Rule %d: answer briefly and cite the context. ", i), 8)
		texts = append(texts, text)
		extra = append(extra, pw.append(tt, alice, span.Span{EntityType: "prompt_block", Who: "alice", This: "prompt_block",
			Status: "active", Visibility: "tenant", Metadata: mustJSON(tt, map[string]any{"kind": "app", "priority": i, "text": text})})[0].ID)
	}
	variant := pw.newVariant(tt, alice, "bench", "v1", extra)
	env := map[string]string{"VARIANT_ID": variant, "TENANT": "acme"}
	var builds []time.Duration
	for i := range 60 {
		start := time.Now()
		res, err := h.Tick(ctx, buildKernel, "acme", env, nil)
		d := time.Since(start)
		require.NoError(b, err)
		require.Nil(b, res.Err)
		if i >= 10 { // warm
			builds = append(builds, d)
		}
	}
	var concat []time.Duration
	for range 1000 {
		start := time.Now()
		var sb strings.Builder
		for _, s := range texts {
			sb.WriteString(s)
			sb.WriteString("\n\n")
		}
		_ = sb.String()
		concat = append(concat, time.Since(start))
	}
	fmt.Printf("BENCH prompt_build_8_blocks_p50 ours=%.3f baseline=%.3f unit=ms better=lower\n",
		float64(p50(builds).Microseconds())/1000, float64(p50(concat).Nanoseconds())/1e6)

	// Runner overhead: one run booted as the CLI does, against the same
	// request sent by Go.
	body, _ := json.Marshal(map[string]any{"model": "stand-in", "temperature": 0, "max_tokens": 200, "messages": []map[string]string{
		{"role": "system", "content": "You answer."}, {"role": "user", "content": "Question: When?\nContext: Founded in 2012."}}})
	var direct []time.Duration
	client := &http.Client{}
	for range 200 {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodPost, pw.url+"/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+pw.key)
		req.Header.Set("content-type", "application/json")
		res, err := client.Do(req)
		require.NoError(b, err)
		var out map[string]any
		require.NoError(b, json.NewDecoder(res.Body).Decode(&out))
		res.Body.Close()
		direct = append(direct, time.Since(start))
	}
	var runs []time.Duration
	renv := map[string]string{"VARIANT_ID": pw.variant, "TENANT": "acme", "USER_ID": "alice", "USER_INPUT": "When?", "CONTEXT_TEXT": "Founded in 2012."}
	for i := range 60 {
		start := time.Now()
		res, err := h.Tick(ctx, runnerKernel, "acme", renv, nil)
		d := time.Since(start)
		require.NoError(b, err)
		require.Nil(b, res.Err, "%+v", res.Err)
		if i >= 10 {
			runs = append(runs, d)
		}
	}
	fmt.Printf("BENCH prompt_run_p50 ours=%.3f baseline=%.3f unit=ms better=lower\n",
		float64(p50(runs).Microseconds())/1000, float64(p50(direct).Microseconds())/1000)

	// The engine's runs per second: 600 requests through the prompt_worker.
	stop := startEngine(b, pw.world.url, engine.Config{Prompts: time.Second, Batch: 50})
	const n = 600
	reqs := make([]span.Span, n)
	for i := range reqs {
		reqs[i] = span.Span{EntityType: "prompt_request", Who: "alice", Did: "requested", This: "prompt.run", Status: "scheduled",
			Input: mustJSON(tt, map[string]any{"variant_id": pw.variant, "user_input": fmt.Sprintf("When? %d", i), "context": "Founded in 2012."})}
	}
	// Warm the worker first (its first pass compiles the kernel).
	pw.closed(b, pw.append(tt, alice, reqs[0])[0].ID)
	start := time.Now()
	pw.append(tt, alice, reqs[1:]...)
	eventually(b, 10*time.Minute, "every prompt request closed", func() bool {
		return pw.count(b, `SELECT count(*) FROM ledger.heads WHERE entity_type = 'prompt_request' AND status = 'scheduled'`) == 0
	})
	perSec := float64(n-1) / time.Since(start).Seconds()
	stop()
	fmt.Printf("BENCH prompt_runs_per_sec ours=%.0f baseline=%.0f unit=runs/s better=higher\n", perSec, float64(time.Second)/float64(p50(direct)))

	// Eval: 50 fixtures × 5 repeats.
	fixtures := make([]map[string]any, 50)
	for i := range fixtures {
		fixtures[i] = map[string]any{"name": fmt.Sprintf("f%d", i), "kind": []string{"happy", "stress"}[i%2],
			"input":  map[string]any{"user_input": fmt.Sprintf("When? %d", i), "context": "Founded in 2012."},
			"assert": []map[string]any{{"type": "json_schema"}, {"type": "contains", "path": "answer", "value": "2012"}}}
	}
	card := pw.evalCard(b, fixtures, 5, 0)
	start = time.Now()
	res, err := h.Tick(ctx, evalKernel, "acme", map[string]string{"VARIANT_ID": pw.variant, "EVAL_ID": card, "TENANT": "acme"}, nil)
	took := time.Since(start)
	require.NoError(b, err)
	require.Nil(b, res.Err, "%+v", res.Err)
	var directEval time.Duration
	for _, d := range direct[:min(len(direct), 250)] {
		directEval += d
	}
	directEval = directEval * 250 / time.Duration(min(len(direct), 250))
	fmt.Printf("BENCH prompt_eval_50x5 ours=%.2f baseline=%.2f unit=s better=lower\n", took.Seconds(), directEval.Seconds())
	fmt.Printf("BENCH prompt_eval_50x5_fuel ours=%d baseline=%d unit=fuel better=lower\n", res.FuelUsed, 200_000_000)
}
