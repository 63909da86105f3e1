package main

// The http scenario: servers/httpcount (sef/sefhttp, a counter whose
// every response carries the next number) under an rs of its own, with
// keep-alive load (httpload.go): httpClients Go clients and, in turn,
// each HTTP load tool that can be had (wrk, then ab -k). Each load runs
// through -updates live updates (`service update`, alternating bin/httpcount
// and a copy of it, so that each update execs another file) and then,
// the same load on the same server, through -updates `service restart`s:
// the server started again without sef's live update, as any
// supervisor does it, which closes the keep-alive connections and loses
// the counter; then the same loads through -updates s6-svc -r of
// httpcount standalone under s6-supervise (httpS6).
//
// For each phase: requests/s (the tool's, and the Go clients'), failed
// requests (Go clients' errors, wrk's socket errors, ab's failed requests
// and aborted runs), non-2xx responses, the longest wait (a Go client's
// longest wait for a response among the requests under way during a
// command, a failed request's wait running on to the next response; and
// the tool's own longest), and the counter: the Go clients' counters must
// be distinct and the count after the phase must be what the phase
// delivered (see httpload.go for how wrk's in-flight requests are
// allowed for). Every command, wait and tool run is bounded; a missing
// tool is skipped with a note. httpcount listens on loopback TCP
// whatever -net says: wrk and ab speak TCP only.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// httpPhase is one load through one kind of command.
type httpPhase struct {
	how, tool  string // "update" or "restart"; "wrk", "ab" or "" (Go clients alone)
	ws         []window
	cmds       []time.Duration
	gaps       []time.Duration
	tr         toolRun
	goResp     int
	goRPS      float64
	goErrs     int
	goNon2xx   int
	goConns    int
	dups       int    // counters the Go clients got twice
	v0, v1     uint64 // probes before and after
	countNote  string
	countOK    bool
	cmdFails   int
	skipped    string
	goProblems []string
}

