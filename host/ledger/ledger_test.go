package ledger_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

func TestAppendReadBackRehashes(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	p := ledger.User("acme", "alice")
	in := fn("adder")
	in.ParentID = "00000000-0000-4000-8000-000000000001"
	in.RelatedTo = []string{}
	d := int32(12)
	in.DurationMs = &d
	in.Input = json.RawMessage(`{"b":[1,2.5,"x"],"a":{"z":null,"y":true},"n":1e+21,"e":1.5e-7,"u":"olá — ✓ 🚀"}`)
	in.Metadata = json.RawMessage(`{"nested":{"deep":{"k":"v"}}}`)
	out, err := b.ledger.Append(ctx, p, in)
	require.NoError(t, err)
	require.Len(t, out, 1)
	s := out[0]
	require.Equal(t, "acme", s.TenantID)
	require.Equal(t, "alice", s.OwnerID)
	require.Equal(t, span.VisibilityPrivate, s.Visibility)
	require.Equal(t, b.key.PublicHex(), s.PublicKey)
	require.NoError(t, span.Verify(&s))

	got, err := b.ledger.Get(ctx, p, s.ID)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.NoError(t, span.Verify(&got[0]), "a span read back from Postgres re-hashes to its stored curr_hash")
	require.Equal(t, s.CurrHash, got[0].CurrHash)
	require.Equal(t, s.At, got[0].At)
	require.NotNil(t, got[0].RelatedTo, "an empty related_to stays a present empty array")
	require.Empty(t, got[0].RelatedTo)
	require.JSONEq(t, string(in.Input), string(got[0].Input))

	latest, err := b.ledger.Latest(ctx, p, s.ID)
	require.NoError(t, err)
	require.Equal(t, s.CurrHash, latest.CurrHash)
}

func TestVersionsChainAndConflicts(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	p := ledger.User("acme", "alice")
	v0, err := b.ledger.Append(ctx, p, fn("f"))
	require.NoError(t, err)
	next := v0[0]
	next.Seq, next.Signature, next.Code = 1, "", "return 2"
	v1, err := b.ledger.Append(ctx, p, next)
	require.NoError(t, err)
	require.Equal(t, v0[0].CurrHash, v1[0].PrevHash)

	// Seq 0 again, a skipped seq, and a stale seq all conflict.
	for _, seq := range []int32{0, 3, 1} {
		s := next
		s.Seq = seq
		_, err := b.ledger.Append(ctx, p, s)
		require.ErrorIs(t, err, ledger.ErrSeqConflict, "seq %d", seq)
	}
	// Another user of the tenant cannot write a version of alice's span.
	s := next
	s.Seq, s.OwnerID, s.Visibility = 2, "", ""
	_, err = b.ledger.Append(ctx, ledger.User("acme", "bob"), s)
	require.Error(t, err)
	// Another tenant cannot extend it either, even as its service principal.
	s.TenantID = ""
	_, err = b.ledger.Append(ctx, ledger.Service("other", "kernel"), s)
	require.Error(t, err)

	// A batch chains versions inside itself; it is all or nothing.
	a, c := next, next
	a.Seq, c.Seq = 2, 3
	_, err = b.ledger.Append(ctx, p, a, c)
	require.NoError(t, err)
	before := b.count(t)
	bad := next
	bad.Seq = 4
	dup := next
	dup.Seq = 4
	_, err = b.ledger.Append(ctx, p, bad, fn("g"), dup)
	require.ErrorIs(t, err, ledger.ErrSeqConflict)
	require.Equal(t, before, b.count(t), "nothing of a failed batch is written")

	all, err := b.ledger.Get(ctx, p, v0[0].ID)
	require.NoError(t, err)
	require.Len(t, all, 4)
	rep, err := b.ledger.Verify(ctx, ledger.System(), ledger.Scope{IDs: []string{v0[0].ID}})
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Failures)
	require.Equal(t, 4, rep.Checked)
}

