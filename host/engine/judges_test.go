package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/engine"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

// Policies declare what they judge (metadata.judges; guests/kernels/
// policy_agent.js, host/engine/judges.go). These tests watch policies of
// the tenant that emit a verdict naming every span they are shown.

// verdictPolicy emits, for every span it is shown but verdicts, a verdict
// (this: tag) whose id derives from the tag and the span: shown a span
// twice, it emits the same id, which the ledger keeps once.
func verdictPolicy(tag string) string {
	return `export default function on(span) {
	if (span.entity_type === 'verdict') return [];
	const h = crypto.hex(crypto.blake3('` + tag + `/' + span.id + '/' + span.seq));
	const id = h.slice(0, 8) + '-' + h.slice(8, 12) + '-8' + h.slice(13, 16) + '-' + ((parseInt(h[16], 16) & 3) | 8).toString(16) + h.slice(17, 20) + '-' + h.slice(20, 32);
	return [{ emit_span: { id, entity_type: 'verdict', who: 'policy', this: '` + tag + `', parent_id: span.id, related_to: [span.id],
		metadata: { entity_type: span.entity_type, status: span.status || null } } }];
}`
}

// declaring is a policy of alice's with code and metadata.judges.
func declaring(code, judges string) span.Span {
	p := jsPolicy(code)
	if judges != "" {
		p.Metadata = json.RawMessage(`{"judges":` + judges + `}`)
	}
	return p
}

// judgedBy are the ids of the spans policy tag emitted a verdict on.
func (w *world) judgedBy(t *testing.T, tag string) []string {
	t.Helper()
	var ids []string
	for _, v := range w.spans(t, "verdict", "") {
		if v.This == tag {
			ids = append(ids, v.ParentID)
		}
	}
	return ids
}

// cursorPast tells whether policy's cursor in tenant has passed s.
func (w *world) cursorPast(t *testing.T, tenant, policy string, s span.Span) bool {
	t.Helper()
	return w.count(t, `SELECT count(*) FROM ledger.heads h
		JOIN ledger.universal_registry c ON c.id = h.id AND c.seq = h.seq
		JOIN ledger.universal_registry s ON s.id = $3 AND s.seq = $4
		WHERE h.tenant_id = $1 AND h.entity_type = 'policy_cursor' AND c.metadata ->> 'policy_id' = $2
		  AND (s.tx_id, s.ord) <= (split_part(c.metadata ->> 'cursor', '.', 1)::xid8, split_part(c.metadata ->> 'cursor', '.', 2)::bigint)`,
		tenant, policy, s.ID, s.Seq) == 1
}

// A declaring policy is shown exactly the spans of its types whose fields
// hold its values — in pages smaller than what arrives, the types
// interleaved — and its cursor moves past all the others; a policy that
// declares nothing is shown every span. Three engines: each verdict once.
func TestDeclaredPolicyJudgesWhatItDeclares(t *testing.T) {
	t.Parallel()
	w := newWorld(t, manifestPatch{"global_policies": []string{}})
	decl := w.append(t, alice, declaring(verdictPolicy("declared"),
		`{"entity_types":["note","memo"],"where":{"status":["open","urgent"],"who":"alice"}}`))[0]
	every := w.append(t, alice, declaring(verdictPolicy("every"), ""))[0]
	for range 3 {
		startEngine(t, w.url, engine.Config{Batch: 3})
	}
	var want, all []string
	var last span.Span
	kinds := []struct{ kind, status, who string }{
		{"note", "open", "alice"}, {"note", "closed", "alice"}, {"memo", "urgent", "alice"}, {"task", "open", "alice"},
		{"memo", "", "alice"}, {"note", "open", "bob"}, {"note", "urgent", "alice"}, {"memo", "open", "alice"},
	}
	// Appended in three rounds, the later ones while the agent works; the
	// last round only spans the declaring policy does not want.
	for round := range 3 {
		var batch []span.Span
		for i := range 12 {
			k := kinds[(i+round)%len(kinds)]
			if round == 2 {
				k = kinds[1+2*(i%2)] // closed notes, tasks
			}
			batch = append(batch, span.Span{EntityType: k.kind, Who: k.who, This: k.kind, Status: k.status, Name: fmt.Sprint(round, i)})
		}
		for _, s := range w.append(t, alice, batch...) {
			all = append(all, s.ID)
			if (s.EntityType == "note" || s.EntityType == "memo") && (s.Status == "open" || s.Status == "urgent") && s.Who == "alice" {
				want = append(want, s.ID)
			}
			last = s
		}
	}
	eventually(t, testTimeout, "the declaring policy's cursor past the last span", func() bool {
		return w.cursorPast(t, "acme", decl.ID, last)
	})
	eventually(t, testTimeout, "every span judged by the undeclared policy", func() bool {
		return len(w.judgedBy(t, "every")) >= len(all)+1 // and the declaring policy's span
	})
	require.ElementsMatch(t, want, w.judgedBy(t, "declared"), "exactly what it declares, each once")
	got := w.judgedBy(t, "every")
	for _, id := range append(all, decl.ID) {
		require.Contains(t, got, id, "an undeclared policy judges every span")
	}
	require.Len(t, got, len(all)+1, "each once")
	require.NotContains(t, got, every.ID, "never itself")
	require.Empty(t, w.spans(t, "policy_error", ""))
}

