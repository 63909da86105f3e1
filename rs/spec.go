package rs

import (
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/proc"
	"github.com/reincarnation/rs/rs/logs"
)

// Restart policies, as spelled in the config and on the command line.
type RestartPolicy string

const (
	RestartAlways    RestartPolicy = "always"     // reincarnate whatever the exit
	RestartOnFailure RestartPolicy = "on-failure" // not after a clean exit 0
	RestartNever     RestartPolicy = "never"      // stays down after any exit
)

// Service types, as spelled in the config (key `type`) and on the
// command line: the protocol the service speaks with rs.
const (
	TypeSef    = "sef"    // links sef: the msg channel (the default)
	TypeNotify = "notify" // systemd's sd_notify protocol (notifydriver.go)
	TypeSimple = "simple" // no protocol
)

// Reload actions (config key reload_action): what `service reload` does
// when a running service's launch settings changed.
const (
	ReloadRestart = "restart" // stop it and start the new settings (the default)
	ReloadUpdate  = "update"  // a live update to them (sef; other types restart)
)

// Defaults applied by Spec.withDefaults where a field is zero.
const (
	DefaultPeriod        = time.Second
	DefaultInitTimeout   = 5 * time.Second
	DefaultStopGrace     = 2 * time.Second
	DefaultBackoffBase   = 100 * time.Millisecond
	DefaultBackoffCap    = 10 * time.Second
	DefaultBackoffReset  = time.Second
	DefaultMaxRestarts   = 10
	DefaultRestartWindow = time.Minute
	DefaultFailedRetry   = time.Minute
	DefaultHookTimeout   = 30 * time.Second
)

// FailedRetryNever is Spec.FailedRetry for `failed_retry = "0s"`: a
// failed service stays failed until `service restart` or `up`.
const FailedRetryNever time.Duration = -1

// Spec is everything rs needs to run one service. The config file and
// `service up` both produce Specs; zero fields mean "default" except
// Period, where zero means "no pings" (the config and the command line
// fill in DefaultPeriod when the user said nothing).
type Spec struct {
	Label   string
	Type    string   // its protocol: "sef" (default), "notify", "simple"
	Binary  string   // absolute path
	Args    []string // arguments after argv[0]
	Period  time.Duration
	Restart RestartPolicy
	Depends []string

	// Ready and Probe are checks of a simple service (check.go):
	// "tcp:HOST:PORT" or "exec:CMD ARGS". Ready must succeed before it
	// counts as running (tried until InitTimeout; "": running at once);
	// Probe is tried every ProbePeriod (default Period), each try within
	// ProbeTimeout (default PingTimeout), and a failure reincarnates it
	// ("probe-failed"). Without a probe a simple service lives as long
	// as its process.
	Ready        string
	Probe        string
	ProbePeriod  time.Duration
	ProbeTimeout time.Duration

	// PingTimeout is how long a ping may stay unanswered; default Period.
	PingTimeout time.Duration
	// InitTimeout bounds the init handshake of a new instance.
	InitTimeout time.Duration
	// StopGrace is how long each step of a graceful stop may take
	// (stop message, then SIGTERM, then SIGKILL).
	StopGrace time.Duration
	// BackoffBase, BackoffCap: the delay before the n-th consecutive
	// restart is 0 for the first, then BackoffBase doubling up to BackoffCap.
	BackoffBase time.Duration
	BackoffCap  time.Duration
	// BackoffReset: an instance that ran this long was healthy: its end
	// resets the backoff and does not count toward MaxRestarts.
	BackoffReset time.Duration
	// MaxRestarts within RestartWindow puts the service in `failed`;
	// only restarts after runs shorter than BackoffReset count (crash
	// loops). Negative means unlimited.
	MaxRestarts   int
	RestartWindow time.Duration
	// FailedRetry: a service in `failed` is tried again after this long
	// (once; if that try crash-loops too, it is failed again and the next
	// try follows after as long). FailedRetryNever: never.
	FailedRetry time.Duration

	// Standby keeps a warm standby instance (config `standby = true`,
	// `service clone`) that replaces a crashed one at once.
	Standby bool

	// Resource limits, set on each instance after its execve and before
	// its first instruction (soft and hard alike). Zero: no limit. Memory
	// is RLIMIT_DATA (heap and private writable mappings: what a program
	// really uses; a Go program needs about 100 MiB of it to start) and,
	// where rs has a memory controller, the limit of the service's cgroup
	// (all its processes together); OpenFiles is RLIMIT_NOFILE; CPUTime
	// is RLIMIT_CPU, whole seconds.
	Memory    uint64
	OpenFiles uint64
	CPUTime   time.Duration
	// Pids is the most processes the service may have, by its cgroup's
	// pids controller (config `pids`); zero: no limit. Without a pids
	// controller it is not enforced, and each start logs so.
	Pids int

	// Control lets the service's own processes send control requests
	// (config `control = true`); without it rs refuses them.
	Control bool

	// Log is where the service's stdout and stderr go (config `log`):
	// "file" (LOGDIR/<label>.log, the default), "inherit" (rs's own),
	// "null". LogMaxSize, LogKeep and LogCompress rotate the file
	// (package logs; zero: logs' defaults).
	Log         string
	LogMaxSize  uint64
	LogKeep     int
	LogCompress bool

	// What the process gets at its exec (launch.go), whatever its type.
	// Listen: sockets rs creates and holds ("tcp:HOST:PORT",
	// "unix:PATH", "unix:@abstract"), passed at fd 3, 4, ... with
	// LISTEN_FDS, LISTEN_FDNAMES (ListenNames, default listen0,
	// listen1, ...) and LISTEN_PID; a sef service also finds them in
	// its fd store under those names.
	Listen      []string
	ListenNames []string
	// User and Group (names or numbers) it runs as; with User and no
	// Group, the user's primary group; supplementary groups are the
	// user's. Changing them needs rs to be root.
	User  string
	Group string
	// Env adds to rs's environment, after EnvFile (KEY=VALUE lines,
	// read at each start); neither can set RS_LABEL, NOTIFY_SOCKET,
	// LISTEN_* or rs's channel variable.
	Env     map[string]string
	EnvFile string
	// Workdir is its working directory ("": rs's own).
	Workdir string
	// Umask, an octal string such as "0027" ("": rs's own).
	Umask string
	// StopSignal is the signal of a graceful stop's signal step
	// (default SIGTERM).
	StopSignal syscall.Signal

	// ReloadAction is what `service reload` does when the service's
	// launch settings changed (reload.go): "restart" (the default) or
	// "update" (a live update, for a sef service).
	ReloadAction string
	// OnFailure and OnExit are hooks (hooks.go), argv with an absolute
	// program: OnFailure runs when the service enters failed, OnExit
	// after each unexpected exit of its primary. Each run is bounded by
	// HookTimeout (default DefaultHookTimeout).
	OnFailure   []string
	OnExit      []string
	HookTimeout time.Duration

	// File and Line name where the service was configured ("" for `service up`).
	File string
	Line int
}

