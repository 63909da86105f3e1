package rs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/reincarnation/rs/proc"
	"github.com/reincarnation/rs/rs/logs"
)

// simpleDriver runs a service of type simple: a program that speaks no
// protocol to rs. It has no channel; what the lifecycle hears of it, its
// driver makes up from the outside, in one goroutine per instance (run):
//
//   - hello at once after its spawn;
//   - ready once its init is given: at once, or when its `ready` check
//     succeeds (tried again and again until the init deadline; the last
//     failure becomes the init timeout's reason, notReady);
//   - alive in answer to a ping: with a `probe`, a ping is one try of the
//     probe, bounded by probe_timeout, and a failed try is the fault
//     "probe-failed"; without one a simple service is not pinged (its
//     pingPeriod is 0) and lives as long as its process does.
//
// Pings are one at a time (pingCheck sends the next only after the
// answer), so at most one probe runs per instance. The ping's own
// deadline, judged by the loop, is a backstop a little longer than
// probe_timeout (pingDeadline): the probe's verdict comes first.
type simpleDriver struct {
	spec   Spec
	proc   *proc.Process
	ready  *check // nil: ready at once
	probe  *check // nil: no liveness check
	launch checkLaunch

	// post hands a signal to the loop; set by attach, on the loop,
	// before run starts.
	post func(signal)
	// initC and pingC wake run: buffered, and sent to without waiting
	// (init comes once; a ping only after the last one was answered).
	initC, pingC chan struct{}
	// ctx ends run and the check it is in: at stop and at close. Once
	// it is done what run still posts is moot, and a probe that fails as
	// the service stops must not kill it.
	ctx context.Context
	end context.CancelFunc
	// notReadyWhy is why the last ready check failed, for the init
	// timeout's reason (written by run, read on the loop).
	notReadyWhy atomic.Pointer[error]
	// adopted: taken over running from the rs before an exec in place;
	// run goes straight to its pings.
	adopted bool
}

// errNoStateTransfer: a live update needs a state transfer, which a
// simple service cannot do.
var errNoStateTransfer = errors.New("a simple service has no state transfer (live update needs type sef)")

// readyRetry bounds the pause between two tries of a ready check: the
// first try is at once, the next after readyRetryMin, doubling up to
// readyRetryMax.
const (
	readyRetryMin = 10 * time.Millisecond
	readyRetryMax = 200 * time.Millisecond
)

// probeSlack is how much longer than probe_timeout the loop waits for a
// probe's verdict before it judges the ping unanswered itself: time for
// a killed check to be reaped and its cgroup emptied.
const probeSlack = 2 * time.Second

func newSimpleDriver(spec Spec, launch checkLaunch) (*simpleDriver, error) {
	d := &simpleDriver{spec: spec, launch: launch,
		initC: make(chan struct{}, 1), pingC: make(chan struct{}, 1)}
	var err error
	if spec.Ready != "" {
		if d.ready, err = parseCheck("ready", spec.Ready); err != nil {
			return nil, err
		}
	}
	if spec.Probe != "" {
		if d.probe, err = parseCheck("probe", spec.Probe); err != nil {
			return nil, err
		}
	}
	d.ctx, d.end = context.WithCancel(context.Background())
	return d, nil
}

// attach starts the driver's goroutine for inst, on the loop once the
// process runs. The server waits for it before Run returns.
func (d *simpleDriver) attach(s *Server, inst *instance) error {
	inst.ended = true // no channel: its end is its process's
	d.post = func(sig signal) { s.post(evSignal{inst: inst, sig: sig}) }
	s.drivers.Add(1)
	go func() {
		defer s.drivers.Done()
		d.run()
	}()
	return nil
}

// run is the instance's goroutine: hello, the ready check once init
// came, then one probe per ping, until ctx ends.
func (d *simpleDriver) run() {
	if !d.adopted {
		d.post(signal{kind: sigHello})
		select {
		case <-d.initC:
		case <-d.ctx.Done():
			return
		}
		if d.ready != nil && !d.awaitReady() {
			return
		}
		d.post(signal{kind: sigReady})
	}
	for {
		select {
		case <-d.pingC:
		case <-d.ctx.Done():
			return
		}
		var err error
		if d.probe != nil {
			err = d.probe.run(d.ctx, d.spec.probeTimeout(), d.launch)
		}
		if d.ctx.Err() != nil {
			return // stopped or gone: the verdict is moot
		}
		if err != nil {
			d.post(signal{kind: sigFault, reason: "probe-failed", err: err})
			return
		}
		d.post(signal{kind: sigAlive, at: time.Now()})
	}
}

