package api

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/browsertest"
	"github.com/logline/logline/host/ledger"
)

// form posts a form to POST /ssr/session.
func (b *bundle) signIn(t testing.TB, form url.Values, header map[string]string) reply {
	t.Helper()
	h := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	for k, v := range header {
		h[k] = v
	}
	return b.do(t, http.MethodPost, "/ssr/session", "", h, form.Encode())
}

func cookieHeader(tok string) map[string]string {
	return map[string]string{"Cookie": ssrCookie + "=" + tok}
}

// Fragments are HTML with every span value escaped: a name that is markup
// comes out as text, in the rows, the span fragment and the problem.
func TestSSRFragmentsEscape(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	evil := `<script>alert("x")</script>`
	sp := note(evil, "tenant")
	sp.Metadata = []byte(`{"html":"<img src=x onerror=alert(1)>"}`)
	stored := b.appendAs(t, ledger.User("acme", "alice"), sp)[0]

	r := b.do(t, http.MethodGet, "/ssr/timeline", tok, nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	require.Equal(t, "text/html; charset=utf-8", r.header.Get("Content-Type"))
	body := string(r.body)
	require.NotContains(t, body, "<script")
	require.Contains(t, body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;")
	require.Contains(t, body, `hx-get="/ssr/spans/`+stored.ID+`"`)
	require.Contains(t, body, `>`+stored.ID[len(stored.ID)-8:]+`</a>`, "the short id is the random end of a UUIDv7")
	require.Regexp(t, `^\d+\.\d+$`, r.header.Get("Logline-Cursor"))

	r = b.do(t, http.MethodGet, "/ssr/spans/"+stored.ID, tok, nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	body = string(r.body)
	require.NotContains(t, body, "<script")
	require.NotContains(t, body, "<img")
	require.Contains(t, body, "&lt;img src=x onerror=alert(1)&gt;")
	for _, want := range []string{stored.CurrHash, stored.Signature, stored.PublicKey, `data-seq="0"`} {
		require.Contains(t, body, want)
	}

	// Problems are fragments too, and escape what they quote.
	r = b.do(t, http.MethodGet, "/ssr/timeline?visibility=%3Cb%3E", tok, nil, nil)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, "text/html; charset=utf-8", r.header.Get("Content-Type"))
	require.Contains(t, string(r.body), `role="alert"`)
	require.Contains(t, string(r.body), "&lt;b&gt;")
	require.NotContains(t, string(r.body), "<b>")
	r = b.do(t, http.MethodGet, "/ssr/spans/nope", tok, nil, nil)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Contains(t, string(r.body), `data-code="malformed"`)
}

// A page past the limit ends with a row that loads the next one.
func TestSSRTimelinePages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	for _, n := range []string{"one", "two", "three"} {
		b.appendAs(t, ledger.User("acme", "alice"), note(n, "tenant"))
	}
	r := b.do(t, http.MethodGet, "/ssr/timeline?limit=2&entity_type=note", tok, nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	require.Equal(t, 2, strings.Count(string(r.body), `class="span-row"`))
	m := regexp.MustCompile(`hx-get="(/ssr/timeline\?[^"]+)"`).FindStringSubmatch(string(r.body))
	require.NotNil(t, m, "%s", r.body)
	next := strings.ReplaceAll(m[1], "&amp;", "&")
	require.Contains(t, next, "entity_type=note")
	r = b.do(t, http.MethodGet, next, tok, nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	require.Contains(t, string(r.body), ">one<")
	require.NotContains(t, string(r.body), `class="more"`)
}

// The session: a form token sets an HttpOnly, SameSite=Strict cookie for
// /ssr that expires with the token; /ssr takes it, /api never does; a bad
// token, a missing one or another site's form sets nothing.
func TestSSRSession(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	before := b.rows(t)

	r := b.signIn(t, url.Values{"token": {tok}}, map[string]string{"Origin": b.url, "Sec-Fetch-Site": "same-origin"})
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	require.Contains(t, string(r.body), `<b class="user">alice</b>`)
	require.Contains(t, string(r.body), `hx-get="/ssr/timeline"`)
	require.NotContains(t, string(r.body), tok, "the token never comes back in a body")
	cookies := (&http.Response{Header: r.header}).Cookies()
	require.Len(t, cookies, 1)
	ck := cookies[0]
	require.Equal(t, ssrCookie, ck.Name)
	require.Equal(t, tok, ck.Value)
	require.Equal(t, "/ssr", ck.Path)
	require.True(t, ck.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, ck.SameSite)
	require.False(t, ck.Secure, "plain HTTP: a Secure cookie would never come back")
	require.WithinDuration(t, time.Now().Add(time.Hour), ck.Expires, 5*time.Second, "the token's expiry")

	// Under TLS the cookie is Secure (and the page's origin is https).
	req := httptest.NewRequest(http.MethodPost, "https://logline.example/ssr/session", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://logline.example")
	rec := httptest.NewRecorder()
	b.srv.e.ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code, "%s", rec.Body)
	require.Len(t, rec.Result().Cookies(), 1)
	require.True(t, rec.Result().Cookies()[0].Secure)

	r = b.do(t, http.MethodGet, "/ssr/timeline", "", cookieHeader(tok), nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	r = b.do(t, http.MethodGet, "/ssr/session", "", cookieHeader(tok), nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, string(r.body), `<b class="tenant">acme</b>`)

	// The JSON API never takes the cookie.
	for _, path := range []string{"/api/spans", "/api/timeline", "/api/timeline/stream"} {
		r = b.do(t, http.MethodGet, path, "", cookieHeader(tok), nil)
		require.Equal(t, http.StatusUnauthorized, r.status, path)
	}
	r = b.do(t, http.MethodPost, "/api/spans", "", map[string]string{"Cookie": ssrCookie + "=" + tok}, note("n", "tenant"))
	require.Equal(t, http.StatusUnauthorized, r.status)

	// Refused, and no cookie set.
	for name, c := range map[string]struct {
		form   url.Values
		header map[string]string
		status int
		field  string
	}{
		"bad token":                    {url.Values{"token": {tok[:len(tok)-4] + "AAAA"}}, nil, http.StatusUnauthorized, "token"},
		"garbage":                      {url.Values{"token": {"not-a-token"}}, nil, http.StatusUnauthorized, "token"},
		"no token":                     {url.Values{}, nil, http.StatusBadRequest, "token"},
		"another site":                 {url.Values{"token": {tok}}, map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden, "Origin"},
		"another port":                 {url.Values{"token": {tok}}, map[string]string{"Origin": "http://127.0.0.1:1"}, http.StatusForbidden, "Origin"},
		"cross-site fetch":             {url.Values{"token": {tok}}, map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden, "Sec-Fetch-Site"},
		"JSON, not a form":             {nil, map[string]string{"Content-Type": "application/json"}, http.StatusUnsupportedMediaType, "Content-Type"},
		"Origin null (iframe sandbox)": {url.Values{"token": {tok}}, map[string]string{"Origin": "null"}, http.StatusForbidden, "Origin"},
	} {
		r := b.signIn(t, c.form, c.header)
		require.Equal(t, c.status, r.status, "%s: %s", name, r.body)
		require.Empty(t, r.header.Values("Set-Cookie"), name)
		require.Contains(t, string(r.body), "("+c.field+")", name)
		require.Contains(t, string(r.body), `role="alert"`, name)
		require.NotContains(t, string(r.body), tok[20:], "%s: the token is not echoed", name)
	}

	// Without a session or with a forged one: 401 fragments.
	r = b.do(t, http.MethodGet, "/ssr/timeline", "", nil, nil)
	require.Equal(t, http.StatusUnauthorized, r.status)
	require.Contains(t, string(r.body), "("+ssrCookie+")")
	r = b.do(t, http.MethodGet, "/ssr/timeline", "", cookieHeader("x.y.z"), nil)
	require.Equal(t, http.StatusUnauthorized, r.status)
	require.Contains(t, string(r.body), "sign in again")

	// Signing out clears it (and is refused from another site).
	r = b.do(t, http.MethodDelete, "/ssr/session", "", map[string]string{"Origin": "https://evil.example"}, nil)
	require.Equal(t, http.StatusForbidden, r.status)
	require.Empty(t, r.header.Values("Set-Cookie"))
	for _, m := range []string{http.MethodDelete, http.MethodPost} {
		path := "/ssr/session"
		if m == http.MethodPost {
			path += "/end"
		}
		r = b.do(t, m, path, "", cookieHeader(tok), nil)
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		cookies = (&http.Response{Header: r.header}).Cookies()
		require.Len(t, cookies, 1)
		require.Equal(t, ssrCookie, cookies[0].Name)
		require.Empty(t, cookies[0].Value)
		require.Less(t, cookies[0].MaxAge, 0)
		require.Equal(t, "/ssr", cookies[0].Path)
	}
	require.Equal(t, before, b.rows(t), "nothing of the session is written")
}

// ssrEvent is one event of /ssr/timeline/stream.
type ssrEvent struct{ name, id, data string }

// ssrSubscribe opens /ssr/timeline/stream with header (a cookie or a
// bearer) and reads its events on a goroutine.
func (b *bundle) ssrSubscribe(t testing.TB, header map[string]string, query string) <-chan ssrEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.url+"/ssr/timeline/stream"+query, nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := b.client.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: %d %s", resp.StatusCode, raw)
	}
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	out := make(chan ssrEvent, 1000)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		var ev ssrEvent
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" || ev.id != "" || data != nil {
					ev.data = strings.Join(data, "\n")
					out <- ev
				}
				ev, data = ssrEvent{}, nil
			case strings.HasPrefix(line, ":"), strings.HasPrefix(line, "retry: "):
			case strings.HasPrefix(line, "event: "):
				ev.name = line[7:]
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "data: "):
				data = append(data, line[6:])
			default:
				out <- ssrEvent{name: "bad line", data: line}
				return
			}
		}
	}()
	return out
}

