package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

const okBody = `{"entity_type":"note","who":"alice","this":"note","name":"hello","visibility":"tenant","metadata":{"tags":["a"],"n":{"deep":1}}}`

func TestAppendOneSpan(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	r := b.do(t, http.MethodPost, "/api/spans", tok, nil, okBody)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	var got span.Span
	r.json(t, &got)

	// The server and the token decide these.
	require.NotEmpty(t, got.ID)
	require.Equal(t, "/api/spans/"+got.ID, r.header.Get("Location"))
	require.Equal(t, int32(0), got.Seq)
	require.Equal(t, "acme", got.TenantID)
	require.Equal(t, "alice", got.OwnerID)
	require.NotEmpty(t, got.At)
	// Proofs: hashed and signed by the node key, nested metadata included.
	require.NoError(t, span.VerifySignedBy(&got, b.key.PublicHex()))
	require.JSONEq(t, `{"tags":["a"],"n":{"deep":1}}`, string(got.Metadata))

	// What is stored is what was returned.
	r = b.do(t, http.MethodGet, "/api/spans/"+got.ID, tok, nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	var v struct {
		ID       string      `json:"id"`
		Versions []span.Span `json:"versions"`
	}
	r.json(t, &v)
	require.Equal(t, got.ID, v.ID)
	require.Len(t, v.Versions, 1)
	require.Equal(t, got.CurrHash, v.Versions[0].CurrHash)
	sameSpan(t, got, v.Versions[0])
}

// sameSpan compares spans as the ledger does: by canonical form. A response
// to an append carries JSON fields as sent, a read as Postgres (jsonb) keeps
// them; both hash the same.
func sameSpan(t testing.TB, want, got span.Span) {
	t.Helper()
	a, err := want.Canonical()
	require.NoError(t, err)
	b, err := got.Canonical()
	require.NoError(t, err)
	require.Equal(t, string(a), string(b))
	require.Equal(t, want.CurrHash, got.CurrHash)
	require.Equal(t, want.Signature, got.Signature)
}

func TestAppendBatchAndNewVersion(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	batch := okBody + "\n\n" + strings.Replace(okBody, "hello", "second", 1) + "\n" +
		strings.Replace(okBody, "hello", "third", 1) + "\n"
	r := b.do(t, http.MethodPost, "/api/spans", tok, map[string]string{"Content-Type": "application/x-ndjson"}, batch)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	require.Equal(t, mimeNDJSON, r.header.Get("Content-Type"))
	out, err := span.Decode(strings.NewReader(string(r.body)))
	require.NoError(t, err)
	require.Len(t, out, 3)
	require.Equal(t, []string{"hello", "second", "third"}, []string{out[0].Name, out[1].Name, out[2].Name})

	// A new version names its id and seq = latest+1; the server links it.
	v1 := fmt.Sprintf(`{"id":%q,"seq":1,"entity_type":"note","who":"alice","this":"note","name":"hello v2","visibility":"tenant"}`, out[0].ID)
	r = b.do(t, http.MethodPost, "/api/spans", tok, nil, v1)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	var got span.Span
	r.json(t, &got)
	require.Equal(t, out[0].CurrHash, got.PrevHash)

	// Someone got there first: 409, nothing written.
	n := b.rows(t)
	r = b.do(t, http.MethodPost, "/api/spans", tok, nil, v1)
	require.Equal(t, http.StatusConflict, r.status, "%s", r.body)
	require.Equal(t, codeConflict, r.problem(t).Code)
	require.Equal(t, n, b.rows(t))

	r = b.do(t, http.MethodGet, "/api/spans/"+out[0].ID, tok, nil, nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, string(r.body), `"name":"hello v2"`)

	// And the chain verifies.
	r = b.do(t, http.MethodGet, "/api/spans/"+out[0].ID+"/verify", tok, nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	require.JSONEq(t, fmt.Sprintf(`{"id":%q,"ok":true,"checked":2,"signed":2,"failures":[]}`, out[0].ID), string(r.body))
}

// Every refusal names its field, has its status, and writes nothing.
func TestAppendErrors(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.MaxBodyBytes = 4096 })
	tok := b.token(t, "acme", "alice")
	other := b.appendAs(t, ledger.User("globex", "mallory"), note("theirs", "public"))[0]
	mine := b.appendAs(t, ledger.User("acme", "alice"), note("mine", "tenant"))[0]
	ndjson := map[string]string{"Content-Type": mimeNDJSON}
	cases := []struct {
		name   string
		header map[string]string
		body   string
		status int
		field  string
		code   string
		span   int
	}{
		{"not JSON", nil, `{"entity_type":`, 400, "entity_type", codeMalformed, 0},
		{"not JSON at all", nil, `hello`, 400, "body", codeMalformed, 0},
		{"empty", nil, ``, 400, "body", codeMalformed, 0},
		{"array", nil, `[1]`, 400, "body", codeMalformed, 0},
		{"wrong type", nil, `{"entity_type":"note","who":"a","this":"n","seq":"one"}`, 400, "seq", codeMalformed, 0},
		{"unknown field", nil, `{"entity_type":"note","who":"a","this":"n","colour":"red"}`, 400, "colour", codeMalformed, 0},
		{"explicit empty string", nil, `{"entity_type":"note","who":"","this":"n"}`, 400, "who", codeMalformed, 0},
		{"two objects as JSON", nil, okBody + okBody, 400, "body", codeMalformed, 0},
		{"missing entity_type", nil, `{"who":"a","this":"n"}`, 422, "entity_type", codeInvalid, 0},
		{"bad visibility", nil, `{"entity_type":"note","who":"a","this":"n","visibility":"world"}`, 422, "visibility", codeInvalid, 0},
		{"bad parent_id", nil, `{"entity_type":"note","who":"a","this":"n","parent_id":"nope"}`, 422, "parent_id", codeInvalid, 0},
		{"huge integer", nil, `{"entity_type":"note","who":"a","this":"n","input":{"n":9007199254740993}}`, 422, "input", codeInvalid, 0},
		{"policy declaring a field it cannot filter on", nil, `{"entity_type":"policy","who":"a","this":"p","metadata":{"judges":{"entity_types":["execution"],"where":{"colour":"red"}}}}`, 422, "metadata.judges.where.colour", codeInvalid, 0},
		{"policy declaring no entity types", nil, `{"entity_type":"policy","who":"a","this":"p","metadata":{"judges":{"entity_types":[]}}}`, 422, "metadata.judges.entity_types", codeInvalid, 0},
		{"another tenant", nil, `{"entity_type":"note","who":"a","this":"n","tenant_id":"globex"}`, 403, "tenant_id", codeForbidden, 0},
		{"another owner", nil, `{"entity_type":"note","who":"a","this":"n","owner_id":"bob"}`, 403, "owner_id", codeForbidden, 0},
		{"client-chosen id", nil, `{"id":"00000000-0000-4000-8000-0000000000aa","entity_type":"manifest","who":"a","this":"n"}`, 422, "id", codeInvalid, 0},
		{"version without id", nil, `{"seq":2,"entity_type":"note","who":"a","this":"n"}`, 422, "id", codeInvalid, 0},
		{"version of another tenant's span", nil, fmt.Sprintf(`{"id":%q,"seq":1,"entity_type":"note","who":"a","this":"n"}`, other.ID), 409, "seq", codeConflict, 0},
		{"skipped seq", nil, fmt.Sprintf(`{"id":%q,"seq":3,"entity_type":"note","who":"a","this":"n","visibility":"tenant"}`, mine.ID), 409, "seq", codeConflict, 0},
		{"bad batch line", ndjson, okBody + "\n" + `{"entity_type":"note","who":"a","this":"n","seq":-1}` + "\n" + okBody, 422, "seq", codeInvalid, 2},
		{"bad batch JSON", ndjson, okBody + "\n" + `{"entity_type":` + "\n", 400, "body", codeMalformed, 2},
		{"batch naming another tenant", ndjson, okBody + "\n" + `{"entity_type":"note","who":"a","this":"n","tenant_id":"globex"}`, 403, "tenant_id", codeForbidden, 2},
		{"too large", nil, `{"entity_type":"note","who":"a","this":"n","description":"` + strings.Repeat("x", 5000) + `"}`, 413, "body", codeTooLarge, 0},
		{"too large, chunked", map[string]string{"Transfer-Encoding": "chunked"}, `{"entity_type":"note","who":"a","this":"n","description":"` + strings.Repeat("x", 5000) + `"}`, 413, "body", codeTooLarge, 0},
		{"form content type", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, okBody, 415, "Content-Type", codeUnsupported, 0},
		{"bad idempotency key", map[string]string{"Idempotency-Key": "has space"}, okBody, 400, "Idempotency-Key", codeMalformed, 0},
		{"no token", map[string]string{"Authorization": ""}, okBody, 401, "Authorization", codeUnauthorized, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := b.rows(t)
			r := b.do(t, http.MethodPost, "/api/spans", tok, tc.header, tc.body)
			require.Equal(t, tc.status, r.status, "%s", r.body)
			p := r.problem(t)
			require.Equal(t, tc.code, p.Code, "%s", r.body)
			require.Equal(t, tc.field, p.Field, "%s", r.body)
			require.Equal(t, tc.span, p.Span, "%s", r.body)
			require.NotEmpty(t, p.Detail)
			require.Equal(t, before, b.rows(t), "nothing is written on error")
		})
	}
	t.Run("unknown query parameter", func(t *testing.T) {
		r := b.do(t, http.MethodPost, "/api/spans?dry_run=1", tok, nil, okBody)
		require.Equal(t, http.StatusBadRequest, r.status)
		require.Equal(t, "dry_run", r.problem(t).Field)
	})
}

