package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

const (
	mimeJSON   = "application/json"
	mimeNDJSON = "application/x-ndjson"
)

// readBody reads the request body, at most MaxBodyBytes of it.
func (s *Server) readBody(c echo.Context) ([]byte, error) {
	return readBodyMax(c, s.cfg.MaxBodyBytes)
}

// readBodyMax reads the request body, at most limit bytes of it (413
// past it).
func readBodyMax(c echo.Context, limit int64) ([]byte, error) {
	r := c.Request()
	if r.ContentLength > limit {
		return nil, fail(codeTooLarge, "body", "the body is %d bytes, more than the limit of %d", r.ContentLength, limit)
	}
	b, err := io.ReadAll(http.MaxBytesReader(c.Response(), r.Body, limit))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, fail(codeTooLarge, "body", "the body is more than the limit of %d bytes", limit)
	case err != nil:
		return nil, fail(codeMalformed, "body", "error reading the body: %v", err)
	}
	return b, nil
}

// mediaType is the request's Content-Type without parameters; a request
// without one is taken as JSON.
func mediaType(c echo.Context, allowed ...string) (string, error) {
	ct := c.Request().Header.Get(echo.HeaderContentType)
	if ct == "" {
		return mimeJSON, nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil {
		for _, a := range allowed {
			if mt == a {
				return mt, nil
			}
		}
	}
	return "", fail(codeUnsupported, "Content-Type", "Content-Type %q: want %s", ct, strings.Join(allowed, " or "))
}

// decodeSpans cuts a body into spans. A body that is not JSON, or a span
// with a wrong type or an unknown field, is malformed (400); a span that
// parses but breaks the schema is invalid (422). Either way the problem
// names the field, the span and the line.
func decodeSpans(body []byte, single bool) ([]span.Span, *problem) {
	body = bytes.TrimPrefix(body, []byte{0xEF, 0xBB, 0xBF})
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, fail(codeMalformed, "body", "the body is empty; send a span as a JSON object, or NDJSON with one span per line")
	}
	if single {
		// One object: the span decoder checks the syntax itself, so the
		// body is read once, not cut first.
		return decodeOne(body)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var spans []span.Span
	for i := 1; ; i++ {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return spans, nil
		}
		if err != nil {
			off := int(dec.InputOffset())
			var se *json.SyntaxError
			if errors.As(err, &se) {
				off = int(se.Offset)
			}
			p := fail(codeMalformed, "body", "invalid JSON: %v", err)
			p.Span, p.Line = i, lineAt(body, off)
			return nil, p
		}
		if i > ledger.MaxBatch {
			return nil, fail(codeTooLarge, "body", "more than %d spans in one batch", ledger.MaxBatch)
		}
		line := lineAt(body, int(dec.InputOffset())-len(raw))
		var sp span.Span
		var fe *span.FieldError
		if err := sp.UnmarshalJSON(raw); err != nil {
			p := fail(codeMalformed, "body", "%v", err)
			if errors.As(err, &fe) {
				p = fail(codeMalformed, fe.Field, "%s", fe.Reason)
				if fe.Field == "span" { // the span as a whole
					p.Field = "body"
				}
			}
			p.Span, p.Line = i, line
			return nil, p
		}
		if err := sp.Validate(); err != nil {
			p := fail(codeInvalid, "", "%v", err)
			if errors.As(err, &fe) {
				p = fail(codeInvalid, fe.Field, "%s", fe.Reason)
			}
			p.Span, p.Line = i, line
			return nil, p
		}
		spans = append(spans, sp)
	}
}

