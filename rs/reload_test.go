package rs

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// The classification of settings for reload, one case per rule and type.
func TestReloadClass(t *testing.T) {
	for _, c := range []struct {
		key, typ string
		want     changeClass
	}{
		{"backoff_base", TypeSef, classPolicy},
		{"backoff_cap", TypeNotify, classPolicy},
		{"max_restarts", TypeSimple, classPolicy},
		{"restart", TypeSef, classPolicy},
		{"failed_retry", TypeSef, classPolicy},
		{"log_max_size", TypeSef, classPolicy},
		{"log_keep", TypeSimple, classPolicy},
		{"depends", TypeSef, classPolicy},
		{"standby", TypeSef, classPolicy},
		{"control", TypeNotify, classPolicy},
		{"reload_action", TypeSef, classPolicy},
		{"period", TypeSef, classPolicy},
		{"period", TypeNotify, classLaunch}, // WATCHDOG_USEC is in its environment
		{"ping_timeout", TypeSimple, classLaunch},
		{"stop_signal", TypeSef, classPolicy},
		{"stop_signal", TypeNotify, classLaunch},
		{"probe_period", TypeSimple, classPolicy},
		{"probe_timeout", TypeSimple, classLaunch},
		{"probe_timeout", TypeSef, classPolicy},
		{"binary", TypeSef, classLaunch},
		{"args", TypeSef, classLaunch},
		{"env", TypeSef, classLaunch},
		{"env_file", TypeSef, classLaunch},
		{"user", TypeSef, classLaunch},
		{"group", TypeSef, classLaunch},
		{"workdir", TypeSef, classLaunch},
		{"umask", TypeSef, classLaunch},
		{"listen", TypeSef, classLaunch},
		{"listen_names", TypeSef, classLaunch},
		{"type", TypeSef, classLaunch},
		{"memory", TypeSef, classLaunch},
		{"open_files", TypeSef, classLaunch},
		{"cpu_time", TypeSef, classLaunch},
		{"pids", TypeSef, classLaunch},
		{"log", TypeSef, classLaunch}, // other pipes
		{"ready", TypeSimple, classLaunch},
		{"probe", TypeSimple, classLaunch},
		{"a_key_added_later", TypeSef, classLaunch},
	} {
		if got := reloadClass(c.key, c.typ); got != c.want {
			t.Errorf("%s (type %s): %v, want %v", c.key, c.typ, got, c.want)
		}
	}
	for key := range reloadRules {
		if _, ok := control.FieldOf(key); !ok {
			t.Errorf("reloadRules has %q, which is no setting", key)
		}
	}
}

func TestSpecChanges(t *testing.T) {
	old := Spec{Label: "a", Binary: "/bin/a", Period: time.Second, Args: nil, Env: map[string]string{}}.withDefaults()
	if cs := specChanges(old, Spec{Label: "a", Binary: "/bin/a", Period: time.Second, Args: []string{}, File: "x", Line: 3}.withDefaults()); len(cs) != 0 {
		t.Errorf("empty args and env, another file and line: %+v, want no change", cs)
	}
	next := old
	next.Period, next.PingTimeout = 2*time.Second, 2*time.Second
	next.FailedRetry = FailedRetryNever
	next.Env = map[string]string{"SECRET": "x"}
	next.StopSignal = 2
	next.Depends = []string{"b", "c"}
	cs := specChanges(old, next)
	var policy, launch []change
	for _, c := range cs {
		if c.class == classPolicy {
			policy = append(policy, c)
		} else {
			launch = append(launch, c)
		}
	}
	if got, want := policyText(policy), "period 1s -> 2s, depends [] -> [b,c], ping_timeout 1s -> 2s, failed_retry 1m0s -> never, stop_signal SIGTERM -> SIGINT"; got != want {
		t.Errorf("policy: %q, want %q", got, want)
	}
	if got, want := launchText(launch), "env changed"; got != want {
		t.Errorf("launch: %q, want %q (no value shown)", got, want)
	}
}

