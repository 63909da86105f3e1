package campaign

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// campaign is one run: rs, its services, and what the workers saw.
type campaign struct {
	cfg   Config
	dir   string
	rs    *rsProc
	svcs  []*service
	pids  pidSet
	begin time.Time

	ctx    context.Context
	cancel context.CancelFunc

	outMu    sync.Mutex // Progress
	finished atomic.Int64
	notRec   atomic.Int64
}

// pidSet remembers every pid seen, for the final "nothing left" check.
type pidSet struct {
	mu sync.Mutex
	m  map[int]struct{}
}

func (p *pidSet) add(pid int) {
	if pid <= 0 {
		return
	}
	p.mu.Lock()
	if p.m == nil {
		p.m = map[int]struct{}{}
	}
	p.m[pid] = struct{}{}
	p.mu.Unlock()
}

func (p *pidSet) list() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]int, 0, len(p.m))
	for pid := range p.m {
		out = append(out, pid)
	}
	sort.Ints(out)
	return out
}

// result is one fault's fate.
type result struct {
	fault
	label     string
	injected  bool
	recovered bool
	took      time.Duration
	outcome   string // what happened at an awkward moment
	lastExit  string // rs's reason, after a crash
	problem   string // why it did not recover
	at        time.Duration
	log       string // rs's log around a problem
}

// Run runs a campaign. The error is for a campaign that could not run
// (or whose rs died); everything else, including faults not recovered,
// is in the Report (see Report.OK).
func Run(cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if missing := Missing(cfg.Bin); len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s lacks %v (see Build)", ErrConfig, cfg.Bin, missing)
	}
	c := &campaign{cfg: cfg, dir: cfg.Dir}
	keep := cfg.Dir != ""
	if keep {
		err = os.MkdirAll(c.dir, 0o755)
	} else {
		c.dir, err = os.MkdirTemp("", "rs-campaign-")
	}
	if err != nil {
		return nil, err
	}
	rep := &Report{Seed: cfg.Seed, Services: cfg.Services, Faults: cfg.Faults, Network: cfg.Network,
		Sequential: cfg.Sequential, RecoverTimeout: cfg.RecoverTimeout, Period: servicePeriod, PingTimeout: cfg.PingTimeout}
	if rep.PingTimeout == 0 {
		rep.PingTimeout = servicePeriod
	}
	defer func() {
		if !keep && (c.rs == nil || rep.OK()) {
			os.RemoveAll(c.dir)
		} else {
			rep.Dir = c.dir
		}
	}()
	config, svcs, err := writeConfig(c.dir, cfg.Bin, cfg.Network, cfg.Services, cfg.PingTimeout)
	if err != nil {
		return nil, err
	}
	c.svcs = svcs
	c.begin = time.Now()
	if c.rs, err = startRS(c.dir, cfg.Bin, config, cfg.LogLevel); err != nil {
		return nil, fmt.Errorf("start rs: %w", err)
	}
	rep.LogPath = c.rs.logPath
	rep.RSPid = c.rs.pid
	c.pids.add(c.rs.pid)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	defer c.cancel()
	go func() {
		select {
		case <-c.rs.done:
			c.cancel()
		case <-c.ctx.Done():
		}
	}()
	if err := c.waitAllRunning(); err != nil {
		c.rs.kill()
		rep.Checks = append(rep.Checks, Check{Name: "start-up", Detail: err.Error()})
		return rep, fmt.Errorf("start-up: %w", err)
	}
	c.logf("campaign: rs pid %d, %d services, %d faults, seed %d, work dir %s", c.rs.pid, cfg.Services, cfg.Faults, cfg.Seed, c.dir)

	faults := plan(cfg)
	warm := min(max(1, cfg.Faults/10), cfg.Faults)
	results := c.phase(faults[:warm])
	rep.Warmup = warm
	if d, err := c.daemon(); err == nil {
		rep.Base = d
	}
	results = append(results, c.phase(faults[warm:])...)
	rep.Duration = time.Since(c.begin)
	sort.Slice(results, func(i, j int) bool { return results[i].n < results[j].n })
	rep.add(results)

	if c.rs.exited() {
		rep.Checks = append(rep.Checks, Check{Name: "rs alive", Detail: "rs exited during the campaign: " + c.rs.exitState()})
		rep.LogTail = c.rs.logExcerpt(max(0, c.rs.logSize()-16<<10), "", 40)
		c.rs.kill()
		rep.Checks = append(rep.Checks, c.leftovers())
		return rep, ErrRSDied
	}
	rep.Checks = append(rep.Checks, c.endChecks(rep)...)
	rep.Checks = append(rep.Checks, c.shutdown()...)
	rep.Total = time.Since(c.begin)
	return rep, nil
}