func nextSSR(t testing.TB, ch <-chan ssrEvent) ssrEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		require.True(t, ok, "the stream ended")
		require.NotEqual(t, "bad line", ev.name, "%s", ev.data)
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no event in 30s")
	}
	return ssrEvent{}
}

// An event's data is one data: line per line (span fields cannot hold line
// breaks, but a row's HTML is not held to that).
func TestSSRFrame(t *testing.T) {
	t.Parallel()
	require.Equal(t, "event: span\nid: 1.2\ndata: a\ndata: b\ndata: c\ndata: \ndata: d\n\n", string(sseFrame("span", "1.2", "a\nb\r\nc\r\rd")))
	require.Equal(t, "event: span\nid: 1.2\ndata: <tr></tr>\n\n", string(sseFrame("span", "1.2", "<tr></tr>")))
}

// The live timeline: span events whose data is the row (escaped), ids the cursors, resumable with
// Last-Event-ID; deleted spans send nothing.
func TestSSRStream(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	alice := ledger.User("acme", "alice")
	evs := b.ssrSubscribe(t, cookieHeader(tok), "?entity_type=note")
	start := nextSSR(t, evs)
	require.Empty(t, start.name)
	require.NotEmpty(t, start.id, "the stream opens with its position")

	first := b.appendAs(t, alice, note("line <two> & \"three\"", "tenant"))[0]
	ev := nextSSR(t, evs)
	require.Equal(t, "span", ev.name)
	require.Regexp(t, `^\d+\.\d+$`, ev.id)
	require.True(t, strings.HasPrefix(ev.data, `<tr class="span-row" data-cursor="`+ev.id+`" data-id="`+first.ID+`">`), "%s", ev.data)
	require.Contains(t, ev.data, "line &lt;two&gt; &amp; &#34;three&#34;")
	require.True(t, strings.HasSuffix(ev.data, "</tr>"), "%s", ev.data)
	firstID := ev.id

	del := first
	del.Seq, del.IsDeleted = 1, true
	del.At, del.PrevHash, del.CurrHash, del.Signature, del.PublicKey = "", "", "", "", ""
	b.appendAs(t, alice, del)
	second := b.appendAs(t, alice, note("second", "tenant"))[0]
	ev = nextSSR(t, evs)
	require.Contains(t, ev.data, `data-id="`+second.ID+`"`, "the deletion sent nothing: %s", ev.data)

	// Resume after the first event: the deletion is passed over, the
	// second span comes again.
	resumed := b.ssrSubscribe(t, map[string]string{"Authorization": "Bearer " + tok, "Last-Event-ID": firstID}, "?entity_type=note")
	ev = nextSSR(t, resumed)
	require.Equal(t, "span", ev.name)
	require.Contains(t, ev.data, `data-id="`+second.ID+`"`)
}