func TestRLSAsServingRole(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	alice, bob, eve := ledger.User("A", "alice"), ledger.User("A", "bob"), ledger.User("B", "eve")
	mk := func(p ledger.Principal, vis string) string {
		s := fn(vis)
		s.Visibility = vis
		out, err := b.ledger.Append(ctx, p, s)
		require.NoError(t, err)
		return out[0].ID
	}
	aPriv, aTen, aPub := mk(alice, "private"), mk(alice, "tenant"), mk(alice, "public")
	bPriv, bTen := mk(eve, "private"), mk(eve, "tenant")

	visible := func(p ledger.Principal, id string) bool {
		_, err := b.ledger.Latest(ctx, p, id)
		if errors.Is(err, ledger.ErrNotFound) {
			return false
		}
		require.NoError(t, err)
		return true
	}
	cases := []struct {
		who  ledger.Principal
		id   string
		want bool
	}{
		{alice, aPriv, true}, {alice, aTen, true}, {alice, aPub, true}, {alice, bPriv, false}, {alice, bTen, false},
		{bob, aPriv, false}, {bob, aTen, true}, {bob, aPub, true},
		{eve, aPriv, false}, {eve, aTen, false}, {eve, aPub, true}, {eve, bPriv, true},
		{ledger.Service("A", "kernel"), aPriv, true}, {ledger.Service("A", "kernel"), bPriv, false},
		{ledger.Service("B", "kernel"), aTen, false}, {ledger.System(), bPriv, true},
	}
	for _, c := range cases {
		require.Equal(t, c.want, visible(c.who, c.id), "%s reading %s", c.who, c.id)
	}
	// Query obeys the same rules: eve lists her tenant and public spans only.
	b.settle(t)
	page, err := b.ledger.Query(ctx, eve, ledger.Filter{})
	require.NoError(t, err)
	var ids []string
	for _, it := range page.Items {
		ids = append(ids, it.Span.ID)
	}
	require.ElementsMatch(t, []string{aPub, bPriv, bTen}, ids)

	// Writes, checked by the database itself (not only by the ledger's own
	// checks): raw INSERTs as the serving role.
	insert := func(p ledger.Principal, tenant, owner string) error {
		s := fn("raw")
		s.ID, s.TenantID, s.OwnerID, s.Visibility, s.At = newID(t), tenant, owner, "private", span.FormatTime(time.Now())
		h, err := s.Hash()
		require.NoError(t, err)
		return b.asRole(ctx, p, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO ledger.universal_registry (id, seq, entity_type, who, "this", at, owner_id, tenant_id, curr_hash)
				VALUES ($1, 0, 'function', 'x', 'function', $2, $3, $4, $5)`, s.ID, time.Now(), owner, tenant, h)
			return err
		})
	}
	require.NoError(t, insert(alice, "A", "alice"))
	require.ErrorContains(t, insert(alice, "B", "alice"), "row-level security")
	require.ErrorContains(t, insert(alice, "A", "bob"), "row-level security")
	require.NoError(t, insert(ledger.Service("A", "kernel"), "A", "bob"), "a tenant's service principal writes for its owners")
	require.ErrorContains(t, insert(ledger.Service("A", "kernel"), "B", "eve"), "row-level security")
	require.ErrorContains(t, insert(ledger.System(), "A", "alice"), "row-level security")
	require.ErrorContains(t, insert(ledger.Principal{}, "A", "alice"), "row-level security", "no principal, no write")

	// And through the ledger API, refused before anything is sent.
	s := fn("x")
	s.TenantID = "B"
	_, err = b.ledger.Append(ctx, alice, s)
	require.ErrorIs(t, err, ledger.ErrForbidden)
	s = fn("x")
	s.OwnerID = "bob"
	_, err = b.ledger.Append(ctx, alice, s)
	require.ErrorIs(t, err, ledger.ErrForbidden)
	_, err = b.ledger.Append(ctx, ledger.System(), fn("x"))
	require.ErrorIs(t, err, ledger.ErrForbidden)

	// The serving role reads nothing at all without a principal.
	var n int
	require.NoError(t, b.asRole(ctx, ledger.Principal{}, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT count(*) FROM ledger.universal_registry WHERE visibility <> 'public'`).Scan(&n)
	}))
	require.Zero(t, n)
}

