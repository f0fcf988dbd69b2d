package api

// The HTMX / server-rendered adapter: HTML fragments of the timeline and of
// a span under /ssr, the live timeline as SSE events carrying rows, a
// cookie session for pages that cannot set an Authorization header (an
// EventSource cannot), and an example page at /examples/htmx.
//
// These routes are not part of the JSON API: they are kept out of its route
// table and OpenAPI document (ssrRoutes), answer problems as HTML fragments,
// and are the only routes that accept the session cookie — /api never does,
// so a cross-site request can never ride on it there.

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/labstack/echo/v4"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

const (
	// ssrCookie holds the session's token, scoped to /ssr.
	ssrCookie = "logline_ssr"
	mimeHTML  = "text/html; charset=utf-8"
	// maxSessionForm bounds POST /ssr/session's body (a token is < 1 KiB).
	maxSessionForm = 16 << 10
	// examplesCSP is the example page's policy: its own scripts only (no
	// inline script, no eval), its own styles, nothing framed.
	examplesCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
		"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

//go:embed examples
var examplesFS embed.FS

// ssrRoutes are the adapter's routes, registered like the API's (each
// behind its parameter check) but outside its route table: they are HTML,
// not part of the documented JSON API.
var ssrRoutes = []op{
	{method: http.MethodGet, path: "/ssr/timeline", params: append(pSelect(), pLimit, pOrder, pCursor), handle: (*Server).ssrTimeline},
	{method: http.MethodGet, path: "/ssr/timeline/stream", handle: (*Server).ssrStream, params: append(pSelect(),
		param{name: "Last-Event-ID", in: "header", schema: schema{"type": "string", "maxLength": maxCursorLen}},
		pCursor)},
	{method: http.MethodGet, path: "/ssr/spans/:id", params: []param{pID}, handle: (*Server).ssrSpan},
	{method: http.MethodGet, path: "/ssr/session", handle: (*Server).ssrWhoAmI},
	{method: http.MethodPost, path: "/ssr/session", public: true, handle: (*Server).ssrSignIn},
	{method: http.MethodDelete, path: "/ssr/session", public: true, handle: (*Server).ssrSignOut},
	{method: http.MethodPost, path: "/ssr/session/end", public: true, handle: (*Server).ssrSignOut},
	{method: http.MethodGet, path: "/examples/htmx", public: true, handle: (*Server).examplePage},
	{method: http.MethodGet, path: "/examples/:file", public: true, handle: (*Server).exampleFile,
		params: []param{{name: "file", in: "path", schema: schema{"type": "string", "maxLength": 64}}}},
	{method: http.MethodGet, path: "/examples/vendor/:file", public: true, handle: (*Server).exampleFile,
		params: []param{{name: "file", in: "path", schema: schema{"type": "string", "maxLength": 64}}}},
}

// isSSRRoute reports whether path (a route template) is one of ssrRoutes.
func isSSRRoute(path string) bool {
	for _, o := range ssrRoutes {
		if o.path == path {
			return true
		}
	}
	return false
}

// isSSRPath reports whether a request's path belongs to the adapter, whose
// problems are HTML fragments.
func isSSRPath(p string) bool {
	return strings.HasPrefix(p, "/ssr/") || p == "/ssr" || strings.HasPrefix(p, "/examples/")
}

// ssrAuthenticate takes a bearer header or, failing that, the session
// cookie; both are checked as any bearer token is.
func (s *Server) ssrAuthenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header.Get(echo.HeaderAuthorization)
		if h == "" {
			ck, err := c.Cookie(ssrCookie)
			if err != nil || ck.Value == "" {
				return fail(codeUnauthorized, ssrCookie, "sign in first (POST /ssr/session with a token), or send Authorization: Bearer <token>")
			}
			p, prob := s.auth.principal("Bearer " + ck.Value)
			if prob != nil {
				prob.Field = ssrCookie
				prob.Detail = "the session is no longer valid (" + prob.Detail + "); sign in again"
				return prob
			}
			c.Set(principalKey, p)
			return next(c)
		}
		p, prob := s.auth.principal(h)
		if prob != nil {
			return prob
		}
		c.Set(principalKey, p)
		return next(c)
	}
}

