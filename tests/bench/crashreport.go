package main

// The crash scenario's tables: each column's kill → served, the ratios
// pair by pair, and the targets.

import (
	"fmt"
	"strings"
	"time"
)

func (b *bench) crashReport(n int, targets []*crashTarget) {
	tab, col := b.crashTable(fmt.Sprintf("Crash → serving (SIGKILL, then connect + INFO until a new pid answers; %d rounds)", n),
		"crash → serving: ", targets)
	for _, t := range targets {
		if len(t.kills) > 0 {
			tab.foot = append(tab.foot, b.rsBreakdown(t))
		}
	}
	b.sections = append(b.sections, tab)
	rt := table{title: "Crash → serving: ratios, pair by pair (round i of one column over round i of the other)",
		head: []string{"ratio", "median (min–max)", "target"}}
	type cmp struct {
		a, b, target string
		limit        float64
	}
	fl := targets[len(targets)-1].name
	for _, c := range []cmp{
		{"rs standby", "runsv", "≤ 0.25×", 0.25},
		{"rs standby", s6Ready, "≤ 0.25×", 0.25},
		{"rs standby", "s6-supervise", "≤ 0.25×", 0.25},
		{"rs", fl, "≤ 1.3×", 1.3},
		{"rs standby", fl, "", 0},
		{"rs", "runsv", "", 0},
		{"rs", s6Ready, "", 0},
		{"rs", "s6-supervise", "", 0},
		{"runsv", fl, "", 0},
		{s6Ready, fl, "", 0},
		{"s6-supervise", fl, "", 0},
	} {
		r := pairRatios(col[c.a], col[c.b])
		name := c.a + " / " + strings.TrimSuffix(c.b, ", no supervisor")
		rt.add(name, ratioRange(r), c.target)
		if c.limit == 0 {
			continue
		}
		what := fmt.Sprintf("crash → serving: %s ≤ %v× %s (median of pairwise ratios)", c.a, c.limit, strings.TrimSuffix(c.b, ", no supervisor"))
		if len(r) == 0 {
			b.unjudged(what, "not measured")
		} else {
			b.judge(what, fmt.Sprintf("%.3f×", medianF(r)), medianF(r) <= c.limit)
		}
	}
	b.sections = append(b.sections, rt)

	if m := measured(col["rs standby"]); len(m) > 0 {
		b.judge("crash → serving with a standby: rs median < 1 ms", short(median(m)), median(m) < time.Millisecond)
	} else {
		b.unjudged("crash → serving with a standby: rs median < 1 ms", "not measured")
	}
	if sb := targets[1]; len(measured(sb.d)) > 0 {
		b.notes = append(b.notes, fmt.Sprintf("crash: rs standby: the standby was the instance that answered after %d of %d kills", sb.takeovers, len(measured(sb.d))))
	}
	refused := 0
	for _, t := range targets[:2] {
		for _, k := range t.refused {
			refused += k
		}
	}
	b.judge("crash → serving: 0 connections refused under rs (with and without standby)", fmt.Sprint(refused), refused == 0)
	if refused > 0 {
		b.bad = true
	}
}

// crashTable is one row per column of targets (median, refused
// connections, other failures), each timing also under every timing as
// rowPrefix+name; it returns the columns' timings by name too.
func (b *bench) crashTable(title, rowPrefix string, targets []*crashTarget) (table, map[string][]time.Duration) {
	tab := table{title: title,
		head: []string{"supervisor", "median (min–max)", "refused connections: total (max per kill)", "other failed attempts", "n"}}
	col := map[string][]time.Duration{}
	for _, t := range targets {
		col[t.name] = t.d
		m := measured(t.d)
		b.rows = append(b.rows, row{name: rowPrefix + t.name, d: m})
		if len(m) == 0 {
			why := t.failed
			if why == "" {
				why = "not measured"
			}
			tab.add(t.name, "skipped: "+firstLine(why), "-", "-", "0")
			continue
		}
		total, most := 0, 0
		for _, k := range t.refused {
			total += k
			most = max(most, k)
		}
		tab.add(t.name, medRange(m), fmt.Sprintf("%d (%d)", total, most), fmt.Sprint(t.other), fmt.Sprint(len(m)))
		if len(t.reaped) > 0 {
			b.rows = append(b.rows, row{name: "SIGKILL → reaped (idle kv, no supervisor)", d: t.reaped})
			tab.foot = append(tab.foot, fmt.Sprintf("Before any supervisor can act: SIGKILL → reaped (the floor's kv, idle since it served, killed "+
				"at the start of the next round; Go's Wait on a pidfd) took %s over %d kills.", medRange(t.reaped), len(t.reaped)))
		}
	}
	return tab, col
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 100 {
		s = s[:100] + "…"
	}
	return s
}

// rsBreakdown splits t's kills with the times in rs's JSON log: SIGKILL →
// rs acts on the death (logs the exit after the reap; with a standby,
// logs that the standby takes over, which it does as soon as the dying
// instance's channel closes), and from there → rs logs the new instance
// ready (for a standby, the restart init; else the exec too). The
// client's reply can come before rs logs ready: kv serves as soon as its
// init is done.
func (b *bench) rsBreakdown(t *crashTarget) string {
	evs := logEvents(b.rsLog)
	var toExit, toReady []time.Duration
	for _, k := range t.kills {
		var exited, ready time.Time
		for _, e := range evs {
			if e.Label != t.label || e.Time.Before(k.at.Round(0).Add(-time.Millisecond)) {
				continue
			}
			switch {
			case exited.IsZero() && (e.Msg == "exited" && e.Pid == k.old || e.Msg == "standby takes over" && e.Pid == k.new):
				exited = e.Time
			case !exited.IsZero() && ready.IsZero() && e.Msg == "ready" && e.Pid == k.new:
				ready = e.Time
			}
		}
		if exited.IsZero() || ready.IsZero() {
			continue
		}
		toExit = append(toExit, exited.Sub(k.at.Round(0)))
		toReady = append(toReady, ready.Sub(exited))
	}
	if len(toExit) == 0 {
		return fmt.Sprintf("%s: no breakdown (rs's log did not name the kills)", t.name)
	}
	b.rows = append(b.rows, row{name: t.name + ": SIGKILL → rs acts on the death", d: toExit},
		row{name: t.name + ": then → rs logs the new instance ready", d: toReady})
	return fmt.Sprintf("%s, from rs's log (%d kills): SIGKILL → rs acts on the death %s; then → new instance ready %s.",
		t.name, len(toExit), medRange(toExit), medRange(toReady))
}
