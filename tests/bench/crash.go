package main

// The crash scenario: kv is killed with SIGKILL, and a client loops
// connect + INFO server (a PING whose reply names the process) from the
// moment of the kill until a reply comes from a new instance. Six columns,
// measured in the same rounds:
//
//   - rs: the configured kv, no standby;
//   - rs standby: kvsb, standby = true (the standby takes over; the bench
//     waits for the next standby_pid before the next kill);
//   - runsv, s6-supervise, and s6-supervise with readiness notification:
//     the same kv binary standalone, under runit and s6;
//   - floor: the bench itself execs kv (no supervisor) and times it until
//     it serves. That kv is killed at the start of the next round, which
//     times SIGKILL → reaped: the part of every column that no supervisor
//     can shorten.
//
// Each round kills every column once, in an order rotated by one each
// round, with crashSettle between columns so that one column's restart
// (or a new standby's start-up) does not run into the next one's kill.
// An instance is killed only crashSpacing after it first answered: runit
// and s6 delay the respawn of a service that ran less than a second, and
// rs resets its backoff after one second.
//
// s6 (2.11, Debian's) also pauses a second before respawning a service
// that never said it was ready, however long it ran; kv does not speak
// s6's readiness notification. So s6 has two columns: the plain run
// script, and s6-notifyoncheck polling kv to notify readiness (peers.go),
// with which s6 respawns at once. A column that fails a round is
// noted and left out of the rounds after it.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/internal/resp"
	"github.com/reincarnation/rs/rs/control"
)

const (
	crashSpacing = 1300 * time.Millisecond
	crashSettle  = 100 * time.Millisecond
	crashLimit   = 5 * time.Second // kill → served, at most
	probePause   = 200 * time.Microsecond
)

type crashKind int

// s6Ready names the column of s6 with readiness notification.
const s6Ready = "s6-supervise + readiness"

const (
	underRS crashKind = iota
	underPeer
	execFloor
)

type crashTarget struct {
	name             string
	kind             crashKind
	network, address string
	label            string // underRS
	standby          bool   // underRS: wait for a standby before each kill
	sup              *supervised
	served           time.Time // when the current instance first answered
	pid              int       // the current instance (underPeer), the last killed (underRS)
	d                []time.Duration
	refused          []int
	attempts, other  int
	takeovers        int             // rounds where the standby was the one that answered
	kills            []killRec       // underRS: for the breakdown from rs's log
	prev             *floorKV        // execFloor: the kv of the last round
	reaped           []time.Duration // execFloor: SIGKILL → reaped of prev
	failed           string
	ask              asker // nil: infoPid (kv)
}

// asker asks the service at address which process answers.
type asker func(network, address string) (int, error)

func (t *crashTarget) asker() asker {
	if t.ask == nil {
		return infoPid
	}
	return t.ask
}

// killRec is one kill under rs: when, the pid killed, the pid that
// answered after, and how long that took.
type killRec struct {
	at       time.Time
	old, new int
	served   time.Duration
}

// probeResult is one kill → served (or exec → served).
type probeResult struct {
	d                        time.Duration
	pid                      int
	attempts, refused, other int
	lastErr                  error
}

// probe loops connect + INFO server from t0 until a reply names a pid
// other than oldPid (any pid if oldPid is 0).
func (b *bench) probe(network, address string, oldPid int, t0 time.Time) (probeResult, error) {
	return b.probeAsk(infoPid, network, address, oldPid, t0)
}

// probeAsk is probe with ask for the question.
func (b *bench) probeAsk(ask asker, network, address string, oldPid int, t0 time.Time) (probeResult, error) {
	var r probeResult
	for {
		if time.Since(t0) > crashLimit {
			return r, fmt.Errorf("no reply from a new instance within %v (%d attempts, %d refused; last error: %v)",
				crashLimit, r.attempts, r.refused, r.lastErr)
		}
		if err := b.ctx.Err(); err != nil {
			return r, err
		}
		r.attempts++
		got, err := ask(network, address)
		if err == nil && got != oldPid {
			r.d, r.pid = time.Since(t0), got
			return r, nil
		}
		switch {
		case errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT):
			r.refused++
		case err != nil:
			r.other++
		}
		r.lastErr = err
		time.Sleep(probePause)
	}
}