// A declaration that does not check is refused where the span is
// appended, naming the field, and nothing is written.
func TestBadDeclarationRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t, manifestPatch{"global_policies": []string{}})
	before := w.count(t, `SELECT count(*) FROM ledger.universal_registry`)
	for judges, field := range map[string]string{
		`null`:                        "metadata.judges",
		`{"where":{"status":"open"}}`: "metadata.judges.entity_types",
		`{"entity_types":[]}`:         "metadata.judges.entity_types",
		`{"entity_types":["note"],"where":{"colour":"red"}}`: "metadata.judges.where.colour",
		`{"entity_types":["note",3]}`:                        "metadata.judges.entity_types[1]",
	} {
		_, err := w.l.Append(context.Background(), alice, declaring(verdictPolicy("bad"), judges))
		require.ErrorIs(t, err, ledger.ErrInvalid, judges)
		var fe *span.FieldError
		require.ErrorAs(t, err, &fe, judges)
		require.Equal(t, field, fe.Field, judges)
	}
	require.Equal(t, before, w.count(t, `SELECT count(*) FROM ledger.universal_registry`), "nothing written")
}

// A policy stored with a declaration that does not check (by a host from
// before declarations were checked) judges nothing — never every span —
// and gets one policy_error naming the field, however many passes go by.
func TestBadDeclarationStoredJudgesNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t, manifestPatch{"global_policies": []string{}})
	bad := declaring(verdictPolicy("bad"), `{"entity_types":["note"],"where":{"colour":"red"}}`)
	bad.ID, bad.TenantID, bad.OwnerID, bad.At = uuid.NewString(), "acme", "alice", span.FormatTime(time.Now())
	require.Error(t, bad.Validate(), "the host refuses it now")
	hash, err := bad.Hash()
	require.NoError(t, err)
	_, err = w.l.Pool().Exec(context.Background(), `INSERT INTO ledger.universal_registry
		(id, seq, entity_type, who, did, "this", at, owner_id, tenant_id, visibility, status, name, code, language, runtime, metadata, curr_hash)
		VALUES ($1, 0, $2, $3, $4, $5, $6::timestamptz, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
		bad.ID, bad.EntityType, bad.Who, bad.Did, bad.This, bad.At, bad.OwnerID, bad.TenantID, bad.Visibility, bad.Status,
		bad.Name, bad.Code, bad.Language, bad.Runtime, string(bad.Metadata), hash)
	require.NoError(t, err)
	w.append(t, alice, declaring(verdictPolicy("every"), ""))
	startEngine(t, w.url, engine.Config{})
	for i := range 3 {
		n := w.append(t, alice, span.Span{EntityType: "note", Who: "alice", This: "note", Name: fmt.Sprint(i)})[0]
		eventually(t, testTimeout, "the witness judged note "+fmt.Sprint(i), func() bool {
			return slices.Contains(w.judgedBy(t, "every"), n.ID)
		})
	}
	require.Empty(t, w.judgedBy(t, "bad"), "a bad declaration judges nothing")
	errs := w.spans(t, "policy_error", bad.ID)
	require.Len(t, errs, 1, "once, not per pass")
	require.Equal(t, bad.ID, errs[0].ParentID)
	var e struct{ Code, Message, Field string }
	require.NoError(t, json.Unmarshal(errs[0].Error, &e))
	require.Equal(t, "invalid_input", e.Code)
	require.Equal(t, "metadata.judges.where.colour", e.Field)
	require.Contains(t, e.Message, "metadata.judges.where.colour: is not a field a declaration filters on")
	require.Len(t, w.spans(t, "policy_error", ""), 1, "the witness has none")
}

// A declaring policy judges a span again at its expiry only if it
// declares it wants it: a block of a status it does not want is never
// shown to it, fresh or expired, while one it wants is shown both times.
func TestTTLRejudgedWithDeclarations(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	witness := w.append(t, alice, declaring(ttlWitness, `{"entity_types":["prompt_block"],"where":{"status":"active"}}`))[0]
	startEngine(t, w.url, engine.Config{})
	w.ttlWarm(t)
	block := func(status string) span.Span {
		return w.append(t, alice, span.Span{EntityType: "prompt_block", Who: "alice", This: "block", Status: status,
			Metadata: json.RawMessage(`{"ttl_minutes":0.1}`)})[0] // 6 s
	}
	wanted, other := block("active"), block("draft")
	eventually(t, testTimeout, "the wanted block judged fresh and at expiry", func() bool {
		return w.verdicts(t, wanted)["late"] == 1
	})
	eventually(t, testTimeout, "the witness's window past both expiries", func() bool {
		return w.ttlPassed(t, witness.ID, wanted) && w.ttlPassed(t, witness.ID, other)
	})
	require.True(t, w.cursorPast(t, "acme", witness.ID, other), "its cursor passed the block it does not want")
	require.Equal(t, map[string]int{"early": 1, "late": 1}, w.verdicts(t, wanted))
	require.Empty(t, w.verdicts(t, other), "never shown what it does not declare, not even at expiry")
	// The stock ttl_reaper declares every prompt_block: both archived.
	eventually(t, testTimeout, "both blocks archived", func() bool {
		return len(w.archives(t, wanted)) == 1 && len(w.archives(t, other)) == 1
	})
	require.Empty(t, w.spans(t, "policy_error", ""))
}

// The engine boots a tenant's policy agent only for a span some policy may
// want: with the stock policies (each declaring what it judges) a note
// wakes no one, an execution does. The sweep is an hour away, so only
// notifications run the agent; had the note run it, every stock policy's
// cursor would have moved past it (a declaring policy's cursor moves past
// what it does not want whenever the agent runs). TestJudging checks the
// routing itself, case by case.
func TestAgentNotBootedForUnwantedSpans(t *testing.T) {
	t.Parallel()
	w := newWorld(t, manifestPatch{"engine": map[string]any{"observer_ms": 200, "request_worker_ms": 200, "policy_agent_ms": 3600000}})
	startEngine(t, w.url, engine.Config{})
	m, err := w.l.Latest(context.Background(), ledger.System(), stage0.ManifestID)
	require.NoError(t, err)
	var meta struct {
		GlobalPolicies []string `json:"global_policies"`
	}
	require.NoError(t, json.Unmarshal(m.Metadata, &meta))
	globals := meta.GlobalPolicies
	require.Len(t, globals, 8)
	judgedAll := func(tenant string, s span.Span) bool {
		for _, p := range globals {
			if !w.cursorPast(t, tenant, p, s) {
				return false
			}
		}
		return true
	}
	cursors := func() int {
		return w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE tenant_id = 'acme' AND entity_type = 'policy_cursor'`)
	}
	block := func(p ledger.Principal) span.Span {
		return w.append(t, p, span.Span{EntityType: "prompt_block", Who: p.User, This: "block", Status: "active"})[0]
	}
	// poking waits for cond, appending a block of p's (which wakes p's
	// agent) every few seconds: a pass reads only below the oldest running
	// transaction of the server (other tests' too), and with the sweep an
	// hour away nothing else would run it again.
	poking := func(what string, p ledger.Principal, cond func() bool) {
		deadline := time.Now().Add(testTimeout)
		for poke := time.Now().Add(3 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %s waiting for %s", testTimeout, what)
			}
			if time.Now().After(poke) {
				block(p)
				poke = time.Now().Add(3 * time.Second)
			}
		}
	}
	// settled returns once every agent pass started so far has ended: two
	// blocks of another tenant, each judged in a later round of the loop
	// than the one before (a round waits for all its passes), so the
	// second's round started after every pass marked before the first.
	globex := ledger.User("globex", "bob")
	settled := func() {
		for range 2 {
			s := block(globex)
			poking("globex's block judged", globex, func() bool { return w.cursorPast(t, "globex", ttlReaper, s) })
		}
	}
	// A prompt_block (the ttl_reaper's) runs the agent: every cursor moves.
	b := block(alice)
	poking("every stock policy's cursor past the block", alice, func() bool { return judgedAll("acme", b) })
	settled()
	c0 := cursors()

	// A note: no stock policy wants it.
	n := w.append(t, alice, span.Span{EntityType: "note", Who: "alice", This: "note"})[0]
	settled()
	require.Equal(t, c0, cursors(), "the note booted no policy agent")
	require.False(t, w.cursorPast(t, "acme", globals[0], n))

	// An execution: the duration and rollup policies want it.
	ex := w.append(t, alice, span.Span{EntityType: "execution", Who: "alice", This: "run_code", Status: "complete",
		DurationMs: new(int32)})[0]
	poking("the execution's metrics", alice, func() bool { return len(w.spans(t, "metric", ex.ID)) == 2 })
	poking("every cursor past the execution (and the note)", alice, func() bool { return judgedAll("acme", ex) })
	require.Greater(t, cursors(), c0)
	require.Empty(t, w.spans(t, "policy_error", ""))
	require.Empty(t, w.spans(t, "status_patch", ex.ID), "slow_exec: not slow")
}

