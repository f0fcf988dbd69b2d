package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/engine"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// Spans with a TTL are judged again at expiry (guests/kernels/policy_agent.js,
// migration 007). These tests watch the stock ttl_reaper and a witness
// policy of the tenant that says, with an id of its own per verdict, whether
// it judged a block before or after its TTL elapsed.

const ttlReaper = "00000000-0000-4000-8000-0b0100000003"

// ttlWitness emits verdict "early" or "late" for a prompt_block, with an id
// derived from the block and the verdict: a re-judgment that says "late"
// again is the same span, so it is dropped, not appended twice.
const ttlWitness = `export default function on(span) {
	if (span.entity_type !== 'prompt_block') return [];
	const late = Date.now() - Date.parse(span.at) > Number(span.metadata.ttl_minutes) * 60000;
	const h = crypto.hex(crypto.blake3(span.id + '/' + span.seq + (late ? '/late' : '/early')));
	const id = h.slice(0, 8) + '-' + h.slice(8, 12) + '-8' + h.slice(13, 16) + '-' + ((parseInt(h[16], 16) & 3) | 8).toString(16) + h.slice(17, 20) + '-' + h.slice(20, 32);
	return [{ emit_span: { id, entity_type: 'verdict', who: 'policy', this: late ? 'late' : 'early', parent_id: span.id, related_to: [span.id] } }];
}`

// ttlBlock appends a prompt_block of alice's with ttl_minutes, fresh (age
// 0: the host stamps it) or signed by its author as age old.
func (w *world) ttlBlock(t *testing.T, ttlMinutes float64, age time.Duration) span.Span {
	t.Helper()
	s := span.Span{EntityType: "prompt_block", Who: "alice", This: "block",
		Metadata: json.RawMessage(fmt.Sprintf(`{"ttl_minutes":%v}`, ttlMinutes))}
	if age > 0 {
		require.NoError(t, ledger.Fill(alice, &s, span.FormatTime(time.Now().Add(-age))))
		require.NoError(t, w.admin.Seal(&s))
	}
	return w.append(t, alice, s)[0]
}

// ttlCursor is the latest version of policy's cursor in tenant acme (zero
// Span: none yet).
func (w *world) ttlCursor(t *testing.T, policy string) span.Span {
	t.Helper()
	var id string
	err := w.l.Pool().QueryRow(context.Background(), `SELECT h.id FROM ledger.heads h
		JOIN ledger.universal_registry u ON u.id = h.id AND u.seq = h.seq
		WHERE h.tenant_id = 'acme' AND h.entity_type = 'policy_cursor' AND u.metadata ->> 'policy_id' = $1`, policy).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return span.Span{}
	}
	require.NoError(t, err)
	s, err := w.l.Latest(context.Background(), ledger.System(), id)
	require.NoError(t, err)
	return s
}

// ttlJudged tells whether policy's cursor has passed s (s was judged).
func (w *world) ttlJudged(t *testing.T, policy string, s span.Span) bool {
	t.Helper()
	c := w.ttlCursor(t, policy)
	if c.ID == "" {
		return false
	}
	pos, _ := meta(t, c)["cursor"].(string)
	if pos == "" {
		return false
	}
	return w.count(t, `SELECT count(*) FROM ledger.universal_registry WHERE id = $1 AND seq = $2
		AND (tx_id, ord) <= (split_part($3, '.', 1)::xid8, split_part($3, '.', 2)::bigint)`, s.ID, s.Seq, pos) == 1
}

// ttlPassed tells whether policy's expiry window has moved past s's expiry
// (s was judged again, or was not behind the cursor at its expiry).
func (w *world) ttlPassed(t *testing.T, policy string, s span.Span) bool {
	t.Helper()
	m := meta(t, w.ttlCursor(t, policy))
	at, _ := m["expiry_cursor"].(string)
	if at == "" {
		return false
	}
	id, _ := m["expiry_cursor_id"].(string)
	if id == "" {
		id = "ffffffff-ffff-ffff-ffff-ffffffffffff"
	}
	return w.count(t, `SELECT count(*) FROM ledger.heads WHERE id = $1 AND (expires_at, id) <= ($2::timestamptz, $3::uuid)`,
		s.ID, at, id) == 1
}

// ttlWarm waits until the engines' policy agent has judged a note (the
// first pass compiles the kernels, seconds under -race), so a block
// appended next is judged while fresh.
func (w *world) ttlWarm(t *testing.T) {
	t.Helper()
	n := w.append(t, alice, span.Span{EntityType: "note", Who: "alice", This: "note"})[0]
	eventually(t, testTimeout, "the policy agent running", func() bool { return w.ttlJudged(t, ttlReaper, n) })
}

// archives are the ttl_reaper's status_patches of s.
func (w *world) archives(t *testing.T, s span.Span) []span.Span {
	t.Helper()
	var out []span.Span
	for _, p := range w.spans(t, "status_patch", s.ID) {
		require.Equal(t, "status=archived", p.This)
		out = append(out, p)
	}
	return out
}