func (c *campaign) logf(format string, args ...any) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	fmt.Fprintf(c.cfg.Progress, format+"\n", args...)
}

// waitAllRunning waits until every service runs and answers.
func (c *campaign) waitAllRunning() error {
	for _, s := range c.svcs {
		exp := expect{t0: time.Now()}
		if _, err := c.recover(s, fault{n: -1}, exp, startTimeout); err != "" {
			return fmt.Errorf("%s: %s", s.label, err)
		}
	}
	return nil
}

// phase runs faults: one worker per service (or one for all when
// Sequential), each injecting its faults in plan order.
func (c *campaign) phase(faults []fault) []result {
	queues := make([][]fault, len(c.svcs))
	if c.cfg.Sequential {
		queues = [][]fault{faults}
	} else {
		for _, f := range faults {
			queues[f.svc] = append(queues[f.svc], f)
		}
	}
	outs := make([][]result, len(queues))
	var wg sync.WaitGroup
	for i, q := range queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = c.worker(q)
		}()
	}
	wg.Wait()
	var all []result
	for _, o := range outs {
		all = append(all, o...)
	}
	return all
}

func (c *campaign) worker(faults []fault) []result {
	out := make([]result, 0, len(faults))
	every := max(int64(c.cfg.Faults/20), 1)
	for _, f := range faults {
		s := c.svcs[f.svc]
		if c.ctx.Err() != nil || s.dead.Load() {
			out = append(out, result{fault: f, label: s.label, problem: "not injected: " + c.skipReason(s)})
			continue
		}
		res := c.one(s, f)
		out = append(out, res)
		if c.cfg.Verbose {
			c.logf("campaign: fault %d %s on %s at %v: recovered %v in %v %s", f.n, f.kind, s.label,
				res.at.Round(time.Millisecond), res.recovered, res.took.Round(10*time.Microsecond), res.outcome)
		}
		if !res.recovered {
			c.notRec.Add(1)
			c.logf("campaign: fault %d (%s on %s) not recovered: %s", f.n, f.kind, s.label, res.problem)
			if !c.rescue(s) {
				c.logf("campaign: %s could not be brought back; its further faults are skipped", s.label)
				s.dead.Store(true)
			}
		}
		if n := c.finished.Add(1); n%every == 0 {
			c.logf("campaign: %d/%d faults, %d not recovered, %v", n, c.cfg.Faults, c.notRec.Load(), time.Since(c.begin).Round(time.Second))
		}
	}
	return out
}

func (c *campaign) skipReason(s *service) string {
	if c.rs.exited() {
		return "rs exited"
	}
	if s.dead.Load() {
		return s.label + " could not be brought back"
	}
	return "campaign stopped"
}

// one injects one fault and waits for the recovery.
func (c *campaign) one(s *service, f fault) result {
	res := result{fault: f, label: s.label, at: time.Since(c.begin)}
	logFrom := c.rs.logSize()
	fail := func(problem string) result {
		res.problem = problem
		// Let whatever rs is doing settle into the log.
		res.log = c.rs.logExcerpt(logFrom, s.label, 40)
		return res
	}
	st, problem := c.recover(s, fault{n: -1}, expect{t0: time.Now()}, c.cfg.RecoverTimeout)
	if problem != "" {
		return fail("not running before the fault: " + problem)
	}
	res.injected = true
	exp, outcome, err := injectors[f.kind](c, s, f, f.rng(), st.status)
	res.outcome = outcome
	if err != nil {
		if errors.Is(err, ErrRSDied) || c.rs.exited() {
			return fail("rs exited: " + err.Error())
		}
		return fail("inject: " + err.Error())
	}
	rec, problem := c.recover(s, f, exp, c.cfg.RecoverTimeout)
	if problem != "" {
		return fail(problem)
	}
	res.recovered = true
	res.took = rec.took
	if exp.crash {
		res.lastExit = normalise(rec.status.LastExit, s.label)
	}
	return res
}