// Row-level security holds on every fragment: tenant B's session never
// sees A's private span — not listed, a 404 fragment by id, not streamed.
func TestSSRRowLevelSecurity(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a, bob := ledger.User("a", "alice"), ledger.User("b", "bob")
	secret := b.appendAs(t, a, note("a-secret", "private"))[0]
	bobTok := b.token(t, "b", "bob")
	r := b.signIn(t, url.Values{"token": {bobTok}}, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	ck := cookieHeader(bobTok)

	b.appendAs(t, bob, note("b-own", "tenant"))
	r = b.do(t, http.MethodGet, "/ssr/timeline", "", ck, nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, string(r.body), "b-own")
	require.NotContains(t, string(r.body), "a-secret")
	require.NotContains(t, string(r.body), secret.ID)

	r = b.do(t, http.MethodGet, "/ssr/spans/"+secret.ID, "", ck, nil)
	require.Equal(t, http.StatusNotFound, r.status)
	require.Equal(t, "text/html; charset=utf-8", r.header.Get("Content-Type"))
	require.Contains(t, string(r.body), `data-code="not_found"`)
	require.NotContains(t, string(r.body), "a-secret")
	// A, the owner, sees it.
	r = b.do(t, http.MethodGet, "/ssr/spans/"+secret.ID, b.token(t, "a", "alice"), nil, nil)
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, string(r.body), "a-secret")

	// The stream from the start: B's own span comes, A's never does (it
	// was appended first, and again live before B's second one).
	evs := b.ssrSubscribe(t, ck, "?cursor=0.0")
	b.appendAs(t, a, note("a-secret-live", "private"))
	b.appendAs(t, bob, note("b-live", "tenant"))
	var got []string
	for len(got) == 0 || !strings.Contains(got[len(got)-1], "b-live") {
		ev := nextSSR(t, evs)
		if ev.name == "span" {
			got = append(got, ev.data)
		}
	}
	all := strings.Join(got, "\n")
	require.Contains(t, all, "b-own")
	require.NotContains(t, all, "a-secret")
}

