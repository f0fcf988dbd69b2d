package telemetry

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
)

// Ledger trace ids (32 hex digits, or UUIDs) map to OpenTelemetry trace
// ids unchanged; anything else does not.
func TestTraceID(t *testing.T) {
	id, ok := TraceID("4bf92f3577b34da6a3ce929d0e0e4736")
	require.True(t, ok)
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", id.String())
	id, ok = TraceID("4bf92f35-77b3-4da6-a3ce-929d0e0e4736")
	require.True(t, ok)
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", id.String())
	for _, bad := range []string{"", "xyz", "00000000000000000000000000000000", "4bf92f3577b34da6a3ce929d0e0e47", "zzf92f3577b34da6a3ce929d0e0e4736"} {
		_, ok := TraceID(bad)
		require.False(t, ok, bad)
	}
	ctx := InTrace(context.Background(), "4bf92f35-77b3-4da6-a3ce-929d0e0e4736")
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", trace.SpanContextFromContext(ctx).TraceID().String())
	require.Equal(t, context.Background(), InTrace(context.Background(), "nope"))
}

// Without OTEL_EXPORTER_OTLP_ENDPOINT nothing is exported and Start costs
// nothing.
func TestStartOff(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	require.False(t, Enabled())
	stop, err := Start(context.Background(), "x")
	require.NoError(t, err)
	require.NoError(t, stop(context.Background()))
	_, sp := Tracer().Start(context.Background(), "noop")
	require.False(t, sp.IsRecording())
}
