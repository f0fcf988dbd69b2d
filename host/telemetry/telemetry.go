// Package telemetry exports OpenTelemetry traces over OTLP/HTTP when the
// standard OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
// is set, and does nothing otherwise: the tracer is a no-op until Start
// installs a provider. Spans carry the ledger's trace_id where there is
// one (an execution's, an API request's), so a trace viewer and the ledger
// name the same trace.
package telemetry

import (
	"context"
	"encoding/hex"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Name is the instrumentation scope of every span the host makes.
const Name = "github.com/logline/logline"

// Enabled reports whether the environment asks for OTLP export.
func Enabled() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Start installs a tracer provider exporting over OTLP/HTTP (configured by
// the standard OTEL_EXPORTER_OTLP_* variables) when Enabled, else nothing.
// The returned function flushes and stops it.
func Start(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	if !Enabled() {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, err
	}
	res := resource.Default() // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set
	if os.Getenv("OTEL_SERVICE_NAME") == "" {
		res, err = resource.Merge(res, resource.NewSchemaless(attribute.String("service.name", service)))
	}
	if err != nil {
		return nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// Tracer is the host's tracer (a no-op one unless Start installed a
// provider).
func Tracer() trace.Tracer { return otel.Tracer(Name) }

// TraceID reads a ledger trace_id — 32 hex digits, or a UUID — as an
// OpenTelemetry trace id.
func TraceID(s string) (trace.TraceID, bool) {
	var id trace.TraceID
	s = strings.ReplaceAll(s, "-", "")
	if len(s) != 32 {
		return id, false
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil || !id.IsValid() {
		return id, false
	}
	return id, true
}

// InTrace returns ctx under the ledger's trace traceID, so the spans
// started from it join that trace (ctx is returned as it is when traceID
// is not one, or ctx already has a span of that trace).
func InTrace(ctx context.Context, traceID string) context.Context {
	id, ok := TraceID(traceID)
	if !ok || trace.SpanContextFromContext(ctx).TraceID() == id {
		return ctx
	}
	var sid trace.SpanID
	copy(sid[:], id[8:]) // a stand-in parent span: the trace is what matters
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: id, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}
