package rs

import (
	"syscall"
	"testing"
	"time"

	"github.com/reincarnation/rs/proc"
)

// The exit triage as a table: what the end of an instance means, by its
// role, the phase it ended in, whether rs killed it, how it exited and
// the policy.
func TestExitOutcome(t *testing.T) {
	ok := proc.Exit{}
	crash := proc.Exit{Signal: syscall.SIGKILL}
	tests := []struct {
		name     string
		role     role
		was      phase
		byRS     bool
		exit     proc.Exit
		restart  RestartPolicy
		shutdown bool
		want     outcome
	}{
		{"update's new instance crashed", roleIncoming, phaseHello, false, crash, RestartAlways, false, outRollback},
		{"update's new instance failed its init", roleIncoming, phaseIniting, true, crash, RestartNever, false, outRollback},
		{"standby died on its own", roleStandby, phaseHello, false, crash, RestartAlways, false, outStandby},
		{"standby could not start", roleStandby, phaseSpawning, true, ok, RestartAlways, false, outStandby},
		{"standby dropped", roleStandby, phaseStopping, false, crash, RestartAlways, false, outQuiet},
		{"old instance stopped after a commit", roleRetired, phaseStopping, false, ok, RestartAlways, false, outQuiet},
		{"primary its standby replaced, reaped", roleRetired, phaseRunning, false, crash, RestartAlways, false, outReplaced},
		{"down, restart or shutdown ended", rolePrimary, phaseStopping, false, ok, RestartAlways, false, outStopped},
		{"stop ended in a kill", rolePrimary, phaseStopping, false, crash, RestartAlways, true, outStopped},
		{"binary could not start", rolePrimary, phaseSpawning, true, ok, RestartAlways, false, outStartFailed},
		{"died before its init ended", rolePrimary, phaseIniting, false, crash, RestartAlways, false, outStartFailed},
		{"init timed out", rolePrimary, phaseIniting, true, crash, RestartNever, false, outStartFailed},
		{"crash, always", rolePrimary, phaseRunning, false, crash, RestartAlways, false, outRestart},
		{"clean exit, always", rolePrimary, phaseRunning, false, ok, RestartAlways, false, outRestart},
		{"crash, never", rolePrimary, phaseRunning, false, crash, RestartNever, false, outStays},
		{"clean exit, on-failure", rolePrimary, phaseRunning, false, ok, RestartOnFailure, false, outStays},
		{"crash, on-failure", rolePrimary, phaseRunning, false, crash, RestartOnFailure, false, outRestart},
		{"killed by rs after a clean-looking exit, on-failure", rolePrimary, phaseRunning, true, ok, RestartOnFailure, false, outRestart},
		{"crash while rs shuts down", rolePrimary, phaseRunning, false, crash, RestartAlways, true, outStays},
	}
	for _, tt := range tests {
		if got := exitOutcome(tt.role, tt.was, tt.byRS, tt.exit, tt.restart, tt.shutdown); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestBackoffDelay(t *testing.T) {
	spec := Spec{BackoffBase: 100 * time.Millisecond, BackoffCap: time.Second}
	want := []time.Duration{0, 0, 100, 200, 400, 800, 1000, 1000}
	for fails, w := range want {
		if got := backoffDelay(spec, fails); got != w*time.Millisecond {
			t.Errorf("fails %d: %v, want %v", fails, got, w*time.Millisecond)
		}
	}
}

// Only crash loops count toward max_restarts: a restart after a run of
// backoff_reset or longer neither counts nor fails the service, however
// many came before it.
func TestRestartVerdict(t *testing.T) {
	now := time.Unix(1e9, 0)
	spec := Spec{BackoffReset: time.Second, MaxRestarts: 3, RestartWindow: time.Minute}
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	full := []time.Time{ago(3 * time.Second), ago(2 * time.Second), ago(time.Second)}
	tests := []struct {
		name       string
		fails      int
		history    []time.Time
		ran        time.Duration
		wantFails  int
		wantKept   int
		wantFailed bool
	}{
		{"first crash counts", 0, nil, 0, 1, 1, false},
		{"crash again at once", 1, []time.Time{ago(time.Second)}, 10 * time.Millisecond, 2, 2, false},
		{"ran long enough: backoff resets, not counted", 4, []time.Time{ago(time.Second)}, 2 * time.Second, 1, 1, false},
		{"ran exactly backoff_reset: healthy", 4, nil, time.Second, 1, 0, false},
		{"just short of backoff_reset: counted", 4, nil, time.Second - time.Nanosecond, 5, 1, false},
		{"old restarts leave the window", 2, []time.Time{ago(2 * time.Minute), ago(90 * time.Second), ago(time.Second)}, 0, 3, 2, false},
		{"rate limit", 2, full, 0, 3, 3, true},
		{"limit reached, but this one ran healthy", 2, full, 5 * time.Second, 1, 3, false},
	}
	for _, tt := range tests {
		fails, kept, failed := restartVerdict(spec, tt.fails, append([]time.Time(nil), tt.history...), tt.ran, now)
		if fails != tt.wantFails || len(kept) != tt.wantKept || failed != tt.wantFailed {
			t.Errorf("%s: fails %d, kept %d, failed %v; want %d, %d, %v", tt.name, fails, len(kept), failed, tt.wantFails, tt.wantKept, tt.wantFailed)
		}
	}
	unlimited := spec
	unlimited.MaxRestarts = -1
	if _, _, failed := restartVerdict(unlimited, 9, []time.Time{now, now, now, now}, 0, now); failed {
		t.Error("max_restarts -1 failed a service")
	}

	// Fifteen deaths after healthy runs, a second apart, keep the history
	// empty; fifteen crashes at once fail the service at the fourth.
	var history []time.Time
	fails := 0
	for i := range 15 {
		var failed bool
		fails, history, failed = restartVerdict(spec, fails, history, 2*time.Second, now.Add(time.Duration(i)*time.Second))
		if failed || len(history) != 0 {
			t.Fatalf("healthy death %d: failed %v, history %d", i+1, failed, len(history))
		}
	}
	for i := range 15 {
		var failed bool
		fails, history, failed = restartVerdict(spec, fails, history, 0, now.Add(time.Duration(i)*time.Millisecond))
		if failed != (i == spec.MaxRestarts) {
			t.Fatalf("crash %d of a loop: failed %v", i+1, failed)
		}
		if failed {
			break
		}
	}
}

func TestExitReason(t *testing.T) {
	tests := []struct {
		spec Spec
		exit proc.Exit
		want string
	}{
		{Spec{}, proc.Exit{Code: 3}, "terminated: exit 3"},
		{Spec{}, proc.Exit{Signal: syscall.SIGSEGV, Core: true}, "terminated: SIGSEGV (core dumped)"},
		{Spec{Memory: 160 << 20}, proc.Exit{Signal: syscall.SIGABRT}, "terminated: SIGABRT (memory limit 160 MiB in force)"},
		{Spec{Memory: 160 << 20}, proc.Exit{}, "terminated: exit 0"},
		{Spec{Memory: 50 << 20}, proc.Exit{Signal: syscall.SIGKILL, OOMKills: 1}, "oom-killed: SIGKILL (memory limit 50 MiB in force)"},
		{Spec{}, proc.Exit{Signal: syscall.SIGKILL, OOMKills: 2}, "oom-killed: SIGKILL"},
		{Spec{}, proc.Exit{Code: 1, OOMKills: 1}, "terminated: exit 1 (oom-killed 1 of its processes)"},
		{Spec{CPUTime: time.Second}, proc.Exit{Signal: syscall.SIGKILL, CPU: 990 * time.Millisecond},
			"cpu-limit: SIGKILL after 990ms of CPU (cpu_time 1s)"},
		{Spec{CPUTime: time.Hour}, proc.Exit{Signal: syscall.SIGKILL, CPU: time.Second}, "terminated: SIGKILL"},
	}
	for _, tt := range tests {
		if got := exitReason(tt.spec, tt.exit); got != tt.want {
			t.Errorf("%+v, %v: %q, want %q", tt.spec, tt.exit, got, tt.want)
		}
	}
}
