package rs

import (
	"fmt"
	"syscall"
	"time"

	"github.com/reincarnation/rs/proc"
)

// Pure policy: what an instance's end means, whether and when its service
// comes back, and how its end is named. No table, no clock: the table
// tests in policy_test.go hold them.

// outcome is what the end of an instance means for its service.
type outcome uint8

const (
	outRollback    outcome = iota // an update's incoming instance ended: the update rolls back
	outStandby                    // the standby ended on its own: another one later
	outReplaced                   // a primary its standby had already replaced died: last_exit only
	outQuiet                      // an instance rs was done with ended
	outStopped                    // a stop rs asked for ended
	outStartFailed                // the primary never ran: failed, or a crash of a service that ran before
	outStays                      // it ran and ended, and the restart policy leaves it down
	outRestart                    // it ran and ended: reincarnate, as the backoff says
)

func (o outcome) String() string {
	return [...]string{"rollback", "standby", "replaced", "quiet", "stopped", "start-failed", "stays", "restart"}[o]
}

// exitOutcome says what the end of an instance means. was is the phase
// it was in when it ended; byRS tells whether rs killed it for a fault.
func exitOutcome(r role, was phase, byRS bool, exit proc.Exit, restart RestartPolicy, shuttingDown bool) outcome {
	switch r {
	case roleIncoming:
		return outRollback
	case roleStandby:
		if was == phaseStopping {
			return outQuiet
		}
		return outStandby
	case roleRetired:
		if was == phaseStopping {
			return outQuiet
		}
		return outReplaced
	}
	switch {
	case was == phaseStopping:
		return outStopped
	case was != phaseRunning:
		return outStartFailed
	case restart == RestartNever,
		restart == RestartOnFailure && !byRS && exit.Success(),
		shuttingDown:
		return outStays
	}
	return outRestart
}

// restartVerdict says what one more crash, after ran of running, makes of
// a service with fails consecutive failures and past restarts history:
// the new count of consecutive failures, the history within the window
// with this crash in it if it counts (history is reused), and whether the
// rate limit fails the service. Only crash loops count toward the limit:
// an instance that ran backoff_reset or longer was healthy, and its
// death, however often it happens, neither counts nor fails the service.
func restartVerdict(spec Spec, fails int, history []time.Time, ran time.Duration, now time.Time) (int, []time.Time, bool) {
	healthy := ran >= spec.BackoffReset
	if healthy {
		fails = 0
	}
	fails++
	cut := now.Add(-spec.RestartWindow)
	kept := history[:0]
	for _, t := range history {
		if t.After(cut) {
			kept = append(kept, t)
		}
	}
	switch {
	case healthy:
		return fails, kept, false
	case spec.MaxRestarts >= 0 && len(kept) >= spec.MaxRestarts:
		return fails, kept, true
	}
	return fails, append(kept, now), false
}

// backoffDelay: the first restart is immediate, then base doubling to cap.
func backoffDelay(spec Spec, fails int) time.Duration {
	if fails <= 1 {
		return 0
	}
	d := spec.BackoffBase
	for i := 2; i < fails && d < spec.BackoffCap; i++ {
		d *= 2
	}
	return min(d, spec.BackoffCap)
}

// exitReason says why a process ended on its own, naming a resource
// limit it ran into where the exit shows it.
func exitReason(spec Spec, exit proc.Exit) string {
	if spec.CPUTime > 0 && (exit.Signal == syscall.SIGKILL || exit.Signal == syscall.SIGXCPU) &&
		// rusage samples CPU time differently from the limit's own
		// accounting, and under load it can read well short of it.
		exit.CPU >= spec.CPUTime.Truncate(time.Second)/2 {
		return fmt.Sprintf("cpu-limit: %s after %v of CPU (cpu_time %v)", exit, exit.CPU.Round(10*time.Millisecond), spec.CPUTime)
	}
	if exit.OOMKills > 0 {
		// The memory controller counted it: no guess.
		lim := ""
		if spec.Memory > 0 {
			lim = fmt.Sprintf(" (memory limit %d MiB in force)", spec.Memory>>20)
		}
		if exit.Signal == syscall.SIGKILL {
			return "oom-killed: " + exit.String() + lim
		}
		return fmt.Sprintf("terminated: %s (oom-killed %d of its processes)%s", exit, exit.OOMKills, lim)
	}
	reason := "terminated: " + exit.String()
	if spec.Memory > 0 && !exit.Success() {
		// The kernel does not say that an allocation failed; name the
		// limit that was in force so the operator can judge.
		reason += fmt.Sprintf(" (memory limit %d MiB in force)", spec.Memory>>20)
	}
	return reason
}
