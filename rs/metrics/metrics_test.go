package metrics

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/reincarnation/rs/rs/control"
)

func serve(t *testing.T, status StatusFunc, timeout time.Duration) (*Server, string) {
	t.Helper()
	s, err := Listen("127.0.0.1:0", New(status, timeout), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.Serve()
	t.Cleanup(func() { s.Close() })
	return s, "http://" + s.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	cl := &http.Client{Timeout: 10 * time.Second}
	r, err := cl.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return r.StatusCode, string(b)
}

func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, body)
	}
	return fams
}

// find returns the metric of family name whose labels include want.
func find(fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

func TestCountsEventsAndStates(t *testing.T) {
	status := func() ([]control.Status, error) {
		return []control.Status{{Label: "kv", State: control.StateRunning}, {Label: "db", State: control.StateBackoff}}, nil
	}
	s, base := serve(t, status, 0)
	ev := make(chan control.Event, 16)
	s.Collector().Follow(ev)
	ev <- control.Event{Label: "kv", Event: "reincarnating", Kind: "terminated"}
	ev <- control.Event{Label: "kv", Event: "reincarnating", Kind: "terminated"}
	ev <- control.Event{Label: "db", Event: "reincarnating", Kind: "no-heartbeat", Missed: 3}
	ev <- control.Event{Label: "kv", Event: "pong", RTT: 50 * time.Microsecond}
	ev <- control.Event{Label: "kv", Event: "update-committed"}
	ev <- control.Event{Label: "kv", Event: "update-rolled-back"}
	ev <- control.Event{Label: "kv", Event: "exited", Kind: "terminated"} // not a restart by itself
	close(ev)
	select {
	case <-s.Collector().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("events not read")
	}
	fams := scrape(t, base)
	checks := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"rs_service_up", map[string]string{"label": "kv"}, 1},
		{"rs_service_up", map[string]string{"label": "db"}, 0},
		{"rs_service_state", map[string]string{"label": "db", "state": "backoff"}, 1},
		{"rs_service_state", map[string]string{"label": "db", "state": "running"}, 0},
		{"rs_service_restarts_total", map[string]string{"label": "kv", "reason": "terminated"}, 2},
		{"rs_service_restarts_total", map[string]string{"label": "db", "reason": "no-heartbeat"}, 1},
		{"rs_service_updates_total", map[string]string{"label": "kv", "result": "committed"}, 1},
		{"rs_service_updates_total", map[string]string{"label": "kv", "result": "rolled_back"}, 1},
		{"rs_events_missed_total", nil, 3},
		{"rs_loop_up", nil, 1},
	}
	for _, c := range checks {
		m := find(fams, c.name, c.labels)
		if m == nil {
			t.Errorf("%s%v missing", c.name, c.labels)
			continue
		}
		var v float64
		switch {
		case m.Gauge != nil:
			v = m.Gauge.GetValue()
		case m.Counter != nil:
			v = m.Counter.GetValue()
		}
		if v != c.value {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.value)
		}
	}
	h := find(fams, "rs_service_ping_rtt_seconds", map[string]string{"label": "kv"})
	if h == nil || h.Histogram.GetSampleCount() != 1 {
		t.Fatalf("ping histogram: %v", h)
	}
	// 50µs falls in a bucket at or below 80µs: the buckets resolve sub-millisecond trips.
	for _, b := range h.Histogram.Bucket {
		if b.GetUpperBound() < 50e-6 && b.GetCumulativeCount() != 0 {
			t.Errorf("bucket %v holds the 50µs trip", b.GetUpperBound())
		}
		if b.GetUpperBound() <= 80e-6 && b.GetUpperBound() >= 50e-6 && b.GetCumulativeCount() != 1 {
			t.Errorf("bucket %v misses the 50µs trip", b.GetUpperBound())
		}
	}
	for _, name := range []string{"process_open_fds", "process_resident_memory_bytes", "go_goroutines"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
	if code, body := get(t, base+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz: %d %q", code, body)
	}
}

// A removed label's counters and histogram go with it; another label's
// stay.
func TestRemovedLabelForgotten(t *testing.T) {
	status := func() ([]control.Status, error) {
		return []control.Status{{Label: "db", State: control.StateRunning}}, nil
	}
	s, base := serve(t, status, 0)
	ev := make(chan control.Event, 16)
	s.Collector().Follow(ev)
	for _, l := range []string{"kv", "db"} {
		ev <- control.Event{Label: l, Event: "reincarnating", Kind: "terminated"}
		ev <- control.Event{Label: l, Event: "pong", RTT: 50 * time.Microsecond}
		ev <- control.Event{Label: l, Event: "update-committed"}
	}
	ev <- control.Event{Label: "kv", Event: "removed"}
	close(ev)
	select {
	case <-s.Collector().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("events not read")
	}
	fams := scrape(t, base)
	for _, name := range []string{"rs_service_restarts_total", "rs_service_ping_rtt_seconds", "rs_service_updates_total"} {
		if m := find(fams, name, map[string]string{"label": "kv"}); m != nil {
			t.Errorf("%s{label=kv} still there after its removal: %v", name, m)
		}
		if m := find(fams, name, map[string]string{"label": "db"}); m == nil {
			t.Errorf("%s{label=db} gone with kv's removal", name)
		}
	}
}

// A loop that does not answer: /healthz says 503 within the bound, the
// metrics still come (rs_loop_up 0, no service gauges), and only one
// request waits on the loop however many scrapes come.
func TestLoopNotAnswering(t *testing.T) {
	asked := make(chan struct{}, 100)
	release := make(chan struct{})
	status := func() ([]control.Status, error) {
		asked <- struct{}{}
		<-release
		return nil, nil
	}
	_, base := serve(t, status, 100*time.Millisecond)
	defer close(release)
	for range 3 {
		if code, body := get(t, base+"/healthz"); code != http.StatusServiceUnavailable {
			t.Fatalf("/healthz: %d %q, want 503", code, body)
		}
	}
	fams := scrape(t, base)
	if m := find(fams, "rs_loop_up", nil); m == nil || m.Gauge.GetValue() != 0 {
		t.Errorf("rs_loop_up: %v, want 0", m)
	}
	if fams["rs_service_up"] != nil {
		t.Errorf("rs_service_up without an answer from the loop")
	}
	if n := len(asked); n != 1 {
		t.Errorf("%d status requests in flight, want 1", n)
	}
}

func TestBadAddress(t *testing.T) {
	if _, err := Listen("256.0.0.1:0", New(nil, 0), slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("no error for a bad address")
	}
}