func decodeOne(body []byte) ([]span.Span, *problem) {
	var sp span.Span
	var fe *span.FieldError
	if err := sp.UnmarshalJSON(body); err != nil {
		p := fail(codeMalformed, "body", "%v", err)
		if errors.As(err, &fe) {
			p = fail(codeMalformed, fe.Field, "%s", fe.Reason)
			if fe.Field == "span" { // the body as a whole
				p.Field = "body"
			}
		}
		if strings.Contains(p.Detail, "trailing data") {
			p.Detail = "application/json takes one span; send a batch as application/x-ndjson"
		}
		return nil, p
	}
	if err := sp.Validate(); err != nil {
		if errors.As(err, &fe) {
			return nil, fail(codeInvalid, fe.Field, "%s", fe.Reason)
		}
		return nil, fail(codeInvalid, "", "%v", err)
	}
	return []span.Span{sp}, nil
}

func lineAt(b []byte, off int) int {
	off = min(max(off, 0), len(b))
	return 1 + bytes.Count(b[:off], []byte{'\n'})
}

// idempotencyNS is the UUIDv5 namespace of ids derived from Idempotency-Key.
var idempotencyNS = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://logline.dev/api/idempotency-key"))

// idempotentID is the id of the i-th new span of a request made by p with
// key: the same request retried names the same ids, so the ledger's own
// uniqueness is what makes it idempotent (no side table).
func idempotentID(p ledger.Principal, key, what string, i int) string {
	return uuid.NewSHA1(idempotencyNS, []byte(strings.Join([]string{p.Tenant, p.User, what, key, strconv.Itoa(i)}, "\x00"))).String()
}

func idempotencyKey(c echo.Context) (string, error) {
	k := c.Request().Header.Get("Idempotency-Key")
	if len(k) > 255 {
		return "", fail(codeMalformed, "Idempotency-Key", "at most 255 characters")
	}
	for _, r := range k {
		if r < 0x21 || r > 0x7e {
			return "", fail(codeMalformed, "Idempotency-Key", "only printable ASCII without spaces")
		}
	}
	return k, nil
}

