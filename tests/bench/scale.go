package main

// The scale scenario: a second rs, started on a config of -scale idle
// services (servers/idle, the smallest sef service) pinged every second.
//
//   - boot: from rs's exec until status shows every service running;
//   - then, after scaleSettle, rs's CPU (utime+stime of /proc/<pid>/stat,
//     all threads) over -window, read in scaleSlices slices so that the
//     figure has a min–max; the idle processes' CPU over the same window,
//     all together (from their threads' schedstat: each runs too little
//     to show in clock ticks); rs's VmRSS every second over -rss-window
//     (longer: it must span a GC cycle, about a minute at 1000 services);
//   - memory per service: rs's RSS / services, and each idle process's
//     VmRSS and PSS (PSS shares the binary's pages among the processes
//     that map them);
//   - `service status --json` (the whole command) and control.Client status,
//     scaleStatusRuns times each, with every row;
//   - shutdown: SIGTERM → rs exited, every service stopped.
//
// Beside it, peerScaleN runsv and then peerScaleN s6-supervise, each
// supervising `sleep` (exec'd by the run script): the RSS and PSS of one
// supervisor, which is what runit and s6 spend per service.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/rs/control"
)

const (
	scaleBootLimit  = 3 * time.Minute
	scaleSettle     = 3 * time.Second
	scaleSlices     = 4
	scaleStatusRuns = 20
	peerScaleN      = 50
)

