package tests

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/reincarnation/rs/rs/control"
)

// rs --metrics with kv: after a SIGKILL and a live update of kv, a
// scrape parses as Prometheus text and counts both, with ping round
// trips and rs's own process figures; /healthz answers 200.
func TestMetricsScrape(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, kvConfig(addr, ""), "--metrics", "127.0.0.1:0") // kv pinged every 100ms
	var metricsAddr string
	r.waitFor("metrics listening", func() bool {
		m := regexp.MustCompile(`msg="metrics listening" addr=(\S+)`).FindStringSubmatch(r.log.String())
		if m != nil {
			metricsAddr = m[1]
		}
		return m != nil
	})
	first := r.waitState("kv", control.StateRunning, 0)
	syscall.Kill(first.Pid, syscall.SIGKILL)
	second := r.waitState("kv", control.StateRunning, first.Pid)
	r.mustService("update", "kv")
	r.waitState("kv", control.StateRunning, second.Pid)

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + metricsAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	value := func(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
		f := fams[name]
		if f == nil {
			return 0, false
		}
	next:
		for _, m := range f.Metric {
			for k, v := range labels {
				found := false
				for _, lp := range m.Label {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
		return 0, false
	}
	var fams map[string]*dto.MetricFamily
	ok := func() bool {
		code, body := get("/metrics")
		if code != http.StatusOK {
			t.Fatalf("/metrics: %d %s", code, body)
		}
		var err error
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err = p.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("/metrics does not parse: %v", err)
		}
		rtt, _ := value(fams, "rs_service_ping_rtt_seconds", map[string]string{"label": "kv"})
		up, _ := value(fams, "rs_service_up", map[string]string{"label": "kv"})
		return rtt > 0 && up == 1
	}
	r.waitFor("kv up with ping round trips in /metrics", ok)
	if v, _ := value(fams, "rs_service_restarts_total", map[string]string{"label": "kv", "reason": "terminated"}); v < 1 {
		t.Errorf("rs_service_restarts_total{kv,terminated} = %v, want >= 1", v)
	}
	if v, _ := value(fams, "rs_service_updates_total", map[string]string{"label": "kv", "result": "committed"}); v != 1 {
		t.Errorf("rs_service_updates_total{kv,committed} = %v, want 1", v)
	}
	for _, name := range []string{"process_open_fds", "process_resident_memory_bytes", "go_goroutines"} {
		if _, found := value(fams, name, nil); !found {
			t.Errorf("%s missing", name)
		}
	}
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %q", code, body)
	}
}
