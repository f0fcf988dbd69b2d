package api

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/api/console"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

// The console (host/api/console) is static: index.html and hashed assets.
// It gets no privilege of its own: it calls the API with the token its
// user signed in with, and row-level security decides what it shows.

// consoleCSP allows the console's own files and nothing else: no inline
// script or style, no other origin, no framing.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset is one embedded file, with its gzip form made once at start.
type asset struct {
	body, gz []byte
	ctype    string
	etag     string
	csp      string
	hashed   bool // the name carries a content hash: cache it for good
}

// loadAssets reads every file of fsys (the embedded console, the
// examples), each to be served under csp.
func loadAssets(fsys fs.FS, csp string) (map[string]*asset, error) {
	out := map[string]*asset{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		var gz bytes.Buffer
		w, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		_, _ = w.Write(b)
		_ = w.Close()
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = "application/octet-stream"
		}
		out["/"+p] = &asset{body: b, gz: gz.Bytes(), ctype: ct, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`,
			csp: csp, hashed: strings.HasPrefix(p, "assets/")}
		return nil
	})
	return out, err
}

// serveAsset answers GET/HEAD for an embedded file: gzip when the client
// takes it, its CSP and nosniff on every answer, a revalidation for
// index.html and year-long caching for the hashed assets.
func serveAsset(c echo.Context, a *asset) error {
	h := c.Response().Header()
	h.Set("Content-Security-Policy", a.csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set(echo.HeaderVary, echo.HeaderAcceptEncoding)
	h.Set("ETag", a.etag)
	if a.hashed {
		h.Set(echo.HeaderCacheControl, "public, max-age=31536000, immutable")
	} else {
		h.Set(echo.HeaderCacheControl, "no-cache")
	}
	if c.Request().Header.Get("If-None-Match") == a.etag {
		return c.NoContent(http.StatusNotModified)
	}
	body := a.body
	if acceptsGzip(c.Request().Header.Get(echo.HeaderAcceptEncoding)) {
		h.Set(echo.HeaderContentEncoding, "gzip")
		body = a.gz
	}
	return c.Blob(http.StatusOK, a.ctype, body)
}

func acceptsGzip(ae string) bool {
	for part := range strings.SplitSeq(ae, ",") {
		name, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") {
			q = strings.TrimSpace(q)
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}

// consoleRoutes are the console's files: not API operations, so not in
// the route table or the OpenAPI document.
var consoleRoutes = []string{"/", "/assets/*"}

// registerConsole serves the console at / (index.html) and /assets/.
func (s *Server) registerConsole(e *echo.Echo) error {
	assets, err := loadAssets(console.Assets(), consoleCSP)
	if err != nil {
		return fmt.Errorf("api: reading the console's assets: %w", err)
	}
	index := assets["/index.html"]
	if index == nil {
		return fmt.Errorf("api: the console has no index.html (run make console)")
	}
	e.GET(consoleRoutes[0], func(c echo.Context) error { return serveAsset(c, index) })
	e.GET(consoleRoutes[1], func(c echo.Context) error {
		a := assets[c.Request().URL.Path]
		if a == nil {
			return fail(codeNotFound, "path", "no such asset")
		}
		return serveAsset(c, a)
	})
	return nil
}

// Sign-in links. `logline dev` prints a link to the console carrying a
// one-time code in the URL fragment: the fragment never reaches a server
// (no log line has it), the console drops it from the address bar and
// history at once, and trades it here for the token, once. The code lives
// in this process's memory only, for signinTTL.
const (
	signinTTL     = 15 * time.Minute
	maxSignins    = 64
	signinCodeLen = 32 // bytes of randomness, base64url
)

type signins struct {
	mu    sync.Mutex
	codes map[string]signin
}

type signin struct {
	token   string
	expires time.Time
}

// SigninLink makes a one-time code that POST /api/signin trades for token
// within 15 minutes, and returns the console URL path that carries it
// ("/#signin=CODE"). The token is checked as any bearer token is when the
// console uses it.
func (s *Server) SigninLink(token string) (string, error) {
	b := make([]byte, signinCodeLen)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	code := base64.RawURLEncoding.EncodeToString(b)
	now := s.cfg.Now()
	s.signins.mu.Lock()
	defer s.signins.mu.Unlock()
	if s.signins.codes == nil {
		s.signins.codes = map[string]signin{}
	}
	for k, v := range s.signins.codes {
		if now.After(v.expires) {
			delete(s.signins.codes, k)
		}
	}
	if len(s.signins.codes) >= maxSignins {
		return "", fmt.Errorf("api: %d sign-in links are open; use one or wait %s", maxSignins, signinTTL)
	}
	s.signins.codes[code] = signin{token: token, expires: now.Add(signinTTL)}
	return "/#signin=" + code, nil
}

var signinFields = []string{"code"}

func (s *Server) signin(c echo.Context) error {
	if _, err := mediaType(c, mimeJSON); err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	members, prob := strictObject(body, signinFields, `{"code": "<the code of the sign-in link>"}`)
	if prob != nil {
		return prob
	}
	code := ""
	if v := members["code"]; v != nil && !isNull(v) {
		if code, prob = jsonString("code", v); prob != nil {
			return prob
		}
	}
	if code == "" {
		return fail(codeInvalid, "code", "code is required")
	}
	s.signins.mu.Lock()
	in, ok := s.signins.codes[code]
	delete(s.signins.codes, code) // once, whatever happens next
	s.signins.mu.Unlock()
	if !ok || s.cfg.Now().After(in.expires) {
		return fail(codeUnauthorized, "code", "this sign-in link was used already or has expired; paste a token instead")
	}
	p, perr := s.auth.principal("Bearer " + in.token)
	if perr != nil {
		return perr
	}
	return writeJSON(c, http.StatusOK, mimeJSON, signinResult{Token: in.token, Tenant: p.Tenant, User: p.User})
}

type signinResult struct {
	Token  string `json:"token"`
	Tenant string `json:"tenant"`
	User   string `json:"user"`
}

// whoami answers the principal of the token: the console's sign-in check.
func (s *Server) whoami(c echo.Context) error {
	p := principal(c)
	return writeJSON(c, http.StatusOK, mimeJSON, struct {
		Tenant string `json:"tenant"`
		User   string `json:"user"`
	}{p.Tenant, p.User})
}

// status is the process as the principal may see it: the version, how the
// stream follows the ledger, and the engine's loops for the principal's
// tenant only.
func (s *Server) status(c echo.Context) error {
	notify := "down"
	if s.listening.Load() {
		notify = "listening"
		if s.polling.Load() {
			notify = "polling"
		}
	}
	out := struct {
		Version       string `json:"version"`
		ABI           int    `json:"abi_version"`
		Notifications string `json:"notifications"`
		Engine        any    `json:"engine"`
	}{Version: s.cfg.Version, ABI: abi.Version, Notifications: notify}
	if s.cfg.EngineStatus != nil {
		out.Engine = s.cfg.EngineStatus(principal(c).Tenant)
	}
	return writeJSON(c, http.StatusOK, mimeJSON, out)
}

// manifest answers the latest manifest, when the principal may read it
// (the seeded one is public).
func (s *Server) manifest(c echo.Context) error {
	m, err := s.l.Latest(c.Request().Context(), principal(c), stage0.ManifestID)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, mimeJSON, m)
}

// executionSeries is GET /api/metrics/hourly: ledger.ExecutionSeries.
func (s *Server) executionSeries(c echo.Context) error {
	hours := 48
	if v := c.QueryParam("hours"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > ledger.MaxSeriesHours {
			return fail(codeMalformed, "hours", "hours must be an integer from 1 to %d, got %q", ledger.MaxSeriesHours, v)
		}
		hours = n
	}
	since := time.Now().UTC().Truncate(time.Hour).Add(-time.Duration(hours-1) * time.Hour)
	hs, err := s.l.ExecutionSeries(c.Request().Context(), principal(c), since)
	if err != nil {
		return err
	}
	type hour struct {
		Hour    string           `json:"hour"`
		Counts  map[string]int64 `json:"counts"`
		P50Ms   *float64         `json:"p50_ms"`
		P95Ms   *float64         `json:"p95_ms"`
		FuelP50 *float64         `json:"fuel_p50"`
		FuelP95 *float64         `json:"fuel_p95"`
		Fuel    int64            `json:"fuel"`
	}
	out := struct {
		Since string `json:"since"`
		Hours []hour `json:"hours"`
	}{Since: span.FormatTime(since), Hours: []hour{}}
	for _, h := range hs {
		out.Hours = append(out.Hours, hour{span.FormatTime(h.Hour), h.Counts, h.P50Ms, h.P95Ms, h.FuelP50, h.FuelP95, h.Fuel})
	}
	return writeJSON(c, http.StatusOK, mimeJSON, out)
}

// verifyLedger verifies the next page of the spans the principal may read,
// in commit order: the console's "verify the ledger", a page at a time so
// a big tenant never holds one request for minutes.
func (s *Server) verifyLedger(c echo.Context) error {
	// Every span, the engine's bookkeeping too: all of it is ledger.
	f := ledger.Filter{Limit: ledger.MaxLimit}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > ledger.MaxLimit {
			return fail(codeMalformed, "limit", "limit must be an integer from 1 to %d, got %q", ledger.MaxLimit, v)
		}
		f.Limit = n
	}
	if v := c.QueryParam("cursor"); v != "" {
		cur, err := ledger.ParseCursor(v)
		if err != nil {
			return fail(codeMalformed, "cursor", "%q is not a cursor this API returned", v)
		}
		f.After = cur
	}
	ctx := c.Request().Context()
	p := principal(c)
	page, err := s.l.Query(ctx, p, f)
	if err != nil {
		return err
	}
	out := struct {
		OK       bool             `json:"ok"`
		Checked  int              `json:"checked"`
		Signed   int              `json:"signed"`
		Failures []ledger.Failure `json:"failures"`
		Next     string           `json:"next"`
		More     bool             `json:"more"`
	}{OK: true, Failures: []ledger.Failure{}, Next: page.Next.String(), More: len(page.Items) == f.Limit}
	if len(page.Items) > 0 {
		rep, err := s.l.Verify(ctx, p, ledger.Scope{After: f.After, Until: page.Next})
		if err != nil {
			return err
		}
		out.OK, out.Checked, out.Signed = rep.OK(), rep.Checked, rep.Signed
		out.Failures = append(out.Failures, rep.Failures...)
	} else if f.After != (ledger.Cursor{}) {
		out.Next = f.After.String()
	}
	return writeJSON(c, http.StatusOK, mimeJSON, out)
}

// promptFamilies is GET /api/prompts: the families the principal's tenant
// has variants of (its own and the operator's stock), with how many.
func (s *Server) promptFamilies(c echo.Context) error {
	out, err := ReadPromptFamilies(c.Request().Context(), s.l, principal(c))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, mimeJSON, struct {
		Families []FamilyCount `json:"families"`
	}{out})
}

// FamilyCount is a prompt family and how many live variants it has.
type FamilyCount struct {
	Family   string `json:"family"`
	Variants int    `json:"variants"`
}

// MaxFamilies bounds GET /api/prompts.
const MaxFamilies = 500

// familiesSQL: the variants familyVariantsSQL reads, of every family.
const familiesSQL = `WITH stock AS (
    SELECT tenant_id FROM ledger.universal_registry WHERE id = $2 AND seq = 0
  ), cand AS (
    SELECT h.id, h.seq FROM ledger.heads h WHERE h.tenant_id = $1 AND h.entity_type = 'prompt_variant'
    UNION
    (SELECT DISTINCT ON (u.id) u.id, u.seq FROM ledger.universal_registry u JOIN stock ON u.tenant_id = stock.tenant_id
      WHERE stock.tenant_id <> $1 AND u.entity_type = 'prompt_variant' ORDER BY u.id, u.seq DESC)
  )
  SELECT v.metadata->>'family', count(*)
  FROM cand JOIN ledger.universal_registry v ON v.id = cand.id AND v.seq = cand.seq
  WHERE v.entity_type = 'prompt_variant' AND NOT v.is_deleted AND jsonb_typeof(v.metadata->'family') = 'string'
  GROUP BY 1 ORDER BY 1 LIMIT $3`

// ReadPromptFamilies lists the families of the variants that serve p's
// tenant and p may read (as ReadPromptFamily reads one), by name.
func ReadPromptFamilies(ctx context.Context, l *ledger.Ledger, p ledger.Principal) ([]FamilyCount, error) {
	out := []FamilyCount{}
	err := l.InTx(ctx, p, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, familiesSQL, p.Tenant, stage0.ManifestID, MaxFamilies)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var f FamilyCount
			if err := rows.Scan(&f.Family, &f.Variants); err != nil {
				return err
			}
			if ValidFamily(f.Family) {
				out = append(out, f)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("error reading prompt families: %w", err)
	}
	return out, nil
}
