package campaign

import (
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// Report is what a campaign found.
type Report struct {
	Seed           uint64
	Services       int
	Faults         int // planned
	Network        string
	Sequential     bool
	RecoverTimeout time.Duration
	Period         time.Duration // the services' ping period
	PingTimeout    time.Duration // and ping timeout
	Warmup         int           // faults before the baseline figures
	Duration       time.Duration // injecting and recovering
	Total          time.Duration // with the end checks and the shutdown
	RSPid          int

	Kinds    []KindStats // in AllKinds order, kinds drawn only
	Checks   []Check
	Failures []Failure // faults not recovered (or not injected), in order

	Base, End *control.Daemon // rs's figures after the warm-up and at the end

	Dir     string // the work directory, when kept (something failed)
	LogPath string // rs's log
	LogTail string // its end, when rs died
}

// KindStats sums up one kind.
type KindStats struct {
	Kind      Kind
	Injected  int
	Recovered int
	Times     []time.Duration // recovery times, sorted
	// Outcomes counts what happened at an awkward moment, or rs's
	// last_exit after a crash, normalised (numbers are N).
	Outcomes map[string]int
}

// Failure is a fault that did not recover, with rs's log around it.
type Failure struct {
	N       int
	Kind    Kind
	Label   string
	At      time.Duration // since the campaign began
	Outcome string
	Problem string
	Log     string
}

func (r *Report) add(results []result) {
	byKind := map[Kind]*KindStats{}
	for _, res := range results {
		k := byKind[res.kind]
		if k == nil {
			k = &KindStats{Kind: res.kind, Outcomes: map[string]int{}}
			byKind[res.kind] = k
		}
		if res.injected {
			k.Injected++
		}
		if res.recovered {
			k.Recovered++
			k.Times = append(k.Times, res.took)
		}
		switch {
		case res.outcome != "":
			k.Outcomes[res.outcome]++
		case res.lastExit != "":
			k.Outcomes[res.lastExit]++
		}
		if !res.recovered {
			r.Failures = append(r.Failures, Failure{N: res.n, Kind: res.kind, Label: res.label, At: res.at,
				Outcome: res.outcome, Problem: res.problem, Log: res.log})
		}
	}
	for _, kind := range AllKinds {
		if k := byKind[kind]; k != nil {
			sort.Slice(k.Times, func(i, j int) bool { return k.Times[i] < k.Times[j] })
			r.Kinds = append(r.Kinds, *k)
		}
	}
}

// OK: every planned fault was injected and recovered, and every check
// passed.
func (r *Report) OK() bool {
	if r == nil || len(r.Failures) > 0 {
		return false
	}
	inj := 0
	for _, k := range r.Kinds {
		inj += k.Injected
	}
	if inj != r.Faults {
		return false
	}
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// Percentile returns the nearest-rank p-th percentile of sorted times.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// FormatDuration prints a recovery time with the precision it deserves.
func FormatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "—"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// Table is the per-kind markdown table.
func (r *Report) Table() string {
	var b strings.Builder
	b.WriteString("| kind | injected | recovered | median | p99 | max recovery |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|\n")
	var all KindStats
	for _, k := range r.Kinds {
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %s |\n", k.Kind, k.Injected, k.Recovered,
			FormatDuration(Percentile(k.Times, 50)), FormatDuration(Percentile(k.Times, 99)), FormatDuration(Percentile(k.Times, 100)))
		all.Injected += k.Injected
		all.Recovered += k.Recovered
		all.Times = append(all.Times, k.Times...)
	}
	sort.Slice(all.Times, func(i, j int) bool { return all.Times[i] < all.Times[j] })
	fmt.Fprintf(&b, "| **all** | **%d** | **%d** | %s | %s | %s |\n", all.Injected, all.Recovered,
		FormatDuration(Percentile(all.Times, 50)), FormatDuration(Percentile(all.Times, 99)), FormatDuration(Percentile(all.Times, 100)))
	return b.String()
}

// Markdown renders the whole report: summary, table, what happened,
// the end checks, and the faults not recovered (without their logs; see
// Details).
func (r *Report) Markdown() string {
	var b strings.Builder
	verdict := "**every fault recovered, every check passed**"
	if !r.OK() {
		verdict = "**FAILED**: see the faults not recovered and the checks below"
	}
	how := "faulted concurrently, one fault at a time per service"
	if r.Sequential {
		how = "one fault at a time overall"
	}
	net := "unix sockets"
	if r.Network == "tcp" {
		net = "127.0.0.1 ports"
	}
	fmt.Fprintf(&b, "Seed %d · %d kv services on %s, %s; ping period %v, timeout %v · %d faults in %s (with end checks and shutdown: %s) · %s.\n\n",
		r.Seed, r.Services, net, how, r.Period, r.PingTimeout, r.Faults, r.Duration.Round(time.Second), r.Total.Round(time.Second), verdict)
	b.WriteString(r.Table())
	fmt.Fprintf(&b, "\nRecovery: from the injection (for updates: the request) to the first correct SET + GET of a fresh key "+
		"on a new connection, answered (INFO process_id) by the pid that status shows running; bounded by %v.\n", r.RecoverTimeout)

	var rows []string
	for _, k := range r.Kinds {
		if len(k.Outcomes) == 0 {
			continue
		}
		type oc struct {
			s string
			n int
		}
		var ocs []oc
		for s, n := range k.Outcomes {
			ocs = append(ocs, oc{s, n})
		}
		sort.Slice(ocs, func(i, j int) bool { return ocs[i].n > ocs[j].n || ocs[i].n == ocs[j].n && ocs[i].s < ocs[j].s })
		parts := make([]string, len(ocs))
		for i, o := range ocs {
			parts[i] = fmt.Sprintf("%s ×%d", mdEscape(o.s), o.n)
		}
		rows = append(rows, fmt.Sprintf("| %s | %s |", k.Kind, strings.Join(parts, "; ")))
	}
	if len(rows) > 0 {
		b.WriteString("\nWhat happened: rs's `last_exit` after the crash kinds; for the awkward moments (best effort), the moment hit and how the update ended.\n\n")
		b.WriteString("| kind | what happened |\n|---|---|\n")
		b.WriteString(strings.Join(rows, "\n"))
		b.WriteString("\n")
	}

	b.WriteString("\nEnd-of-run checks:\n\n| check | | figures |\n|---|---|---|\n")
	for _, c := range r.Checks {
		mark := "ok"
		if !c.OK {
			mark = "**FAILED**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", c.Name, mark, mdEscape(c.Detail))
	}
	if len(r.Failures) > 0 {
		fmt.Fprintf(&b, "\nNot recovered or not injected (%d):\n\n", len(r.Failures))
		for i, f := range r.Failures {
			if i == 20 {
				fmt.Fprintf(&b, "- ... and %d more\n", len(r.Failures)-i)
				break
			}
			fmt.Fprintf(&b, "- fault %d, %s on %s at %v: %s\n", f.N, f.Kind, f.Label, f.At.Round(time.Millisecond), mdEscape(f.Problem))
		}
	}
	return b.String()
}

// Details lists the faults not recovered with rs's log around each, for
// a terminal or a test log.
func (r *Report) Details() string {
	var b strings.Builder
	for i, f := range r.Failures {
		if i == 10 {
			fmt.Fprintf(&b, "... and %d more failures\n", len(r.Failures)-i)
			break
		}
		fmt.Fprintf(&b, "--- fault %d: %s on %s at %v\n    problem: %s\n", f.N, f.Kind, f.Label, f.At.Round(time.Millisecond), f.Problem)
		if f.Outcome != "" {
			fmt.Fprintf(&b, "    outcome: %s\n", f.Outcome)
		}
		if f.Log != "" {
			fmt.Fprintf(&b, "    rs log around it:\n%s\n", indent(f.Log, "      "))
		}
	}
	if r.LogTail != "" {
		fmt.Fprintf(&b, "--- end of rs's log:\n%s\n", indent(r.LogTail, "      "))
	}
	if r.Dir != "" {
		fmt.Fprintf(&b, "work directory kept: %s (rs log: %s)\n", r.Dir, r.LogPath)
	}
	return b.String()
}

func indent(s, pre string) string {
	return pre + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pre)
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// Section markers in a file that holds a campaign's report.
const (
	SectionBegin = "<!-- campaign -->"
	SectionEnd   = "<!-- /campaign -->"
)

// ReplaceSection puts body between the markers in the file at path,
// replacing what was there; without markers (or without the file) the
// section is appended.
func ReplaceSection(path, body string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	section := SectionBegin + "\n" + strings.TrimRight(body, "\n") + "\n" + SectionEnd
	text := string(old)
	i := strings.Index(text, SectionBegin)
	j := strings.Index(text, SectionEnd)
	switch {
	case i >= 0 && j > i:
		text = text[:i] + section + text[j+len(SectionEnd):]
	case len(text) == 0:
		text = "# Reliability\n\nThe fault campaign (`internal/campaign`, `make campaign`) runs rs with kv services " +
			"and injects faults into them one after another, checking after each that the service came back " +
			"and at the end that rs has not leaked anything.\n\n" + section + "\n"
	default:
		text = strings.TrimRight(text, "\n") + "\n\n" + section + "\n"
	}
	return os.WriteFile(path, []byte(text), 0o644)
}