// sameOrigin refuses a state-changing request a browser sent from another
// site: its Origin must be this server's (or absent: not a browser), and
// Sec-Fetch-Site, when sent, same-origin or none (typed in by the user).
func sameOrigin(c echo.Context) error {
	r := c.Request()
	if o := r.Header.Get("Origin"); o != "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		if u, err := url.Parse(o); err != nil || u.Scheme != scheme || u.Host != r.Host {
			return fail(codeForbidden, "Origin", "a request from %s may not change this server's session (Origin must be %s://%s)", quoteShort(o), scheme, r.Host)
		}
	}
	if v := r.Header.Get("Sec-Fetch-Site"); v != "" && v != "same-origin" && v != "none" {
		return fail(codeForbidden, "Sec-Fetch-Site", "a %s request may not change this server's session", quoteShort(v))
	}
	return nil
}

// ssrSignIn checks the form's token like any bearer token and keeps it in
// the session cookie until the token expires. The token never leaves in a
// body, a log line or an error.
func (s *Server) ssrSignIn(c echo.Context) error {
	if err := sameOrigin(c); err != nil {
		return err
	}
	r := c.Request()
	if ct := r.Header.Get(echo.HeaderContentType); !strings.HasPrefix(ct, echo.MIMEApplicationForm) && !strings.HasPrefix(ct, echo.MIMEMultipartForm) {
		return fail(codeUnsupported, "Content-Type", "send the token as a form (application/x-www-form-urlencoded), got %s", quoteShort(ct))
	}
	r.Body = http.MaxBytesReader(c.Response(), r.Body, maxSessionForm)
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fail(codeTooLarge, "body", "the form is more than %d bytes", maxSessionForm)
		}
		return fail(codeMalformed, "body", "the form does not parse: %v", err)
	}
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	if tok == "" {
		return fail(codeMalformed, "token", "the form field token is required (a bearer token: logline token create)")
	}
	p, prob := s.auth.principal("Bearer " + tok)
	if prob != nil {
		prob.Field = "token"
		return prob
	}
	var cl tokenClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &cl); err != nil || cl.ExpiresAt == nil {
		return fail(codeUnauthorized, "token", "the token has no expiry") // verified above, so not expected
	}
	exp := cl.ExpiresAt.Time
	c.SetCookie(&http.Cookie{Name: ssrCookie, Value: tok, Path: "/ssr", Expires: exp,
		MaxAge: max(1, int(time.Until(exp).Seconds())), HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	c.Set(principalKey, p)
	return s.renderPanel(c, p, exp)
}

// ssrWhoAmI answers the panel for the session (or header) in use.
func (s *Server) ssrWhoAmI(c echo.Context) error {
	return s.renderPanel(c, principal(c), time.Time{})
}

func (s *Server) ssrSignOut(c echo.Context) error {
	if err := sameOrigin(c); err != nil {
		return err
	}
	c.SetCookie(&http.Cookie{Name: ssrCookie, Value: "", Path: "/ssr", MaxAge: -1, Expires: time.Unix(0, 0),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.Request().TLS != nil})
	return c.Blob(http.StatusOK, mimeHTML, []byte(`<p class="signed-out">Signed out.</p>`))
}

func (s *Server) renderPanel(c echo.Context, p ledger.Principal, exp time.Time) error {
	until := ""
	if !exp.IsZero() {
		until = exp.UTC().Format(time.RFC3339)
	}
	return s.html(c, http.StatusOK, "panel", struct{ Tenant, User, Until string }{p.Tenant, p.User, until})
}

type ssrRow struct {
	Cursor string
	S      *span.Span
}

// ssrTimeline is /api/timeline's selection as <tr> rows, with a last row
// that loads the next page. Logline-Cursor names where a live stream
// should start so that it misses nothing listed after: the ledger's tail as
// read before the listing (a row may then come in both, once listed and
// once streamed; the example page drops the second by its cursor).
func (s *Server) ssrTimeline(c echo.Context) error {
	f, err := listing(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	tail, err := s.l.Tail(ctx)
	if err != nil {
		return err
	}
	pg, err := s.l.Query(ctx, principal(c), f)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	for i := range pg.Items {
		it := &pg.Items[i]
		if it.Span.IsDeleted {
			continue
		}
		if err := ssrTemplates.ExecuteTemplate(&buf, "row", ssrRow{it.Cursor.String(), &it.Span}); err != nil {
			return err
		}
	}
	if len(pg.Items) == f.Limit {
		q := c.QueryParams()
		q.Set("cursor", pg.Next.String())
		if err := ssrTemplates.ExecuteTemplate(&buf, "more", "/ssr/timeline?"+q.Encode()); err != nil {
			return err
		}
	}
	c.Response().Header().Set("Logline-Cursor", cursorID(tail))
	return c.Blob(http.StatusOK, mimeHTML, buf.Bytes())
}

// ssrStream is /api/timeline/stream with each span as a `span` event whose
// data is its row (deleted spans, which the timeline leaves out, send
// nothing).
func (s *Server) ssrStream(c echo.Context) error {
	return s.streamAs(c, renderRowEvent)
}

func renderRowEvent(ev *event) []byte {
	if ev.span.IsDeleted {
		return nil
	}
	var row bytes.Buffer
	cur := ev.cur.String()
	if err := ssrTemplates.ExecuteTemplate(&row, "row", ssrRow{cur, ev.span}); err != nil {
		return nil // a template bug; the tests render every field
	}
	return sseFrame("span", cur, row.String())
}

// sseFrame is one SSE event: data is cut at line breaks into one data:
// line each (the client joins them with \n; HTML reads CR and CRLF as LF
// anyway).
func sseFrame(name, id, data string) []byte {
	data = strings.ReplaceAll(strings.ReplaceAll(data, "\r\n", "\n"), "\r", "\n")
	out := make([]byte, 0, len(data)+len(id)+32)
	out = append(out, "event: "+name+"\nid: "+id+"\n"...)
	for line := range strings.SplitSeq(data, "\n") {
		out = append(out, "data: "...)
		out = append(out, line...)
		out = append(out, '\n')
	}
	return append(out, '\n')
}

type ssrField struct{ Name, Value string }

type ssrVersion struct {
	S      *span.Span
	Fields []ssrField
	Blocks []ssrField // code and JSON, preformatted
	Proofs []ssrField
}

// ssrSpan is every version of a span, oldest first, with its proofs.
func (s *Server) ssrSpan(c echo.Context) error {
	id, err := spanID(c)
	if err != nil {
		return err
	}
	versions, err := s.l.Get(c.Request().Context(), principal(c), id)
	if err != nil {
		return err
	}
	out := struct {
		ID       string
		Versions []ssrVersion
	}{ID: id}
	for i := range versions {
		out.Versions = append(out.Versions, describe(&versions[i]))
	}
	return s.html(c, http.StatusOK, "span", out)
}

func describe(sp *span.Span) ssrVersion {
	v := ssrVersion{S: sp}
	add := func(to *[]ssrField, name, value string) {
		if value != "" {
			*to = append(*to, ssrField{name, value})
		}
	}
	for _, f := range [][2]string{
		{"entity_type", sp.EntityType}, {"who", sp.Who}, {"did", sp.Did}, {"this", sp.This}, {"name", sp.Name},
		{"status", sp.Status}, {"visibility", sp.Visibility}, {"tenant_id", sp.TenantID}, {"owner_id", sp.OwnerID},
		{"parent_id", sp.ParentID}, {"related_to", strings.Join(sp.RelatedTo, ", ")}, {"trace_id", sp.TraceID},
		{"description", sp.Description}, {"language", sp.Language}, {"runtime", sp.Runtime},
	} {
		add(&v.Fields, f[0], f[1])
	}
	if sp.DurationMs != nil {
		add(&v.Fields, "duration_ms", strconv.Itoa(int(*sp.DurationMs)))
	}
	if sp.IsDeleted {
		add(&v.Fields, "is_deleted", "true")
	}
	add(&v.Blocks, "code", sp.Code)
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"input", sp.Input}, {"output", sp.Output}, {"error", sp.Error}, {"metadata", sp.Metadata}} {
		add(&v.Blocks, f.name, jsonText(f.raw))
	}
	for _, f := range [][2]string{{"curr_hash", sp.CurrHash}, {"prev_hash", sp.PrevHash}, {"signature", sp.Signature}, {"public_key", sp.PublicKey}} {
		add(&v.Proofs, f[0], f[1])
	}
	return v
}

