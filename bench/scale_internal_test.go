package bench

import (
	"testing"
	"time"
)

func TestDistOf(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name string
		in   []time.Duration
		want Dist
	}{
		{name: "empty", in: nil, want: Dist{}},
		{name: "one", in: ms(7), want: Dist{N: 1, P50: 7 * time.Millisecond, P90: 7 * time.Millisecond, P99: 7 * time.Millisecond, Max: 7 * time.Millisecond, Avg: 7 * time.Millisecond}},
		{name: "unsorted ten", in: ms(10, 1, 9, 2, 8, 3, 7, 4, 6, 5),
			want: Dist{N: 10, P50: 5 * time.Millisecond, P90: 9 * time.Millisecond, P99: 10 * time.Millisecond, Max: 10 * time.Millisecond, Avg: 5500 * time.Microsecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := distOf(tt.in); got != tt.want {
				t.Fatalf("distOf = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestVerdict(t *testing.T) {
	tests := []struct {
		name      string
		d, target time.Duration
		want      string
	}{
		{"unmeasured", 0, time.Second, "not measured"},
		{"met", 250 * time.Millisecond, time.Second, "met (25% of target)"},
		{"missed", 1500 * time.Millisecond, time.Second, "**MISSED** by 50% (1.5x the target)"},
		{"equal is a miss", time.Second, time.Second, "**MISSED** by 0% (1.0x the target)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := verdict(tt.d, tt.target); got != tt.want {
				t.Fatalf("verdict = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestScaleOptionsFill(t *testing.T) {
	tests := []struct {
		name    string
		o       ScaleOptions
		wantErr bool
	}{
		{name: "defaults", o: ScaleOptions{}},
		{name: "negative services", o: ScaleOptions{Services: -1}, wantErr: true},
		{name: "too many addresses", o: ScaleOptions{Services: 1 << 20, Endpoints: 16}, wantErr: true},
		{name: "bad mode", o: ScaleOptions{XDSModes: []string{"incremental"}}, wantErr: true},
		{name: "bad phase", o: ScaleOptions{Phases: []string{"xds", "lookups"}}, wantErr: true},
		{name: "xds only", o: ScaleOptions{Phases: []string{"xds"}}},
		{name: "bad miss fraction", o: ScaleOptions{MissFraction: 2}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.fill()
			if (err != nil) != tt.wantErr {
				t.Fatalf("fill: %v, want error %v", err, tt.wantErr)
			}
			if err == nil && (tt.o.Services != 10_000 || tt.o.Ports != 2 || tt.o.Endpoints != 10 || len(tt.o.XDSModes) != 2) {
				t.Fatalf("defaults not applied: %+v", tt.o)
			}
		})
	}
}

// busy counts, for each response, the time since the later of the set and
// the last request of its type.
func TestControlPlaneBusy(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	const cds, eds = "cds", "eds"
	cp := &controlPlane{events: []cpEvent{
		{at: at(-50), typeURL: cds},                 // the subscription, before the set
		{at: at(100), response: true, typeURL: cds}, // 100 ms from the set
		{at: at(130), typeURL: eds},                 // the EDS request...
		{at: at(140), typeURL: cds},                 // ...and the CDS ACK
		{at: at(400), response: true, typeURL: eds}, // 270 ms from the EDS request
		{at: at(900), response: true, typeURL: eds}, // after the window
	}}
	if got, want := cp.busy(t0, at(500)), 370*time.Millisecond; got != want {
		t.Fatalf("busy = %v, want %v", got, want)
	}
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		500 * time.Nanosecond:      "0.50 us",
		999600 * time.Nanosecond:   "1 ms",
		21400 * time.Microsecond:   "21.4 ms",
		999600 * time.Microsecond:  "1 s",
		1630 * time.Millisecond:    "1.63 s",
		999 * time.Microsecond / 2: "500 us",
	} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
}
