// Package health runs active health checks against mesh endpoints and
// publishes the verdicts to the balancer (shared/SEMANTICS.md section 4,
// HC-1..HC-6). Passive outlier detection only sees connect failures, and a
// sidecar accepts connections for a dead app; an active check of the
// sidecar's readiness endpoint closes that gap.
//
// Checkers: TCP (connect, or send bytes and expect blocks in order), HTTP
// and HTTPS (expected statuses default to 200 only; any other status that
// is not retriable fails the endpoint at once; x-envoy-degraded marks it
// degraded) and gRPC (grpc.health.v1, SERVING passes). A config with no
// method checks http://<endpoint>:15021/healthz/ready, the Istio sidecar's
// readiness (HC-2).
//
// Configuration (CheckConfig) uses the Kubernetes probe's field names
// (httpGet, tcpSocket, grpc, periodSeconds, timeoutSeconds,
// successThreshold, failureThreshold, initialDelaySeconds; exec is rejected)
// plus Envoy's interval fields and jitter. It comes from the gateway's
// settings per service host, and from Istio WorkloadGroup probes for the
// endpoints a group's labels select (Group, TargetsFor).
//
// State machine, as Envoy's: a new endpoint is pending and not routable
// until its first result, and one pass then marks it healthy; afterwards
// FailureThreshold consecutive network failures or timeouts, or one bad
// answer, fail it, and SuccessThreshold consecutive passes readmit it. Edge
// intervals apply while a threshold is being counted. One check runs per
// distinct target address and spec however many clusters share it, a token
// bucket caps checks per second across all targets (HC-4), and a single
// goroutine with a timer heap schedules them; checks run on short-lived
// goroutines, at most MaxConcurrent at a time.
//
// Verdicts go to a Sink per endpoint address; the balancer combines them
// with outlier detection (routable iff neither failed it) and unejects on a
// pass (HC-3). Established connections are left alone unless a config sets
// closeConnectionsOnHostHealthFailure: Options.OnUnhealthy is then called
// with the window over which to spread the closures (HC-6).
//
// It must not forward traffic, pick endpoints or import balancer or proxy:
// cmd/eastwest wires it. It never checks anything but the endpoint
// addresses it is given.
//
//	hc := health.New(health.Options{Sink: bal, Logger: log, Registerer: reg})
//	store.Subscribe(func(s *mesh.Snapshot) { hc.Update(health.TargetsFor(s, settings.HealthChecks, groups...)) })
//	go hc.Run(ctx)
package health
