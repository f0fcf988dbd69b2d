package span

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A policy's declaration is checked with the span: a good one parses, a
// bad one is refused naming the field, and none at all means none.
func TestJudges(t *testing.T) {
	t.Parallel()
	many := func(n int, f func(i int) string) string {
		var s []string
		for i := range n {
			s = append(s, `"`+f(i)+`"`)
		}
		return "[" + strings.Join(s, ",") + "]"
	}
	for _, tc := range []struct {
		metadata string
		want     *Judges // nil with field "": no declaration
		field    string  // the field at fault
		reason   string
	}{
		{``, nil, "", ""},
		{`{}`, nil, "", ""},
		{`{"tags":["a"]}`, nil, "", ""},
		{`["judges"]`, nil, "", ""},
		{`{"judges":{"entity_types":["execution"]}}`, &Judges{EntityTypes: []string{"execution"}}, "", ""},
		{`{"judges":{"entity_types":["execution","prompt_run"],"where":{"status":"error"}}}`,
			&Judges{EntityTypes: []string{"execution", "prompt_run"}, Where: map[string][]string{"status": {"error"}}}, "", ""},
		{`{"judges":{"entity_types":["policy_violation"],"where":{"this":["a","b"],"who":"edge:run_code"}}}`,
			&Judges{EntityTypes: []string{"policy_violation"}, Where: map[string][]string{"this": {"a", "b"}, "who": {"edge:run_code"}}}, "", ""},

		{`{"judges":null}`, nil, "metadata.judges", "must be an object"},
		{`{"judges":true}`, nil, "metadata.judges", "must be an object"},
		{`{"judges":["execution"]}`, nil, "metadata.judges", "must be an object"},
		{`{"judges":{}}`, nil, "metadata.judges.entity_types", "is required"},
		{`{"judges":{"where":{"status":"error"}}}`, nil, "metadata.judges.entity_types", "is required"},
		{`{"judges":{"entity_types":"execution"}}`, nil, "metadata.judges.entity_types", "must be a list of strings"},
		{`{"judges":{"entity_types":[]}}`, nil, "metadata.judges.entity_types", "must not be empty"},
		{`{"judges":{"entity_types":["execution",7]}}`, nil, "metadata.judges.entity_types[1]", "must be a non-empty string"},
		{`{"judges":{"entity_types":[""]}}`, nil, "metadata.judges.entity_types[0]", "must be a non-empty string"},
		{`{"judges":{"entity_types":["Execution"]}}`, nil, "metadata.judges.entity_types[0]", "[a-z0-9_.:-]"},
		{`{"judges":{"entity_types":["note","policy_cursor"]}}`, nil, "metadata.judges.entity_types[1]", "bookkeeping"},
		{`{"judges":{"entity_types":["note","note"]}}`, nil, "metadata.judges.entity_types[1]", "listed twice"},
		{`{"judges":{"entity_types":` + many(17, func(i int) string { return "t" + string(rune('a'+i)) }) + `}}`, nil,
			"metadata.judges.entity_types", "lists 17 values, at most 16"},
		{`{"judges":{"entity_types":["note"],"kinds":["x"]}}`, nil, "metadata.judges.kinds", "is not part of a declaration"},
		{`{"judges":{"entity_types":["note"],"where":[]}}`, nil, "metadata.judges.where", "must be an object"},
		{`{"judges":{"entity_types":["note"],"where":{}}}`, nil, "metadata.judges.where", "at least one field"},
		{`{"judges":{"entity_types":["note"],"where":{"metadata":"x"}}}`, nil, "metadata.judges.where.metadata", "not a field a declaration filters on"},
		{`{"judges":{"entity_types":["note"],"where":{"status":""}}}`, nil, "metadata.judges.where.status", "non-empty string"},
		{`{"judges":{"entity_types":["note"],"where":{"status":5}}}`, nil, "metadata.judges.where.status", "must be a list of strings"},
		{`{"judges":{"entity_types":["note"],"where":{"status":[]}}}`, nil, "metadata.judges.where.status", "must not be empty"},
		{`{"judges":{"entity_types":["note"],"where":{"status":["ok",null]}}}`, nil, "metadata.judges.where.status[1]", "non-empty string"},
		{`{"judges":{"entity_types":["note"],"where":{"name":"` + strings.Repeat("n", MaxShortText+1) + `"}}}`, nil,
			"metadata.judges.where.name", "more than the limit"},
		{`{"judges":{"entity_types":["note"],"where":{"name":` + many(33, func(int) string { return "n" }) + `}}}`, nil,
			"metadata.judges.where.name", "at most 32"},
	} {
		j, fe := judgesOf(json.RawMessage(tc.metadata))
		if tc.field == "" {
			require.Nil(t, fe, tc.metadata)
			require.Equal(t, tc.want, j, tc.metadata)
			continue
		}
		require.NotNil(t, fe, tc.metadata)
		require.Equal(t, tc.field, fe.Field, tc.metadata)
		require.Contains(t, fe.Reason, tc.reason, tc.metadata)

		// The same declaration refuses its policy span, and only a policy's.
		s := fullSpan()
		s.EntityType, s.Metadata = "policy", json.RawMessage(tc.metadata)
		err := s.Validate()
		require.True(t, errors.As(err, &fe), "%s: %v", tc.metadata, err)
		require.Equal(t, tc.field, fe.Field)
		s.EntityType = "note"
		require.NoError(t, s.Validate(), "a note's metadata.judges means nothing: %s", tc.metadata)
	}
}

func TestJudgesAdmits(t *testing.T) {
	t.Parallel()
	var none *Judges
	require.True(t, none.Admits("note", ""), "no declaration: every span")
	require.False(t, none.Admits("policy_cursor", "active"), "but never bookkeeping")
	j := &Judges{EntityTypes: []string{"execution", "prompt_run"}, Where: map[string][]string{"status": {"error"}, "who": {"x"}}}
	require.True(t, j.Admits("execution", "error"), "who is not known to the router: it admits")
	require.True(t, j.Admits("prompt_run", "error"))
	require.False(t, j.Admits("execution", "complete"))
	require.False(t, j.Admits("execution", ""))
	require.False(t, j.Admits("note", "error"))
	j = &Judges{EntityTypes: []string{"execution"}}
	require.True(t, j.Admits("execution", ""))
}
