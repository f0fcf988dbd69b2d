//go:build wasip1

// Command goreaper is the seed's ttl_reaper_policy (Bluebook §5) in Go, with
// the QuickJS guest's policy contract: a span in, its actions out, or
// {"batch": [span, ...]} in, one {"actions": [...]} per span out. It is the
// baseline of the QuickJS guest's policy benchmark: the same work, compiled.
package main

import (
	"encoding/json"
	"math"
	"strconv"
	"time"

	logline "github.com/logline/logline/guests/sdk/go"
)

type span struct {
	ID         string         `json:"id"`
	EntityType string         `json:"entity_type"`
	When       string         `json:"when"`
	At         string         `json:"at"`
	Metadata   map[string]any `json:"metadata"`
}

type emit struct {
	EntityType string            `json:"entity_type"`
	Who        string            `json:"who"`
	Did        string            `json:"did"`
	This       string            `json:"this"`
	Status     string            `json:"status"`
	ParentID   string            `json:"parent_id"`
	RelatedTo  []string          `json:"related_to"`
	Metadata   map[string]string `json:"metadata"`
}

type action struct {
	EmitSpan emit `json:"emit_span"`
}

// on is the seed's function, line by line: Number(ttl||0), the span's
// "when" or "at" (else now), expired when more than ttl minutes old.
func on(s span, now time.Time) []action {
	if s.EntityType != "prompt_block" {
		return []action{}
	}
	ttl := number(s.Metadata["ttl_minutes"])
	if ttl == 0 || math.IsNaN(ttl) {
		return []action{}
	}
	created := now
	if t := s.When; t != "" {
		created = parse(t)
	} else if s.At != "" {
		created = parse(s.At)
	}
	if created.IsZero() || float64(now.Sub(created).Milliseconds()) <= ttl*60*1000 {
		return []action{}
	}
	return []action{{EmitSpan: emit{EntityType: "status_patch", Who: "policy:ttl", Did: "expired", This: "status=archived",
		Status: "complete", ParentID: s.ID, RelatedTo: []string{s.ID}, Metadata: map[string]string{"reason": "ttl"}}}}
}

func number(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case string:
		f, err := strconv.ParseFloat(x, 64)
		if err != nil {
			return math.NaN()
		}
		return f
	case bool:
		if x {
			return 1
		}
	}
	return 0
}

func parse(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

//go:wasmexport run
func run() int32 {
	return logline.Run(func() error {
		now := logline.Now()
		var in struct {
			Batch []span `json:"batch"`
		}
		raw := logline.Input()
		if err := json.Unmarshal(raw, &in); err != nil {
			return err
		}
		if in.Batch == nil {
			var s span
			if err := json.Unmarshal(raw, &s); err != nil {
				return err
			}
			return logline.OutputJSON(on(s, now))
		}
		type result struct {
			Actions []action `json:"actions"`
		}
		out := make([]result, len(in.Batch))
		for i, s := range in.Batch {
			out[i].Actions = on(s, now)
		}
		return logline.OutputJSON(out)
	})
}

// main is required by package main; a c-shared (reactor) module never calls it.
func main() {}