// The example page: served with a CSP allowing only its own scripts, none
// of them inline, htmx configured without eval.
func TestSSRExamplePage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.do(t, http.MethodGet, "/examples/htmx", "", nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	require.Equal(t, "text/html; charset=utf-8", r.header.Get("Content-Type"))
	csp := r.header.Get("Content-Security-Policy")
	require.Contains(t, csp, "script-src 'self';")
	require.NotContains(t, csp, "unsafe")
	page := string(r.body)
	scripts := regexp.MustCompile(`<script[^>]*>`).FindAllString(page, -1)
	require.Len(t, scripts, 3)
	for _, s := range scripts {
		m := regexp.MustCompile(`src="(/examples/[^"]+)"`).FindStringSubmatch(s)
		require.NotNil(t, m, "inline script %s", s)
		js := b.do(t, http.MethodGet, m[1], "", nil, nil)
		require.Equal(t, http.StatusOK, js.status, m[1])
		require.Equal(t, "text/javascript; charset=utf-8", js.header.Get("Content-Type"))
	}
	require.NotRegexp(t, `<script[^>]*>[^<]`, page, "no inline script")
	require.Contains(t, page, `"allowEval":false`)
	require.Contains(t, page, `hx-post="/ssr/session"`)
	for _, p := range []string{"/examples/nope.js", "/examples/htmx.html", "/examples/vendor/..%2fhtmx.html", "/examples/vendor/SHA256SUMS"} {
		r = b.do(t, http.MethodGet, p, "", nil, nil)
		require.Equal(t, http.StatusNotFound, r.status, p)
	}
}