// awaitReady tries the ready check until it succeeds (true) or the init
// deadline passes or ctx ends (false; the loop's init deadline ends the
// instance, with notReady as the reason). Each try may take what is left
// of the init timeout.
func (d *simpleDriver) awaitReady() bool {
	deadline := time.Now().Add(d.spec.InitTimeout)
	pause := readyRetryMin
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		err := d.ready.run(d.ctx, left, d.launch)
		if err == nil {
			return true
		}
		if d.ctx.Err() != nil {
			return false
		}
		d.notReadyWhy.Store(&err)
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-d.ctx.Done():
			t.Stop()
			return false
		}
		pause = min(2*pause, readyRetryMax)
	}
}

// notReady says why the init deadline passed: the ready check's last
// failure.
func (d *simpleDriver) notReady() error {
	if d.ready == nil {
		return nil
	}
	if p := d.notReadyWhy.Load(); p != nil {
		return fmt.Errorf("ready check: %w", *p)
	}
	return fmt.Errorf("ready check %s: no answer within %v", d.ready, d.spec.InitTimeout)
}

func (d *simpleDriver) init(initKind, string, int, []string, []*os.File) error {
	// The fd store and any state are the lifecycle's; a simple service
	// gets neither.
	select {
	case d.initC <- struct{}{}:
	default:
	}
	return nil
}

func (d *simpleDriver) ping(uint64) error {
	select {
	case d.pingC <- struct{}{}:
		return nil
	default:
		return errors.New("simple driver: a ping while a probe runs") // pingCheck rules it out
	}
}

func (d *simpleDriver) prepare(int, time.Duration) error { return errNoStateTransfer }

func (d *simpleDriver) cancel() error { return nil }

// stop sends the service its stop signal; proc.Stop does the rest. Its
// checks end: a probe failing because it stops must not kill it.
func (d *simpleDriver) stop() error {
	d.end()
	return d.proc.Signal(d.spec.StopSignal)
}

func (d *simpleDriver) close() { d.end() }

// onDriverSignal: what a driver's goroutine said of its instance
// (evSignal), unless rs has asked the instance to stop since.
func (s *Server) onDriverSignal(ev evSignal) {
	if d, ok := ev.inst.drv.(*simpleDriver); ok && d.ctx.Err() != nil {
		return
	}
	s.onSignal(ev.inst, ev.sig)
}

// simpleLaunchSpec is how an adopted simple service was started, for
// its checks' launch (its environment, user, directory).
func simpleLaunchSpec(spec Spec, env []string) proc.Spec {
	ps, err := launch(spec, env, nil)
	if err != nil {
		return proc.Spec{Path: spec.Binary, Env: env}
	}
	return ps
}

// startSimple starts spec's binary as a simple service: no channel, no
// files of rs's, its stdout and stderr out's.
func startSimple(spec Spec, env []string, listeners []heldListener, out logs.Files, logsErr error, exited func(proc.Exit)) (*proc.Process, *simpleDriver, error) {
	ps, err := startSpec(spec, env, listeners, out, logsErr, exited)
	if err != nil {
		return nil, nil, err
	}
	drv, err := newSimpleDriver(spec, checkLaunchOf(spec.Label, ps))
	if err != nil {
		return nil, nil, err
	}
	p, err := proc.Start(ps)
	if err != nil {
		drv.close()
		return nil, nil, err
	}
	drv.proc = p
	return p, drv, nil
}

// pingPeriod is how often an instance of s is asked for a sign of life
// (0: never): its ping period, or for a simple service its probe period
// if it has a probe.
func (s Spec) pingPeriod() time.Duration {
	if s.Type == TypeSimple {
		if s.Probe == "" {
			return 0
		}
		return s.probePeriod()
	}
	return s.Period
}

// pingDeadline is how long the loop lets a ping go unanswered.
func (s Spec) pingDeadline() time.Duration {
	if s.Type == TypeSimple {
		return s.probeTimeout() + probeSlack
	}
	return s.PingTimeout
}

// probePeriod and probeTimeout default to the ping period and timeout.
func (s Spec) probePeriod() time.Duration {
	if s.ProbePeriod > 0 {
		return s.ProbePeriod
	}
	return s.Period
}

func (s Spec) probeTimeout() time.Duration {
	switch {
	case s.ProbeTimeout > 0:
		return s.ProbeTimeout
	case s.PingTimeout > 0:
		return s.PingTimeout
	}
	return s.Period
}
