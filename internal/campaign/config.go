package campaign

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"
)

// Kind is one kind of fault the campaign injects.
type Kind string

// kv's own faults, injected with DEBUG FAULT <kind>.
const (
	KindPanic     Kind = "panic"
	KindExit      Kind = "exit"
	KindKill      Kind = "kill"
	KindAbort     Kind = "abort"
	KindHang      Kind = "hang"
	KindSpin      Kind = "spin"
	KindStop      Kind = "stop"
	KindGarbage   Kind = "garbage"
	KindClosechan Kind = "closechan"
)

// Faults from outside, and the awkward moments.
const (
	// KindSigkill: kill -9 of the current instance at a random moment.
	KindSigkill Kind = "sigkill"
	// KindKillDuringInit: kill -9, then kill -9 the next instance as soon
	// as status shows it (ideally still starting).
	KindKillDuringInit Kind = "kill-during-init"
	// KindKillDuringPrepare: a DEBUG SLEEP holds an update (state 2) in
	// prepare; kill -9 the old instance meanwhile. The update must fail.
	KindKillDuringPrepare Kind = "kill-during-prepare"
	// KindKillNewDuringUpdate: update to a build that hangs in its init
	// and kill -9 the new instance. The old one must keep serving.
	KindKillNewDuringUpdate Kind = "kill-new-during-update"
	// KindFaultDuringStop: `service restart` and kill -9 the instance
	// while it stops.
	KindFaultDuringStop Kind = "fault-during-stop"
	// KindUpdateRollback: update to a build whose live-update init fails;
	// the update must fail and the old instance keep serving.
	KindUpdateRollback Kind = "update-rollback"
	// KindUpdateOK: update to the other version; it must succeed and keep
	// the state.
	KindUpdateOK Kind = "update-ok"
)

// KVKinds are the faults kv injects into itself.
var KVKinds = []Kind{KindPanic, KindExit, KindKill, KindAbort, KindHang, KindSpin, KindStop, KindGarbage, KindClosechan}

// AllKinds is every kind, in report order.
var AllKinds = append(append([]Kind(nil), KVKinds...),
	KindSigkill, KindKillDuringInit, KindKillDuringPrepare, KindKillNewDuringUpdate,
	KindFaultDuringStop, KindUpdateRollback, KindUpdateOK)

// ParseKind checks a kind's name.
func ParseKind(s string) (Kind, error) {
	for _, k := range AllKinds {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("%w %q", ErrUnknownKind, s)
}

// Defaults for Config's zero fields.
const (
	DefaultFaults         = 1000
	DefaultServices       = 4
	DefaultRecoverTimeout = 15 * time.Second
	DefaultNetwork        = "unix"
	DefaultLogLevel       = "debug"
)

// Tuning of every service: fast pings, near-immediate restarts, never
// `failed`.
const (
	servicePeriod = 100 * time.Millisecond
	serviceTuning = `period = "100ms"
backoff_base = "1ms"
backoff_cap = "1ms"
max_restarts = -1
init_timeout = "2s"
stop_grace = "300ms"
`
)

var (
	ErrUnknownKind = errors.New("unknown fault kind")
	ErrConfig      = errors.New("campaign config")
	// ErrRSDied: rs exited while the campaign ran.
	ErrRSDied = errors.New("rs exited during the campaign")
)

// Config says what to run. Zero fields mean the defaults.
type Config struct {
	// Bin is the directory holding the binaries named by Binaries
	// (Build makes them). Required.
	Bin string
	// Faults is how many faults to inject (DefaultFaults).
	Faults int
	// Services is how many kv services rs supervises (DefaultServices).
	Services int
	// Seed drives every random choice; 0 takes one from the clock. The
	// report shows the seed used.
	Seed uint64
	// Kinds are the kinds to draw from, equally likely (AllKinds).
	Kinds []Kind
	// Network is where kv listens: "unix" (a socket in the work
	// directory) or "tcp" (a free 127.0.0.1 port).
	Network string
	// RecoverTimeout bounds the wait for a service to recover from one
	// fault (DefaultRecoverTimeout).
	RecoverTimeout time.Duration
	// Sequential injects one fault at a time over all services; by
	// default each service has its own worker and they run concurrently.
	Sequential bool
	// Dir is the work directory (config, sockets, rs.log). Default: a
	// temp directory, removed afterwards unless something failed.
	Dir string
	// PingTimeout is the services' ping_timeout; 0 leaves rs's default,
	// the period (100ms). A longer one makes a hang take longer to catch
	// but keeps a healthy instance on a starved CPU from missing its
	// heartbeat (which rs rightly treats as a hang).
	PingTimeout time.Duration
	// LogLevel is rs's --log-level (DefaultLogLevel).
	LogLevel string
	// Progress gets a line now and then while the campaign runs; nil:
	// quiet.
	Progress io.Writer
	// Verbose writes a line per fault to Progress.
	Verbose bool
}

func (c Config) withDefaults() (Config, error) {
	if c.Bin == "" {
		return c, fmt.Errorf("%w: Bin (the directory of the built binaries) is required", ErrConfig)
	}
	if c.Faults == 0 {
		c.Faults = DefaultFaults
	}
	if c.Services == 0 {
		c.Services = DefaultServices
	}
	if c.Faults < 0 || c.Services < 0 {
		return c, fmt.Errorf("%w: faults and services must be positive", ErrConfig)
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	if len(c.Kinds) == 0 {
		c.Kinds = AllKinds
	}
	if c.Network == "" {
		c.Network = DefaultNetwork
	}
	if c.Network != "unix" && c.Network != "tcp" {
		return c, fmt.Errorf("%w: network %q: want unix or tcp", ErrConfig, c.Network)
	}
	if c.PingTimeout < 0 {
		return c, fmt.Errorf("%w: ping timeout %v", ErrConfig, c.PingTimeout)
	}
	if c.RecoverTimeout == 0 {
		c.RecoverTimeout = DefaultRecoverTimeout
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return c, nil
}

// fault is one planned injection.
type fault struct {
	n    int // position in the plan
	svc  int
	kind Kind
	seed uint64 // the fault's own random choices
}

// plan draws the whole sequence of faults from the seed, so that it does
// not depend on how the workers interleave.
func plan(c Config) []fault {
	rng := rand.New(rand.NewPCG(c.Seed, 0x5eed))
	faults := make([]fault, c.Faults)
	for i := range faults {
		faults[i] = fault{
			n:    i,
			svc:  rng.IntN(c.Services),
			kind: c.Kinds[rng.IntN(len(c.Kinds))],
			seed: rng.Uint64(),
		}
	}
	return faults
}

// rng gives a fault its own generator.
func (f fault) rng() *rand.Rand { return rand.New(rand.NewPCG(f.seed, uint64(f.n))) }

// between draws a duration in [lo, hi].
func between(r *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.Int64N(int64(hi-lo)+1))
}
