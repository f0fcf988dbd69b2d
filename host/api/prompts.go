package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

// The prompt system over HTTP (guests/kernels/prompt.js): POST
// /api/prompts/run appends a prompt_request that the engine's prompt_worker
// runs, and GET /api/prompts/{family} shows a family's variants, their
// latest evals and the tenant's routing.

// promptRunRequest is a decoded POST /api/prompts/run body. Input and
// Context are the JSON strings as sent, so that the request span stores
// exactly what was sent (encoding/json would turn a lone surrogate into
// U+FFFD instead of refusing it).
type promptRunRequest struct {
	Family, VariantID, ProviderID string
	Input, Context                json.RawMessage
}

// promptRunResult is the answer of POST /api/prompts/run: the request (as
// appended, or its closing version once the engine closed it) and the
// prompt_run the engine recorded for it (null until then).
type promptRunResult struct {
	Request   *span.Span `json:"request"`
	PromptRun *span.Span `json:"prompt_run"`
}

// promptRunFields are the keys of a prompt run body, exactly.
var promptRunFields = []string{"family", "variant_id", "input", "context", "provider_id"}

const promptRunShape = `{"family": "<name>" or "variant_id": "<uuid>", "input": "<text>", "context": "<text>", "provider_id": "<uuid>"}`

// MaxFamilyLen bounds a prompt family's name (the kernels' rule).
const MaxFamilyLen = 100

const familyPattern = `^[A-Za-z0-9_.-]{1,100}$`

var familyRE = regexp.MustCompile(familyPattern)

// ValidFamily reports whether f is a prompt family name: 1 to 100 letters,
// digits, _ . - (what the kernels accept in a variant's metadata.family).
func ValidFamily(f string) bool { return familyRE.MatchString(f) }

// decodePromptRun parses the body strictly, as decodeExecute does: unknown
// or duplicate keys, wrong types and text that is not clean are malformed
// (400); a missing input, neither or both of family and variant_id, a
// malformed id or family name, and text the ledger cannot store are invalid
// (422). Every problem names its field.
func decodePromptRun(body []byte) (promptRunRequest, error) {
	var req promptRunRequest
	members, prob := strictObject(body, promptRunFields, promptRunShape)
	if prob != nil {
		return req, prob
	}
	ident := func(name string, dst *string) *problem {
		if v := members[name]; v != nil && !isNull(v) {
			s, prob := jsonString(name, v)
			if prob != nil {
				return prob
			}
			*dst = s
		}
		return nil
	}
	for name, dst := range map[string]*string{"family": &req.Family, "variant_id": &req.VariantID, "provider_id": &req.ProviderID} {
		if prob := ident(name, dst); prob != nil {
			return req, prob
		}
	}
	text := func(name string, dst *json.RawMessage) *problem {
		v := members[name]
		if v == nil || isNull(v) {
			return nil
		}
		if v[0] != '"' {
			return fail(codeMalformed, name, "%s must be a JSON string", name)
		}
		if !utf8.Valid(v) {
			return fail(codeMalformed, name, "%s is not valid UTF-8", name)
		}
		// Newlines and tabs are fine in a question; what the ledger cannot
		// store (NUL, a lone surrogate) is not.
		if err := span.CheckJSON(name, v); err != nil {
			var fe *span.FieldError
			if errors.As(err, &fe) {
				return fail(codeInvalid, name, "%s", fe.Reason)
			}
			return fail(codeInvalid, name, "%v", err)
		}
		*dst = v
		return nil
	}
	if prob := text("input", &req.Input); prob != nil {
		return req, prob
	}
	if prob := text("context", &req.Context); prob != nil {
		return req, prob
	}
	switch {
	case req.Family != "" && req.VariantID != "":
		return req, fail(codeInvalid, "variant_id", "give family or variant_id, not both")
	case req.Family == "" && req.VariantID == "":
		return req, fail(codeInvalid, "family", "family or variant_id is required: what to run")
	case req.VariantID != "" && !isUUID(req.VariantID):
		return req, fail(codeInvalid, "variant_id", "variant_id must be a lowercase UUID, got %s", quoteShort(req.VariantID))
	case req.Family != "" && !ValidFamily(req.Family):
		return req, fail(codeInvalid, "family", "family must be 1 to %d letters, digits, _ . -, got %s", MaxFamilyLen, quoteShort(req.Family))
	case req.ProviderID != "" && !isUUID(req.ProviderID):
		return req, fail(codeInvalid, "provider_id", "provider_id must be a lowercase UUID, got %s", quoteShort(req.ProviderID))
	case req.Input == nil:
		return req, fail(codeInvalid, "input", "input (the user input) is required")
	case string(req.Input) == `""`:
		return req, fail(codeInvalid, "input", "input must not be empty")
	}
	return req, nil
}