// infoPid connects, asks INFO server and returns process_id.
func infoPid(network, address string) (int, error) {
	c, err := resp.Dial(network, address, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	v, err := c.Do("INFO", "server")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(v.Str, "\r\n") {
		if s, ok := strings.CutPrefix(line, "process_id:"); ok {
			return strconv.Atoi(s)
		}
	}
	return 0, fmt.Errorf("INFO reply without process_id: %s", v)
}

// sleepUntil waits until t, or less if the bench is interrupted.
func (b *bench) sleepUntil(t time.Time) error { return b.sleep(time.Until(t)) }

// crash runs n rounds over the columns that can be had.
func (b *bench) crash(n int) error {
	kvBin := filepath.Join(b.bin, "kv")
	targets := []*crashTarget{
		{name: "rs", kind: underRS, label: "kv"},
		{name: "rs standby", kind: underRS, label: "kvsb", standby: true},
	}
	addrs := map[string]string{"kv": b.kvAddr, "kvsb": b.kvsbAddr}
	for _, t := range targets {
		t.network, t.address = resp.SplitAddr(addrs[t.label])
	}
	peers, stop, err := b.crashPeers("crash", peerService{addr: b.addr,
		argv: func(addr string) []string { return []string{kvBin, "--listen", addr} }})
	defer stop()
	if err != nil {
		return err
	}
	targets = append(targets, peers...)
	floorAddr, err := b.addr("crash-floor")
	if err != nil {
		return err
	}
	fl := &crashTarget{name: "floor: exec kv, no supervisor", kind: execFloor}
	fl.network, fl.address = resp.SplitAddr(floorAddr)
	targets = append(targets, fl)
	defer fl.stopFloor()
	for _, t := range targets {
		if t.failed != "" {
			b.notes = append(b.notes, fmt.Sprintf("crash: %s skipped: %s", t.name, t.failed))
		}
	}

	rounds := 0
	defer func() { b.crashReport(rounds, targets) }()
	return b.crashRounds("crash", n, targets, &rounds)
}

// peerService is what the peers run in a scenario.
type peerService struct {
	addr        func(name string) (string, error) // a new address to serve on
	argv        func(addr string) []string        // the service serving on addr
	ask         asker                             // nil: infoPid
	checkPrefix string                            // s6's readiness check asks checkPrefix+addr (checkMain)
}

// crashPeers starts the peers' columns for scenario: runsv,
// s6-supervise, and s6-supervise with readiness notification, each
// running ps.argv on an address of its own, and waits for each to
// answer. A peer that cannot be had is returned with failed set. stop
// stops those that started.
func (b *bench) crashPeers(scenario string, ps peerService) (targets []*crashTarget, stop func(), err error) {
	var sups []*supervised
	stop = func() {
		for _, sup := range sups {
			for _, p := range sup.stop() {
				b.notes = append(b.notes, scenario+": "+p)
			}
		}
	}
	for _, peer := range []struct {
		name, kind, dir string
		ready           bool
	}{
		{"runsv", "runsv", "runsv", false},
		{"s6-supervise", "s6-supervise", "s6", false},
		{s6Ready, "s6-supervise", "s6ready", true},
	} {
		addr, err := ps.addr(scenario + "-" + peer.dir)
		if err != nil {
			return targets, stop, err
		}
		t := &crashTarget{name: peer.name, kind: underPeer, ask: ps.ask}
		t.network, t.address = resp.SplitAddr(addr)
		targets = append(targets, t)
		ready := ""
		if peer.ready {
			ready = ps.checkPrefix + addr
		}
		sup, err := b.superviseReady(peer.kind, filepath.Join(b.dir, scenario+"-"+peer.dir), ready, ps.argv(addr)...)
		if err != nil {
			t.failed = err.Error()
			continue
		}
		t.sup = sup
		sups = append(sups, sup)
		r, err := b.probeAsk(t.asker(), t.network, t.address, 0, time.Now())
		if err != nil {
			t.failed = fmt.Sprintf("the service under %s did not serve: %v", peer.name, err)
			continue
		}
		t.pid, t.served = r.pid, time.Now()
		sup.saw(r.pid)
	}
	return targets, stop, nil
}

// crashRounds runs n rounds over targets, each round in an order rotated
// by one, counting the rounds done in *rounds.
func (b *bench) crashRounds(scenario string, n int, targets []*crashTarget, rounds *int) error {
	for i := range n {
		*rounds = i
		for j := range targets {
			t := targets[(i+j)%len(targets)]
			if t.failed != "" {
				t.d = append(t.d, -1)
				continue
			}
			r, err := b.crashRound(t)
			if b.ctx.Err() != nil {
				return b.ctx.Err()
			}
			if err != nil {
				t.failed = fmt.Sprintf("round %d: %v", i+1, err)
				msg := fmt.Sprintf("%s: %s: %s; left out of the later rounds", scenario, t.name, t.failed)
				if t.kind == underRS {
					b.problem(msg)
				} else {
					b.notes = append(b.notes, msg)
				}
				t.d = append(t.d, -1)
				continue
			}
			t.d = append(t.d, r.d)
			t.refused = append(t.refused, r.refused)
			t.attempts += r.attempts
			t.other += r.other
			if b.verbose {
				fmt.Fprintf(os.Stderr, "%s round %d %s: %v, %d attempts, %d refused\n", scenario, i+1, t.name, r.d, r.attempts, r.refused)
			}
			if err := b.sleep(crashSettle); err != nil {
				return err
			}
		}
		*rounds = i + 1
	}
	return nil
}

// crashRound kills t's instance (or starts the floor's) and times it.
func (b *bench) crashRound(t *crashTarget) (probeResult, error) {
	if err := b.sleepUntil(t.served.Add(crashSpacing)); err != nil {
		return probeResult{}, err
	}
	switch t.kind {
	case execFloor:
		return b.floorRound(t)
	case underPeer:
		pid := t.pid
		if !alive(pid, "") {
			return probeResult{}, fmt.Errorf("pid %d under %s is gone before its kill", pid, t.name)
		}
		t0 := time.Now()
		if err := unix.Kill(pid, unix.SIGKILL); err != nil {
			return probeResult{}, fmt.Errorf("kill %d: %w", pid, err)
		}
		r, err := b.probeAsk(t.asker(), t.network, t.address, pid, t0)
		if err != nil {
			return r, err
		}
		t.pid, t.served = r.pid, time.Now()
		t.sup.saw(r.pid)
		return r, nil
	}
	st, err := b.waitRunning(t.label, t.pid, 10*time.Second)
	if err != nil {
		return probeResult{}, err
	}
	if t.standby {
		if st, err = b.waitStandby(t.label, 10*time.Second); err != nil {
			return probeResult{}, err
		}
	}
	b.killed = append(b.killed, st.Pid)
	t0 := time.Now()
	if err := unix.Kill(st.Pid, unix.SIGKILL); err != nil {
		return probeResult{}, fmt.Errorf("kill %d: %w", st.Pid, err)
	}
	r, err := b.probeAsk(t.asker(), t.network, t.address, st.Pid, t0)
	if err != nil {
		return r, err
	}
	t.pid, t.served = st.Pid, time.Now()
	t.kills = append(t.kills, killRec{at: t0, old: st.Pid, new: r.pid, served: r.d})
	if t.standby && r.pid == st.StandbyPid {
		t.takeovers++
	}
	if t.standby {
		// Its replacement starts now: let it get to its wait for init
		// before anything else is timed.
		if _, err := b.waitStandby(t.label, 10*time.Second); err != nil {
			return r, err
		}
	}
	return r, nil
}

// waitStandby polls status until label runs with a standby.
func (b *bench) waitStandby(label string, limit time.Duration) (st control.Status, err error) {
	deadline := time.Now().Add(limit)
	for {
		st, err = b.status(label)
		if err == nil && st.State == "running" && st.StandbyPid != 0 && st.StandbyPid != st.Pid {
			b.killed = append(b.killed, st.StandbyPid)
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("%s: no standby within %v (state %q, pid %d, standby_pid %d, err %v)",
				label, limit, st.State, st.Pid, st.StandbyPid, err)
		}
		if err := b.sleep(5 * time.Millisecond); err != nil {
			return st, err
		}
	}
}

// floorRound first kills the kv of the previous floor round, which has
// been idle since it served, timing SIGKILL → reaped (what the kernel
// and Go's wait take before any supervisor can know), then execs a new
// kv and times it until it serves.
func (b *bench) floorRound(t *crashTarget) (probeResult, error) {
	if t.prev != nil {
		t0 := time.Now()
		t.prev.cmd.Process.Kill()
		select {
		case <-t.prev.done:
			t.reaped = append(t.reaped, time.Since(t0))
		case <-time.After(5 * time.Second):
			return probeResult{}, fmt.Errorf("floor kv pid %d not reaped within 5s of SIGKILL", t.prev.cmd.Process.Pid)
		}
		t.prev = nil
	}
	cmd := exec.Command(filepath.Join(b.bin, "kv"), "--listen", t.network+":"+t.address)
	if t.network == "tcp" {
		cmd.Args[2] = t.address
	}
	cmd.Env = withoutEnv(os.Environ(), "RS_CHANNEL_FD")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return probeResult{}, err
	}
	f := &floorKV{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(f.done) }()
	t.prev = f
	r, err := b.probe(t.network, t.address, 0, t0)
	if err == nil && r.pid != cmd.Process.Pid {
		err = fmt.Errorf("a kv with pid %d answered on the floor's address, not ours (%d)", r.pid, cmd.Process.Pid)
	}
	t.served = time.Now()
	return r, err
}

// floorKV is the floor's kv, kept until the next round kills it.
type floorKV struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// stopFloor kills the last floor kv.
func (t *crashTarget) stopFloor() {
	if t.prev == nil {
		return
	}
	t.prev.cmd.Process.Kill()
	select {
	case <-t.prev.done:
	case <-time.After(5 * time.Second):
	}
	t.prev = nil
}