func TestAppendBatchTooLong(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	body := strings.Repeat(`{"entity_type":"n","who":"a","this":"n"}`+"\n", ledger.MaxBatch+1)
	before := b.rows(t)
	r := b.do(t, http.MethodPost, "/api/spans", tok, map[string]string{"Content-Type": mimeNDJSON}, body)
	require.Equal(t, http.StatusRequestEntityTooLarge, r.status, "%s", r.body)
	require.Equal(t, before, b.rows(t))
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice, bob := b.token(t, "acme", "alice"), b.token(t, "acme", "bob")
	key := map[string]string{"Idempotency-Key": "order-42"}

	first := b.do(t, http.MethodPost, "/api/spans", alice, key, okBody)
	require.Equal(t, http.StatusCreated, first.status, "%s", first.body)
	var s1 span.Span
	first.json(t, &s1)

	// A retry returns the stored span, marked as a replay, and writes nothing.
	n := b.rows(t)
	again := b.do(t, http.MethodPost, "/api/spans", alice, key, okBody)
	require.Equal(t, http.StatusOK, again.status, "%s", again.body)
	require.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
	var s2 span.Span
	again.json(t, &s2)
	sameSpan(t, s1, s2)
	require.Equal(t, n, b.rows(t))

	// The same key with another body is refused.
	other := b.do(t, http.MethodPost, "/api/spans", alice, key, strings.Replace(okBody, "hello", "changed", 1))
	require.Equal(t, http.StatusUnprocessableEntity, other.status, "%s", other.body)
	require.Equal(t, codeIdempotency, other.problem(t).Code)
	require.Equal(t, n, b.rows(t))

	// Keys belong to their principal: bob's order-42 is another span.
	theirs := b.do(t, http.MethodPost, "/api/spans", bob, key, okBody)
	require.Equal(t, http.StatusCreated, theirs.status, "%s", theirs.body)
	var s3 span.Span
	theirs.json(t, &s3)
	require.NotEqual(t, s1.ID, s3.ID)

	// A batch under one key: retried whole, concurrently, stored once.
	batch := strings.Repeat(okBody+"\n", 5)
	hdr := map[string]string{"Idempotency-Key": "batch-1", "Content-Type": mimeNDJSON}
	before := b.rows(t)
	var wg sync.WaitGroup
	codes := make([]int, 8)
	bodies := make([]string, 8)
	for i := range codes {
		wg.Go(func() {
			r := b.do(t, http.MethodPost, "/api/spans", alice, hdr, batch)
			codes[i], bodies[i] = r.status, string(r.body)
		})
	}
	wg.Wait()
	created := 0
	for i, c := range codes {
		require.Contains(t, []int{http.StatusCreated, http.StatusOK}, c, bodies[i])
		if c == http.StatusCreated {
			created++
		}
		require.Equal(t, hashes(t, bodies[0]), hashes(t, bodies[i]), "every attempt returns the same stored spans")
	}
	require.Equal(t, 1, created)
	require.Equal(t, before+5, b.rows(t))
}