// requestSpan is the prompt_request the body asks for: input {variant_id
// or family, user_input, context, provider_id?}, as prompt_worker reads it.
func (in promptRunRequest) requestSpan(who, trace string) span.Span {
	var b bytes.Buffer
	str := func(s string) []byte { out, _ := json.Marshal(s); return out }
	b.WriteByte('{')
	if in.VariantID != "" {
		b.WriteString(`"variant_id":`)
		b.Write(str(in.VariantID))
	} else {
		b.WriteString(`"family":`)
		b.Write(str(in.Family))
	}
	b.WriteString(`,"user_input":`)
	b.Write(in.Input)
	b.WriteString(`,"context":`)
	if in.Context != nil {
		b.Write(in.Context)
	} else {
		b.WriteString(`""`)
	}
	if in.ProviderID != "" {
		b.WriteString(`,"provider_id":`)
		b.Write(str(in.ProviderID))
	}
	b.WriteByte('}')
	return span.Span{EntityType: "prompt_request", Who: who, Did: "requested", This: "prompt.run", Status: "scheduled",
		Visibility: span.VisibilityPrivate, ParentID: in.VariantID, TraceID: trace, Input: b.Bytes()}
}

func (s *Server) runPrompt(c echo.Context) error {
	p := principal(c)
	if _, err := mediaType(c, mimeJSON); err != nil {
		return err
	}
	wait, err := s.waitParam(c)
	if err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	in, err := decodePromptRun(body)
	if err != nil {
		return err
	}
	req := in.requestSpan(p.User, traceID(c))
	if err := req.Validate(); err != nil {
		var fe *span.FieldError
		if errors.As(err, &fe) {
			return fail(codeInvalid, fe.Field, "%s", fe.Reason)
		}
		return fail(codeInvalid, "", "%v", err)
	}
	ctx := c.Request().Context()
	// What the body names must exist for the principal and be what it
	// says: refused here, nothing is written (the engine would close the
	// request as failed).
	if in.VariantID != "" {
		if err := s.check(ctx, p, "variant_id", in.VariantID, "prompt_variant"); err != nil {
			return err
		}
	}
	if in.ProviderID != "" {
		if err := s.check(ctx, p, "provider_id", in.ProviderID, "provider"); err != nil {
			return err
		}
	}

	// Join the stream before appending, as execute does: the engine closes
	// the request after it sees it.
	var w *waiter
	if wait > 0 {
		w = &waiter{p: p, kind: "prompt_request", found: make(chan struct{}, 1)}
		g, _, err := s.hub.joinAt(ctx, p, w)
		if err != nil {
			return err
		}
		defer s.hub.leave(g, w)
	}
	stored, err := s.l.Append(ctx, p, req)
	if err != nil {
		return err
	}
	out := promptRunResult{Request: &stored[0]}
	c.Response().Header().Set(echo.HeaderLocation, "/api/spans/"+stored[0].ID)
	if w == nil {
		return writeJSON(c, http.StatusAccepted, mimeJSON, out)
	}
	w.setRequest(stored[0].ID)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-w.found:
		w.mu.Lock()
		closing := w.closing
		w.mu.Unlock()
		out.Request, out.PromptRun = closing, s.promptRunOf(ctx, p, closing)
		return writeJSON(c, http.StatusOK, mimeJSON, out)
	case <-t.C:
	case <-s.hub.ctx.Done():
	case <-ctx.Done():
		return nil
	}
	return writeJSON(c, http.StatusAccepted, mimeJSON, out)
}

