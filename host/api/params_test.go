package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// hostileValues are raw (already percent-encoded) query values that must
// never reach SQL: Postgres refuses NUL and invalid UTF-8 in text.
var hostileValues = map[string]string{
	"NUL":                    "a%00b",
	"invalid UTF-8":          "%ff",
	"truncated UTF-8":        "%c3%28",
	"overlong UTF-8":         "%c0%af",
	"UTF-16 surrogate":       "%ed%a0%80",
	"newline":                "a%0ab",
	"carriage return":        "a%0db",
	"tab":                    "a%09b",
	"escape":                 "%1b%5b31m",
	"DEL":                    "a%7f",
	"C1 control":             "a%c2%85",
	"bad escape":             "%zz",
	"half an escape":         "a%f",
	"semicolon":              "1;x=2",
	"NUL after valid prefix": "1%00",
}

// Every query parameter of every route refuses hostile text with a 400
// problem naming it, before its handler (and SQL) sees it; so does a
// hostile or overlong value of any route's parameters, and an unknown or
// hostile parameter name on any route. The route table drives the cases, so
// a parameter added later is covered too.
func TestParamsRefuseHostileText(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	b.appendAs(t, ledger.User("acme", "alice"), note("n", "private"))
	id := "0190a0a0-0000-7000-8000-000000000001"
	path := func(o op) string { return strings.ReplaceAll(o.path, ":id", id) }
	check := func(t *testing.T, method, target string, header map[string]string, field string) {
		t.Helper()
		n := b.rows(t)
		r := b.do(t, method, target, tok, header, nil)
		require.Equal(t, http.StatusBadRequest, r.status, "%s %s: %s", method, target, r.body)
		p := r.problem(t)
		require.Equal(t, codeMalformed, p.Code, "%s", r.body)
		require.Equal(t, field, p.Field, "%s %s: %s", method, target, r.body)
		require.Equal(t, n, b.rows(t), "nothing is written")
	}
	for _, o := range routes {
		for _, p := range o.params {
			if p.in != "query" {
				continue
			}
			for name, v := range hostileValues {
				t.Run(fmt.Sprintf("%s %s %s %s", o.method, o.path, p.name, name), func(t *testing.T) {
					check(t, o.method, path(o)+"?"+p.name+"="+v, nil, p.name)
				})
			}
			bound, err := paramBound(p)
			require.NoError(t, err)
			t.Run(fmt.Sprintf("%s %s %s too long", o.method, o.path, p.name), func(t *testing.T) {
				check(t, o.method, path(o)+"?"+p.name+"="+strings.Repeat("1", bound+1), nil, p.name)
			})
			t.Run(fmt.Sprintf("%s %s %s twice", o.method, o.path, p.name), func(t *testing.T) {
				check(t, o.method, path(o)+"?"+p.name+"=1&"+p.name+"=1", nil, p.name)
			})
		}
		t.Run(o.method+" "+o.path+" names", func(t *testing.T) {
			check(t, o.method, path(o)+"?bogus=1", nil, "bogus")
			check(t, o.method, path(o)+"?a%00b=1", nil, "a\x00b")
			check(t, o.method, path(o)+"?%ff=1", nil, "\uFFFD")
			check(t, o.method, path(o)+"?%zz=1", nil, "%zz")
			check(t, o.method, path(o)+"?=1", nil, "query")
			check(t, o.method, path(o)+"?"+strings.Repeat("x", 5000)+"=1", nil, strings.Repeat("x", 64)+"…")
		})
	}
	// Path parameters, whichever way the router hands them over.
	for _, raw := range []string{"%00", "%ff", "%c3%28", "a%0ab", "%1b", "a%2500"} {
		for _, suffix := range []string{"", "/verify"} {
			check(t, http.MethodGet, "/api/spans/"+raw+suffix, nil, "id")
		}
	}
	check(t, http.MethodGet, "/api/spans/"+strings.Repeat("a", 5000), nil, "id")
	// Header parameters.
	check(t, http.MethodGet, "/api/timeline/stream", map[string]string{"Last-Event-ID": "1.\xff"}, "Last-Event-ID")
	check(t, http.MethodGet, "/api/timeline/stream", map[string]string{"Last-Event-ID": strings.Repeat("1", 100)}, "Last-Event-ID")
	check(t, http.MethodPost, "/api/spans", map[string]string{"Idempotency-Key": "k\xff"}, "Idempotency-Key")
}

// The hostile review's cases, and what clean text still does: a value at its
// bound passes the check (and matches nothing), a percent-encoded value is
// decoded once, and + is a space.
func TestParamsCleanTextStillWorks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tok := b.token(t, "acme", "alice")
	alice := ledger.User("acme", "alice")
	b.appendAs(t, alice, span.Span{EntityType: "a.b:c-d_e", Who: "t", This: "n", Status: "très bien", TraceID: "tr ace"})
	for q, field := range map[string]string{
		"entity_type=a%00b": "entity_type", "status=%ff": "status", "trace_id=%c3%28": "trace_id",
		"entity_type=" + strings.Repeat("a", span.MaxEntityTypeLen+1): "entity_type",
	} {
		r := b.do(t, http.MethodGet, "/api/spans?"+q, tok, nil, nil)
		require.Equal(t, http.StatusBadRequest, r.status, "%s: %s", q, r.body)
		require.Equal(t, field, r.problem(t).Field, q)
	}
	count := func(q string) int {
		t.Helper()
		r := b.do(t, http.MethodGet, "/api/spans?"+q, tok, nil, nil)
		require.Equal(t, http.StatusOK, r.status, "%s: %s", q, r.body)
		var pg pageOut
		r.json(t, &pg)
		return len(pg.Items)
	}
	require.Equal(t, 0, count("entity_type="+strings.Repeat("a", span.MaxEntityTypeLen)))
	require.Equal(t, 0, count("status="+strings.Repeat("é", span.MaxShortText)), "the bound counts characters, not bytes")
	require.Equal(t, 1, count("entity_type="+url.QueryEscape("a.b:c-d_e")))
	require.Equal(t, 1, count("status="+url.QueryEscape("très bien")))
	require.Equal(t, 1, count("trace_id=tr+ace"))
	require.Equal(t, 1, count("trace_id=tr%20ace&&limit=5"))
}