// The declaring policy's selection is one index range of
// ur_idx_tenant_entity per declared type — tenant, type, cursor and
// horizon all in the index condition — under the guest role and RLS, as
// the policy agent reads it (policy_agent.js, selectJudged).
func TestJudgedSelectionIsAnIndexRange(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	var filler []span.Span
	for i := range 300 {
		kind := []string{"note", "execution", "memo"}[i%3]
		filler = append(filler, span.Span{EntityType: kind, Who: "alice", This: kind, Status: "complete"})
	}
	w.append(t, alice, filler...)
	ctx := context.Background()
	_, err := w.l.Pool().Exec(ctx, `ANALYZE ledger.universal_registry`)
	require.NoError(t, err)
	tx := kernelTx(t, w)
	rng := func(kind string) string {
		return `(SELECT id, seq, entity_type, tx_id, ord, coalesce('["complete"]'::jsonb ? status, false) AS wanted FROM ledger.universal_registry
		  WHERE tenant_id = 'acme' AND entity_type = '` + kind + `' AND (tx_id, ord) > ('0'::xid8, '0'::bigint)
		    AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
		  ORDER BY tx_id, ord LIMIT 50)`
	}
	var plan string
	require.NoError(t, tx.QueryRow(ctx, `EXPLAIN (FORMAT JSON) SELECT h.horizon, s.entity_type AS range_type, s.tx_id::text AS range_tx,
		  s.ord AS range_ord, s.wanted, r.*
		FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS horizon) h
		LEFT JOIN (`+rng("execution")+` UNION ALL `+rng("policy_violation")+`) s ON true
		LEFT JOIN LATERAL (SELECT id, seq, entity_type, metadata, ord, tx_id::text AS cursor_tx FROM ledger.universal_registry u
		  WHERE s.wanted AND u.id = s.id AND u.seq = s.seq) r ON true
		ORDER BY s.tx_id, s.ord`).Scan(&plan))
	var conds []string
	for _, n := range indexScans(t, plan, "ur_idx_tenant_entity") {
		c, _ := n["Index Cond"].(string)
		conds = append(conds, c)
	}
	require.Len(t, conds, 2, plan)
	for _, c := range conds {
		for _, col := range []string{"tenant_id", "entity_type", "ROW(tx_id, ord)", "pg_snapshot_xmin"} {
			require.True(t, strings.Contains(c, col), "index condition %q lacks %s\n%s", c, col, plan)
		}
	}
}