// verdicts are the witness's verdicts on s, by kind.
func (w *world) verdicts(t *testing.T, s span.Span) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, v := range w.spans(t, "verdict", s.ID) {
		n[v.This]++
	}
	return n
}

// A block appended fresh is judged at once and left alone, then judged
// again once its TTL has passed, by every policy: the ttl_reaper archives
// it, exactly once, and the witness saw it early and late.
func TestTTLRejudgedAtExpiry(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.append(t, alice, jsPolicy(ttlWitness))
	startEngine(t, w.url, engine.Config{})
	w.ttlWarm(t)

	const ttl = 0.25 // 15 s: judged long before it expires, even on a loaded machine
	b := w.ttlBlock(t, ttl, 0)
	eventually(t, testTimeout, "the ttl_reaper judged the fresh block", func() bool { return w.ttlJudged(t, ttlReaper, b) })
	require.Empty(t, w.archives(t, b), "a fresh block is not archived")
	// Each policy reads up to the commit horizon of its own moment in the
	// pass: the witness may judge the block a pass later.
	eventually(t, testTimeout, "the witness judged the fresh block", func() bool { return w.verdicts(t, b)["early"] == 1 })
	require.Equal(t, map[string]int{"early": 1}, w.verdicts(t, b))
	require.False(t, w.ttlPassed(t, ttlReaper, b), "not yet expired")

	eventually(t, testTimeout, "the block archived at expiry", func() bool { return len(w.archives(t, b)) > 0 })
	p := w.archives(t, b)
	require.Len(t, p, 1)
	require.Equal(t, "acme", p[0].TenantID)
	require.Equal(t, "alice", p[0].OwnerID)
	// Later passes have moved past its expiry, and nothing was taken twice.
	eventually(t, testTimeout, "the windows past the expiry", func() bool {
		return w.ttlPassed(t, ttlReaper, b) && len(w.verdicts(t, b)) == 2
	})
	require.Len(t, w.archives(t, b), 1)
	require.Equal(t, map[string]int{"early": 1, "late": 1}, w.verdicts(t, b))
	require.Empty(t, w.spans(t, "policy_error", ""))
}

// Three engines on one database: each block expires into exactly one
// archive.
func TestTTLRejudgedOnceAcrossEngines(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.append(t, alice, jsPolicy(ttlWitness))
	for i := 0; i < 3; i++ {
		startEngine(t, w.url, engine.Config{})
	}
	w.ttlWarm(t)
	var blocks []span.Span
	for i := 0; i < 3; i++ {
		blocks = append(blocks, w.ttlBlock(t, 0.1, 0)) // 6 s
	}
	for _, b := range blocks {
		eventually(t, testTimeout, "the block archived", func() bool { return len(w.archives(t, b)) > 0 })
	}
	for _, b := range blocks {
		eventually(t, testTimeout, "the windows past the expiry", func() bool { return w.ttlPassed(t, ttlReaper, b) })
	}
	for _, b := range blocks {
		require.Len(t, w.archives(t, b), 1, "block %s", b.ID)
		v := w.verdicts(t, b)
		require.Equal(t, 1, v["late"], "block %s: %v", b.ID, v)
		require.LessOrEqual(t, v["early"], 1, "block %s: %v", b.ID, v)
	}
	require.Empty(t, w.spans(t, "policy_error", ""))
}

// A block already expired when appended (signed with an old at) is
// archived when first judged; judged again, it is not archived twice. Its
// expiry is older than the policies' windows, so to make sure it is judged
// again the test hands every policy a cursor from before expiries were
// judged (no expiry_cursor): the window then starts from the beginning.
func TestTTLExpiredWhenAppended(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	witness := w.append(t, alice, jsPolicy(ttlWitness))[0]
	stop := startEngine(t, w.url, engine.Config{})
	b := w.ttlBlock(t, 5, 10*time.Minute)
	eventually(t, testTimeout, "the old block archived", func() bool { return len(w.archives(t, b)) > 0 })
	eventually(t, testTimeout, "the witness judged it", func() bool { return w.verdicts(t, b)["late"] == 1 })
	eventually(t, testTimeout, "the windows past its expiry", func() bool {
		return w.ttlPassed(t, ttlReaper, b) && w.ttlPassed(t, witness.ID, b)
	})
	require.Len(t, w.archives(t, b), 1)
	stop()

	// Every cursor of acme back to one from before expiries were judged.
	var ids []string
	rows, err := w.l.Pool().Query(context.Background(), `SELECT id FROM ledger.heads WHERE tenant_id = 'acme' AND entity_type = 'policy_cursor'`)
	require.NoError(t, err)
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	require.NotEmpty(t, ids)
	for _, id := range ids {
		c, err := w.l.Latest(context.Background(), ledger.System(), id)
		require.NoError(t, err)
		m := meta(t, c)
		delete(m, "expiry_cursor")
		delete(m, "expiry_cursor_id")
		next := c
		next.Seq, next.PrevHash, next.At, next.CurrHash, next.Signature, next.PublicKey = c.Seq+1, c.CurrHash, "", "", "", ""
		next.Metadata, err = json.Marshal(m)
		require.NoError(t, err)
		w.append(t, ledger.Service("acme", "test"), next)
	}
	require.False(t, w.ttlPassed(t, ttlReaper, b))

	startEngine(t, w.url, engine.Config{})
	startEngine(t, w.url, engine.Config{})
	eventually(t, testTimeout, "the windows past its expiry again", func() bool {
		return w.ttlPassed(t, ttlReaper, b) && w.ttlPassed(t, witness.ID, b)
	})
	require.Len(t, w.archives(t, b), 1, "judged again, archived once")
	require.Equal(t, map[string]int{"late": 1}, w.verdicts(t, b))
	require.Empty(t, w.spans(t, "policy_error", ""))
}