func (b *bench) scale() (err error) {
	n := b.opts.scaleN
	dir := filepath.Join(b.dir, "scale")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	idleBin := filepath.Join(b.bin, "idle")
	var cfg strings.Builder
	for i := range n {
		fmt.Fprintf(&cfg, "[service.idle%04d]\nbinary = %q\nperiod = \"1s\"\n\n", i, idleBin)
	}
	cfgPath := filepath.Join(dir, "scale.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		return err
	}
	ctl := control.Client{Socket: filepath.Join(dir, "rs.sock"), Timeout: 30 * time.Second}
	var env []string
	if b.opts.cpuprofile != "" {
		env = append(env, "RS_CPUPROFILE="+b.opts.cpuprofile)
	}
	logPath := filepath.Join(dir, "rs.log")
	p, err := b.startRS(cfgPath, ctl.Socket, logPath, env, b.logDirFlags("scale/logs")...)
	if err != nil {
		return err
	}
	t := table{title: fmt.Sprintf("Scale: %d idle services under one rs, each pinged every second", n),
		head: []string{"figure", "measured", "target"}}
	pids := map[int]bool{}
	stopped := false
	defer func() {
		if !stopped {
			if serr := p.stop(time.Minute); serr != nil {
				b.problem("scale: " + serr.Error())
			}
		}
		left := 0
		for pid := range pids {
			if alive(pid, idleBin) {
				left++
				unix.Kill(pid, unix.SIGKILL)
			}
		}
		if left > 0 {
			b.problem(fmt.Sprintf("scale: %d idle processes outlived rs; killed them", left))
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "\n--- scale rs log (last lines) ---\n%s", tail(logPath, 20))
		}
		b.sections = append(b.sections, t)
		if err == nil {
			err = b.peerScale()
		}
	}()

	// Boot.
	var boot time.Duration
	var last control.Reply
	for deadline := p.started.Add(scaleBootLimit); ; {
		running := 0
		r, err := ctl.Do(control.Request{Op: control.OpStatus}, nil)
		if err == nil {
			last = r
			for _, s := range r.Services {
				if s.State == "running" {
					running++
				}
			}
		}
		if running == n {
			boot = time.Since(p.started)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("scale: %d of %d services running %v after rs started (last error: %v)", running, n, scaleBootLimit, err)
		}
		if err := b.sleep(100 * time.Millisecond); err != nil {
			return err
		}
	}
	for _, s := range last.Services {
		if s.Pid != 0 {
			pids[s.Pid] = true
		}
	}
	t.add("boot: rs exec → all running (one run)", short(boot), "")

	// CPU and RSS over the window, nothing else asking rs anything.
	if err := b.sleep(scaleSettle); err != nil {
		return err
	}
	// CPU per slice; RSS every second.
	slice := b.opts.window / scaleSlices
	var cpu []time.Duration // per slice: CPU time per second of wall clock
	var rss []time.Duration // KiB, kept as Durations for the helpers
	prev, err := cpuTicks(p.pid())
	if err != nil {
		return err
	}
	idlePrev := idleNs(pids)
	start := time.Now()
	at := start
	for i := 1; i <= scaleSlices; i++ {
		for time.Since(start) < time.Duration(i)*slice {
			if err := b.sleep(min(time.Second, time.Until(start.Add(time.Duration(i)*slice)))); err != nil {
				return err
			}
			if k, err := rssKiB(p.pid()); err == nil {
				rss = append(rss, time.Duration(k))
			}
		}
		cur, err := cpuTicks(p.pid())
		if err != nil {
			return err
		}
		now := time.Now()
		cpu = append(cpu, time.Duration(float64(time.Duration(cur-prev)*clockTick)/now.Sub(at).Seconds()))
		prev, at = cur, now
	}
	idleCPU := time.Duration(idleNs(pids) - idlePrev)
	// RSS on, through at least one GC cycle: at a thousand services one
	// comes about once a minute, and RSS climbs with the garbage until then.
	for time.Since(start) < b.opts.rssWindow {
		if err := b.sleep(min(time.Second, time.Until(start.Add(b.opts.rssWindow)))); err != nil {
			return err
		}
		if k, err := rssKiB(p.pid()); err == nil {
			rss = append(rss, time.Duration(k))
		}
	}
	var total time.Duration
	for _, c := range cpu {
		total += c
	}
	mean := total / time.Duration(len(cpu))
	pct := func(d time.Duration) string { return fmt.Sprintf("%.2f%%", 100*d.Seconds()) }
	cs := sorted(cpu)
	t.add(fmt.Sprintf("rs CPU, %% of one core over %v (%d slices: min–max)", b.opts.window, scaleSlices),
		fmt.Sprintf("%s (%s–%s)", pct(mean), pct(cs[0]), pct(cs[len(cs)-1])), "< 2%")
	b.judge(fmt.Sprintf("scale: rs CPU < 2%% of a core at %d services", n), pct(mean), mean < 20*time.Millisecond)
	t.add(fmt.Sprintf("the %d idle processes' CPU together, over the same window (schedstat)", n),
		fmt.Sprintf("%.2f%% of one core", 100*idleCPU.Seconds()/b.opts.window.Seconds()), "")
	if len(rss) > 0 {
		rd := sorted(rss)
		med, most := int64(median(rd)), int64(rd[len(rd)-1])
		t.add(fmt.Sprintf("rs RSS (VmRSS) over %v from the window's start, median (min–max) of %d samples", max(b.opts.window, b.opts.rssWindow), len(rd)),
			fmt.Sprintf("%s (%s–%s)", mib(med), mib(int64(rd[0])), mib(most)), "< 64 MiB")
		b.judge(fmt.Sprintf("scale: rs RSS < 64 MiB at %d services (the largest sample)", n), mib(most), most < 64*1024)
		t.add("rs RSS per service (median RSS / services)", fmt.Sprintf("%.1f KiB", float64(med)/float64(n)), "")
	}
	if r, err := ctl.Do(control.Request{Op: control.OpStatus}, nil); err == nil && r.Daemon != nil {
		d := r.Daemon
		t.add("rs as it reports itself (status)", fmt.Sprintf("%d goroutines, %d fds, heap allocated %s (live and garbage)", d.Goroutines, d.FDs, mib(d.HeapKiB)), "")
		restarts, notRunning := 0, 0
		var rtt []time.Duration
		for _, s := range r.Services {
			restarts += s.Restarts
			if s.State != "running" {
				notRunning++
			}
			if s.PingRTTUs > 0 {
				rtt = append(rtt, time.Duration(s.PingRTTUs)*time.Microsecond)
			}
			if s.Pid != 0 {
				pids[s.Pid] = true
			}
		}
		t.add("last ping round trip of each service, median (min–max)", medRange(rtt), "")
		if restarts+notRunning > 0 {
			b.problem(fmt.Sprintf("scale: after the window %d services not running, %d restarts in all", notRunning, restarts))
		}
	}
	var irss, ipss []time.Duration
	for pid := range pids {
		if k, err := rssKiB(pid); err == nil {
			irss = append(irss, time.Duration(k))
		}
		if k, err := pssKiB(pid); err == nil {
			ipss = append(ipss, time.Duration(k))
		}
	}
	t.add("idle process RSS, median (min–max)", kibRange(irss), "")
	t.add("idle process PSS, median (min–max)", kibRange(ipss), "")

	// Status with every row.
	js, err := b.serviceStatus(ctl.Socket, scaleStatusRuns, true)
	if err != nil {
		return err
	}
	api, err := clientStatus(ctl, scaleStatusRuns)
	if err != nil {
		return err
	}
	b.rows = append(b.rows, row{name: fmt.Sprintf("scale: service status --json (%d rows)", n), d: js},
		row{name: fmt.Sprintf("scale: control.Client status (%d rows)", n), d: api})
	t.add(fmt.Sprintf("bin/service status --json, whole command (%d runs)", len(js)), medRange(js), "")
	t.add(fmt.Sprintf("control.Client status round trip (%d runs)", len(api)), medRange(api), "")

	// Shutdown.
	stopped = true
	sent := time.Now()
	if serr := p.stop(time.Minute); serr != nil {
		b.problem("scale: " + serr.Error())
	} else {
		t.add("shutdown: SIGTERM → rs exited, every service stopped (one run)", short(time.Since(sent)), "")
	}
	return nil
}