func (s *Server) appendSpans(c echo.Context) error {
	p := principal(c)
	mt, err := mediaType(c, mimeJSON, mimeNDJSON)
	if err != nil {
		return err
	}
	key, err := idempotencyKey(c)
	if err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	spans, prob := decodeSpans(body, mt == mimeJSON)
	if prob != nil {
		return prob
	}
	if mt == mimeJSON && len(spans) != 1 {
		return fail(codeMalformed, "body", "application/json takes one span; send a batch as application/x-ndjson")
	}
	for i := range spans {
		sp := &spans[i]
		var prob *problem
		switch {
		case sp.TenantID != "" && sp.TenantID != p.Tenant:
			prob = fail(codeForbidden, "tenant_id", "tenant_id %q is not your tenant", sp.TenantID)
		case sp.OwnerID != "" && sp.OwnerID != p.User:
			prob = fail(codeForbidden, "owner_id", "owner_id %q is not you", sp.OwnerID)
		case sp.Seq == 0 && sp.ID != "":
			// Otherwise anyone could claim a well-known id (the manifest's)
			// before its owner appends it.
			prob = fail(codeInvalid, "id", "the server assigns the id of a new span (seq 0); only a new version (seq > 0) names its id")
		case sp.Seq > 0 && sp.ID == "":
			prob = fail(codeInvalid, "id", "a new version (seq %d) must name the id it continues", sp.Seq)
		}
		if prob != nil {
			if len(spans) > 1 {
				prob.Span = i + 1
			}
			return prob
		}
		if key != "" && sp.Seq == 0 {
			sp.ID = idempotentID(p, key, "spans", i)
		}
	}
	ctx := c.Request().Context()
	stored, err := s.l.Append(ctx, p, spans...)
	status := http.StatusCreated
	if err != nil {
		if key == "" || !errors.Is(err, ledger.ErrSeqConflict) {
			return err
		}
		prev, same, rerr := s.replayed(ctx, p, spans)
		switch {
		case rerr != nil:
			return rerr
		case prev == nil:
			return err // a real conflict, not a retry
		case !same:
			return fail(codeIdempotency, "Idempotency-Key", "this Idempotency-Key was used with a different body")
		}
		stored, status = prev, http.StatusOK
		c.Response().Header().Set("Idempotent-Replayed", "true")
	}
	if mt == mimeNDJSON {
		var buf bytes.Buffer
		for i := range stored {
			b, err := marshal(&stored[i])
			if err != nil {
				return err
			}
			buf.Write(b)
		}
		return c.Blob(status, mimeNDJSON, buf.Bytes())
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/spans/"+stored[0].ID)
	return writeJSON(c, status, mimeJSON, &stored[0])
}

// replayed looks up what an earlier attempt under the same Idempotency-Key
// stored. prev is nil when the spans are not there (the conflict is someone
// else's); same says whether they hold what this attempt sent.
func (s *Server) replayed(ctx context.Context, p ledger.Principal, in []span.Span) (prev []span.Span, same bool, err error) {
	same = true
	for _, want := range in {
		versions, err := s.l.Get(ctx, p, want.ID)
		if errors.Is(err, ledger.ErrNotFound) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		var got *span.Span
		for i := range versions {
			if versions[i].Seq == want.Seq {
				got = &versions[i]
			}
		}
		if got == nil {
			return nil, false, nil
		}
		same = same && sameContent(p, *got, want)
		prev = append(prev, *got)
	}
	return prev, same, nil
}

// sameContent reports whether stored is what was sent as sent: a span that
// arrived signed must be the very span; otherwise the fields the server
// fills (at, proofs, tenant, owner, default visibility) are set aside.
func sameContent(p ledger.Principal, stored, sent span.Span) bool {
	if sent.Signature != "" {
		return stored.CurrHash == sent.CurrHash
	}
	norm := func(s span.Span) string {
		s.At, s.PrevHash, s.CurrHash, s.Signature, s.PublicKey = "", "", "", "", ""
		if s.TenantID == "" {
			s.TenantID = p.Tenant
		}
		if s.OwnerID == "" {
			s.OwnerID = p.User
		}
		if s.Visibility == "" {
			s.Visibility = span.DefaultVisibility
		}
		b, err := s.Canonical()
		if err != nil {
			return "invalid: " + err.Error()
		}
		return string(b)
	}
	return norm(stored) == norm(sent)
}

// listing parses the listing parameters of GET /api/spans and
// /api/timeline: what to select, and the page.
func listing(c echo.Context) (ledger.Filter, error) {
	f, err := selection(c)
	if err != nil {
		return f, err
	}
	q := c.QueryParams()
	f.Limit = ledger.DefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > ledger.MaxLimit {
			return f, fail(codeMalformed, "limit", "limit must be an integer from 1 to %d, got %q", ledger.MaxLimit, v)
		}
		f.Limit = n
	}
	cur, err := ledger.ParseCursor(q.Get("cursor"))
	if err != nil {
		return f, fail(codeMalformed, "cursor", "cursor %q is not a cursor this API returned", q.Get("cursor"))
	}
	switch q.Get("order") {
	case "", "desc":
		f.Desc, f.Before = true, cur
	case "asc":
		f.After = cur
	default:
		return f, fail(codeMalformed, "order", "order must be asc or desc, got %q", q.Get("order"))
	}
	return f, nil
}