// recovery is a service found serving.
type recovery struct {
	status control.Status
	took   time.Duration
}

// recover waits, within bound from exp.t0, until status shows s running
// with the pid exp calls for and that pid answers the probe. The problem
// is "" on success.
func (c *campaign) recover(s *service, f fault, exp expect, bound time.Duration) (recovery, string) {
	deadline := exp.t0.Add(bound)
	pause := time.Millisecond
	var last control.Status
	var lastErr error
	for attempt := 0; ; {
		if c.rs.exited() {
			return recovery{}, "rs exited: " + c.rs.cmd.ProcessState.String()
		}
		rep, err := c.rs.status(s.label)
		if err != nil {
			lastErr = fmt.Errorf("status: %w", err)
		} else {
			st := rep.Services[0]
			last = st
			c.pids.add(st.Pid)
			switch {
			case st.State != control.StateRunning || st.Pid == 0:
			case exp.same && st.Pid != exp.pid:
				return recovery{}, fmt.Sprintf("%s: pid %d replaced by %d (last_exit %q); the old instance should have kept serving",
					st.State, exp.pid, st.Pid, st.LastExit)
			case slices.Contains(exp.not, st.Pid):
			default:
				attempt++
				key := fmt.Sprintf("campaign:%d:%d", f.n, attempt)
				in, err := probe(s.addr, key, exp.marker, exp.markerVal)
				now := time.Now()
				switch {
				case errors.Is(err, errStateLost):
					return recovery{}, fmt.Sprintf("pid %d: %v", st.Pid, err)
				case err != nil:
					lastErr = fmt.Errorf("probe: %w", err)
				case in.pid != st.Pid:
					lastErr = fmt.Errorf("probe answered by pid %d, status says %d", in.pid, st.Pid)
				case exp.version != "" && in.version != exp.version:
					return recovery{}, fmt.Sprintf("pid %d serves version %q, want %q", st.Pid, in.version, exp.version)
				default:
					return recovery{status: st, took: now.Sub(exp.t0)}, ""
				}
			}
		}
		if time.Now().After(deadline) {
			why := ""
			if lastErr != nil {
				why = "; last error: " + lastErr.Error()
			}
			return recovery{}, fmt.Sprintf("not recovered within %v: state %s, pid %d, last_exit %q%s",
				bound, last.State, last.Pid, last.LastExit, why)
		}
		time.Sleep(pause) // polling status, bounded by the deadline
		pause = min(2*pause, 5*time.Millisecond)
	}
}

// rescue brings a service back after a fault it did not recover from, so
// that the campaign can go on: `service restart`, then the usual wait.
func (c *campaign) rescue(s *service) bool {
	if c.rs.exited() {
		return false
	}
	// An update still in progress refuses the restart: let it end.
	deadline := time.Now().Add(c.cfg.RecoverTimeout)
	for time.Now().Before(deadline) {
		_, err := c.rs.ctl.Do(control.Request{Op: control.OpRestart, Label: s.label}, nil)
		if err == nil {
			break
		}
		c.logf("campaign: rescue %s: restart: %v", s.label, err)
		time.Sleep(100 * time.Millisecond)
	}
	_, problem := c.recover(s, fault{n: -1}, expect{t0: time.Now()}, c.cfg.RecoverTimeout)
	return problem == ""
}

// daemon reads rs's own figures.
func (c *campaign) daemon() (*control.Daemon, error) {
	rep, err := c.rs.status("")
	if err != nil {
		return nil, err
	}
	return rep.Daemon, nil
}