// jsonText is raw indented for reading ("" for none or null).
func jsonText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return string(raw)
	}
	return buf.String()
}

// html renders a template as a fragment.
func (s *Server) html(c echo.Context, status int, name string, data any) error {
	var buf bytes.Buffer
	if err := ssrTemplates.ExecuteTemplate(&buf, name, data); err != nil {
		return err
	}
	return c.Blob(status, mimeHTML, buf.Bytes())
}

// ssrProblem renders a problem as an HTML fragment (errorHandler calls it
// for the adapter's paths): htmx swaps it where the answer was going.
func (s *Server) ssrProblem(c echo.Context, p *problem) {
	var buf bytes.Buffer
	if err := ssrTemplates.ExecuteTemplate(&buf, "problem", p); err != nil {
		s.log.Error("rendering a problem", "err", err)
		_ = c.NoContent(p.Status)
		return
	}
	_ = c.Blob(p.Status, mimeHTML, buf.Bytes())
}

func (s *Server) examplePage(c echo.Context) error {
	return s.serveExample(c, "examples/htmx.html")
}

func (s *Server) exampleFile(c echo.Context) error {
	dir := "examples"
	if strings.HasPrefix(c.Path(), "/examples/vendor/") {
		dir = "examples/vendor"
	}
	name := c.Param("file")
	if name == "" || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") || path.Ext(name) == ".html" {
		return fail(codeNotFound, "file", "no example file %s", quoteShort(name))
	}
	return s.serveExample(c, dir+"/"+name)
}

func (s *Server) serveExample(c echo.Context, name string) error {
	a := s.examples["/"+name]
	if a == nil {
		return fail(codeNotFound, "file", "no example file %s", quoteShort(path.Base(name)))
	}
	return serveAsset(c, a)
}

// shortID is an id's last 8 characters: ids are UUIDv7, whose leading
// characters are the time, the same for spans appended together.
func shortID(id string) string {
	if len(id) > 8 {
		return id[len(id)-8:]
	}
	return id
}

// label is what the timeline calls a span: its name, else its this.
func label(sp *span.Span) string {
	if sp.Name != "" {
		return sp.Name
	}
	return sp.This
}

// ssrTemplates are the fragments. html/template escapes every value for
// where it lands, so a span's text can never become markup. A row is one
// line (an SSE event carries it).
var ssrTemplates = template.Must(template.New("ssr").Funcs(template.FuncMap{"short": shortID, "label": label}).Parse(`
{{- define "row" -}}
<tr class="span-row" data-cursor="{{.Cursor}}" data-id="{{.S.ID}}"><td><time datetime="{{.S.At}}">{{.S.At}}</time></td><td>{{.S.EntityType}}</td><td>{{label .S}}</td><td>{{.S.Status}}</td><td>{{.S.Who}}</td><td><a href="/ssr/spans/{{.S.ID}}" hx-get="/ssr/spans/{{.S.ID}}" hx-target="#span-panel" hx-swap="innerHTML" title="{{.S.ID}}">{{short .S.ID}}</a></td></tr>
{{- end -}}

{{- define "more" -}}
<tr class="more"><td colspan="6"><button type="button" hx-get="{{.}}" hx-target="closest tr" hx-swap="outerHTML">Older spans</button></td></tr>
{{- end -}}

{{- define "span" -}}
<section class="span" data-id="{{.ID}}">
<h2>Span <code>{{.ID}}</code></h2>
{{- range .Versions}}
<article class="version" data-seq="{{.S.Seq}}">
<h3>seq {{.S.Seq}} · <time datetime="{{.S.At}}">{{.S.At}}</time></h3>
<dl class="fields">{{range .Fields}}<dt>{{.Name}}</dt><dd>{{.Value}}</dd>{{end}}</dl>
{{- range .Blocks}}
<h4>{{.Name}}</h4><pre class="{{.Name}}">{{.Value}}</pre>
{{- end}}
<dl class="proofs">{{range .Proofs}}<dt>{{.Name}}</dt><dd><code class="{{.Name}}">{{.Value}}</code></dd>{{end}}</dl>
</article>
{{- end}}
</section>
{{- end -}}

{{- define "panel" -}}
<p class="who">Signed in as <b class="user">{{.User}}</b> of <b class="tenant">{{.Tenant}}</b>{{if .Until}} until <time datetime="{{.Until}}">{{.Until}}</time>{{end}}.
<button type="button" hx-delete="/ssr/session" hx-target="#app">Sign out</button></p>
<div class="panes">
<table class="timeline">
<thead><tr><th>at</th><th>entity_type</th><th>name</th><th>status</th><th>who</th><th>id</th></tr></thead>
<tbody id="live" hx-ext="sse" sse-swap="span" hx-swap="afterbegin"></tbody>
<tbody id="rows" hx-get="/ssr/timeline" hx-trigger="load"></tbody>
</table>
<aside id="span-panel" aria-live="polite"><p class="hint">Choose an id to see the span.</p></aside>
</div>
{{- end -}}

{{- define "problem" -}}
<div class="problem" role="alert" data-status="{{.Status}}" data-code="{{.Code}}"><strong>{{.Title}}</strong>{{if .Field}} ({{.Field}}){{end}}: {{.Detail}}</div>
{{- end -}}
`))
