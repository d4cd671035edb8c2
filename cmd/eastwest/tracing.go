package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// newTracerProvider returns nil (tracing off, no cost) unless an OTLP
// endpoint is set in the settings or in the standard OTEL_EXPORTER_OTLP_*
// variables. The exporter, sampler (OTEL_TRACES_SAMPLER*) and service name
// (OTEL_SERVICE_NAME, default "eastwest") follow the OpenTelemetry
// environment conventions.
func newTracerProvider(ctx context.Context, s *Settings, log *slog.Logger) (*sdktrace.TracerProvider, error) {
	endpoint := s.Tracing.OTLPEndpoint
	env := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") + os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	if endpoint == "" && env == "" {
		return nil, nil
	}
	var opts []otlptracehttp.Option
	if endpoint != "" && env == "" {
		opts = append(opts, otlptracehttp.WithEndpointURL(endpoint))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	attrs := resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName("eastwest"), semconv.ServiceVersion(buildVersion()))
	res, err := resource.Merge(attrs, resource.Environment())
	if err != nil {
		return nil, fmt.Errorf("tracing resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	log.Info("tracing on", "endpoint", orStr(endpoint, "from OTEL_EXPORTER_OTLP_*"))
	return tp, nil
}