func TestListAndPaginate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := ledger.User("acme", "alice")
	tok := b.token(t, "acme", "alice")
	var want []string
	for i := range 25 {
		s := note(fmt.Sprintf("n%02d", i), "tenant")
		if i%5 == 0 {
			s.EntityType, s.Status = "function", "active"
		}
		want = append(want, b.appendAs(t, alice, s)[0].ID)
	}
	require.NoError(t, b.ledger.Settle(context.Background()))

	// Oldest first, in commit order, three pages.
	asc := collect(t, b, tok, "order=asc", 10)
	require.Equal(t, want, asc)
	desc := collect(t, b, tok, "", 10)
	for i, j := 0, len(desc)-1; i < j; i, j = i+1, j-1 {
		desc[i], desc[j] = desc[j], desc[i]
	}
	require.Equal(t, want, desc, "newest first by default")
	fns := collect(t, b, tok, "order=asc&entity_type=function&status=active", 2)
	require.Equal(t, []string{want[0], want[5], want[10], want[15], want[20]}, fns)

	for _, bad := range []struct{ query, field string }{
		{"limit=0", "limit"}, {"limit=1001", "limit"}, {"limit=x", "limit"}, {"order=up", "order"},
		{"cursor=zzz", "cursor"}, {"since=yesterday", "since"}, {"visibility=world", "visibility"},
		{"parent_id=NOPE", "parent_id"}, {"entity-type=function", "entity-type"}, {"limit=1&limit=2", "limit"},
	} {
		r := b.do(t, http.MethodGet, "/api/spans?"+bad.query, tok, nil, nil)
		require.Equal(t, http.StatusBadRequest, r.status, "%s: %s", bad.query, r.body)
		require.Equal(t, bad.field, r.problem(t).Field, bad.query)
	}
}

