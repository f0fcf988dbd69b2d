package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/api"
	"github.com/logline/logline/host/browsertest"
	"github.com/logline/logline/host/span"
)

// The console is tested in a real headless Chromium against a real
// `logline dev` (its engine on): what a user clicks, the browser does.

var consoleLine = regexp.MustCompile(`(?m)^console (http://\S+)$`)

// consoleDev is a running `logline dev` and what it printed.
type consoleDev struct {
	info devInfo
	link string // the one-time sign-in link
	out  *syncBuffer
	errb *syncBuffer
}

func startConsoleDev(t testing.TB) *consoleDev {
	t.Helper()
	url := testPG.TestDatabase(t, "console")
	data := t.TempDir()
	out, errb, _, _ := startCmdErr(t, map[string]string{"DATABASE_URL": url}, consoleLine, "dev", "--data", data, "--addr", "127.0.0.1:0")
	d := &consoleDev{info: readDevInfo(t, data), out: out, errb: errb}
	d.link = consoleLine.FindStringSubmatch(out.String())[1]
	return d
}

// token is a token of the dev node key for another principal.
func (d *consoleDev) token(t testing.TB, tenant, user string) string {
	t.Helper()
	key, err := span.LoadKey(d.info.KeyFile)
	require.NoError(t, err)
	tok, err := api.IssueToken(key, tenant, user, time.Hour, time.Now())
	require.NoError(t, err)
	return tok
}

// post appends a span through the API as token and returns it.
func (d *consoleDev) post(t testing.TB, token, body string) span.Span {
	t.Helper()
	code, raw := call(t, http.MethodPost, d.info.URL+"/api/spans", token, body)
	require.Equal(t, http.StatusCreated, code, raw)
	var s span.Span
	require.NoError(t, json.Unmarshal([]byte(raw), &s))
	return s
}

// tab is one browser tab on the console.
type tab struct {
	t   testing.TB
	ctx context.Context
}

func newTab(t testing.TB) *tab {
	b := &tab{t: t, ctx: browsertest.New(t, 5*time.Minute)}
	// The page's uncaught errors, for the failure messages of waitFor.
	b.addInitScript(`window.__errors = [];
		addEventListener("error", (e) => __errors.push(String(e.message)));
		addEventListener("unhandledrejection", (e) => __errors.push(String(e.reason && (e.reason.stack || e.reason))));`)
	return b
}

func (b *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	require.NoError(b.t, chromedp.Do(b.ctx, actions...))
}

func eval[T any](b *tab, js string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](js))
	require.NoError(b.t, err, js)
	return v
}

// waitFor polls a JavaScript condition in the page until it is true and
// returns how long that took.
func (b *tab) waitFor(what, js string, timeout time.Duration) time.Duration {
	b.t.Helper()
	start := time.Now()
	for {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool]("!!("+js+")"))
		if err == nil && ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			body, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
			errs, _ := chromedp.Run(b.ctx, chromedp.Evaluate[[]string]("window.__errors || []"))
			loc, _ := chromedp.Run(b.ctx, chromedp.Location())
			browsertest.Screenshot(b.t, b.ctx, "console-failed-"+strings.ReplaceAll(b.t.Name(), "/", "-"))
			b.t.Fatalf("waited %s for %s (%s); err %v; at %s the page's errors: %q; the page says:\n%s", timeout, what, js, err, loc, errs, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// input types into a field the way a user does: the value, then an input
// event (preact listens for it).
func (b *tab) input(sel, value string) {
	b.t.Helper()
	js := fmt.Sprintf(`(() => { const el = document.querySelector(%q); if (!el) return false;
		el.value = %s; el.dispatchEvent(new Event("input", {bubbles: true})); el.dispatchEvent(new Event("change", {bubbles: true})); return true })()`,
		sel, jsString(value))
	require.True(b.t, eval[bool](b, js), "no %s", sel)
}

func (b *tab) click(sel string) {
	b.t.Helper()
	b.do(chromedp.WaitVisible(sel), chromedp.Click(sel))
}

func (b *tab) text(sel string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf(`(document.querySelector(%q) || {}).innerText || ""`, sel))
}

func (b *tab) shot(name string) { browsertest.Screenshot(b.t, b.ctx, "console-"+name) }

func jsString(s string) string {
	raw, _ := json.Marshal(s)
	return string(raw)
}

// signIn opens the console at base and signs in by pasting token.
func (b *tab) signIn(base, token, who string) {
	b.t.Helper()
	b.do(chromedp.Navigate(base + "/"))
	b.waitFor("the sign-in form", `document.querySelector("#token")`, time.Minute)
	b.input("#token", token)
	b.click(`#signin-form button[type=submit]`)
	b.waitFor("signed in", fmt.Sprintf(`(document.querySelector("#who") || {}).innerText === %s`, jsString(who)), 30*time.Second)
}

