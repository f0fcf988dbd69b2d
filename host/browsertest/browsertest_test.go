package browsertest_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/browsertest"
)

// The harness drives a real Chromium: it loads a page from a loopback
// server, runs its script, reads the DOM and keeps a screenshot.
func TestBrowserRunsAPage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `<!doctype html><title>t</title><p id=out>before</p><script>document.getElementById("out").textContent = "after " + (6*7)</script>`)
	}))
	defer srv.Close()
	ctx := browsertest.New(t, 2*time.Minute)
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(srv.URL)))
	text, err := chromedp.Run(ctx, chromedp.Text("#out"))
	require.NoError(t, err)
	require.Equal(t, "after 42", text)
	p := browsertest.Screenshot(t, ctx, "browsertest")
	st, err := os.Stat(p)
	require.NoError(t, err)
	require.Greater(t, st.Size(), int64(1000))
}