// check refuses an id the principal cannot see (404) or that is not a
// live span of entityType (422), naming field.
func (s *Server) check(ctx context.Context, p ledger.Principal, field, id, entityType string) error {
	sp, err := s.l.Latest(ctx, p, id)
	if errors.Is(err, ledger.ErrNotFound) {
		return fail(codeNotFound, field, "no %s %s is visible to the principal", entityType, id)
	}
	if err != nil {
		return err
	}
	switch {
	case sp.EntityType != entityType:
		return fail(codeInvalid, field, "span %s is a %s span, not a %s", id, quoteShort(sp.EntityType), entityType)
	case sp.IsDeleted:
		return fail(codeInvalid, field, "%s %s is deleted", entityType, id)
	case sp.Status == "archived":
		return fail(codeInvalid, field, "%s %s is archived", entityType, id)
	}
	return nil
}

// promptRunOf reads the prompt_run the closing version of a request names
// (metadata.prompt_run_id). The engine appends both in one transaction, so
// once the closing version is seen the run can be read. Only a prompt_run
// of the request, owned by its requester, counts.
func (s *Server) promptRunOf(ctx context.Context, p ledger.Principal, closing *span.Span) *span.Span {
	if closing == nil {
		return nil
	}
	id := metaString(closing.Metadata, "prompt_run_id")
	if !isUUID(id) {
		return nil
	}
	run, err := s.l.Latest(ctx, p, id)
	if err != nil {
		if !errors.Is(err, ledger.ErrNotFound) {
			s.log.Warn("prompts: reading the prompt_run", "id", id, "err", err)
		}
		return nil
	}
	if run.EntityType != "prompt_run" || !ownedBy(&run, p) || metaString(run.Metadata, "request_id") != closing.ID {
		return nil
	}
	return &run
}

func (s *Server) promptFamily(c echo.Context) error {
	family := c.Param("family")
	if u, err := url.PathUnescape(family); err == nil {
		family = u
	}
	if !ValidFamily(family) {
		return fail(codeMalformed, "family", "family must be 1 to %d letters, digits, _ . -, got %s", MaxFamilyLen, quoteShort(family))
	}
	out, err := ReadPromptFamily(c.Request().Context(), s.l, principal(c), family)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, mimeJSON, out)
}

// PromptFamily is what GET /api/prompts/{family} answers and `logline
// prompt show` prints.
type PromptFamily struct {
	Family string `json:"family"`
	// Variants are the latest versions of the family's prompt_variants
	// that serve the principal's tenant and that the principal may read:
	// its tenant's own and the operator's stock ones (public, in the
	// manifest's tenant), as the kernels see a family; deleted ones are
	// left out. At most MaxFamilyVariants, by id.
	Variants []FamilyVariant `json:"variants"`
	// Routing is the latest prompt_routing span of the principal's tenant
	// for the family (the bandit's weights), or nil: never another
	// tenant's.
	Routing *span.Span `json:"routing"`
}

// FamilyVariant is one variant of a family with its latest evaluation.
type FamilyVariant struct {
	Variant span.Span `json:"variant"`
	// LatestEval summarises the newest prompt_eval_run of the variant
	// (parent_id the variant) in the principal's tenant, or nil.
	LatestEval *EvalSummary `json:"latest_eval"`
}