// idleNs sums the run time of the pids' threads.
func idleNs(pids map[int]bool) int64 {
	var sum int64
	for pid := range pids {
		if k, err := taskNs(pid); err == nil {
			sum += k
		}
	}
	return sum
}

// kibRange is "median (min–max)" of KiB figures kept as Durations.
func kibRange(d []time.Duration) string {
	if len(d) == 0 {
		return "-"
	}
	d = sorted(d)
	k := func(x time.Duration) string { return fmt.Sprintf("%.0f", float64(x)) }
	return fmt.Sprintf("%s KiB (%s–%s)", k(median(d)), k(d[0]), k(d[len(d)-1]))
}

// peerScale runs peerScaleN runsv, then peerScaleN s6-supervise, and adds
// their memory per service to the last table.
func (b *bench) peerScale() error {
	t := &b.sections[len(b.sections)-1]
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.add("runsv, s6-supervise", "skipped: no sleep(1)", "")
		return nil
	}
	for _, kind := range []string{"runsv", "s6-supervise"} {
		if b.tools.path[kind] == "" {
			t.add(kind+": memory per service", "skipped: "+firstLine(b.tools.missing[kind]), "")
			continue
		}
		rss, pss, err := b.supervisorMemory(kind, sleep)
		if err != nil {
			if b.ctx.Err() != nil {
				return b.ctx.Err()
			}
			b.notes = append(b.notes, fmt.Sprintf("scale: %s: %v", kind, err))
			t.add(kind+": memory per service", "failed: "+firstLine(err.Error()), "")
			continue
		}
		t.add(fmt.Sprintf("%s RSS per service (one %s, %d of them, each running sleep)", kind, kind, peerScaleN), kibRange(rss), "")
		t.add(fmt.Sprintf("%s PSS per service", kind), kibRange(pss), "")
	}
	return nil
}

// supervisorMemory starts peerScaleN supervisors of sleep and measures
// each supervisor's RSS and PSS once all their services run.
func (b *bench) supervisorMemory(kind, sleep string) (rss, pss []time.Duration, err error) {
	var sups []*supervised
	defer func() {
		for _, s := range sups {
			for _, p := range s.stop() {
				b.notes = append(b.notes, "scale: "+p)
			}
		}
	}()
	for i := range peerScaleN {
		s, err := b.supervise(kind, filepath.Join(b.dir, "scale-"+kind, fmt.Sprintf("svc%02d", i)), sleep, "1000000")
		if err != nil {
			return nil, nil, err
		}
		sups = append(sups, s)
	}
	// Every supervisor has its service running.
	for deadline := time.Now().Add(20 * time.Second); ; {
		kids := ppids()
		up := 0
		for _, s := range sups {
			for _, k := range kids[s.cmd.Process.Pid] {
				s.saw(k)
			}
			if len(kids[s.cmd.Process.Pid]) > 0 {
				up++
			}
		}
		if up == len(sups) {
			break
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("%d of %d services up after 20s", up, len(sups))
		}
		if err := b.sleep(50 * time.Millisecond); err != nil {
			return nil, nil, err
		}
	}
	for _, s := range sups {
		if k, err := rssKiB(s.cmd.Process.Pid); err == nil {
			rss = append(rss, time.Duration(k))
		}
		if k, err := pssKiB(s.cmd.Process.Pid); err == nil {
			pss = append(pss, time.Duration(k))
		}
	}
	return rss, pss, nil
}

// ppids maps every parent pid to its children, in one pass over /proc.
func ppids() map[int][]int {
	m := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid, ppid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		f := statFields(pid)
		if len(f) < 2 {
			continue
		}
		if _, err := fmt.Sscan(f[1], &ppid); err == nil {
			m[ppid] = append(m[ppid], pid)
		}
	}
	return m
}