func TestAppendOnlyEvenForOwner(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	_, err := b.ledger.Append(ctx, ledger.User("A", "alice"), fn("f"))
	require.NoError(t, err)

	// The harness login is a superuser; the rule must also hold for a plain
	// owner, so migrate a fresh database as a non-superuser owner.
	ownerURL := ownerDatabase(t)
	_, _, err = ledger.Migrate(ctx, ownerURL)
	require.NoError(t, err)
	_, _, err = ledger.Migrate(ctx, ownerURL)
	require.NoError(t, err, "migrate is idempotent")
	ol, err := ledger.Open(ctx, ownerURL)
	require.NoError(t, err)
	defer ol.Close()
	_, err = ol.Append(ctx, ledger.User("A", "alice"), fn("f"))
	require.NoError(t, err)
	owner, err := pgxpool.New(ctx, ownerURL)
	require.NoError(t, err)
	defer owner.Close()
	var isSuper bool
	require.NoError(t, owner.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&isSuper))
	require.False(t, isSuper)

	for name, pool := range map[string]*pgxpool.Pool{"superuser": b.admin, "owner": owner} {
		for _, stmt := range []string{
			`UPDATE ledger.universal_registry SET status = 'x'`,
			`DELETE FROM ledger.universal_registry`,
			`TRUNCATE ledger.universal_registry`,
		} {
			_, err := pool.Exec(ctx, stmt)
			require.ErrorContains(t, err, "append-only", "%s: %s", name, stmt)
		}
	}
	// The serving role has no UPDATE/DELETE/TRUNCATE privilege at all.
	err = b.asRole(ctx, ledger.User("A", "alice"), func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE ledger.universal_registry SET status = 'x'`)
		return err
	})
	require.ErrorContains(t, err, "permission denied")

	// The serving role is what the design says it is.
	var super, bypass, isOwner bool
	require.NoError(t, b.admin.QueryRow(ctx, `SELECT r.rolsuper, r.rolbypassrls,
		(SELECT tableowner = r.rolname FROM pg_tables WHERE schemaname = 'ledger' AND tablename = 'universal_registry')
		FROM pg_roles r WHERE r.rolname = 'logline_app'`).Scan(&super, &bypass, &isOwner))
	require.False(t, super)
	require.False(t, bypass)
	require.False(t, isOwner)
}

func TestPooledConnectionCarriesNoPrincipal(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	cfg, err := pgxpool.ParseConfig(b.url)
	require.NoError(t, err)
	cfg.MaxConns = 1 // every call below reuses the one connection
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	l := ledger.New(pool)

	check := func(when string) {
		var user, role, tenant, uid, kind string
		require.NoError(t, pool.QueryRow(ctx, `SELECT current_user, current_setting('role'),
			current_setting('app.tenant_id', true), current_setting('app.user_id', true), current_setting('app.kind', true)`).
			Scan(&user, &role, &tenant, &uid, &kind))
		require.NotEqual(t, ledger.ServingRole, user, when)
		require.Equal(t, "none", role, when)
		require.Empty(t, tenant+uid+kind, when)
	}
	_, err = l.Append(ctx, ledger.User("A", "alice"), fn("f"))
	require.NoError(t, err)
	check("after an append")
	_, err = l.Query(ctx, ledger.User("A", "alice"), ledger.Filter{})
	require.NoError(t, err)
	check("after a query")
	s := fn("g")
	s.ID, s.Seq = newID(t), 5
	_, err = l.Append(ctx, ledger.User("A", "alice"), s)
	require.Error(t, err)
	check("after a failed append")
	_, err = l.Append(ctx, ledger.User("A", "alice"), fn("x"), fn("y"), s)
	require.Error(t, err)
	check("after a failed batch")
	_, err = l.Append(ctx, ledger.User("A", "alice"), fn("x"), fn("y"))
	require.NoError(t, err)
	check("after a batch")
	_, err = l.Verify(ctx, ledger.System(), ledger.Scope{})
	require.NoError(t, err)
	check("after verify")
}

func TestLargeSpanAppendsAndNotifies(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	notices := make(chan ledger.Notice, 16)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go b.ledger.Listen(lctx, func(n ledger.Notice) { notices <- n }) //nolint:errcheck
	require.True(t, (<-notices).Gap, "the first notice says the listener (re)connected")

	s := fn("big")
	s.Code = strings.Repeat("x", 3<<20)
	out, err := b.ledger.Append(ctx, ledger.User("A", "alice"), s)
	require.NoError(t, err)
	select {
	case n := <-notices:
		require.Equal(t, ledger.Notice{ID: out[0].ID, Seq: 0}, n)
	case <-time.After(10 * time.Second):
		t.Fatal("no notice for a 3 MB span")
	}
	got, err := b.ledger.Latest(ctx, ledger.User("A", "alice"), out[0].ID)
	require.NoError(t, err)
	require.Len(t, got.Code, 3<<20)
	require.NoError(t, span.Verify(&got))
}

func TestConcurrentVersionsNeverFork(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	p := ledger.User("A", "alice")
	first, err := b.ledger.Append(ctx, p, fn("counter"))
	require.NoError(t, err)
	id := first[0].ID

	const writers, each = 50, 4
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < each; {
				cur, err := b.ledger.Latest(ctx, p, id)
				if err != nil {
					errs <- err
					return
				}
				cur.Seq++
				cur.Signature = ""
				_, err = b.ledger.Append(ctx, p, cur)
				switch {
				case err == nil:
					done++
				case errors.Is(err, ledger.ErrSeqConflict):
					// lost the race: read the new head and retry
				default:
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	all, err := b.ledger.Get(ctx, p, id)
	require.NoError(t, err)
	require.Len(t, all, writers*each+1)
	for i, s := range all {
		require.Equal(t, int32(i), s.Seq, "every seq exactly once")
	}
	rep, err := b.ledger.Verify(ctx, p, ledger.Scope{IDs: []string{id}})
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Failures)
}

// Not parallel: its slow transaction would hold back every other test's
// listings while it is open.
func TestCursorNeverSkipsALateCommit(t *testing.T) {
	b, ctx := setup(t), ctxT(t)
	p := ledger.User("A", "alice")
	f := ledger.Filter{Tenant: "A", Limit: 2}
	var seen []string
	drain := func() {
		for {
			page, err := b.ledger.Query(ctx, p, f)
			require.NoError(t, err)
			for _, it := range page.Items {
				seen = append(seen, it.Span.ID)
			}
			f.After = page.Next
			if len(page.Items) < f.Limit {
				return
			}
		}
	}
	var want []string
	for i := 0; i < 3; i++ {
		out, err := b.ledger.Append(ctx, p, fn("early"))
		require.NoError(t, err)
		want = append(want, out[0].ID)
	}
	b.settle(t)
	drain()
	require.Equal(t, want, seen)

	// A slow transaction takes its transaction id first, then others
	// commit after it while it is still open.
	slow, err := b.admin.Begin(ctx)
	require.NoError(t, err)
	defer slow.Rollback(ctx) //nolint:errcheck
	_, err = slow.Exec(ctx, `SELECT set_config('role', 'logline_app', true), set_config('app.tenant_id', 'A', true),
		set_config('app.user_id', 'alice', true), set_config('app.kind', 'user', true)`)
	require.NoError(t, err)
	late := fn("late")
	late.ID, late.TenantID, late.OwnerID, late.Visibility, late.At = newID(t), "A", "alice", "private", span.FormatTime(time.Now())
	require.NoError(t, b.key.Seal(&late))
	at, _ := span.ParseTime(late.At)
	_, err = slow.Exec(ctx, `INSERT INTO ledger.universal_registry (id, seq, entity_type, who, did, "this", at, owner_id, tenant_id,
		visibility, status, name, code, language, runtime, curr_hash, signature, public_key)
		VALUES ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
		late.ID, late.EntityType, late.Who, late.Did, late.This, at, late.OwnerID, late.TenantID, late.Visibility,
		late.Status, late.Name, late.Code, late.Language, late.Runtime, late.CurrHash, late.Signature, late.PublicKey)
	require.NoError(t, err)

	var after []string
	for i := 0; i < 3; i++ {
		out, err := b.ledger.Append(ctx, p, fn("after"))
		require.NoError(t, err)
		after = append(after, out[0].ID)
	}
	drain()
	require.Equal(t, want, seen, "rows behind a running transaction are held back, not skipped")

	require.NoError(t, slow.Commit(ctx))
	b.settle(t)
	drain()
	want = append(append(want, late.ID), after...)
	require.Equal(t, want, seen, "the late row comes first, then the rows that committed before it")
}

func TestBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	p := ledger.User("A", "alice")
	bad := map[string]func(*span.Span){
		"visibility":  func(s *span.Span) { s.Visibility = "everyone" },
		"parent_id":   func(s *span.Span) { s.ParentID = "not-a-uuid" },
		"entity_type": func(s *span.Span) { s.EntityType = "" },
		"code":        func(s *span.Span) { s.Code = strings.Repeat("x", span.MaxCode+1) },
		"metadata":    func(s *span.Span) { s.Metadata = json.RawMessage(`{"a":`) },
		"id":          func(s *span.Span) { s.ID = "ABC" },
	}
	for field, mutate := range bad {
		s := fn("bad")
		mutate(&s)
		_, err := b.ledger.Append(ctx, p, fn("ok"), s)
		require.ErrorIs(t, err, ledger.ErrInvalid, field)
		require.ErrorContains(t, err, field)
	}
	require.Zero(t, b.count(t))
}

func TestSignedSpansAreKeptAsSigned(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	author, err := span.GenerateKey()
	require.NoError(t, err)
	s := fn("signed")
	s.ID, s.TenantID, s.OwnerID, s.Visibility = newID(t), "A", "alice", "tenant"
	s.At = "2026-01-02T03:04:05.123456Z"
	require.NoError(t, author.Seal(&s))
	out, err := b.ledger.Append(ctx, ledger.User("A", "alice"), s)
	require.NoError(t, err)
	require.Equal(t, s, out[0])
	got, err := b.ledger.Latest(ctx, ledger.User("A", "bob"), s.ID)
	require.NoError(t, err)
	require.Equal(t, author.PublicHex(), got.PublicKey)
	require.Equal(t, s.Signature, got.Signature)

	forged := s
	forged.ID, forged.Code = newID(t), "evil"
	_, err = b.ledger.Append(ctx, ledger.User("A", "alice"), forged)
	require.ErrorIs(t, err, ledger.ErrInvalid)
	require.ErrorIs(t, err, span.ErrHashMismatch)
}

