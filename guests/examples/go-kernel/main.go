//go:build wasip1

// Command go-kernel is a kernel (full ABI): it runs the function span named by
// the boot env SPAN_ID under a lock, records the run as an execution span and
// outputs a summary. It is run_code in miniature.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/logline/logline/abi"
	logline "github.com/logline/logline/guests/sdk/go"
)

// lockTTL bounds how long a crashed run can keep others from the span.
const lockTTL = 30 * time.Second

type fnRow struct {
	ID   string  `json:"id"`
	Seq  int64   `json:"seq"`
	Name *string `json:"name"`
}

type summary struct {
	SpanID      string     `json:"span_id"`
	Seq         int64      `json:"seq"`
	Name        string     `json:"name,omitempty"`
	Status      string     `json:"status"` // complete | error | busy
	Output      any        `json:"output,omitempty"`
	Error       *abi.Error `json:"error,omitempty"`
	FuelUsed    int64      `json:"fuel_used"`
	ExecutionID string     `json:"execution_id,omitempty"`
}

//go:wasmexport run
func run() int32 { return logline.Run(kernel) }

func kernel() error {
	spanID, ok := logline.Env("SPAN_ID")
	if !ok || spanID == "" {
		return errors.New("SPAN_ID required")
	}

	// Every version of the span is visible; run the latest.
	var rows []fnRow
	if err := logline.SQLInto(&rows, `SELECT id, seq, name FROM ledger.visible_timeline WHERE id = $1`, spanID); err != nil {
		return fmt.Errorf("looking up span %s: %w", spanID, err)
	}
	if len(rows) == 0 {
		return fmt.Errorf("span %s not found", spanID)
	}
	fn := rows[0]
	for _, r := range rows[1:] {
		if r.Seq > fn.Seq {
			fn = r
		}
	}
	sum := summary{SpanID: spanID, Seq: fn.Seq}
	if fn.Name != nil {
		sum.Name = *fn.Name
	}

	taken, err := logline.Lock(spanID, lockTTL)
	if err != nil {
		return fmt.Errorf("locking span %s: %w", spanID, err)
	}
	if !taken {
		logline.Logf(logline.LevelInfo, "span %s is being run by someone else", spanID)
		sum.Status = "busy"
		return logline.OutputJSON(sum)
	}
	defer func() {
		if err := logline.Unlock(spanID); err != nil {
			logline.Logf(logline.LevelWarn, "unlocking span %s: %v", spanID, err)
		}
	}()

	// The kernel's own input, if any, is the function's input.
	var input json.RawMessage
	if in := logline.Input(); len(in) > 0 {
		input = in
	}
	res, err := logline.Exec(spanID, input)
	if err != nil {
		return fmt.Errorf("executing span %s: %w", spanID, err)
	}
	logline.Logf(logline.LevelInfo, "span %s seq %d: %s in %d ms, %d fuel", spanID, fn.Seq, res.Status, res.DurationMs, res.FuelUsed)

	execution := map[string]any{
		"entity_type": "execution",
		"who":         "kernel:go-kernel",
		"did":         "executed",
		"this":        "run_code",
		"status":      res.Status,
		"parent_id":   spanID,
		"related_to":  []string{spanID},
		"duration_ms": res.DurationMs,
		"trace_id":    logline.UUID(),
		"metadata":    map[string]any{"fuel_used": res.FuelUsed, "function_seq": fn.Seq},
	}
	// Absent, not null: the canonical form omits top-level nulls anyway.
	if input != nil {
		execution["input"] = input
	}
	if res.Output != nil {
		execution["output"] = res.Output
	}
	if res.Error != nil {
		execution["error"] = res.Error
	}
	stored, err := logline.InsertSpan(execution)
	if err != nil {
		return fmt.Errorf("recording the execution of span %s: %w", spanID, err)
	}
	var ref struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(stored, &ref); err != nil {
		return fmt.Errorf("reading the stored execution span: %w", err)
	}

	sum.Status, sum.Output, sum.Error, sum.FuelUsed, sum.ExecutionID = res.Status, res.Output, res.Error, res.FuelUsed, ref.ID
	return logline.OutputJSON(sum)
}

// main is required by package main; a c-shared (reactor) module never calls it.
func main() {}