// selection parses which spans a listing or the stream wants (pSelect):
// the engine's bookkeeping is left out unless include=bookkeeping.
func selection(c echo.Context) (ledger.Filter, error) {
	var f ledger.Filter
	q := c.QueryParams()
	f.EntityType, f.Status, f.TraceID = q.Get("entity_type"), q.Get("status"), q.Get("trace_id")
	if v := q.Get("include"); v != "" && v != "bookkeeping" {
		return f, fail(codeMalformed, "include", "include must be bookkeeping, got %q", v)
	}
	f.ExcludeTypes = ledger.Excluded(q.Get("include") == "bookkeeping", f.EntityType, strings.Split(q.Get("exclude_type"), ",")...)
	if v := q.Get("visibility"); v != "" {
		switch v {
		case span.VisibilityPrivate, span.VisibilityTenant, span.VisibilityPublic:
			f.Visibility = v
		default:
			return f, fail(codeMalformed, "visibility", "visibility must be private, tenant or public, got %q", v)
		}
	}
	if v := q.Get("parent_id"); v != "" {
		if !isUUID(v) {
			return f, fail(codeMalformed, "parent_id", "parent_id must be a lowercase UUID, got %q", v)
		}
		f.ParentID = v
	}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return f, fail(codeMalformed, "since", "since must be an RFC 3339 time, got %q", v)
		}
		f.Since = t
	}
	return f, nil
}

func isUUID(v string) bool {
	u, err := uuid.Parse(v)
	return err == nil && u.String() == v
}

type pageItem struct {
	Cursor string     `json:"cursor"`
	Span   *span.Span `json:"span"`
}

type pageOut struct {
	Items []pageItem `json:"items"`
	Next  string     `json:"next"`
	More  bool       `json:"more"`
}

// page lists one page, dropping spans keep refuses.
func (s *Server) page(c echo.Context, f ledger.Filter, keep func(*span.Span) bool) error {
	pg, err := s.l.Query(c.Request().Context(), principal(c), f)
	if err != nil {
		return err
	}
	out := pageOut{Items: []pageItem{}, Next: pg.Next.String(), More: len(pg.Items) == f.Limit}
	for i := range pg.Items {
		it := &pg.Items[i]
		if keep == nil || keep(&it.Span) {
			out.Items = append(out.Items, pageItem{Cursor: it.Cursor.String(), Span: &it.Span})
		}
	}
	return writeJSON(c, http.StatusOK, mimeJSON, out)
}

func (s *Server) listSpans(c echo.Context) error {
	f, err := listing(c)
	if err != nil {
		return err
	}
	return s.page(c, f, nil)
}

func (s *Server) timeline(c echo.Context) error {
	f, err := listing(c)
	if err != nil {
		return err
	}
	return s.page(c, f, func(sp *span.Span) bool { return !sp.IsDeleted })
}

func spanID(c echo.Context) (string, error) {
	id := c.Param("id")
	if !isUUID(id) {
		return "", fail(codeMalformed, "id", "span id must be a lowercase UUID, got %q", id)
	}
	return id, nil
}

func (s *Server) getSpan(c echo.Context) error {
	id, err := spanID(c)
	if err != nil {
		return err
	}
	versions, err := s.l.Get(c.Request().Context(), principal(c), id)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, mimeJSON, struct {
		ID       string      `json:"id"`
		Versions []span.Span `json:"versions"`
	}{id, versions})
}

type verifyFailure struct {
	Seq    int32  `json:"seq"`
	Reason string `json:"reason"`
}

func (s *Server) verifySpan(c echo.Context) error {
	id, err := spanID(c)
	if err != nil {
		return err
	}
	rep, err := s.l.Verify(c.Request().Context(), principal(c), ledger.Scope{IDs: []string{id}})
	if err != nil {
		return err
	}
	if rep.Checked == 0 {
		return fail(codeNotFound, "id", "span %s not found", id)
	}
	out := struct {
		ID       string          `json:"id"`
		OK       bool            `json:"ok"`
		Checked  int             `json:"checked"`
		Signed   int             `json:"signed"`
		Failures []verifyFailure `json:"failures"`
	}{ID: id, OK: rep.OK(), Checked: rep.Checked, Signed: rep.Signed, Failures: []verifyFailure{}}
	for _, f := range rep.Failures {
		out.Failures = append(out.Failures, verifyFailure{Seq: f.Seq, Reason: f.Reason})
	}
	return writeJSON(c, http.StatusOK, mimeJSON, out)
}