// withDefaults returns s with every zero tunable replaced by its default.
func (s Spec) withDefaults() Spec {
	if s.Restart == "" {
		s.Restart = RestartAlways
	}
	if s.Type == "" {
		s.Type = TypeSef
	}
	if s.PingTimeout == 0 {
		s.PingTimeout = s.Period
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&s.InitTimeout, DefaultInitTimeout)
	def(&s.StopGrace, DefaultStopGrace)
	def(&s.BackoffBase, DefaultBackoffBase)
	def(&s.BackoffCap, DefaultBackoffCap)
	def(&s.BackoffReset, DefaultBackoffReset)
	def(&s.RestartWindow, DefaultRestartWindow)
	def(&s.FailedRetry, DefaultFailedRetry)
	def(&s.HookTimeout, DefaultHookTimeout)
	if s.MaxRestarts == 0 {
		s.MaxRestarts = DefaultMaxRestarts
	}
	if s.StopSignal == 0 {
		s.StopSignal = syscall.SIGTERM
	}
	if s.ReloadAction == "" {
		s.ReloadAction = ReloadRestart
	}
	return s
}

// logConfig is how the service's output is kept, for package logs.
func (s Spec) logConfig() logs.Config {
	return logs.Config{Mode: s.Log, MaxSize: s.LogMaxSize, Keep: s.LogKeep, Compress: s.LogCompress}
}

// limits returns the spec's resource limits for proc.
func (s Spec) limits() []proc.Limit {
	var l []proc.Limit
	if s.Memory > 0 {
		l = append(l, proc.Limit{Resource: unix.RLIMIT_DATA, Value: s.Memory})
	}
	if s.OpenFiles > 0 {
		l = append(l, proc.Limit{Resource: unix.RLIMIT_NOFILE, Value: s.OpenFiles})
	}
	if s.CPUTime > 0 {
		secs := uint64((s.CPUTime + time.Second - 1) / time.Second)
		l = append(l, proc.Limit{Resource: unix.RLIMIT_CPU, Value: secs})
	}
	return l
}

// ParseRestart checks a restart policy's spelling.
func ParseRestart(v string) (RestartPolicy, error) {
	switch p := RestartPolicy(v); p {
	case RestartAlways, RestartOnFailure, RestartNever:
		return p, nil
	case "":
		return RestartAlways, nil
	}
	return "", fmt.Errorf("restart %q: want always, on-failure or never", v)
}