// cutProxy is a TCP proxy in front of the dev server whose connections the
// test can cut, and refuse for a while: a dropped network, for real.
type cutProxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	conns   map[net.Conn]bool
	refuse  time.Time
	accepts int
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { _ = ln.Close(); p.cut(0) })
	go p.serve()
	return p
}

func (p *cutProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.accepts++
		refused := time.Now().Before(p.refuse)
		if !refused {
			p.conns[c] = true
		}
		p.mu.Unlock()
		if refused {
			_ = c.Close()
			continue
		}
		go func() {
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				return
			}
			p.mu.Lock()
			p.conns[up] = true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			_, _ = io.Copy(c, up)
			_ = c.Close()
		}()
	}
}

// cut closes every open connection and refuses new ones for d.
func (p *cutProxy) cut(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = time.Now().Add(d)
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

func TestConsole(t *testing.T) {
	t.Parallel()
	if browsertest.Path() == "" {
		t.Skip("no Chromium on this machine: run tools/ensure-chromium (make test does) or set CHROMIUM")
	}
	d := startConsoleDev(t)
	base := d.info.URL
	b := newTab(t)

	t.Run("sign-in link", func(t *testing.T) {
		b.t = t
		require.True(t, strings.HasPrefix(d.link, base+"/#signin="), d.link)
		code := strings.TrimPrefix(d.link, base+"/#signin=")
		b.do(chromedp.Navigate(d.link))
		b.waitFor("signed in by the link", `(document.querySelector("#who") || {}).innerText === "alice @ acme"`, time.Minute)
		// The code left the address bar and the history entry at once.
		loc := eval[string](b, "location.href")
		require.NotContains(t, loc, code)
		require.Equal(t, base+"/#/timeline", loc)
		// It never reached a server log (the fragment is not sent; the
		// exchange carries it in a body, which is not logged).
		require.NotContains(t, d.errb.String(), code)
		// A second use is refused: the link is one-time.
		other := newTab(t)
		other.do(chromedp.Navigate(d.link))
		other.waitFor("the sign-in form with the refusal", `document.querySelector("#signin-form .error")`, time.Minute)
		require.Contains(t, other.text("#signin-form .error"), "used already or has expired")
		// The token is in this tab's sessionStorage, nowhere a cookie or
		// another tab would carry it.
		require.Empty(t, eval[string](b, "document.cookie"))
		require.Contains(t, eval[string](b, `sessionStorage.getItem("logline.session") || ""`), d.info.Token)
		b.shot("signin-link")
	})

	t.Run("timeline live", func(t *testing.T) {
		b.t = t
		b.do(chromedp.Navigate(base + "/#/timeline"))
		b.waitFor("the stream connected", `(document.querySelector("#stream-state") || {}).innerText === "live"`, time.Minute)
		s := d.post(t, d.info.Token, `{"entity_type":"note","who":"alice","this":"note","name":"live-one","visibility":"tenant"}`)
		took := b.waitFor("the appended span in the timeline", fmt.Sprintf(`document.querySelector('#timeline-body > .row[data-id=%q]')`, s.ID), 10*time.Second)
		t.Logf("append → timeline row: %s", took)
		require.Less(t, took, time.Second, "a span appended through the API appears within a second")
		// The engine's bookkeeping is hidden unless asked for.
		require.Zero(t, eval[int](b, `[...document.querySelectorAll("#timeline-body .tag")].filter(e => /_cursor$|quota_counter/.test(e.innerText)).length`))
		b.click("#filter-bookkeeping")
		b.click(`#timeline-filters button[type=submit]`)
		b.waitFor("bookkeeping shown", `[...document.querySelectorAll("#timeline-body .tag")].some(e => /_cursor$/.test(e.innerText))`, 30*time.Second)
		b.click("#filter-bookkeeping")
		b.input("#filter-entity_type", "note")
		b.click(`#timeline-filters button[type=submit]`)
		b.waitFor("only notes", `document.querySelectorAll("#timeline-body > .row").length > 0 && [...document.querySelectorAll("#timeline-body .tag")].every(e => e.innerText === "note")`, 30*time.Second)
		b.shot("timeline")

		// Click through to the span: its versions, proofs, verify.
		b.click(fmt.Sprintf(`#timeline-body > .row[data-id=%q] a`, s.ID))
		b.waitFor("the span view", `document.querySelector("#span-view article.version")`, 30*time.Second)
		require.Contains(t, b.text("#span-view"), s.CurrHash)
		b.click("#verify")
		b.waitFor("the verdict", `document.querySelector("#verdict")`, 30*time.Second)
		require.Contains(t, b.text("#verdict"), "verified: 1 versions")
		b.shot("span")
	})

	t.Run("stream drops and resumes", func(t *testing.T) {
		p := newCutProxy(t, strings.TrimPrefix(base, "http://"))
		pt := newTab(t)
		pt.signIn(p.url(), d.info.Token, "alice @ acme")
		pt.input("#filter-entity_type", "drop-test")
		pt.click(`#timeline-filters button[type=submit]`)
		pt.waitFor("live", `(document.querySelector("#stream-state") || {}).innerText === "live"`, time.Minute)
		var ids []string
		add := func(name string) {
			ids = append(ids, d.post(t, d.info.Token, `{"entity_type":"drop-test","who":"alice","this":"x","name":"`+name+`"}`).ID)
		}
		add("before")
		pt.waitFor("the first span", fmt.Sprintf(`document.querySelector('#timeline-body > .row[data-id=%q]')`, ids[0]), 10*time.Second)
		p.cut(1500 * time.Millisecond)
		for i := range 5 {
			add(fmt.Sprintf("during-%d", i))
		}
		pt.waitFor("the console saw the drop", `(document.querySelector("#stream-state") || {}).innerText !== "live"`, 10*time.Second)
		for i := range 3 {
			add(fmt.Sprintf("after-%d", i))
		}
		pt.waitFor("reconnected", `(document.querySelector("#stream-state") || {}).innerText === "live"`, 30*time.Second)
		pt.waitFor("every span", fmt.Sprintf(`document.querySelectorAll("#timeline-body > .row").length >= %d`, len(ids)), 30*time.Second)
		// Exactly these, each once, newest first.
		got := eval[[]string](pt, `[...document.querySelectorAll("#timeline-body > .row")].map(r => r.dataset.id)`)
		want := make([]string, len(ids))
		for i, id := range ids {
			want[len(ids)-1-i] = id
		}
		require.Equal(t, want, got)
	})

	t.Run("functions", func(t *testing.T) {
		b.t = t
		b.do(chromedp.Navigate(base + "/#/functions"))
		b.waitFor("the editor", `document.querySelector("#fn-code") && document.querySelector("#syntax")`, 30*time.Second)
		b.input("#fn-code", "const x = 1;\nreturn input.a +* 2;\n")
		b.waitFor("the syntax error", `/^line \d+, column \d+/.test(document.querySelector("#syntax").innerText)`, 30*time.Second)
		require.Equal(t, "line 2, column 17: Unexpected token", b.text("#syntax"))
		require.True(t, eval[bool](b, `document.querySelector("#publish").disabled`), "code with a syntax error cannot be published")
		b.shot("functions-syntax-error")

		b.input("#fn-name", "console-adder")
		b.input("#fn-code", "return { sum: input.a + input.b };\n")
		b.waitFor("no syntax error", `document.querySelector("#syntax").innerText === "no syntax errors"`, 10*time.Second)
		b.click("#publish")
		b.waitFor("published", `document.querySelector("#published")`, 30*time.Second)
		b.waitFor("the run form", `document.querySelector("#run-input")`, 30*time.Second)
		b.input("#run-input", `{"a": 40, "b": 2}`)
		b.click("#run-button")
		// The engine compiles QuickJS on a cold machine: give it time.
		b.waitFor("the output", `document.querySelector("#run-output")`, 3*time.Minute)
		var out map[string]int
		require.NoError(t, json.Unmarshal([]byte(b.text("#run-output")), &out))
		require.Equal(t, map[string]int{"sum": 42}, out)
		require.Regexp(t, `^complete — \d+ ms, fuel \d+, execution`, b.text("#run-result p"))
		require.Contains(t, b.text("#functions"), "console-adder")
		b.shot("functions")

		// A throw is the execution's typed error.
		b.input("#fn-name", "console-thrower")
		b.input("#fn-code", "throw new Error('no such thing');\n")
		b.waitFor("no syntax error", `document.querySelector("#syntax").innerText === "no syntax errors"`, 10*time.Second)
		b.click("#publish")
		b.waitFor("published", `/console-thrower/.test((document.querySelector("#published") || {}).innerText || "")`, 30*time.Second)
		b.click("#run-button")
		b.waitFor("the error", `document.querySelector("#run-error")`, 2*time.Minute)
		require.Contains(t, b.text("#run-error"), "guest_error")
	})

	t.Run("executions", func(t *testing.T) {
		b.t = t
		b.do(chromedp.Navigate(base + "/#/executions"))
		b.waitFor("three charts", `document.querySelectorAll("#charts .uplot").length === 3`, 30*time.Second)
		b.waitFor("the table", `document.querySelectorAll("#executions tbody tr").length >= 2`, 30*time.Second)
		require.Contains(t, b.text("#executions"), "complete")
		require.Contains(t, b.text("#executions"), "guest_error")
		b.shot("executions")
	})

	t.Run("prompts", func(t *testing.T) {
		b.t = t
		b.do(chromedp.Navigate(base + "/#/prompts"))
		b.waitFor("the families", `document.querySelectorAll("#families a").length > 0`, 30*time.Second)
		b.click("#families a")
		b.waitFor("the variants", `document.querySelectorAll("#variants tbody tr").length > 0`, 30*time.Second)
		b.shot("prompts")
	})

	t.Run("system", func(t *testing.T) {
		b.t = t
		b.do(chromedp.Navigate(base + "/#/system"))
		b.waitFor("the manifest", `/"kernels"/.test((document.querySelector("#manifest") || {}).innerText || "")`, 30*time.Second)
		b.waitFor("the engine's loops", `document.querySelectorAll("#loops tbody tr").length > 0`, 30*time.Second)
		require.Contains(t, b.text("#status"), "listening")
		b.click("#verify-ledger")
		b.waitFor("the ledger verified", `(document.querySelector("#ledger-verdict") || {}).dataset?.done === "true"`, time.Minute)
		require.Regexp(t, `^verified: \d+ versions`, b.text("#ledger-verdict"))
		b.shot("system")
	})

	t.Run("another tenant sees nothing of acme's", func(t *testing.T) {
		secret := fmt.Sprintf("acme-private-%d", time.Now().UnixNano())
		priv := d.post(t, d.info.Token, `{"entity_type":"note","who":"alice","this":"note","name":"`+secret+`","visibility":"private"}`)
		fn := d.post(t, d.info.Token, `{"entity_type":"function","who":"alice","this":"function","name":"`+secret+`-fn",
			"code":"return 1","language":"javascript","runtime":"quickjs","visibility":"private"}`)
		mallory := newTab(t)
		mallory.signIn(base, d.token(t, "other", "mallory"), "mallory @ other")
		for _, view := range []struct{ hash, ready string }{
			{"#/timeline", `(document.querySelector("#stream-state") || {}).innerText === "live"`},
			{"#/functions", `document.querySelector("#functions")`},
			{"#/executions", `document.querySelector("#charts").dataset.hours !== ""`},
			{"#/prompts", `document.querySelector("#families")`},
			{"#/system", `document.querySelector("#manifest") && document.querySelector("#status")`},
		} {
			mallory.do(chromedp.Navigate(base + "/" + view.hash))
			mallory.waitFor(view.hash, view.ready, 30*time.Second)
			body := eval[string](mallory, "document.body.innerText")
			for _, s := range []string{secret, priv.ID[:8], fn.ID[:8], "acme", "alice"} {
				require.NotContains(t, body, s, "%s shows %q to another tenant", view.hash, s)
			}
		}
		// Not even by id.
		mallory.do(chromedp.Navigate(base + "/#/span/" + priv.ID))
		mallory.waitFor("the refusal", `document.querySelector("#span-view .error")`, 30*time.Second)
		require.Contains(t, mallory.text("#span-view .error"), "404")
		require.NotContains(t, eval[string](mallory, "document.body.innerText"), secret)
		mallory.shot("other-tenant")
	})
}

// firstPaintScript records, before the console's own script runs, when
// the timeline first shows a row (performance.now(), ms since navigation)
// and every row ever added to it, in order of arrival.
const firstPaintScript = `(() => {
  window.__rows = [];
  const seen = () => {
    const tb = document.querySelector("#timeline-body");
    if (!tb) return;
    if (tb.children.length && window.__firstPaint === undefined) window.__firstPaint = performance.now();
    if (window.__rowObserver) return;
    window.__rowObserver = new MutationObserver((ms) => {
      for (const m of ms) for (const n of m.addedNodes) if (n.dataset && n.dataset.cursor) window.__rows.push(n.dataset.cursor);
    });
    window.__rowObserver.observe(tb, { childList: true });
  };
  new MutationObserver(seen).observe(document, { childList: true, subtree: true });
})()`

// addInitScript runs js in every document the tab loads, before its
// scripts (CDP, so the console's CSP does not apply to it).
func (b *tab) addInitScript(js string) {
	b.t.Helper()
	_, err := chromedp.Call(b.ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: js})
	require.NoError(b.t, err)
}
