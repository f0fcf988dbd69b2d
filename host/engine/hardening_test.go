package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/engine"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

func errorCode(t *testing.T, s span.Span) string {
	t.Helper()
	var e struct{ Code string }
	require.NoError(t, json.Unmarshal(s.Error, &e), string(s.Error))
	return e.Code
}

// tenantSpans counts a tenant's spans.
func (w *world) tenantSpans(t *testing.T, tenant string) int {
	t.Helper()
	return w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE tenant_id = $1`, tenant)
}

// quiet waits until the tenant's span count stops changing for a while,
// and returns it.
func (w *world) quiet(t *testing.T, tenant string, still time.Duration) int {
	t.Helper()
	n, since := w.tenantSpans(t, tenant), time.Now()
	deadline := time.Now().Add(testTimeout)
	for time.Since(since) < still {
		if time.Now().After(deadline) {
			t.Fatalf("tenant %s never stopped growing (%d spans)", tenant, n)
		}
		time.Sleep(100 * time.Millisecond)
		if m := w.tenantSpans(t, tenant); m != n {
			n, since = m, time.Now()
		}
	}
	return n
}

// A function whose output the ledger cannot store fails alone: its request
// is closed with an invalid_output execution, the requests behind it run,
// and nothing is retried.
func TestPoisonedOutputNeverWedgesTheQueue(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	startEngine(t, w.url, engine.Config{})
	var poisons []span.Span
	for _, code := range []string{
		`return "a\u0000b"`,
		`return {["k\u0000"]: 1}`,
		`return "\ud800"`,
		`throw new Error("x\u0000y")`, // a message quoting the guest: cleaned, recorded
	} {
		poisons = append(poisons, w.append(t, alice, jsFunction(code, "scheduled", nil))[0])
	}
	fine := w.append(t, alice, jsFunction(`return "after"`, "scheduled", nil))[0]
	for i, p := range poisons {
		ex := w.execution(t, p.ID, testTimeout)
		require.Equal(t, "error", ex.Status)
		if i < 3 {
			require.Equal(t, "invalid_output", errorCode(t, ex))
		} else {
			require.Equal(t, "guest_error", errorCode(t, ex))
			require.Contains(t, string(ex.Error), "x\uFFFDy")
		}
	}
	ex := w.execution(t, fine.ID, testTimeout)
	require.Equal(t, "complete", ex.Status, string(ex.Error))
	require.JSONEq(t, `"after"`, string(ex.Output))
	eventually(t, testTimeout, "every request closed", func() bool {
		return w.count(t, `SELECT count(*) FROM ledger.heads WHERE entity_type = 'request' AND status = 'scheduled'`) == 0
	})
	// Nothing loops: once the stock policies have judged it all, the
	// tenant's ledger stops growing.
	n := w.quiet(t, "acme", 2*time.Second)
	time.Sleep(2 * time.Second)
	require.Equal(t, n, w.tenantSpans(t, "acme"), "no span amplification")
}

// A span a policy emits that the ledger refuses becomes a policy_error
// naming the action; the policy's other actions and its cursor are
// appended all the same, so nothing is judged twice.
func TestPolicyActionRefusedAlone(t *testing.T) {
	t.Parallel()
	w := newWorld(t, manifestPatch{"global_policies": []string{}})
	taken := w.append(t, alice, span.Span{EntityType: "note", Who: "alice", This: "taken"})[0]
	pol := w.append(t, alice, jsPolicy(`export default function on(span) {
		if (span.entity_type !== 'note' || span.this !== 'judge me') return [];
		return [
			{ emit_span: { entity_type: 'verdict', who: 'policy', this: 'ok', metadata: { note: span.id } } },
			{ emit_span: { entity_type: 'Not A Type', who: 'policy', this: 'bad type' } },
			{ emit_span: { id: '`+taken.ID+`', entity_type: 'verdict', who: 'policy', this: 'an id that exists' } },
			{ emit_span: { entity_type: 'verdict', who: 'policy', this: 'unknown field', colour: 'red' } },
			{ run: 'run_code', span_id: 'not-a-uuid' },
		];
	}`))[0]
	startEngine(t, w.url, engine.Config{})
	n := w.append(t, alice, span.Span{EntityType: "note", Who: "alice", This: "judge me"})[0]

	eventually(t, testTimeout, "the good verdict", func() bool { return len(w.spans(t, "verdict", "")) == 1 })
	require.Equal(t, n.ID, meta(t, w.spans(t, "verdict", "")[0])["note"])
	var errs []span.Span
	eventually(t, testTimeout, "a policy_error per refused action", func() bool {
		errs = w.spans(t, "policy_error", n.ID)
		return len(errs) == 4
	})
	actions := map[float64]bool{}
	for _, e := range errs {
		require.Equal(t, pol.ID, e.ParentID)
		require.Equal(t, "invalid_output", errorCode(t, e))
		actions[meta(t, e)["action"].(float64)] = true
	}
	require.Equal(t, map[float64]bool{1: true, 2: true, 3: true, 4: true}, actions)
	w.quiet(t, "acme", 2*time.Second)
	require.Len(t, w.spans(t, "policy_error", n.ID), 4, "judged once")
	require.Len(t, w.spans(t, "verdict", ""), 1)
}

// A kernel pass that keeps failing backs off: one error span per step,
// each saying which attempt it was and how long the engine now waits.
func TestFailingPassBacksOff(t *testing.T) {
	t.Parallel()
	const broken = "00000000-0000-4000-8000-0000000000b1"
	// One lane, so that one pass of the tenant fails per step.
	w := newWorld(t, manifestPatch{"engine": map[string]any{"observer_ms": 200, "request_worker_ms": 200,
		"policy_agent_ms": 300, "request_lanes": 1}})
	m, err := w.l.Latest(context.Background(), ledger.System(), stage0.ManifestID)
	require.NoError(t, err)
	var man struct {
		Kernels map[string]string `json:"kernels"`
		Allowed []string          `json:"allowed_boot_ids"`
	}
	require.NoError(t, json.Unmarshal(m.Metadata, &man))
	man.Kernels[engine.RequestWorker] = broken
	w.patchManifest(t, manifestPatch{"kernels": man.Kernels, "allowed_boot_ids": append(man.Allowed, broken)})
	k := span.Span{ID: broken, EntityType: "kernel", Who: "operator", This: "kernel", Name: "broken_worker",
		Status: "active", Runtime: stage0.RuntimeQuickJS, Language: "javascript", Visibility: "public",
		Code: `globalThis.default = async function () { throw new Error('this pass always fails'); };`}
	require.NoError(t, ledger.Fill(operator, &k, span.FormatTime(time.Now())))
	require.NoError(t, w.admin.Seal(&k))
	w.append(t, operator, k)
	// An open request gives the request_worker loop standing work in acme.
	fn := w.append(t, alice, jsFunction(`return 1`, "active", nil))[0]
	w.append(t, alice, span.Span{EntityType: "request", Who: "alice", This: "run_code", Status: "scheduled",
		ParentID: fn.ID, RelatedTo: []string{fn.ID}})

	start := time.Now()
	startEngine(t, w.url, engine.Config{})
	failures := func() []span.Span { return w.spans(t, "execution", broken) }
	eventually(t, testTimeout, "three failed passes", func() bool { return len(failures()) >= 3 })
	elapsed := time.Since(start)
	got := failures()
	// Passes 1..3 wait 1 s and 2 s between them: at least 3 s, and at
	// most one failure per step however often the loop is woken (every
	// 200 ms here).
	require.GreaterOrEqual(t, elapsed, 3*time.Second)
	require.LessOrEqual(t, len(got), 4, "one error span per back-off step")
	for i, s := range got[:3] {
		eng, _ := meta(t, s)["engine"].(map[string]any)
		require.NotNil(t, eng, "the error span says it backs off")
		require.Equal(t, float64(i+1), eng["attempt"])
		require.Equal(t, float64(engine.Backoff.Milliseconds()<<i), eng["backoff_ms"])
		require.Equal(t, engine.RequestWorker, eng["loop"])
		require.Contains(t, string(s.Error), "this pass always fails")
	}
	require.Equal(t, 1, w.count(t, `SELECT count(*) FROM ledger.heads WHERE entity_type = 'request' AND status = 'scheduled'`),
		"the failing pass appended nothing of its work")
	// Over the next seconds the failures stay at a step each, and with
	// them everything that reacts to them.
	before, spans := len(failures()), w.tenantSpans(t, "acme")
	time.Sleep(3 * time.Second)
	after := len(failures())
	require.LessOrEqual(t, after-before, 1, fmt.Sprintf("failures %d -> %d in 3 s", before, after))
	require.Less(t, w.tenantSpans(t, "acme")-spans, 40, "span amplification is bounded")
}