func (b *bench) httpScenario() (err error) {
	hc := filepath.Join(b.bin, "httpcount")
	if _, err := os.Stat(hc); err != nil {
		b.notes = append(b.notes, fmt.Sprintf("http: skipped: no %s (go build -o bin/ ./servers/httpcount)", hc))
		b.unjudged("http: 0 failed requests across live updates", "no bin/httpcount")
		return nil
	}
	dir := filepath.Join(b.dir, "http-rs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// The second binary: the same program in another file.
	hcB := filepath.Join(dir, "httpcount-b")
	if err := copyFile(hc, hcB); err != nil {
		return err
	}
	addr, err := tcpAddr("http")
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf("[service.httpcount]\nbinary = %q\nargs = [\"--listen\", %q]\nperiod = \"1s\"\nmax_restarts = -1\n", hc, addr)
	cfgPath := filepath.Join(dir, "http.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	ctl := control.Client{Socket: filepath.Join(dir, "rs.sock"), Timeout: updateTimeout}
	logPath := filepath.Join(dir, "rs.log")
	p, err := b.startRS(cfgPath, ctl.Socket, logPath, nil, append([]string{"--log-format", "json"}, b.logDirFlags("http-logs")...)...)
	if err != nil {
		return err
	}
	saved := b.ctl
	b.ctl = ctl // waitRunning and status ask this rs
	defer func() {
		b.ctl = saved
		if serr := p.stop(10 * time.Second); serr != nil {
			b.problem("http: " + serr.Error())
		}
		b.reapLeftovers()
		if err != nil || b.bad {
			fmt.Fprintf(os.Stderr, "\n--- http rs log (last lines) ---\n%s", tail(logPath, 30))
		}
	}()
	st, err := b.waitRunning("httpcount", 0, 10*time.Second)
	if err != nil {
		return err
	}
	b.killed = append(b.killed, st.Pid)
	url := "http://" + addr + "/"
	if _, err := probeCount(url); err != nil {
		return fmt.Errorf("http: httpcount does not answer at %s: %w", url, err)
	}

	tools := []string{"wrk", "ab"}
	var phases []*httpPhase
	for _, tool := range tools {
		if b.tools.path[tool] == "" {
			b.notes = append(b.notes, fmt.Sprintf("http: the %s rows are skipped: %s", tool, b.tools.missing[tool]))
			phases = append(phases, &httpPhase{how: "update", tool: tool, skipped: b.tools.missing[tool]},
				&httpPhase{how: "restart", tool: tool, skipped: b.tools.missing[tool]})
			continue
		}
		for _, how := range []string{"update", "restart"} {
			ph, err := b.httpPhase(url, how, tool, b.rsCmd(ctl, [2]string{hc, hcB}))
			if err != nil {
				return err
			}
			phases = append(phases, ph)
		}
	}
	if b.tools.path["wrk"] == "" && b.tools.path["ab"] == "" {
		b.notes = append(b.notes, "http: neither wrk nor ab: the Go clients alone")
		for _, how := range []string{"update", "restart"} {
			ph, err := b.httpPhase(url, how, "", b.rsCmd(ctl, [2]string{hc, hcB}))
			if err != nil {
				return err
			}
			phases = append(phases, ph)
		}
	}
	s6, err := b.httpS6(hc)
	if err != nil {
		return err
	}
	b.httpReport(append(phases, s6...))
	return nil
}

// httpS6 runs each tool's load through -updates `s6-svc -r` of httpcount
// standalone under s6-supervise, with readiness notification
// (s6-notifyoncheck asking for a count: without it s6 pauses a second
// before every respawn, see crash.go), each at least crashSpacing after
// the instance first served: s6 also pauses before respawning a service
// that ran less than a second. The restart's window ends when a new pid
// answers.
func (b *bench) httpS6(hc string) ([]*httpPhase, error) {
	var phases []*httpPhase
	for _, prog := range []string{"s6-supervise", "s6-svc", "s6-notifyoncheck"} {
		if b.tools.path[prog] == "" {
			b.notes = append(b.notes, "http: the s6-svc -r rows are skipped: "+b.tools.missing[prog])
			return nil, nil
		}
	}
	addr, err := tcpAddr("http-s6")
	if err != nil {
		return nil, err
	}
	url := "http://" + addr + "/"
	dir := filepath.Join(b.dir, "http-s6")
	sup, err := b.superviseReady("s6-supervise", dir, httpCheck+addr, hc, "--listen", addr)
	if err != nil {
		b.notes = append(b.notes, "http: the s6-svc -r rows are skipped: "+err.Error())
		return nil, nil
	}
	defer func() {
		for _, p := range sup.stop() {
			b.notes = append(b.notes, "http (s6): "+p)
		}
	}()
	pid, served, err := b.httpServed(sup, url, 0)
	if err != nil {
		b.notes = append(b.notes, "http: the s6-svc -r rows are skipped: httpcount under s6-supervise: "+err.Error())
		return nil, nil
	}
	restart := func(ph *httpPhase, _ int, base time.Time, what string) (window, error) {
		if err := b.sleepUntil(served.Add(crashSpacing)); err != nil {
			return window{}, err
		}
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		out, err := exec.CommandContext(ctx, b.tools.path["s6-svc"], "-r", dir).CombinedOutput()
		cancel()
		if err != nil {
			return window{}, fmt.Errorf("%s: s6-svc -r: %v: %s", what, err, out)
		}
		if pid, served, err = b.httpServed(sup, url, pid); err != nil {
			return window{}, fmt.Errorf("%s: %w", what, err)
		}
		return window{start: t0.Sub(base), end: served.Sub(base)}, nil
	}
	var tools []string
	for _, tool := range []string{"wrk", "ab"} {
		if b.tools.path[tool] != "" {
			tools = append(tools, tool)
		}
	}
	if len(tools) == 0 {
		tools = []string{""} // the Go clients alone
	}
	for _, tool := range tools {
		ph, err := b.httpPhase(url, "s6", tool, restart)
		if err != nil {
			return phases, err
		}
		phases = append(phases, ph)
	}
	return phases, nil
}

// httpServed waits until the supervisor's child is a pid other than
// notPid and a request is answered, and returns the pid and when.
func (b *bench) httpServed(sup *supervised, url string, notPid int) (int, time.Time, error) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && b.ctx.Err() == nil {
		for _, k := range sup.children() {
			if k == notPid {
				continue
			}
			if _, err := probeCount(url); err == nil {
				return k, time.Now(), nil
			}
		}
		time.Sleep(time.Millisecond)
	}
	if err := b.ctx.Err(); err != nil {
		return 0, time.Time{}, err
	}
	return 0, time.Time{}, fmt.Errorf("no new pid (not %d) answering %s within 10s", notPid, url)
}

// httpCmd does command i of a phase (named what) and returns its window
// from base.
type httpCmd func(ph *httpPhase, i int, base time.Time, what string) (window, error)

// rsCmd updates (alternating bins) or restarts httpcount under rs.
func (b *bench) rsCmd(ctl control.Client, bins [2]string) httpCmd {
	return func(ph *httpPhase, i int, base time.Time, what string) (window, error) {
		return b.httpCommand(ctl, ph, bins[(i+1)%2], base, what)
	}
}

// httpPhase runs the Go clients and tool through -updates commands of
// kind how ("update", "restart" or "s6").
func (b *bench) httpPhase(url, how, tool string, command httpCmd) (*httpPhase, error) {
	ph := &httpPhase{how: how, tool: tool}
	name := fmt.Sprintf("http %s (%s)", how, toolName(tool))
	v0, err := probeCount(url)
	if err != nil {
		return nil, fmt.Errorf("%s: probe before: %w", name, err)
	}
	ph.v0 = v0
	base := time.Now()
	h := startHTTPLoad(url, base)
	running := true
	defer func() {
		if running {
			h.stopAndWait()
		}
	}()
	var rt *runningTool
	switch tool {
	case "wrk":
		if rt, err = b.startWrk(b.tools.path["wrk"], url); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	case "ab":
		var first <-chan struct{}
		rt, first = b.startAB(b.tools.path["ab"], url)
		select { // its first run sizes the others
		case <-first:
		case <-b.ctx.Done():
		}
	}
	stopTool := func() {
		if rt != nil {
			ph.tr = rt.stop()
			rt = nil
		}
	}
	defer stopTool()
	if err := b.sleep(updateSpacing); err != nil {
		return nil, err
	}
	for i := range b.opts.updates {
		if err := b.sleep(updateSpacing); err != nil {
			return nil, err
		}
		w, err := command(ph, i, base, fmt.Sprintf("%s %d/%d", name, i+1, b.opts.updates))
		if err != nil {
			return nil, err
		}
		ph.ws = append(ph.ws, w)
		ph.cmds = append(ph.cmds, w.end-w.start)
	}
	if err := b.sleep(updateSpacing); err != nil {
		return nil, err
	}
	running = false
	if !h.stopAndWait() {
		return nil, fmt.Errorf("%s: a Go client did not stop within %v", name, loadRequestTimeout+5*time.Second)
	}
	stopTool()
	v1, err := probeCount(url)
	if err != nil {
		return nil, fmt.Errorf("%s: probe after: %w", name, err)
	}
	ph.v1 = v1

	for i, w := range ph.ws {
		g, n := h.gap(w)
		if n == 0 {
			b.notes = append(b.notes, fmt.Sprintf("%s %d: no Go client request under way during it", name, i+1))
			continue
		}
		ph.gaps = append(ph.gaps, g)
		if b.verbose {
			fmt.Fprintf(os.Stderr, "%s %d: command %v, longest wait %v over %d requests\n", name, i+1, w.end-w.start, g, n)
		}
	}
	b.rows = append(b.rows, row{name: name + ": longest wait of a Go client", d: ph.gaps}, row{name: name + ": command", d: ph.cmds})
	seen := map[uint64]bool{}
	for _, c := range h.clients {
		ph.goErrs += c.errs
		ph.goNon2xx += c.non2xx
		ph.goConns += c.conns
		for _, n := range c.counts {
			if seen[n] {
				ph.dups++
			}
			seen[n] = true
		}
		ph.goProblems = append(ph.goProblems, c.msgs...)
	}
	ph.goResp = h.responses()
	ph.goRPS = float64(ph.goResp) / h.stopped.Sub(h.started).Seconds()
	ph.count()
	return ph, nil
}

// count checks the probes against what the phase delivered.
func (ph *httpPhase) count() {
	served := int64(ph.v1) - int64(ph.v0) - 1 // responses between the probes
	got := int64(ph.goResp) + int64(ph.tr.requests)
	switch extra := served - got; {
	case ph.how != "update":
		ph.countNote = fmt.Sprintf("**lost** (reset by each restart): %d after the row, %d before it, %d responses delivered", ph.v1, ph.v0, got)
		ph.countOK = false
	case ph.dups > 0:
		ph.countNote = fmt.Sprintf("**%d counters twice** (Go clients)", ph.dups)
	case ph.tool == "wrk" && extra >= 0 && extra <= httpConns:
		ph.countNote = fmt.Sprintf("kept: %d = %d delivered + %d in wrk's flight at its stop (≤ %d)", served, got, extra, httpConns)
		ph.countOK = true
	case ph.tool != "wrk" && extra == 0:
		ph.countNote = fmt.Sprintf("kept, exact: %d counted = %d delivered", served, got)
		ph.countOK = true
	default:
		ph.countNote = fmt.Sprintf("**%d counted, %d delivered**", served, got)
	}
}

// httpCommand does one update (to binary) or restart and checks that a
// new instance runs; it returns the command's window.
func (b *bench) httpCommand(ctl control.Client, ph *httpPhase, binary string, base time.Time, what string) (window, error) {
	before, err := b.status("httpcount")
	if err != nil {
		return window{}, err
	}
	req := control.Request{Op: control.OpUpdate, Label: "httpcount", Binary: binary}
	if ph.how == "restart" {
		req = control.Request{Op: control.OpRestart, Label: "httpcount"}
	}
	start := time.Now()
	_, cerr := ctl.Do(req, nil)
	end := time.Now()
	st, err := b.waitRunning("httpcount", 0, 10*time.Second)
	if err != nil {
		return window{}, fmt.Errorf("%s: after it: %w", what, err)
	}
	if !slices.Contains(b.killed, st.Pid) {
		b.killed = append(b.killed, st.Pid)
	}
	var bad []string
	switch {
	case cerr != nil:
		ph.cmdFails++
		bad = append(bad, cerr.Error())
	case st.Pid == before.Pid:
		bad = append(bad, fmt.Sprintf("pid unchanged (%d)", st.Pid))
	case ph.how == "update" && (st.Binary != binary || st.Restarts != before.Restarts):
		bad = append(bad, fmt.Sprintf("binary %s, restarts %d → %d", filepath.Base(st.Binary), before.Restarts, st.Restarts))
	}
	if len(bad) > 0 {
		b.problem(fmt.Sprintf("%s: %s (pid %d, was %d)", what, strings.Join(bad, "; "), st.Pid, before.Pid))
	}
	return window{start: start.Sub(base), end: end.Sub(base)}, nil
}

func toolName(tool string) string {
	switch tool {
	case "wrk":
		return fmt.Sprintf("wrk -t2 -c%d", httpConns)
	case "ab":
		return fmt.Sprintf("ab -k -c%d", httpConns)
	}
	return "Go clients alone"
}

func (b *bench) httpReport(phases []*httpPhase) {
	t := table{title: fmt.Sprintf("HTTP: httpcount (sef/sefhttp) under keep-alive load, %d live updates beside %d restarts", b.opts.updates, b.opts.updates),
		head: []string{"how", "load", "requests/s", "failed requests", "non-2xx", "longest wait, Go clients (per command: median (min–max))", "tool's longest", "command", "Go clients' connections", "counter"}}
	var liveFailed, liveLost int
	liveKnown := false
	var liveGaps, restartGaps, s6Gaps []time.Duration
	for _, ph := range phases {
		how := map[string]string{"update": "rs: service update (live)", "restart": "rs: service restart", "s6": "s6-supervise + readiness: s6-svc -r"}[ph.how]
		load := fmt.Sprintf("%s + %d Go clients", toolName(ph.tool), httpClients)
		if ph.tool == "" {
			load = toolName("")
		}
		if ph.skipped != "" {
			t.add(how, load, "skipped: "+firstLine(ph.skipped), "-", "-", "-", "-", "-", "-", "-")
			continue
		}
		rps := fmt.Sprintf("Go %.0f", ph.goRPS)
		failed := fmt.Sprintf("%d (Go)", ph.goErrs)
		non2xx := fmt.Sprint(ph.goNon2xx + ph.tr.non2xx)
		longest := "-"
		if ph.tool != "" {
			rps = fmt.Sprintf("%s %.0f + Go %.0f", ph.tool, ph.tr.rps, ph.goRPS)
			failed = fmt.Sprintf("%d (%s %d, Go %d)", ph.goErrs+max(ph.tr.failed, 0), ph.tool, ph.tr.failed, ph.goErrs)
			if ph.tr.longest != "" {
				longest = ph.tr.longest
			}
		}
		conns := fmt.Sprintf("%d opened", ph.goConns)
		if ph.goConns == httpClients {
			conns = fmt.Sprintf("%d: each kept its one", ph.goConns)
		}
		t.add(how, load, rps, failed, non2xx, medRange(ph.gaps), longest, medRange(ph.cmds), conns, ph.countNote)
		if ph.how == "update" {
			liveKnown = true
			liveFailed += ph.goErrs + ph.goNon2xx + ph.tr.non2xx + ph.cmdFails
			if ph.tr.failed != 0 {
				liveFailed += max(ph.tr.failed, 1)
			}
			if !ph.countOK {
				liveLost++
			}
			liveGaps = append(liveGaps, ph.gaps...)
		} else if ph.how == "restart" {
			restartGaps = append(restartGaps, ph.gaps...)
		} else {
			s6Gaps = append(s6Gaps, ph.gaps...)
		}
		what := fmt.Sprintf("http %s (%s)", ph.how, toolName(ph.tool))
		var notes []string
		if ph.tool != "" {
			notes = append(notes, fmt.Sprintf("%s: %d responses in %s", ph.tool, ph.tr.requests, short(ph.tr.took)))
			if ph.tool == "ab" {
				notes = append(notes, fmt.Sprintf("%d runs back to back (%d aborted), %d keep-alive requests", ph.tr.runs, ph.tr.aborted, ph.tr.keepAlive))
			}
		}
		notes = append(notes, fmt.Sprintf("Go clients: %d responses, %d failed, %d connections opened (%d clients)", ph.goResp, ph.goErrs, ph.goConns, httpClients))
		if ph.cmdFails > 0 {
			notes = append(notes, fmt.Sprintf("%d commands failed", ph.cmdFails))
		}
		b.notes = append(b.notes, what+": "+strings.Join(notes, "; "))
		// Across restarts failures are expected: only the tool's summary
		// of them goes into the notes.
		if ph.how == "update" {
			for _, p := range append(slices.Clone(ph.tr.problems), ph.goProblems...) {
				b.problem(what + ": " + p)
			}
		} else {
			for _, p := range ph.tr.problems {
				b.notes = append(b.notes, what+": "+p)
			}
		}
	}
	t.foot = append(t.foot, fmt.Sprintf("Each row: %d commands %v apart, under the load named; the Go clients POST on one keep-alive connection each and keep every response's counter. "+
		"A failed request is a Go client's error (it tries again %v later), a socket error of wrk, a failed request or an aborted run of ab. "+
		"The longest wait is the longest a Go client waited for a response among the requests under way during one command, through failures to the next response. "+
		"The tool's longest: wrk's max latency, ab's longest request, over its whole run. "+
		"A Go client's connection: kept means the idle keep-alive connections went to the new instance unclosed. "+
		"The counter: the responses between a probe before the row and one after it, against those the clients and the tool counted (wrk drops the requests it has in flight when it stops; ab counts exactly).",
		b.opts.updates, updateSpacing, redialPause))
	if len(liveGaps) > 0 {
		s := fmt.Sprintf("Longest wait of a Go client over every command: %s across the live updates", short(slices.Max(liveGaps)))
		if len(restartGaps) > 0 {
			s += fmt.Sprintf(", %s across `service restart`", short(slices.Max(restartGaps)))
		}
		if len(s6Gaps) > 0 {
			s += fmt.Sprintf(", %s across s6-svc -r (whose readiness check, s6-notifyoncheck, polls every %v)", short(slices.Max(s6Gaps)), readyCheckPause)
		}
		t.foot = append(t.foot, s+".")
	}
	b.sections = append(b.sections, t)
	if !liveKnown {
		b.unjudged("http: 0 failed requests across live updates", "not measured")
		b.unjudged("http: 0 lost or duplicated responses across live updates", "not measured")
		return
	}
	if liveFailed > 0 {
		b.bad = true
	}
	b.judge("http: 0 failed requests (and non-2xx) across live updates", fmt.Sprint(liveFailed), liveFailed == 0)
	b.judge("http: 0 lost or duplicated responses across live updates", fmt.Sprintf("%d rows off", liveLost), liveLost == 0)
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
