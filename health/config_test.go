package health

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"go.yaml.in/yaml/v3"
)

func TestWithDefaults(t *testing.T) {
	tru := true
	tests := []struct {
		name    string
		in      CheckConfig
		check   func(t *testing.T, c CheckConfig)
		wantErr string
	}{
		{name: "HC-2 default is the sidecar readiness", in: CheckConfig{Host: "*"}, check: func(t *testing.T, c CheckConfig) {
			want := CheckConfig{Host: "*", HTTPGet: &HTTPGetAction{Path: "/healthz/ready", Port: 15021, Scheme: "HTTP",
				ExpectedStatuses: []StatusRange{{200, 201}}},
				Interval: 10 * time.Second, Timeout: time.Second, SuccessThreshold: 2, FailureThreshold: 3,
				NoTrafficInterval: 60 * time.Second, NoTrafficHealthyInterval: 60 * time.Second,
				UnhealthyInterval: 10 * time.Second, UnhealthyEdgeInterval: 10 * time.Second, HealthyEdgeInterval: 10 * time.Second,
				ReuseConnection: &tru}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("got  %+v\nwant %+v", c, want)
			}
		}},
		{name: "periodSeconds and unhealthyInterval chain", in: CheckConfig{PeriodSeconds: 5, TimeoutSeconds: 2, UnhealthyInterval: 30 * time.Second},
			check: func(t *testing.T, c CheckConfig) {
				if c.Interval != 5*time.Second || c.Timeout != 2*time.Second || c.UnhealthyEdgeInterval != 30*time.Second || c.HealthyEdgeInterval != 5*time.Second {
					t.Errorf("%+v", c)
				}
			}},
		{name: "sub-second interval", in: CheckConfig{Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond}, check: func(t *testing.T, c CheckConfig) {
			if c.Interval != 100*time.Millisecond || c.Timeout != 50*time.Millisecond {
				t.Errorf("%+v", c)
			}
		}},
		{name: "https scheme any case", in: CheckConfig{HTTPGet: &HTTPGetAction{Scheme: "https"}}, check: func(t *testing.T, c CheckConfig) {
			if c.HTTPGet.Scheme != "HTTPS" || c.HTTPGet.Path != "/" {
				t.Errorf("%+v", c.HTTPGet)
			}
		}},
		{name: "exec", in: CheckConfig{Exec: &ExecAction{Command: []string{"cat", "/tmp/ready"}}}, wantErr: "exec probes cannot run"},
		{name: "two methods", in: CheckConfig{HTTPGet: &HTTPGetAction{}, GRPC: &GRPCAction{}}, wantErr: "only one of"},
		{name: "interval and periodSeconds", in: CheckConfig{Interval: time.Second, PeriodSeconds: 5}, wantErr: "either interval or periodSeconds"},
		{name: "negative threshold", in: CheckConfig{FailureThreshold: -1}, wantErr: "failureThreshold: -1"},
		{name: "bad hex", in: CheckConfig{TCPSocket: &TCPSocketAction{Send: "zz"}}, wantErr: "tcpSocket.send"},
		{name: "receive without send", in: CheckConfig{TCPSocket: &TCPSocketAction{Receive: []string{"00"}}}, wantErr: "needs send"},
		{name: "bad status range", in: CheckConfig{HTTPGet: &HTTPGetAction{ExpectedStatuses: []StatusRange{{300, 200}}}}, wantErr: "expectedStatuses[0]"},
		{name: "bad scheme", in: CheckConfig{HTTPGet: &HTTPGetAction{Scheme: "ftp"}}, wantErr: "httpGet.scheme"},
		{name: "relative path", in: CheckConfig{HTTPGet: &HTTPGetAction{Path: "ready"}}, wantErr: "httpGet.path"},
		{name: "bad host pattern", in: CheckConfig{Host: "reviews.*"}, wantErr: "host"},
		{name: "header injection", in: CheckConfig{HTTPGet: &HTTPGetAction{HTTPHeaders: []HTTPHeader{{Name: "X", Value: "a\r\nB: c"}}}}, wantErr: "httpHeaders[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.WithDefaults()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, got)
			again, err := got.WithDefaults()
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("not idempotent: %v\n%+v\n%+v", err, again, got)
			}
		})
	}
	if err := (CheckConfig{Exec: &ExecAction{}}).Validate(); !errors.Is(err, ErrExecProbe) {
		t.Fatalf("Validate(exec) = %v, want ErrExecProbe", err)
	}
}

