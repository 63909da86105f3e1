package campaign

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestPlanIsTheSeeds(t *testing.T) {
	cfg, err := Config{Bin: "x", Faults: 500, Services: 3, Seed: 42}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	a, b := plan(cfg), plan(cfg)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed gave two plans")
	}
	kinds := map[Kind]bool{}
	for i, f := range a {
		if f.n != i || f.svc < 0 || f.svc >= 3 || injectors[f.kind] == nil {
			t.Fatalf("fault %d: %+v", i, f)
		}
		kinds[f.kind] = true
	}
	if len(kinds) != len(AllKinds) {
		t.Errorf("500 faults drew %d of %d kinds", len(kinds), len(AllKinds))
	}
	cfg.Seed = 43
	if reflect.DeepEqual(a, plan(cfg)) {
		t.Error("another seed gave the same plan")
	}
}

func TestEveryKindHasAnInjector(t *testing.T) {
	for _, k := range AllKinds {
		if injectors[k] == nil {
			t.Errorf("%s: no injector", k)
		}
		if got, err := ParseKind(string(k)); err != nil || got != k {
			t.Errorf("ParseKind(%q) = %q, %v", k, got, err)
		}
	}
	if _, err := ParseKind("meteor"); err == nil {
		t.Error("ParseKind accepted an unknown kind")
	}
}

func TestConfigDefaults(t *testing.T) {
	if _, err := (Config{}).withDefaults(); err == nil {
		t.Error("no Bin accepted")
	}
	if _, err := (Config{Bin: "x", Network: "udp"}).withDefaults(); err == nil {
		t.Error("network udp accepted")
	}
	c, err := Config{Bin: "x"}.withDefaults()
	if err != nil || c.Faults != DefaultFaults || c.Services != DefaultServices || c.Seed == 0 ||
		c.Network != "unix" || c.RecoverTimeout != DefaultRecoverTimeout || len(c.Kinds) != len(AllKinds) {
		t.Errorf("defaults: %+v, %v", c, err)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	if Percentile(d, 50) != 0 {
		t.Error("empty")
	}
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 100 * time.Millisecond}, {99, 198 * time.Millisecond}, {100, 200 * time.Millisecond}, {0, time.Millisecond}} {
		if got := Percentile(d, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                        "—",
		730 * time.Microsecond:   "730µs",
		12340 * time.Microsecond: "12.3ms",
		231 * time.Millisecond:   "231ms",
		2096 * time.Millisecond:  "2.10s",
		15 * time.Second:         "15.0s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
	}
}

func TestNormalise(t *testing.T) {
	got := normalise("update kv3 rolled back: no-heartbeat: ping 12 unanswered after 100ms (kv3)", "kv3")
	if want := "rolled back: no-heartbeat: ping N unanswered after Nms (<svc>)"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
}

func TestReplaceSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "R.md")
	if err := ReplaceSection(path, "first"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "# Reliability") || !strings.Contains(string(b), SectionBegin+"\nfirst\n"+SectionEnd) {
		t.Fatalf("new file:\n%s", b)
	}
	text := "# Title\n\nbefore\n\n" + SectionBegin + "\nold\n" + SectionEnd + "\n\nafter\n"
	os.WriteFile(path, []byte(text), 0o644)
	if err := ReplaceSection(path, "second\n"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if want := "# Title\n\nbefore\n\n" + SectionBegin + "\nsecond\n" + SectionEnd + "\n\nafter\n"; string(b) != want {
		t.Fatalf("replaced:\n%s\nwant:\n%s", b, want)
	}
	os.WriteFile(path, []byte("# Other\n"), 0o644)
	ReplaceSection(path, "third")
	b, _ = os.ReadFile(path)
	if want := "# Other\n\n" + SectionBegin + "\nthird\n" + SectionEnd + "\n"; string(b) != want {
		t.Fatalf("appended:\n%q\nwant:\n%q", b, want)
	}
}

func TestReportOK(t *testing.T) {
	r := &Report{Faults: 2}
	r.add([]result{
		{fault: fault{n: 0, kind: KindPanic}, injected: true, recovered: true, took: time.Millisecond, lastExit: "terminated: exit N"},
		{fault: fault{n: 1, kind: KindHang}, injected: true, recovered: true, took: 200 * time.Millisecond},
	})
	r.Checks = []Check{{Name: "x", OK: true}}
	if !r.OK() {
		t.Fatalf("OK: false for %+v", r)
	}
	md := r.Markdown()
	for _, want := range []string{"| panic | 1 | 1 |", "| hang | 1 | 1 | 200ms |", "| **all** | **2** | **2** |", "terminated: exit N ×1", "| x | ok |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	r.Checks[0].OK = false
	if r.OK() {
		t.Error("OK with a failed check")
	}
	r2 := &Report{Faults: 2}
	r2.add([]result{{fault: fault{n: 0, kind: KindPanic}, injected: true, problem: "not recovered"}})
	if r2.OK() || len(r2.Failures) != 1 || !strings.Contains(r2.Markdown(), "not recovered") {
		t.Errorf("a failure: OK %v, %+v", r2.OK(), r2.Failures)
	}
}