func TestCompletion(t *testing.T) {
	wait := make(chan control.Reply)
	for _, c := range []struct {
		it   reloadItem
		r    *control.Reply
		pid  int
		want string
	}{
		{reloadItem{out: reloadOutcome{Action: reloadUnchanged}}, nil, 5, ""},
		{reloadItem{out: reloadOutcome{Action: reloadAdded}, wait: wait}, &control.Reply{}, 7, ", started (pid 7)"},
		{reloadItem{out: reloadOutcome{Action: reloadAdded}, wait: wait}, &control.Reply{Err: "boom"}, 0, ", not started: boom"},
		{reloadItem{out: reloadOutcome{Action: reloadAdded}, wait: wait}, nil, 0, fmt.Sprintf(", still under way after %v (see service status)", reloadWait)},
		{reloadItem{out: reloadOutcome{Action: reloadRestarted}, wait: wait, pid: 3}, &control.Reply{}, 4, ", restarted (pid 3 -> 4)"},
		{reloadItem{out: reloadOutcome{Action: reloadUpdated}, wait: wait, pid: 3}, &control.Reply{Err: "rolled back"}, 3,
			"; the live update failed, it runs on with its old launch settings: rolled back"},
		{reloadItem{out: reloadOutcome{Action: reloadRemoved}, wait: wait, pid: 9}, &control.Reply{}, 0, ", stopped (was pid 9)"},
	} {
		if got := completion(c.it, c.r, c.pid); got != c.want {
			t.Errorf("%s: %q, want %q", c.it.out.Action, got, c.want)
		}
	}
}

// A period changed by reload paces the running instance's pings at
// once: no new process, the new period's ping, judged by its deadline.
func TestReloadRepacesPings(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "rs.toml")
	write := func(period string) {
		body := fmt.Sprintf("[service.deaf]\nbinary = %q\nargs = [\"-role\", \"deaf\"]\nrestart = \"never\"\nperiod = %q\n", self, period)
		if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("1s")
	specs, err := LoadConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{now: time.Unix(1e9, 0)}
	s := New(Options{Clock: clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ConfigFile: cfg})
	go s.Run()
	t.Cleanup(func() {
		s.Shutdown()
		<-s.Done()
	})
	s.Start(specs)
	st := waitStatus(t, s, "deaf", func(st control.Status) bool { return st.State == control.StateRunning })

	write("3s")
	r := s.Do(control.Request{Op: control.OpReload}, nil)
	if r.Err != "" || r.Message != "deaf: period 1s -> 3s, ping_timeout 1s -> 3s applied" {
		t.Fatalf("reload: %+v", r)
	}
	if now := s.testStatus(t, "deaf"); now.Pid != st.Pid || now.PeriodMs != 3000 {
		t.Fatalf("after the reload: pid %d, period_ms %d; want pid %d, 3000", now.Pid, now.PeriodMs, st.Pid)
	}
	var period time.Duration
	inLoop(s, func() {
		if g := s.services["deaf"].primary.pingGroup; g != nil {
			period = g.period
		}
	})
	if period != 3*time.Second {
		t.Fatalf("pinged every %v after the reload, want 3s", period)
	}
	clk.Advance(3 * time.Second) // the first ping of the new period
	waitStatus(t, s, "deaf", func(control.Status) bool {
		var sent bool
		inLoop(s, func() { sent = s.services["deaf"].primary.pingOut })
		return sent
	})
	clk.Advance(3 * time.Second) // judged by the new deadline
	down := waitStatus(t, s, "deaf", func(st control.Status) bool { return st.State == control.StateDown })
	if !strings.Contains(down.LastExit, "no-heartbeat") || !strings.Contains(down.LastExit, "after 3s") {
		t.Errorf("last_exit %q, want no-heartbeat after 3s", down.LastExit)
	}
}
