package sandbox

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseInsertRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		body, spans string
		n           int
		refs        bool
		err         string
	}{
		{body: `{"entity_type":"a"}`, spans: `{"entity_type":"a"}`, n: 1},
		{body: ` [{"entity_type":"a"},{"entity_type":"b"}]`, spans: ` [{"entity_type":"a"},{"entity_type":"b"}]`, n: 2},
		{body: `{"spans":[{"entity_type":"a"}],"result":"refs"}`, spans: `[{"entity_type":"a"}]`, n: 1, refs: true},
		{body: `{"spans":[{"entity_type":"a"},{}]}`, spans: `[{"entity_type":"a"},{}]`, n: 2},
		// A span that merely mentions "spans" in a value is a span.
		{body: `{"entity_type":"a","this":"\"spans\""}`, spans: `{"entity_type":"a","this":"\"spans\""}`, n: 1},
		{body: `{"spans":[{}],"result":"all"}`, err: `result must be "refs" or absent, not "all"`},
		{body: `{"spans":{"entity_type":"a"}}`, err: "spans must be an array"},
		{body: `{"spans":[]}`, err: "an empty array"},
		{body: `[]`, err: "an empty array"},
		{body: `{"entity_type":`, err: "not valid JSON"},
	} {
		req, err := ParseInsertRequest([]byte(tc.body))
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err, tc.body)
			continue
		}
		require.NoError(t, err, tc.body)
		require.Equal(t, tc.spans, string(req.Spans), tc.body)
		require.Equal(t, tc.n, req.N, tc.body)
		require.Equal(t, tc.refs, req.Refs, tc.body)
	}
}

func TestRefsOf(t *testing.T) {
	t.Parallel()
	out, err := RefsOf([]byte(`[{"id":"a","seq":0,"curr_hash":"h1","who":"x"},{"id":"b","seq":3,"curr_hash":"h2"}]`))
	require.NoError(t, err)
	require.JSONEq(t, `[{"id":"a","seq":0,"curr_hash":"h1"},{"id":"b","seq":3,"curr_hash":"h2"}]`, string(out))
	out, err = RefsOf([]byte(`{"id":"a","seq":1,"curr_hash":"h"}`))
	require.NoError(t, err)
	require.JSONEq(t, `[{"id":"a","seq":1,"curr_hash":"h"}]`, string(out))
}