// EvalSummary is a prompt_eval_run in brief. A field the run does not
// record (a scheduled eval that failed to run has status error and no
// verdict) is null.
type EvalSummary struct {
	ID           string          `json:"id"`
	At           string          `json:"at"`
	Status       string          `json:"status,omitempty"`
	CompiledHash *string         `json:"compiled_hash"`
	Model        *string         `json:"model"`
	Passed       *bool           `json:"passed"`
	PassRate     *float64        `json:"pass_rate"`
	Totals       json.RawMessage `json:"totals"`
}

// MaxFamilyVariants bounds the variants ReadPromptFamily returns.
const MaxFamilyVariants = 100

// The columns of a span, for the rows ReadPromptFamily reads (in
// span.Span's order; scanSpan reads them).
const promptSpanCols = `v.id, v.seq, v.entity_type, v.who, v.did, v."this", v.at, v.parent_id, v.related_to, v.owner_id,
	v.tenant_id, v.visibility, v.status, v.is_deleted, v.name, v.description, v.code, v.language, v.runtime, v.input,
	v.output, v.error, v.duration_ms, v.trace_id, v.prev_hash, v.curr_hash, v.signature, v.public_key, v.metadata`

// familyVariantsSQL: the latest version of every prompt_variant of the
// tenant ($1; ledger.heads, whose rows RLS keeps to the tenant) and of the
// stock tenant (the manifest's, $4; its rows the principal may read, so
// public ones), of family $2, each with its newest eval run in the tenant.
const familyVariantsSQL = `WITH stock AS (
    SELECT tenant_id FROM ledger.universal_registry WHERE id = $4 AND seq = 0
  ), cand AS (
    SELECT h.id, h.seq FROM ledger.heads h WHERE h.tenant_id = $1 AND h.entity_type = 'prompt_variant'
    UNION
    (SELECT DISTINCT ON (u.id) u.id, u.seq FROM ledger.universal_registry u JOIN stock ON u.tenant_id = stock.tenant_id
      WHERE stock.tenant_id <> $1 AND u.entity_type = 'prompt_variant' ORDER BY u.id, u.seq DESC)
  )
  SELECT ` + promptSpanCols + `,
    e.id, e.at, e.status, e.compiled_hash, e.model, e.passed, e.pass_rate, e.totals
  FROM cand JOIN ledger.universal_registry v ON v.id = cand.id AND v.seq = cand.seq
  LEFT JOIN LATERAL (
    SELECT r.id, r.at, r.status, r.metadata->'compiled_hash' AS compiled_hash, r.metadata->'model' AS model,
      r.metadata->'passed' AS passed, r.metadata->'pass_rate' AS pass_rate, r.output->'totals' AS totals
    FROM ledger.universal_registry r
    WHERE r.tenant_id = $1 AND r.parent_id = v.id AND r.entity_type = 'prompt_eval_run'
    ORDER BY r.at DESC, r.id LIMIT 1
  ) e ON true
  WHERE v.entity_type = 'prompt_variant' AND v.metadata->>'family' = $2 AND NOT v.is_deleted
  ORDER BY v.id LIMIT $3`

// familyRoutingSQL: the tenant's newest prompt_routing head of family $2.
const familyRoutingSQL = `SELECT ` + promptSpanCols + `
  FROM ledger.heads h JOIN ledger.universal_registry v ON v.id = h.id AND v.seq = h.seq
  WHERE h.tenant_id = $1 AND h.entity_type = 'prompt_routing' AND v.tenant_id = $1 AND v.metadata->>'family' = $2
  ORDER BY v.at DESC, v.id LIMIT 1`