func TestQueryFiltersAndPages(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	p := ledger.User("A", "alice")
	parent := newID(t)
	var all []string
	for i := 0; i < 7; i++ {
		s := fn("q")
		if i%2 == 0 {
			s.EntityType, s.Status, s.TraceID, s.ParentID = "execution", "complete", "tr-1", parent
		}
		out, err := b.ledger.Append(ctx, p, s)
		require.NoError(t, err)
		all = append(all, out[0].ID)
	}
	b.settle(t)
	ids := func(f ledger.Filter) []string {
		var got []string
		for {
			page, err := b.ledger.Query(ctx, p, f)
			require.NoError(t, err)
			for _, it := range page.Items {
				got = append(got, it.Span.ID)
			}
			if len(page.Items) < max(f.Limit, 1) || f.Limit == 0 {
				return got
			}
			if f.Desc {
				f.Before = page.Next
			} else {
				f.After = page.Next
			}
		}
	}
	even := []string{all[0], all[2], all[4], all[6]}
	require.Equal(t, all, ids(ledger.Filter{Limit: 3}))
	require.Equal(t, even, ids(ledger.Filter{EntityType: "execution", Limit: 1}))
	require.Equal(t, even, ids(ledger.Filter{Status: "complete"}))
	require.Equal(t, even, ids(ledger.Filter{TraceID: "tr-1"}))
	require.Equal(t, even, ids(ledger.Filter{ParentID: parent}))
	require.Equal(t, all, ids(ledger.Filter{Tenant: "A", Visibility: "private"}))
	require.Empty(t, ids(ledger.Filter{Visibility: "public"}))
	require.Empty(t, ids(ledger.Filter{Since: time.Now().Add(time.Hour)}))
	rev := ids(ledger.Filter{Desc: true, Limit: 2})
	require.Len(t, rev, 7)
	require.Equal(t, all[6], rev[0])
	require.Equal(t, all[0], rev[6])

	_, err := b.ledger.Query(ctx, p, ledger.Filter{Limit: ledger.MaxLimit + 1})
	require.ErrorIs(t, err, ledger.ErrInvalid)
	_, err = b.ledger.Query(ctx, p, ledger.Filter{Visibility: "everyone"})
	require.ErrorIs(t, err, ledger.ErrInvalid)
	_, err = ledger.ParseCursor("nope")
	require.ErrorIs(t, err, ledger.ErrInvalid)
}

func newID(t *testing.T) string {
	t.Helper()
	id, err := newUUID()
	require.NoError(t, err)
	return id
}

func TestBatchRejectedByTheServerWritesNothing(t *testing.T) {
	t.Parallel()
	b, ctx := setup(t), ctxT(t)
	p := ledger.User("A", "alice")
	first, err := b.ledger.Append(ctx, p, fn("exists"))
	require.NoError(t, err)
	before := b.count(t)
	// The third span reuses an existing id at seq 0: only the database can
	// tell, after the first two were already streamed to it.
	clash := fn("clash")
	clash.ID = first[0].ID
	for round := 0; round < 3; round++ {
		_, err = b.ledger.Append(ctx, p, fn("a"), fn("b"), clash, fn("c"))
		require.ErrorIs(t, err, ledger.ErrSeqConflict)
		require.Equal(t, before, b.count(t), "nothing of a failed batch is written")
	}
	// The pool is healthy afterwards.
	_, err = b.ledger.Append(ctx, p, fn("after"), fn("after2"))
	require.NoError(t, err)
	require.Equal(t, before+2, b.count(t))
}