// heads.expires_at is at + ttl_minutes for a positive JSON number, and
// nothing else; no metadata ever fails an append.
func TestTTLExpiresAt(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	expires := func(metadata string) *time.Time {
		t.Helper()
		s := span.Span{EntityType: "prompt_block", Who: "alice", This: "block", Metadata: json.RawMessage(metadata)}
		require.NoError(t, ledger.Fill(alice, &s, span.FormatTime(at)))
		require.NoError(t, w.admin.Seal(&s))
		s = w.append(t, alice, s)[0]
		var e *time.Time
		require.NoError(t, w.l.Pool().QueryRow(context.Background(), `SELECT expires_at FROM ledger.heads WHERE id = $1`, s.ID).Scan(&e))
		return e
	}
	e := expires(`{"ttl_minutes":5}`)
	require.NotNil(t, e)
	require.True(t, at.Add(5*time.Minute).Equal(*e), "%s", e)
	e = expires(`{"ttl_minutes":0.05}`)
	require.NotNil(t, e)
	require.True(t, at.Add(3*time.Second).Equal(*e), "%s", e)
	for _, m := range []string{`{"ttl_minutes":0}`, `{"ttl_minutes":-5}`, `{"ttl_minutes":"5"}`, `{"ttl_minutes":null}`,
		`{"ttl_minutes":{"m":5}}`, `{"ttl_minutes":[5]}`, `{"ttl_minutes":123456789.5}`, `{"ttl":5}`, `{}`} {
		require.Nil(t, expires(m), m)
	}
}

// The window of a pass is an index range of heads_ttl_expiry under the
// guest role and RLS, as the policy agent reads it (policy_agent.js,
// expiries): a condition over metadata could only be a filter.
func TestTTLWindowIsAnIndexRange(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	for i := 0; i < 20; i++ {
		w.ttlBlock(t, float64(i+1), 0)
	}
	ctx := context.Background()
	tx := kernelTx(t, w)
	var plan string
	require.NoError(t, tx.QueryRow(ctx, `EXPLAIN (FORMAT JSON) SELECT id, seq, entity_type, metadata ? 'ttl_minutes' AS has_ttl, ord,
			tx_id::text AS cursor_tx, to_char(timezone('UTC', expires_at), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS expiry
		FROM (SELECT id AS head_id, seq AS head_seq, expires_at FROM ledger.heads
		  WHERE tenant_id = 'acme' AND expires_at IS NOT NULL
		    AND (expires_at, id) > ('2026-01-01T00:00:00Z'::timestamptz, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)
		    AND expires_at <= '2026-01-02T00:00:00Z'::timestamptz
		  ORDER BY expires_at, id LIMIT 50) x
		JOIN ledger.universal_registry ON id = head_id AND seq = head_seq
		ORDER BY expires_at, id`).Scan(&plan))
	nodes := indexScans(t, plan, "heads_ttl_expiry")
	require.Len(t, nodes, 1, plan)
	cond, _ := nodes[0]["Index Cond"].(string)
	require.True(t, strings.Contains(cond, "expires_at") && strings.Contains(cond, "tenant_id"), "index condition %q\n%s", cond, plan)
}

// indexScans is every node of an EXPLAIN (FORMAT JSON) plan that scans the
// index named index.
func indexScans(t *testing.T, plan, index string) []map[string]any {
	t.Helper()
	var nodes []map[string]any
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["Index Name"] == index {
				nodes = append(nodes, v)
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	var doc any
	require.NoError(t, json.Unmarshal([]byte(plan), &doc))
	walk(doc)
	return nodes
}

// kernelTx is a transaction as the kernels' SQL runs for tenant acme (the
// guest role, a service of acme), with sequential scans off so that a plan
// shows whether an index can serve the query; rolled back at the test's end.
func kernelTx(t *testing.T, w *world) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := w.l.Pool().Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	_, err = tx.Exec(ctx, `SELECT set_config('enable_seqscan', 'off', true), set_config('role', $1, true),
		set_config('app.tenant_id', 'acme', true), set_config('app.user_id', 'edge:stage0', true), set_config('app.kind', 'service', true)`, ledger.GuestRole)
	require.NoError(t, err)
	return tx
}