const settingsYAML = `
healthChecks:
  - host: "*"
  - host: reviews.default.svc.cluster.local
    port: 9080
    httpGet:
      path: /health
      port: 9080
      scheme: HTTPS
      httpHeaders: [{name: X-Probe, value: gw}]
      expectedStatuses: [{start: 200, end: 300}]
    periodSeconds: 5
    failureThreshold: 2
    initialJitter: 0s
    unhealthyEdgeInterval: 500ms
    closeConnectionsOnHostHealthFailure: true
    closeConnectionsWindow: 30s
  - host: "*.grpc.svc.cluster.local"
    grpc: {port: 9090, service: api}
    interval: 100ms
  - host: legacy.default.svc.cluster.local
    tcpSocket: {port: 7000, send: "50494e47", receive: ["504f4e47"]}
`

// cmd/eastwest decodes settings with viper: YAML into maps, then
// mapstructure with StringToTimeDurationHookFunc and ErrorUnused.
func TestDecodeLikeViper(t *testing.T) {
	var raw map[string]any
	if err := yaml.Unmarshal([]byte(settingsYAML), &raw); err != nil {
		t.Fatal(err)
	}
	var s struct {
		HealthChecks []CheckConfig `mapstructure:"healthChecks"`
	}
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result: &s, ErrorUnused: true,
		DecodeHook: mapstructure.ComposeDecodeHookFunc(mapstructure.StringToTimeDurationHookFunc(), mapstructure.StringToSliceHookFunc(",")),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(raw); err != nil {
		t.Fatal(err)
	}
	checkDecoded(t, s.HealthChecks)

	// yaml.v3 straight into the struct gives the same.
	var direct struct {
		HealthChecks []CheckConfig `yaml:"healthChecks"`
	}
	if err := yaml.Unmarshal([]byte(settingsYAML), &direct); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(direct.HealthChecks, s.HealthChecks) {
		t.Fatalf("yaml and mapstructure differ:\n%+v\n%+v", direct.HealthChecks, s.HealthChecks)
	}
	// And JSON round-trips it.
	b, err := json.Marshal(s.HealthChecks)
	if err != nil {
		t.Fatal(err)
	}
	var back []CheckConfig
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, s.HealthChecks) {
		t.Fatalf("json round trip: %v\n%s", err, b)
	}
}

func checkDecoded(t *testing.T, cs []CheckConfig) {
	t.Helper()
	if len(cs) != 4 {
		t.Fatalf("%d configs", len(cs))
	}
	r := cs[1]
	if r.Port != 9080 || r.HTTPGet == nil || r.HTTPGet.Path != "/health" || r.HTTPGet.HTTPHeaders[0].Value != "gw" ||
		r.HTTPGet.ExpectedStatuses[0] != (StatusRange{200, 300}) || r.PeriodSeconds != 5 ||
		r.InitialJitter == nil || *r.InitialJitter != 0 || r.UnhealthyEdgeInterval != 500*time.Millisecond ||
		!r.CloseConnectionsOnHostHealthFailure || r.CloseConnectionsWindow != 30*time.Second {
		t.Errorf("reviews: %+v %+v", r, r.HTTPGet)
	}
	if cs[0].InitialJitter != nil {
		t.Errorf("unset initialJitter decoded as %v", *cs[0].InitialJitter)
	}
	if g := cs[2]; g.GRPC == nil || g.GRPC.Service != "api" || g.Interval != 100*time.Millisecond {
		t.Errorf("grpc: %+v", g)
	}
	if c := cs[3]; c.TCPSocket == nil || c.TCPSocket.Send != "50494e47" {
		t.Errorf("tcp: %+v", c)
	}
	for _, c := range cs {
		if err := c.Validate(); err != nil {
			t.Error(err)
		}
	}
}
