package engine

import "context"

// NewSpanForTest is a span as route sees it.
type NewSpanForTest struct{ Tenant, Kind, Status string }

// JudgingForTest is e.judging: the tenants whose policy agent route would
// wake for spans.
func JudgingForTest(ctx context.Context, e *Engine, spans ...NewSpanForTest) ([]string, error) {
	var in []newSpan
	for _, s := range spans {
		in = append(in, newSpan{s.Tenant, s.Kind, s.Status})
	}
	return e.judging(ctx, in)
}
