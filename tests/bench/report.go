package main

// What the bench prints: the machine, one table per scenario (markdown,
// so that BENCHMARKS.md can take them as they are), the targets met or
// missed, every timing in full, then the notes.
//
// A figure is the median with the min–max of its runs. A comparison is
// a ratio taken pair by pair (round i of one column over round i of the
// other, both measured in the same round) and then summarised the same
// way, never a ratio of two medians.

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// table is one section of the report.
type table struct {
	title string
	head  []string
	rows  [][]string
	foot  []string // lines under the table
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

// render prints t as a markdown table with padded columns.
func (t *table) render() string {
	var s strings.Builder
	fmt.Fprintf(&s, "### %s\n\n", t.title)
	w := make([]int, len(t.head))
	for i, h := range t.head {
		w[i] = runeLen(h)
	}
	for _, r := range t.rows {
		for i, c := range r {
			if i < len(w) {
				w[i] = max(w[i], runeLen(c))
			}
		}
	}
	line := func(cells []string) {
		s.WriteString("|")
		for i := range w {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			s.WriteString(" " + c + strings.Repeat(" ", w[i]-runeLen(c)) + " |")
		}
		s.WriteString("\n")
	}
	line(t.head)
	s.WriteString("|")
	for i := range w {
		s.WriteString(strings.Repeat("-", w[i]+2) + "|")
	}
	s.WriteString("\n")
	for _, r := range t.rows {
		line(r)
	}
	for _, f := range t.foot {
		s.WriteString("\n" + f + "\n")
	}
	return s.String()
}

func runeLen(s string) int { return len([]rune(s)) }

// target is one goal of issue 5, judged on this run's figures.
type target struct {
	what, measured string
	met            bool
	known          bool // false: not measured (skipped or failed)
}

func (b *bench) judge(what, measured string, met bool) {
	b.targets = append(b.targets, target{what: what, measured: measured, met: met, known: true})
}

func (b *bench) unjudged(what, why string) {
	b.targets = append(b.targets, target{what: what, measured: why})
}

func verdict(t target) string {
	switch {
	case !t.known:
		return "not measured"
	case t.met:
		return "met"
	}
	return "**missed**"
}

// machine describes where the bench runs; load is taken at its start.
type machine struct {
	nproc       int
	kernel, cpu string
	loadStart   string
	memTotal    string
	goVersion   string
	started     time.Time
}

func readMachine() machine {
	var u unix.Utsname
	unix.Uname(&u)
	m := machine{nproc: runtime.NumCPU(), kernel: unix.ByteSliceToString(u.Release[:]),
		loadStart: loadavg(), goVersion: runtime.Version(), started: time.Now(), cpu: "?", memTotal: "?"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kib int64
				if _, err := fmt.Sscan(v, &kib); err == nil {
					m.memTotal = fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
				}
			}
		}
	}
	return m
}

// loadavg is the 1, 5 and 15 minute load averages.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if err != nil || len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func (b *bench) print() {
	m := b.machine
	fmt.Printf("## rs benchmarks\n\n")
	fmt.Printf("machine: nproc %d, CPU %s, memory %s, kernel %s, %s\n", m.nproc, m.cpu, m.memTotal, m.kernel, m.goVersion)
	fmt.Printf("load average (1 5 15 min): %s at the start, %s at the end\n", m.loadStart, loadavg())
	fmt.Printf("bench ran %s (from %s UTC)\n\n", time.Since(m.started).Round(time.Second), m.started.UTC().Format("2006-01-02 15:04"))
	for _, t := range b.sections {
		fmt.Println(t.render())
	}
	if len(b.targets) > 0 {
		t := table{title: "Targets", head: []string{"target", "measured", "verdict"}}
		for _, g := range b.targets {
			t.add(g.what, g.measured, verdict(g))
		}
		fmt.Println(t.render())
	}
	if len(b.rows) > 0 {
		t := table{title: "Every timing", head: []string{"figure", "median", "min", "max", "p90", "p99", "n"}}
		for _, r := range b.rows {
			if len(r.d) == 0 {
				t.add(r.name, "-", "-", "-", "-", "-", "0")
				continue
			}
			d := sorted(r.d)
			t.add(r.name, short(median(d)), short(d[0]), short(d[len(d)-1]), short(quantile(d, 0.9)), short(quantile(d, 0.99)), fmt.Sprint(len(d)))
		}
		fmt.Println(t.render())
	}
	if len(b.notes) > 0 {
		fmt.Println("### Notes")
		fmt.Println()
		for _, n := range b.notes {
			fmt.Println("- " + n)
		}
	}
}

func sorted(d []time.Duration) []time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d
}

// median of d, which need not be sorted.
func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = sorted(d)
	return (d[(len(d)-1)/2] + d[len(d)/2]) / 2
}

// quantile by nearest rank; d must be sorted.
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(d)))) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// medRange is "median (min–max)", "-" for nothing.
func medRange(d []time.Duration) string {
	if len(d) == 0 {
		return "-"
	}
	s := sorted(d)
	return fmt.Sprintf("%s (%s–%s)", short(median(s)), short(s[0]), short(s[len(s)-1]))
}

func medianF(r []float64) float64 {
	if len(r) == 0 {
		return math.NaN()
	}
	r = slices.Clone(r)
	slices.Sort(r)
	return (r[(len(r)-1)/2] + r[len(r)/2]) / 2
}

// ratioRange is "median× (min–max)" of ratios.
func ratioRange(r []float64) string {
	if len(r) == 0 {
		return "-"
	}
	s := slices.Clone(r)
	slices.Sort(s)
	return fmt.Sprintf("%s× (%s–%s)", ratio(medianF(s)), ratio(s[0]), ratio(s[len(s)-1]))
}

func ratio(f float64) string {
	switch {
	case f >= 100:
		return fmt.Sprintf("%.0f", f)
	case f >= 10:
		return fmt.Sprintf("%.1f", f)
	case f >= 0.1:
		return fmt.Sprintf("%.2f", f)
	}
	return fmt.Sprintf("%.3f", f)
}

// pairRatios divides a[i] by b[i] for every round where both were
// measured (a value < 0 means "not measured").
func pairRatios(a, b []time.Duration) []float64 {
	var r []float64
	for i := range min(len(a), len(b)) {
		if a[i] >= 0 && b[i] > 0 {
			r = append(r, float64(a[i])/float64(b[i]))
		}
	}
	return r
}

// measured keeps the rounds that were measured.
func measured(d []time.Duration) []time.Duration {
	var m []time.Duration
	for _, x := range d {
		if x >= 0 {
			m = append(m, x)
		}
	}
	return m
}

// short prints a duration with three significant figures or so.
func short(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + short(-d)
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.3fs", d.Seconds())
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }
