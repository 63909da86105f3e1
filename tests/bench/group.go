package main

// The group scenario: three kv instances (g1, g2, g3) under an rs of
// their own, one load client each on a persistent connection, and
// groupKeys keys in each. Each round updates the three as one (`service
// update g1 g2 g3`, one atomic group) and then, to the other binary, one
// by one (three `service update`s in a row), so both are measured on the
// same services in the same run. For each client the bench finds the
// longest wait for a reply during the group command, and during the
// update of its own service in the one-by-one pass; it times the group
// command beside the three single commands together; it counts failed
// requests and wrong replies (there should be none) and checks after
// each step that every instance runs the new binary with a new pid.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/reincarnation/rs/internal/resp"
	"github.com/reincarnation/rs/rs/control"
)

const groupKeys = 10000

var groupSvcs = []string{"g1", "g2", "g3"}

type groupBench struct {
	b     *bench
	ctl   control.Client
	bins  [2]string
	addrs map[string]string
	loads map[string]*load
	fails int // failed update commands
}

func (b *bench) groupScenario() error {
	bins, err := b.kvBinaries()
	if err != nil {
		return err
	}
	dir := filepath.Join(b.dir, "group-rs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	g := &groupBench{b: b, bins: bins, addrs: map[string]string{}, loads: map[string]*load{},
		ctl: control.Client{Socket: filepath.Join(dir, "rs.sock"), Timeout: updateTimeout}}
	var cfg strings.Builder
	for _, l := range groupSvcs {
		if g.addrs[l], err = b.addr("group-" + l); err != nil {
			return err
		}
		fmt.Fprintf(&cfg, "[service.%s]\nbinary = %q\nargs = [\"--listen\", %q]\nperiod = \"1s\"\nmax_restarts = -1\n\n", l, bins[0], g.addrs[l])
	}
	cfgPath := filepath.Join(dir, "group.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "rs.log")
	p, err := b.startRS(cfgPath, g.ctl.Socket, logPath, nil, append([]string{"--log-format", "json"}, b.logDirFlags("group-logs")...)...)
	if err != nil {
		return err
	}
	saved := b.ctl
	b.ctl = g.ctl // waitRunning and status ask this rs
	defer func() {
		b.ctl = saved
		if serr := p.stop(10 * time.Second); serr != nil {
			b.problem("group: " + serr.Error())
		}
		b.reapLeftovers()
		if err != nil || b.bad {
			fmt.Fprintf(os.Stderr, "\n--- group rs log (last lines) ---\n%s", tail(logPath, 30))
		}
	}()
	err = g.run()
	return err
}

func (g *groupBench) run() error {
	b := g.b
	for _, l := range groupSvcs {
		st, err := b.waitRunning(l, 0, 10*time.Second)
		if err != nil {
			return err
		}
		b.killed = append(b.killed, st.Pid)
		c, err := resp.DialAddr(g.addrs[l], time.Second)
		if err != nil {
			return err
		}
		err = loadKeys(c, groupKeys)
		c.Close()
		if err != nil {
			return fmt.Errorf("group: loading %d keys into %s: %w", groupKeys, l, err)
		}
	}
	base := time.Now()
	for _, l := range groupSvcs {
		g.loads[l] = startLoadN(g.addrs[l], base, 1, 0)
	}
	running := true
	defer func() {
		if running {
			for _, l := range g.loads {
				l.stopAndWait()
			}
		}
	}()
	if err := b.sleep(updateSpacing); err != nil {
		return err
	}
	var groupWs []window
	oneWs := map[string][]window{}
	var oneTotal []time.Duration
	next := 1
	for i := range b.opts.updates {
		w, err := g.update(fmt.Sprintf("group update %d/%d", i+1, b.opts.updates), base, g.bins[next], groupSvcs...)
		if err != nil {
			return err
		}
		groupWs = append(groupWs, w)
		next = 1 - next
		if err := b.sleep(updateSpacing); err != nil {
			return err
		}
		var total time.Duration
		for _, l := range groupSvcs {
			w, err := g.update(fmt.Sprintf("one-by-one %d/%d: %s", i+1, b.opts.updates, l), base, g.bins[next], l)
			if err != nil {
				return err
			}
			oneWs[l] = append(oneWs[l], w)
			total += w.end - w.start
		}
		oneTotal = append(oneTotal, total)
		next = 1 - next
		if err := b.sleep(updateSpacing); err != nil {
			return err
		}
	}
	running = false
	for l, ld := range g.loads {
		if !ld.stopAndWait() {
			return fmt.Errorf("group: %s's client did not stop within %v", l, loadRequestTimeout+5*time.Second)
		}
	}
	g.report(groupWs, oneWs, oneTotal)
	return nil
}

// update updates labels (one: alone; several: as one group) to binary
// and checks each; it returns the command's window.
func (g *groupBench) update(what string, base time.Time, binary string, labels ...string) (window, error) {
	b := g.b
	before := map[string]int{}
	for _, l := range labels {
		st, err := b.status(l)
		if err != nil {
			return window{}, err
		}
		before[l] = st.Pid
	}
	start := time.Now()
	r, uerr := g.ctl.Do(control.Request{Op: control.OpUpdate, Label: labels[0], Group: labels[1:], Binary: binary}, nil)
	end := time.Now()
	if b.verbose {
		fmt.Fprintf(os.Stderr, "%s → %s: %v, %q, err %v\n", what, filepath.Base(binary), end.Sub(start), r.Message, uerr)
	}
	if uerr != nil {
		g.fails++
		b.problem(fmt.Sprintf("group: %s failed after %v: %v", what, short(end.Sub(start)), uerr))
	}
	for _, l := range labels {
		st, err := b.waitRunning(l, 0, 10*time.Second)
		if err != nil {
			return window{}, fmt.Errorf("group: %s: after the update: %w", what, err)
		}
		if !slices.Contains(b.killed, st.Pid) {
			b.killed = append(b.killed, st.Pid)
		}
		if uerr == nil && (st.Pid == before[l] || st.Binary != binary) {
			b.problem(fmt.Sprintf("group: %s succeeded but %s is pid %d (was %d), binary %s", what, l, st.Pid, before[l], filepath.Base(st.Binary)))
		}
	}
	return window{start: start.Sub(base), end: end.Sub(base)}, nil
}

// failedIn counts the requests of l that failed during one of ws.
func failedIn(l *load, ws []window) int {
	n := 0
	for _, c := range l.clients {
		for _, s := range c.spans {
			if s.ok {
				continue
			}
			for _, w := range ws {
				if s.end >= w.start && s.start <= w.end {
					n++
					break
				}
			}
		}
	}
	return n
}

func (g *groupBench) report(groupWs []window, oneWs map[string][]window, oneTotal []time.Duration) {
	b := g.b
	t := table{title: "Group update: three kv instances as one, beside one by one",
		head: []string{"", "group (`update g1 g2 g3`)", "one by one (3 × `update`)"}}
	var groupCmd []time.Duration
	for _, w := range groupWs {
		groupCmd = append(groupCmd, w.end-w.start)
	}
	t.add("command: median (min–max)", medRange(groupCmd), medRange(oneTotal)+" (the three together)")
	grpRow, oneRow := row{name: "group: group update command"}, row{name: "group: one by one, three commands"}
	grpRow.d, oneRow.d = groupCmd, oneTotal
	b.rows = append(b.rows, grpRow, oneRow)
	var failedGrp, failedOne, errs, wrong int
	for _, l := range groupSvcs {
		ld := g.loads[l]
		var gg, og []time.Duration
		for _, w := range groupWs {
			if d, n := ld.gap(w); n > 0 {
				gg = append(gg, d)
			}
		}
		for _, w := range oneWs[l] {
			if d, n := ld.gap(w); n > 0 {
				og = append(og, d)
			}
		}
		t.add(fmt.Sprintf("gap %s's client saw: median (min–max)", l), medRange(gg), medRange(og)+" (its own update)")
		b.rows = append(b.rows, row{name: "group: gap " + l + " (group)", d: gg}, row{name: "group: gap " + l + " (alone)", d: og})
		failedGrp += failedIn(ld, groupWs)
		failedOne += failedIn(ld, oneWs[l])
		for _, c := range ld.clients {
			errs += c.errs
			wrong += c.wrong
			for _, m := range c.msgs {
				b.problem("group: " + l + ": " + m)
			}
		}
	}
	t.add("failed requests", fmt.Sprint(failedGrp), fmt.Sprint(failedOne))
	reqs := 0
	for _, ld := range g.loads {
		reqs += ld.requests()
	}
	t.foot = append(t.foot, fmt.Sprintf("%d rounds, each a group update and then the three one by one to the other binary (%s and %s), "+
		"%v apart; %d keys in each kv; one client per kv (INCR, SET, GET on a persistent connection): %d requests, %d errors, %d wrong replies in all; %d update commands failed.",
		len(groupWs), filepath.Base(g.bins[0]), filepath.Base(g.bins[1]), updateSpacing, groupKeys, reqs, errs, wrong, g.fails))
	if errs+wrong+g.fails > 0 {
		b.bad = true
	}
	b.sections = append(b.sections, t)
}