// The vendored htmx files are the ones tools/htmx/vendor.sh checked in:
// each matches SHA256SUMS, and nothing else is vendored.
func TestVendoredHTMX(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../tools/htmx/SHA256SUMS")
	require.NoError(t, err)
	sums := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		require.True(t, ok, "SHA256SUMS line %q", line)
		sums[name] = sum
	}
	entries, err := fs.ReadDir(examplesFS, "examples/vendor")
	require.NoError(t, err)
	require.Len(t, entries, 3)
	for _, e := range entries {
		want, ok := sums[e.Name()]
		require.True(t, ok, "%s is vendored but not in SHA256SUMS", e.Name())
		b, err := fs.ReadFile(examplesFS, "examples/vendor/"+e.Name())
		require.NoError(t, err)
		got := sha256.Sum256(b)
		require.Equal(t, want, hex.EncodeToString(got[:]), "%s differs from what tools/htmx/vendor.sh vendored", e.Name())
	}
	htmx, err := fs.ReadFile(examplesFS, "examples/vendor/htmx.min.js")
	require.NoError(t, err)
	require.Contains(t, string(htmx), `version:"2.0.`)
}

// waitJS polls js in the page until it is true (a loaded machine may take a
// while to swap or to stream; the tab's context bounds it).
func waitJS(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		require.NoError(t, err, "waiting for %s", what)
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// The example page in Chromium: sign in through the form, the rows load,
// a span appended through the ledger appears live over SSE, and choosing
// its id shows the span fragment — under the page's CSP, with no
// violation.
func TestSSRExamplePageInChromium(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := ledger.User("acme", "alice")
	b.appendAs(t, alice, note("listed <first>", "tenant"))
	ctx := browsertest.New(t, 3*time.Minute)

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(b.url+"/examples/htmx")))
	// Collect CSP violations from now on (the page's own scripts ran;
	// everything htmx swaps in comes after).
	_, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.cspViolations = [];
		document.addEventListener("securitypolicyviolation", (e) => cspViolations.push(e.violatedDirective + " " + e.blockedURI)); true`))
	require.NoError(t, err)
	waitJS(t, ctx, "htmx and its SSE extension", `typeof htmx === "object" && htmx.version.startsWith("2.0.") && !!document.querySelector("#signin")`)

	require.NoError(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#token"), b.token(t, "acme", "alice")),
		chromedp.Click(chromedp.CSS("#signin button"))))
	waitJS(t, ctx, "the listed row", `[...document.querySelectorAll("#rows tr.span-row")].some((r) => r.textContent.includes("listed <first>"))`)
	waitJS(t, ctx, "the live stream connected", `!!document.querySelector("#live[sse-connect]") && !!htmx.find("#live")`)
	who, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(".who b.user")))
	require.NoError(t, err)
	require.Equal(t, "alice", who)
	token, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("token").value`))
	require.NoError(t, err)
	require.Empty(t, token, "the form forgets the token once signed in")
	cookie, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`))
	require.NoError(t, err)
	require.NotContains(t, cookie, ssrCookie, "HttpOnly: no script reads the session")

	// Live: a span appended now comes over SSE as a row, once. The stream
	// starts from the tail read before the listing, so even a span that
	// commits before its connection is up comes.
	live := b.appendAs(t, alice, note("live <second>", "tenant"))[0]
	waitJS(t, ctx, "the live row", `!!document.querySelector('#live tr[data-id="`+live.ID+`"]')`)
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('tr[data-id="`+live.ID+`"]').length`))
	require.NoError(t, err)
	require.Equal(t, 1, n, "the span is on the page once")
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#live tr[data-id="`+live.ID+`"]`)))
	require.NoError(t, err)
	require.Contains(t, text, "live <second>")

	// Choosing its id loads the span fragment into the panel.
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#live tr[data-id="`+live.ID+`"] a`))))
	waitJS(t, ctx, "the span fragment", `!!document.querySelector('#span-panel section.span[data-id="`+live.ID+`"]')`)
	hint, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#span-panel .hint").length`))
	require.NoError(t, err)
	require.Zero(t, hint, "the fragment replaces the panel's content (the live rows' afterbegin is not inherited)")
	hash, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#span-panel code.curr_hash`)))
	require.NoError(t, err)
	require.Equal(t, live.CurrHash, hash)
	browsertest.Screenshot(t, ctx, "htmx")

	violations, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`cspViolations`))
	require.NoError(t, err)
	require.Empty(t, violations, "the page keeps to its CSP")
}