// The routing itself (judging): which tenants' agents a batch of new
// spans wakes, with the stock policies' declarations, a tenant's own
// declaring and undeclared policies, and the changes that drop the cache.
func TestJudging(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	e := engine.New(w.l, stage0.New(w.l, nil, nil), engine.Config{})
	ctx := context.Background()
	wakes := func(spans ...engine.NewSpanForTest) []string {
		t.Helper()
		out, err := engine.JudgingForTest(ctx, e, spans...)
		require.NoError(t, err)
		return out
	}
	w.append(t, alice, declaring(verdictPolicy("memos"), `{"entity_types":["memo"],"where":{"status":"open"}}`))
	beta := ledger.User("beta", "bob")
	w.append(t, beta, declaring(verdictPolicy("every"), ""))
	for _, tc := range []struct {
		span  engine.NewSpanForTest
		woken bool
	}{
		{engine.NewSpanForTest{"acme", "note", ""}, false},
		{engine.NewSpanForTest{"acme", "memo", "open"}, true},          // its own declaration
		{engine.NewSpanForTest{"acme", "memo", "closed"}, false},       // not its status
		{engine.NewSpanForTest{"acme", "execution", "complete"}, true}, // the stock metrics policies
		{engine.NewSpanForTest{"acme", "policy_cursor", "active"}, false},
		{engine.NewSpanForTest{"beta", "note", ""}, true},                 // an undeclared policy judges everything
		{engine.NewSpanForTest{"beta", "quota_counter", "active"}, false}, // but never bookkeeping
		{engine.NewSpanForTest{"gamma", "note", ""}, false},               // no policy of its own
		{engine.NewSpanForTest{"gamma", "execution", "error"}, true},
		{engine.NewSpanForTest{"gamma", "policy_violation", "error"}, true}, // throttle's where on this: not known here
		{engine.NewSpanForTest{"gamma", "prompt_block", ""}, true},
		{engine.NewSpanForTest{"gamma", "prompt_run", "complete"}, true},
		{engine.NewSpanForTest{"gamma", "request", "scheduled"}, false},
	} {
		got := wakes(tc.span)
		if tc.woken {
			require.Equal(t, []string{tc.span.Tenant}, got, "%+v", tc.span)
		} else {
			require.Empty(t, got, "%+v", tc.span)
		}
	}
	require.ElementsMatch(t, []string{"acme", "beta"}, wakes(
		engine.NewSpanForTest{"acme", "note", ""}, engine.NewSpanForTest{"beta", "note", ""},
		engine.NewSpanForTest{"acme", "memo", "open"}, engine.NewSpanForTest{"gamma", "note", ""}))

	// A new policy of acme that declares nothing: its own span wakes acme
	// and, in the same batch, counts for the spans after it.
	w.append(t, alice, declaring(verdictPolicy("all"), ""))
	require.Empty(t, wakes(engine.NewSpanForTest{"acme", "note", ""}), "cached until a policy span says otherwise")
	require.Equal(t, []string{"acme"}, wakes(engine.NewSpanForTest{"acme", "note", ""}, engine.NewSpanForTest{"acme", "policy", "active"}))
	require.Equal(t, []string{"acme"}, wakes(engine.NewSpanForTest{"acme", "note", ""}))

	// The manifest drops its global policies: gamma's executions wake no one.
	w.patchManifest(t, manifestPatch{"global_policies": []string{}})
	require.Equal(t, []string{"gamma"}, wakes(engine.NewSpanForTest{"gamma", "execution", "error"}), "cached")
	require.Equal(t, []string{"logline"}, wakes(engine.NewSpanForTest{"logline", "manifest", "active"},
		engine.NewSpanForTest{"gamma", "execution", "error"}))
	require.Empty(t, wakes(engine.NewSpanForTest{"gamma", "execution", "error"}))
}