func hashes(t *testing.T, ndjson string) []string {
	t.Helper()
	spans, err := span.Decode(strings.NewReader(ndjson))
	require.NoError(t, err)
	var out []string
	for _, s := range spans {
		out = append(out, s.CurrHash)
	}
	return out
}

// collect follows next through every page and returns the span ids.
func collect(t *testing.T, b *bundle, tok, query string, limit int) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for range 100 {
		r := b.do(t, http.MethodGet, fmt.Sprintf("/api/spans?%s&limit=%d&cursor=%s", query, limit, cursor), tok, nil, nil)
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		var pg pageOut
		r.json(t, &pg)
		for _, it := range pg.Items {
			ids = append(ids, it.Span.ID)
		}
		if !pg.More {
			return ids
		}
		require.NotEmpty(t, pg.Next)
		cursor = pg.Next
	}
	t.Fatal("pagination did not end")
	return nil
}

func TestTimelineLeavesOutDeleted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := ledger.User("acme", "alice")
	tok := b.token(t, "acme", "alice")
	kept := b.appendAs(t, alice, note("kept", "tenant"))[0]
	gone := note("gone", "tenant")
	gone.IsDeleted = true
	b.appendAs(t, alice, gone)
	pub := b.appendAs(t, alice, note("public", "public"))[0]

	r := b.do(t, http.MethodGet, "/api/timeline", tok, nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	var pg pageOut
	r.json(t, &pg)
	require.Len(t, pg.Items, 2)
	require.Equal(t, pub.ID, pg.Items[0].Span.ID, "newest first")
	require.Equal(t, kept.ID, pg.Items[1].Span.ID)

	r = b.do(t, http.MethodGet, "/api/timeline?visibility=public", tok, nil, nil)
	require.Equal(t, http.StatusOK, r.status)
	r.json(t, &pg)
	require.Len(t, pg.Items, 1)

	// The listings' selection (a dashboard filters its timeline), and
	// nothing else.
	r = b.do(t, http.MethodGet, "/api/timeline?entity_type=note&visibility=public", tok, nil, nil)
	require.Equal(t, http.StatusOK, r.status)
	r.json(t, &pg)
	require.Len(t, pg.Items, 1)
	require.Equal(t, pub.ID, pg.Items[0].Span.ID)
	r = b.do(t, http.MethodGet, "/api/timeline?entity_type=function", tok, nil, nil)
	require.Equal(t, http.StatusOK, r.status)
	r.json(t, &pg)
	require.Empty(t, pg.Items)
	r = b.do(t, http.MethodGet, "/api/timeline?limits=5", tok, nil, nil)
	require.Equal(t, http.StatusBadRequest, r.status, "the timeline takes only its own parameters")
	require.Equal(t, "limits", r.problem(t).Field)
}

func TestGetAndVerifyErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	for _, path := range []string{"/api/spans/%s", "/api/spans/%s/verify"} {
		r := b.do(t, http.MethodGet, fmt.Sprintf(path, "not-a-uuid"), tok, nil, nil)
		require.Equal(t, http.StatusBadRequest, r.status)
		require.Equal(t, "id", r.problem(t).Field)
		r = b.do(t, http.MethodGet, fmt.Sprintf(path, "0190a0a0-0000-7000-8000-000000000001"), tok, nil, nil)
		require.Equal(t, http.StatusNotFound, r.status)
		require.Equal(t, codeNotFound, r.problem(t).Code)
	}
}

func TestVerifyNamesTampering(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	s := b.appendAs(t, ledger.User("acme", "alice"), note("x", "tenant"))[0]
	_, err := b.admin.Exec(context.Background(), `SET session_replication_role = replica;
		UPDATE ledger.universal_registry SET name = 'evil' WHERE id = '`+s.ID+`';
		SET session_replication_role = origin`)
	require.NoError(t, err)
	r := b.do(t, http.MethodGet, "/api/spans/"+s.ID+"/verify", tok, nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	var rep struct {
		OK       bool
		Failures []verifyFailure
	}
	r.json(t, &rep)
	require.False(t, rep.OK)
	require.Len(t, rep.Failures, 1)
	require.Contains(t, rep.Failures[0].Reason, "hash")
}

// Tenant isolation on every read path: another tenant sees only public
// spans; a missing and a hidden span are both 404 (existence is not
// leaked); a user of the same tenant sees tenant spans, not private ones.
func TestTenantIsolationOnReads(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := ledger.User("acme", "alice")
	priv := b.appendAs(t, alice, note("private", "private"))[0]
	ten := b.appendAs(t, alice, note("tenant", "tenant"))[0]
	pub := b.appendAs(t, alice, note("public", "public"))[0]
	ex := b.appendAs(t, alice, span.Span{EntityType: "execution", Who: "t", This: "run", Status: "complete", Visibility: "tenant", DurationMs: ptr(int32(7))})[0]
	require.NoError(t, b.ledger.Settle(context.Background()))

	type view struct {
		tok     string
		visible []string
	}
	views := map[string]view{
		"owner":                      {b.token(t, "acme", "alice"), []string{priv.ID, ten.ID, pub.ID, ex.ID}},
		"same tenant":                {b.token(t, "acme", "bob"), []string{ten.ID, pub.ID, ex.ID}},
		"other tenant":               {b.token(t, "globex", "mallory"), []string{pub.ID}},
		"same user id, other tenant": {b.token(t, "globex", "alice"), []string{pub.ID}},
	}
	for name, v := range views {
		t.Run(name, func(t *testing.T) {
			require.ElementsMatch(t, v.visible, collect(t, b, v.tok, "order=asc", 10), "GET /api/spans")
			r := b.do(t, http.MethodGet, "/api/timeline?limit=100", v.tok, nil, nil)
			var pg pageOut
			r.json(t, &pg)
			var ids []string
			for _, it := range pg.Items {
				ids = append(ids, it.Span.ID)
			}
			require.ElementsMatch(t, v.visible, ids, "GET /api/timeline")
			for _, s := range []span.Span{priv, ten, pub, ex} {
				want := http.StatusNotFound
				if contains(v.visible, s.ID) {
					want = http.StatusOK
				}
				require.Equal(t, want, b.do(t, http.MethodGet, "/api/spans/"+s.ID, v.tok, nil, nil).status, "get %s", s.Name)
				require.Equal(t, want, b.do(t, http.MethodGet, "/api/spans/"+s.ID+"/verify", v.tok, nil, nil).status, "verify %s", s.Name)
				if want == http.StatusNotFound {
					// Execute refuses what it cannot see, and writes nothing.
					n := b.rows(t)
					r := b.do(t, http.MethodPost, "/api/execute", v.tok, nil, map[string]string{"span_id": s.ID})
					require.Equal(t, http.StatusNotFound, r.status, "execute %s: %s", s.Name, r.body)
					require.Equal(t, n, b.rows(t))
				}
			}
			r = b.do(t, http.MethodGet, "/api/metrics", v.tok, nil, nil)
			require.Equal(t, http.StatusOK, r.status)
			var m execMetrics
			r.json(t, &m)
			if contains(v.visible, ex.ID) {
				require.Len(t, m.Counts, 1, "%s", r.body)
			} else {
				require.Empty(t, m.Counts, "another tenant's executions are not counted: %s", r.body)
			}
		})
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }

func TestMetricsShape(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := ledger.User("acme", "alice")
	for i, st := range []string{"complete", "complete", "error", "complete"} {
		b.appendAs(t, alice, span.Span{EntityType: "execution", Who: "t", This: "run", Status: st, DurationMs: ptr(int32(10 * (i + 1)))})
	}
	b.appendAs(t, alice, note("not an execution", "private"))
	r := b.do(t, http.MethodGet, "/api/metrics?days=1", b.token(t, "acme", "alice"), nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	var m execMetrics
	r.json(t, &m)
	require.Len(t, m.Counts, 2)
	require.Equal(t, "complete", m.Counts[0].Status)
	require.Equal(t, int64(3), m.Counts[0].N)
	require.Equal(t, "error", m.Counts[1].Status)
	require.Len(t, m.Latency, 1)
	require.InDelta(t, 25, *m.Latency[0].AvgMs, 0.001)
	require.InDelta(t, 38.5, *m.Latency[0].P95Ms, 0.001)

	r = b.do(t, http.MethodGet, "/api/metrics?days=0", b.token(t, "acme", "alice"), nil, nil)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, "days", r.problem(t).Field)
	var raw map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b.do(t, http.MethodGet, "/api/metrics", b.token(t, "x", "y"), nil, nil).body, &raw))
	require.JSONEq(t, `[]`, string(raw["counts"]), "empty lists, not null")
}

