package rs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/reincarnation/rs/msg"
	"github.com/reincarnation/rs/rs/control"
	"github.com/reincarnation/rs/sef"
)

// Roles: the test binary re-executed as a service (`-role NAME`).
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "-role" {
		os.Exit(runRole(os.Args[2]))
	}
	os.Exit(m.Run())
}

func runRole(role string) int {
	switch role {
	case "plain":
		s, err := sef.Startup(context.Background(), sef.Callbacks{})
		if err != nil {
			return 1
		}
		for {
			if _, err := s.Receive(context.Background()); errors.Is(err, sef.ErrStopped) {
				return 0
			}
		}
	case "exit-after-init":
		if _, err := sef.Startup(context.Background(), sef.Callbacks{}); err != nil {
			return 1
		}
		return 4
	case "deaf": // init, then never look at the channel again
		if _, err := sef.Startup(context.Background(), sef.Callbacks{}); err != nil {
			return 1
		}
		for {
			time.Sleep(time.Hour)
		}
	}
	if raw, ok := strings.CutPrefix(role, "send:"); ok {
		return hostile(raw)
	}
	if flag, ok := strings.CutPrefix(role, "ignore-hold:"); ok {
		if _, err := os.Stat(flag); err != nil {
			return runRole("plain")
		}
		return ignoreHold()
	}
	return 2
}

// hostile does a correct init by hand, then sends one bad packet and
// waits to be killed.
func hostile(what string) int {
	c, err := msg.FromEnv()
	if err != nil || c == nil {
		return 1
	}
	enc := func(v any) []byte { b, _ := msgpack.Marshal(v); return b }
	if what == "hello-65537" { // version 1, were it cut to 16 bits
		c.SendRaw(enc(map[string]any{"k": int(msg.KindHello), "v": 65537}), nil, false)
		for {
			time.Sleep(time.Hour)
		}
	}
	c.Send(&msg.Message{Kind: msg.KindHello, Version: msg.ProtocolVersion})
	if _, _, err := c.Recv(); err != nil {
		return 1
	}
	c.Send(&msg.Message{Kind: msg.KindInitResult})
	switch what {
	case "pong-260": // answers the first ping with kind 260, a pong were it cut to 8 bits
		m, _, err := c.Recv()
		if err != nil || m.Kind != msg.KindPing {
			return 1
		}
		c.SendRaw(enc(map[string]any{"k": 260, "q": m.Seq}), nil, false)
	case "garbage":
		c.SendRaw([]byte{0xc1, 0x00}, nil, false)
	case "unknown-kind":
		c.SendRaw(enc(map[string]any{"k": 77}), nil, false)
	case "rs-kind":
		c.Send(&msg.Message{Kind: msg.KindStop})
	case "pong-unasked":
		c.Send(&msg.Message{Kind: msg.KindPong, Seq: 42})
	case "second-init-result":
		c.Send(&msg.Message{Kind: msg.KindInitResult})
	case "oversized":
		c.SendRaw(make([]byte, msg.MaxPacket+100), nil, false)
	case "second-hello":
		c.Send(&msg.Message{Kind: msg.KindHello, Version: msg.ProtocolVersion})
	case "lu-ready-unasked":
		c.Send(&msg.Message{Kind: msg.KindLUReady})
	case "lu-base-done-unasked":
		c.Send(&msg.Message{Kind: msg.KindLUBaseDone, Base: 1})
	case "fds-unasked":
		r, w, _ := os.Pipe()
		c.SendRaw(enc(map[string]any{"k": int(msg.KindPong), "q": 1, "n": []string{"a", "b"}}), []*os.File{r, w}, false)
	}
	for {
		time.Sleep(time.Hour)
	}
}

// fakeClock fires timers only when the test advances it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves time on and fires what is due, each in its own goroutine
// as time.AfterFunc would.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	kept := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			t.stopped = true
			due = append(due, t)
		default:
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	for _, t := range due {
		go t.f()
	}
}