// ReadPromptFamily reads family as p (row-level security decides what it
// sees), in one read-only snapshot: its variants with their latest eval,
// and the routing of p's tenant. No visible variant is ledger.ErrNotFound;
// a malformed family name is ledger.ErrInvalid.
//
// (The queries need what host/ledger's filters cannot say — a metadata
// field, the latest version per id — so they run here, through
// ledger.InTx under p.)
func ReadPromptFamily(ctx context.Context, l *ledger.Ledger, p ledger.Principal, family string) (PromptFamily, error) {
	out := PromptFamily{Family: family, Variants: []FamilyVariant{}}
	if !ValidFamily(family) {
		return out, fmt.Errorf("%w: family %q must be 1 to %d letters, digits, _ . -", ledger.ErrInvalid, family, MaxFamilyLen)
	}
	err := l.InTx(ctx, p, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, familyVariantsSQL, p.Tenant, family, MaxFamilyVariants, stage0.ManifestID)
		if err != nil {
			return err
		}
		for rows.Next() {
			var fv FamilyVariant
			var (
				evID, evStatus                              *string
				evAt                                        *time.Time
				evHash, evModel, evPassed, evRate, evTotals []byte
			)
			if err := scanSpan(rows, &fv.Variant, &evID, &evAt, &evStatus, &evHash, &evModel, &evPassed, &evRate, &evTotals); err != nil {
				rows.Close()
				return err
			}
			if evID != nil && evAt != nil {
				ev := &EvalSummary{ID: *evID, At: span.FormatTime(*evAt), Status: deref(evStatus)}
				ev.CompiledHash, ev.Model = jsonAs[string](evHash), jsonAs[string](evModel)
				ev.Passed, ev.PassRate = jsonAs[bool](evPassed), jsonAs[float64](evRate)
				if len(evTotals) > 0 && evTotals[0] == '{' {
					ev.Totals = evTotals
				}
				fv.LatestEval = ev
			}
			out.Variants = append(out.Variants, fv)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, familyRoutingSQL, p.Tenant, family)
		if err != nil {
			return err
		}
		defer rows.Close()
		if rows.Next() {
			var r span.Span
			if err := scanSpan(rows, &r); err != nil {
				return err
			}
			out.Routing = &r
		}
		return rows.Err()
	})
	if err != nil {
		return out, fmt.Errorf("error reading prompt family %s: %w", family, err)
	}
	if len(out.Variants) == 0 {
		return out, fmt.Errorf("%w: no prompt_variant of family %q is visible", ledger.ErrNotFound, family)
	}
	return out, nil
}

// scanSpan reads promptSpanCols into s, then extra columns.
func scanSpan(row pgx.Row, s *span.Span, extra ...any) error {
	var (
		did, parent, owner, tenant, status, name, desc, code *string
		lang, runtime, trace, prev, sig, pub                 *string
		input, output, errv, meta                            []byte
		at                                                   time.Time
	)
	dest := []any{&s.ID, &s.Seq, &s.EntityType, &s.Who, &did, &s.This, &at, &parent, &s.RelatedTo,
		&owner, &tenant, &s.Visibility, &status, &s.IsDeleted, &name, &desc, &code, &lang, &runtime,
		&input, &output, &errv, &s.DurationMs, &trace, &prev, &s.CurrHash, &sig, &pub, &meta}
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return err
	}
	s.At = span.FormatTime(at)
	s.Did, s.ParentID, s.OwnerID, s.TenantID = deref(did), deref(parent), deref(owner), deref(tenant)
	s.Status, s.Name, s.Description, s.Code = deref(status), deref(name), deref(desc), deref(code)
	s.Language, s.Runtime, s.TraceID = deref(lang), deref(runtime), deref(trace)
	s.PrevHash, s.Signature, s.PublicKey = deref(prev), deref(sig), deref(pub)
	s.Input, s.Output, s.Error, s.Metadata = rawJSON(input), rawJSON(output), rawJSON(errv), rawJSON(meta)
	return nil
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func rawJSON(b []byte) json.RawMessage {
	if b == nil {
		return nil
	}
	return json.RawMessage(b)
}

// jsonAs decodes raw as a T, or nil when it is absent or something else
// (a span anyone in the tenant can write need not hold what it should).
func jsonAs[T any](raw []byte) *T {
	if len(raw) == 0 || isNull(raw) {
		return nil
	}
	var v T
	if json.Unmarshal(raw, &v) != nil {
		return nil
	}
	return &v
}