// Listings leave the engine's bookkeeping out unless include=bookkeeping
// (or entity_type names it); exclude_type leaves out more; the OpenAPI
// document declares both.
func TestListingsHideBookkeeping(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	alice := ledger.User("acme", "alice")
	n := b.appendAs(t, alice, note("n", "tenant"))[0]
	c := b.appendAs(t, alice, span.Span{EntityType: "policy_cursor", Who: "alice", This: "cursor", Visibility: "tenant"})[0]
	m := b.appendAs(t, alice, span.Span{EntityType: "metric", Who: "alice", This: "metric", Visibility: "tenant"})[0]
	// Forward listings stop at the horizon: on a loaded machine another
	// test's transaction can hold it behind these rows for a moment.
	require.NoError(t, b.ledger.Settle(t.Context()))
	ids := func(path string) []string {
		r := b.do(t, http.MethodGet, path, tok, nil, nil)
		require.Equal(t, http.StatusOK, r.status, string(r.body))
		var pg pageOut
		r.json(t, &pg)
		var out []string
		for _, it := range pg.Items {
			out = append(out, it.Span.ID)
		}
		return out
	}
	for _, path := range []string{"/api/spans", "/api/timeline"} {
		require.Equal(t, []string{n.ID, m.ID}, ids(path+"?order=asc"), path)
		require.Equal(t, []string{n.ID, c.ID, m.ID}, ids(path+"?order=asc&include=bookkeeping"), path)
		require.Equal(t, []string{n.ID}, ids(path+"?order=asc&exclude_type=metric,other"), path)
		r := b.do(t, http.MethodGet, path+"?include=everything", tok, nil, nil)
		require.Equal(t, http.StatusBadRequest, r.status, "%s: include names its one value", path)
	}
	require.Equal(t, []string{c.ID}, ids("/api/spans?order=asc&entity_type=policy_cursor"))
}