func newServer(t *testing.T) (*Server, *fakeClock) {
	t.Helper()
	clk := &fakeClock{now: time.Unix(1e9, 0)}
	s := New(Options{Clock: clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	go s.Run()
	t.Cleanup(func() {
		s.Shutdown()
		select {
		case <-s.Done():
		case <-time.After(20 * time.Second):
			t.Error("server did not stop")
		}
		if n := s.unknownEvents.Load(); n != 0 {
			t.Errorf("the loop met %d events it has no case for", n)
		}
	})
	return s, clk
}

func selfSpec(t *testing.T, label, role string) Spec {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Spec{Label: label, Binary: self, Args: []string{"-role", role}, Period: time.Second, Restart: RestartNever}
}

func (s *Server) testStatus(t *testing.T, label string) control.Status {
	t.Helper()
	r := s.Do(control.Request{Op: control.OpStatus, Label: label}, nil)
	if r.Err != "" {
		t.Fatal(r.Err)
	}
	return r.Services[0]
}

// waitStatus polls until cond holds, within a bound.
func waitStatus(t *testing.T, s *Server, label string, cond func(control.Status) bool) control.Status {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := s.testStatus(t, label)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: condition not reached; last status %+v", label, st)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func upSpec(t *testing.T, s *Server, spec Spec) control.Reply {
	t.Helper()
	s.post(evStart{specs: []Spec{spec}})
	return control.Reply{}
}

func TestHostileMessagesMakeServiceFaulty(t *testing.T) {
	cases := map[string]string{
		"garbage":              "faulty: malformed message",
		"unknown-kind":         "faulty: unknown message kind",
		"rs-kind":              "faulty: sent stop, which only rs sends",
		"pong-unasked":         "faulty: pong 42 out of sequence",
		"second-init-result":   "faulty: second init-result",
		"oversized":            "faulty: oversized message",
		"lu-ready-unasked":     "faulty: unexpected lu-ready",
		"lu-base-done-unasked": "faulty: unexpected lu-base-done",
		"fds-unasked":          "faulty: fds do not match their names",
		"second-hello":         "faulty: hello out of sequence",
		"hello-65537":          "faulty: malformed message",
	}
	s, _ := newServer(t)
	fdsBefore := countFDs(t)
	for what, want := range cases {
		t.Run(what, func(t *testing.T) {
			upSpec(t, s, selfSpec(t, what, "send:"+what))
			// Down, or failed when it never came up (a bad hello).
			st := waitStatus(t, s, what, func(st control.Status) bool {
				return (st.State == control.StateDown || st.State == control.StateFailed) && st.LastExit != ""
			})
			if !strings.HasPrefix(st.LastExit, want) {
				t.Fatalf("last_exit %q, want prefix %q", st.LastExit, want)
			}
		})
	}
	// Closing what a service handed over happens off the loop: wait,
	// within a bound, for the closes under way.
	for deadline := time.Now().Add(20 * time.Second); s.closing.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if got := countFDs(t); got > fdsBefore {
		t.Errorf("rs fds grew from %d to %d: hostile fds leaked", fdsBefore, got)
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestNoHeartbeat(t *testing.T) {
	s, clk := newServer(t)
	upSpec(t, s, selfSpec(t, "deaf", "deaf"))
	waitStatus(t, s, "deaf", func(st control.Status) bool { return st.State == control.StateRunning })
	clk.Advance(time.Second) // ping 1 goes out
	waitStatus(t, s, "deaf", func(control.Status) bool {
		var sent bool
		inLoop(s, func() { sent = s.services["deaf"].primary.pingOut })
		return sent
	})
	clk.Advance(time.Second) // and is judged unanswered
	st := waitStatus(t, s, "deaf", func(st control.Status) bool { return st.State == control.StateDown })
	if !strings.HasPrefix(st.LastExit, "no-heartbeat") {
		t.Fatalf("last_exit %q", st.LastExit)
	}
}

// A ping timer that fires late does not buy a hung service a period: the
// deadline is judged by the schedule, one period after the ping's slot.
func TestNoHeartbeatWithLateTimer(t *testing.T) {
	s, clk := newServer(t)
	upSpec(t, s, selfSpec(t, "deaf", "deaf"))
	waitStatus(t, s, "deaf", func(st control.Status) bool { return st.State == control.StateRunning })
	clk.Advance(time.Second + 5*time.Millisecond) // ping 1 goes out, 5ms late
	waitStatus(t, s, "deaf", func(control.Status) bool {
		var sent bool
		inLoop(s, func() { sent = s.services["deaf"].primary.pingOut })
		return sent
	})
	clk.Advance(995 * time.Millisecond) // the next visit, on time
	st := waitStatus(t, s, "deaf", func(st control.Status) bool { return st.State == control.StateDown })
	if !strings.HasPrefix(st.LastExit, "no-heartbeat") {
		t.Fatalf("last_exit %q", st.LastExit)
	}
}

// inLoop runs f inside the server's loop and waits for it.
func inLoop(s *Server, f func()) {
	done := make(chan struct{})
	s.post(evProbe{f: f, done: done})
	<-done
}

// A pong of kind 260 is not a pong: msgpack would cut the kind to 8
// bits, 4; rs takes it for malformed.
func TestPongOfKind260IsMalformed(t *testing.T) {
	s, clk := newServer(t)
	upSpec(t, s, selfSpec(t, "pong260", "send:pong-260"))
	waitStatus(t, s, "pong260", func(st control.Status) bool { return st.State == control.StateRunning })
	clk.Advance(time.Second) // the first ping
	st := waitStatus(t, s, "pong260", func(st control.Status) bool { return st.State == control.StateDown })
	if !strings.HasPrefix(st.LastExit, "faulty: malformed message") {
		t.Fatalf("last_exit %q, want faulty: malformed message", st.LastExit)
	}
}

func TestPingAnsweredKeepsRunning(t *testing.T) {
	s, clk := newServer(t)
	upSpec(t, s, selfSpec(t, "plain", "plain"))
	st := waitStatus(t, s, "plain", func(st control.Status) bool { return st.State == control.StateRunning })
	for seq := uint64(1); seq <= 5; seq++ {
		// Each round: a tick sends ping seq; its pong must be back before
		// the next tick, or the deadline (one period) would fire there.
		clk.Advance(time.Second)
		waitStatus(t, s, "plain", func(control.Status) bool {
			var answered bool
			inLoop(s, func() {
				inst := s.services["plain"].primary
				answered = inst != nil && inst.pingSeq == seq && !inst.pingOut
			})
			return answered
		})
	}
	clk.Advance(time.Second)
	if got := s.testStatus(t, "plain"); got.State != control.StateRunning || got.Pid != st.Pid || got.PingRTTUs <= 0 {
		t.Fatalf("a service answering pings was disturbed: %+v", got)
	}
}

func TestBackoffThenFailedThenRestart(t *testing.T) {
	s, clk := newServer(t)
	spec := selfSpec(t, "crashy", "exit-after-init")
	spec.Restart = RestartAlways
	spec.MaxRestarts = 3
	spec.BackoffBase = time.Second
	spec.BackoffCap = 4 * time.Second
	upSpec(t, s, spec)
	// Crash 1: restarted at once. Crashes 2 and 3 back off 1s, then 2s.
	st := waitStatus(t, s, "crashy", func(st control.Status) bool { return st.Restarts == 1 && st.State == control.StateBackoff })
	if st.LastExit != "terminated: exit 4" {
		t.Fatalf("last_exit %q", st.LastExit)
	}
	clk.Advance(time.Second)
	waitStatus(t, s, "crashy", func(st control.Status) bool { return st.Restarts == 2 && st.State == control.StateBackoff })
	clk.Advance(time.Second) // not yet: the second delay is 2s
	if st := s.testStatus(t, "crashy"); st.Restarts != 2 {
		t.Fatalf("restarted before its backoff: %+v", st)
	}
	clk.Advance(time.Second)
	// The third restart crashes too: 3 restarts within the window → failed.
	st = waitStatus(t, s, "crashy", func(st control.Status) bool { return st.State == control.StateFailed })
	if st.Restarts != 3 {
		t.Fatalf("failed after %d restarts, want 3", st.Restarts)
	}
	// restart clears failed; the service starts (and crashes) again.
	r := s.Do(control.Request{Op: control.OpRestart, Label: "crashy"}, nil)
	if r.Err != "" {
		t.Fatalf("restart: %s", r.Err)
	}
	waitStatus(t, s, "crashy", func(st control.Status) bool { return st.State == control.StateBackoff && st.Restarts == 5 })
}

// Shutdown finishes whatever the table holds: two services that depend
// on each other (a cycle Validate keeps out, forced in here) still stop.
func TestShutdownFinishesWithACycle(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1e9, 0)}
	s := New(Options{Clock: clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	go s.Run()
	a, b := selfSpec(t, "a", "plain"), selfSpec(t, "b", "plain")
	upSpec(t, s, a)
	upSpec(t, s, b)
	waitStatus(t, s, "a", func(st control.Status) bool { return st.State == control.StateRunning })
	waitStatus(t, s, "b", func(st control.Status) bool { return st.State == control.StateRunning })
	inLoop(s, func() {
		s.services["a"].spec.Depends = []string{"b"}
		s.services["b"].spec.Depends = []string{"a"}
	})
	done := make(chan struct{})
	go func() { s.Shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("shutdown did not finish with a dependency cycle in the table")
	}
}

// A ready standby takes over when the primary's channel ends and the
// process is exiting, before the reap; the reap then fills in last_exit.
// The order of the two ends is the scheduler's, so the channel's end is
// posted here by hand, ahead of the death.
func TestStandbyTakesOverAtChannelEnd(t *testing.T) {
	s, _ := newServer(t)
	spec := selfSpec(t, "sb", "plain")
	spec.Restart = RestartAlways
	spec.Standby = true
	upSpec(t, s, spec)
	st := waitStatus(t, s, "sb", func(st control.Status) bool { return st.State == control.StateRunning && st.StandbyPid != 0 })
	var drv *sefDriver
	waitStatus(t, s, "sb", func(control.Status) bool {
		inLoop(s, func() {
			if sb := s.services["sb"].standby; sb != nil && sb.phase == phaseHello {
				drv = s.services["sb"].primary.drv.(*sefDriver)
			}
		})
		return drv != nil
	})
	s.post(evPackets{{drv: drv, err: io.EOF, exiting: true}})
	next := waitStatus(t, s, "sb", func(n control.Status) bool { return n.Pid == st.StandbyPid })
	if next.LastExit != "exiting (its exit status follows)" || next.Restarts != 1 {
		t.Fatalf("after the early take-over: %+v", next)
	}
	syscall.Kill(st.Pid, syscall.SIGKILL)
	next = waitStatus(t, s, "sb", func(n control.Status) bool { return n.LastExit == "terminated: SIGKILL" })
	if next.Pid != st.StandbyPid || next.Restarts != 1 {
		t.Fatalf("after the reap: %+v", next)
	}
	// The standby took over while still in hello, so it may still be
	// initing when the old primary's reap is seen: wait for it to run.
	next = waitStatus(t, s, "sb", func(n control.Status) bool { return n.State == control.StateRunning })
	if next.Pid != st.StandbyPid || next.Restarts != 1 {
		t.Fatalf("after the take-over's init: %+v", next)
	}
}

// Every timer goes through one check: a timer stopped or armed again
// while its event was on its way is dropped.
func TestStaleTimersDropped(t *testing.T) {
	s := New(Options{Clock: &fakeClock{now: time.Unix(1e9, 0)}})
	svc := &service{}
	s.arm(svc, tBackoff, time.Second)
	first := evTimer{owner: svc, kind: tBackoff, gen: s.timerGen}
	s.arm(svc, tBackoff, time.Second)
	second := evTimer{owner: svc, kind: tBackoff, gen: s.timerGen}
	if fired(first) {
		t.Error("a timer armed again fired with its old generation")
	}
	if !fired(second) || armed(svc, tBackoff) {
		t.Error("the live timer did not fire, or stayed armed")
	}
	if fired(second) {
		t.Error("a timer fired twice")
	}
	s.arm(svc, tStandby, time.Second)
	ev := evTimer{owner: svc, kind: tStandby, gen: s.timerGen}
	s.disarm(svc, tStandby)
	if fired(ev) {
		t.Error("a stopped timer fired")
	}
}

// An event the loop has no case for is logged and counted, not dropped
// silently.
type evBogus struct{}

func (evBogus) isEvent() {}

func TestUnknownEventCounted(t *testing.T) {
	s := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	s.handle(evBogus{})
	if n := s.unknownEvents.Load(); n != 1 {
		t.Fatalf("unknown events: %d", n)
	}
}
