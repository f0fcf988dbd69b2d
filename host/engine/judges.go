package engine

import (
	"context"
	"encoding/json"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

// newSpan is what route knows of a span that arrived: its tenant, entity
// type and status (its head's).
type newSpan struct {
	tenant, kind, status string
}

// judging is the tenants whose policy agent the new spans give something
// to judge: a policy of the tenant — one of its own active ones, or one
// the manifest applies to every tenant (global_policies) — that declares
// nothing, or whose declaration (metadata.judges) admits the span's type
// and status. A tenant none of whose policies could want what arrived is
// not woken: booting the agent to find nothing cost the API 60% of its
// append rate with the stock policies (RATIONALE.md, "Policies declare what
// they judge"); the sweeps on the policy interval run it all the same.
//
// A new version of a policy or of the manifest wakes its tenant (a new
// policy judges what came before it) and drops what is cached about the
// policies it may change, before the other spans of the batch are judged.
func (e *Engine) judging(ctx context.Context, spans []newSpan) ([]string, error) {
	j := &e.judged
	for _, s := range spans {
		switch s.kind {
		case "policy":
			j.forget(s.tenant)
		case "manifest":
			j.forget("")
		}
	}
	var out []string
	for _, s := range spans {
		if slices.Contains(out, s.tenant) || slices.Contains(internal, s.kind) {
			continue
		}
		wants := s.kind == "policy" || s.kind == "manifest"
		if !wants {
			var err error
			if wants, err = j.admits(ctx, e.l, s); err != nil {
				return nil, err
			}
		}
		if wants {
			out = append(out, s.tenant)
		}
	}
	return out, nil
}

// judged caches the policies' declarations: the global policies' and each
// tenant's own, read from ledger.heads when first needed after a change.
type judged struct {
	mu      sync.Mutex
	globals *declared            // nil: to be read
	tenants map[string]*declared // tenant → its own active policies'
}

// maxCachedTenants bounds the cache; past it, it starts over.
const maxCachedTenants = 10000

// declared is the union of some policies' declarations.
type declared struct {
	every bool           // a policy that declares nothing (or a declaration that does not check)
	decls []*span.Judges // the others'
}

func (d *declared) admits(kind, status string) bool {
	if d.every {
		return true
	}
	for _, j := range d.decls {
		if j.Admits(kind, status) {
			return true
		}
	}
	return false
}

// add adds a policy's declaration: its metadata has the key judges
// (declares), with value raw. One that does not check admits everything,
// as the agent must run to record it (a policy_error, once).
func (d *declared) add(declares bool, raw []byte) {
	if !declares {
		d.every = true
		return
	}
	jd, fe := span.ParseJudges(json.RawMessage(raw))
	if fe != nil {
		d.every = true
		return
	}
	d.decls = append(d.decls, jd)
}

// forget drops the cached declarations of tenant's own policies ("" for
// none) and of the global ones (a policy of any tenant may be one, and the
// manifest lists them).
func (j *judged) forget(tenant string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.globals = nil
	if tenant != "" {
		delete(j.tenants, tenant)
	}
}

// admits tells whether some policy of s's tenant may judge s.
func (j *judged) admits(ctx context.Context, l *ledger.Ledger, s newSpan) (bool, error) {
	j.mu.Lock()
	g, own := j.globals, j.tenants[s.tenant]
	j.mu.Unlock()
	if g == nil || own == nil {
		var err error
		if g, own, err = j.load(ctx, l, s.tenant, g, own); err != nil {
			return false, err
		}
	}
	return g.admits(s.kind, s.status) || own.admits(s.kind, s.status), nil
}

// load reads what is missing (a nil g or own) and caches it.
func (j *judged) load(ctx context.Context, l *ledger.Ledger, tenant string, g, own *declared) (*declared, *declared, error) {
	err := l.InTx(ctx, ledger.System(), pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		if g == nil {
			// As the agent takes them: the ids the manifest's latest
			// version lists, each a public active policy.
			if g, err = readDeclared(ctx, tx, `SELECT coalesce(jsonb_typeof(u.metadata) = 'object' AND u.metadata ? 'judges', false), u.metadata -> 'judges'
				FROM (SELECT metadata -> 'global_policies' AS ids FROM ledger.universal_registry
				      WHERE id = $1 ORDER BY seq DESC LIMIT 1) m
				CROSS JOIN LATERAL jsonb_array_elements_text(CASE WHEN jsonb_typeof(m.ids) = 'array' THEN m.ids ELSE '[]' END) AS g(id)
				JOIN ledger.heads h ON h.id = CASE WHEN g.id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN g.id::uuid END
				JOIN ledger.universal_registry u ON u.id = h.id AND u.seq = h.seq
				WHERE u.entity_type = 'policy' AND u.status = 'active' AND u.visibility = 'public'`, stage0.ManifestID); err != nil {
				return err
			}
		}
		if own == nil {
			// The tenant's active policies (heads_active_policies).
			own, err = readDeclared(ctx, tx, `SELECT coalesce(jsonb_typeof(u.metadata) = 'object' AND u.metadata ? 'judges', false), u.metadata -> 'judges'
				FROM ledger.heads h JOIN ledger.universal_registry u ON u.id = h.id AND u.seq = h.seq
				WHERE h.tenant_id = $1 AND h.entity_type = 'policy' AND h.status = 'active'`, tenant)
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.globals = g
	if j.tenants == nil || len(j.tenants) >= maxCachedTenants {
		j.tenants = map[string]*declared{}
	}
	j.tenants[tenant] = own
	return g, own, nil
}

func readDeclared(ctx context.Context, tx pgx.Tx, q string, arg any) (*declared, error) {
	rows, err := tx.Query(ctx, q, arg)
	if err != nil {
		return nil, err
	}
	d := &declared{}
	var declares bool
	var raw []byte
	_, err = pgx.ForEachRow(rows, []any{&declares, &raw}, func() error {
		d.add(declares, raw)
		return nil
	})
	return d, err
}
