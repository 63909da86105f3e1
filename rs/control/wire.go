package control

import (
	"bytes"
	"fmt"
	"math"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/reincarnation/rs/msg"
)

// Operations.
const (
	OpUp       = "up"
	OpDown     = "down"
	OpRestart  = "restart"
	OpUpdate   = "update"
	OpClone    = "clone"
	OpUnclone  = "unclone"
	OpStatus   = "status"
	OpShutdown = "shutdown"
	// OpLogs streams services' log lines (a streamed reply: see Stream).
	OpLogs = "logs"
	// OpReopenLogs closes every service's log file, to be opened again
	// at its next line (for an external logrotate; SIGUSR1 does the same).
	OpReopenLogs = "reopen-logs"
	// OpSignal sends Request.Signal to the main process of the service's
	// instance, and nothing else.
	OpSignal = "signal"
	// OpEvents streams lifecycle events as they happen (a streamed
	// reply: see Stream), for every service or Request.Label's.
	OpEvents = "events"
	// OpReload rereads rs's config file and applies what changed.
	OpReload = "reload"
	// OpRemove stops a service (if it runs) and forgets it.
	OpRemove = "remove"
	// OpUpdateSelf execs a new rs binary (Binary; "": rs's own) in
	// place, carrying the table; the connection ends with the exec, and
	// the client asks the new rs OpUpdateSelfResult with its Token.
	OpUpdateSelf       = "update-self"
	OpUpdateSelfResult = "update-self-result"
)

// Service states, as `service status` shows them.
const (
	StateStarting = "starting"
	StateRunning  = "running"
	StateUpdating = "updating"
	StateStopping = "stopping"
	StateBackoff  = "backoff"
	StateDown     = "down"
	StateFailed   = "failed"
)

// Request is one command.
type Request struct {
	Op    string `msgpack:"op"`
	Label string `msgpack:"label,omitempty"`
	// Spec: for up, the settings the command gives; nil fields keep the
	// service's own (or the defaults, for a new label).
	Spec *Patch `msgpack:"spec,omitempty"`
	// For update: the new binary (absolute; "" keeps the current one),
	// the state to reach first (0: 1) and how long that may take (0:
	// the default).
	Binary  string        `msgpack:"binary,omitempty"`
	State   int           `msgpack:"state,omitempty"`
	MaxTime time.Duration `msgpack:"maxtime,omitempty"`
	// DiscardState: for update, commit even if the new instance does not
	// take the state and fds it is handed (else that rolls the update back).
	DiscardState bool `msgpack:"discard_state,omitempty"`
	// Group: for update, the other labels of one atomic update beside
	// Label (`service update a b c`): every member commits or none does.
	// At most MaxGroup labels in all; empty for one service alone.
	Group []string `msgpack:"group,omitempty"`
	// For logs (Label "" for every service): Lines, how many of the last
	// lines to send first (nil: DefaultLogLines, or every line since
	// Since when that is set; at most MaxLogLines); SinceUs, only lines
	// stamped at or after this time (Unix microseconds; 0: any); Follow,
	// then send new lines as they come until the client goes.
	Lines   *int  `msgpack:"lines,omitempty"`
	SinceUs int64 `msgpack:"since_us,omitempty"`
	Follow  bool  `msgpack:"follow,omitempty"`
	// Signal: for signal, the signal's name ("SIGHUP", "HUP").
	Signal string `msgpack:"signal,omitempty"`
	// Token: for update-self and update-self-result, the client's name
	// of its update-self (random), which crosses the exec.
	Token string `msgpack:"token,omitempty"`
}

// Reply is rs's answer. Err empty means success; then Code is empty too.
type Reply struct {
	Code     Code      `msgpack:"code,omitempty"`
	Err      string    `msgpack:"err,omitempty"`
	Message  string    `msgpack:"message,omitempty"` // a line for the operator
	Progress string    `msgpack:"progress,omitempty"`
	Services []Status  `msgpack:"services,omitempty"`
	Daemon   *Daemon   `msgpack:"daemon,omitempty"` // with status
	Logs     []LogLine `msgpack:"logs,omitempty"`   // with logs, in pieces before the final reply
	Events   []Event   `msgpack:"events,omitempty"` // with events, in pieces before the final reply
	Done     bool      `msgpack:"done"`
}

// Failure is the final reply for err: its code and its text.
func Failure(err error) Reply {
	return Reply{Code: CodeOf(err), Err: err.Error(), Done: true}
}

// Daemon is rs's own health, reported with status: what a long run must
// show not growing.
type Daemon struct {
	Pid        int     `msgpack:"pid" json:"pid"`
	UptimeS    float64 `msgpack:"uptime_s" json:"uptime_s"`
	Goroutines int     `msgpack:"goroutines" json:"goroutines"`
	FDs        int     `msgpack:"fds" json:"fds"`
	RSSKiB     int64   `msgpack:"rss_kib" json:"rss_kib"`
	HeapKiB    int64   `msgpack:"heap_kib" json:"heap_kib"`
	// UnknownEvents counts events rs's loop had no case for: a bug, and
	// tests fail on any.
	UnknownEvents int64 `msgpack:"unknown_events" json:"unknown_events"`
	// Closing counts fds a service handed over that rs is closing off its
	// loop (a socket with SO_LINGER set can take its linger time).
	Closing int64 `msgpack:"closing" json:"closing"`
	// Containment is how rs holds each service's processes together:
	// "cgroup" (a cgroup v2 leaf per instance, killed with cgroup.kill)
	// or "process-group".
	Containment string `msgpack:"containment" json:"containment"`
	// Watchers counts who watches the lifecycle events now (`service
	// events`, metrics).
	Watchers int64 `msgpack:"watchers" json:"watchers"`
}

// Status is one row of `service status`; its JSON form is the SPEC's.
type Status struct {
	Label      string   `msgpack:"label" json:"label"`
	State      string   `msgpack:"state" json:"state"`
	Pid        int      `msgpack:"pid" json:"pid"`
	UptimeS    float64  `msgpack:"uptime_s" json:"uptime_s"`
	Restarts   int      `msgpack:"restarts" json:"restarts"`
	Binary     string   `msgpack:"binary" json:"binary"`
	Args       []string `msgpack:"args" json:"args"`
	LastExit   string   `msgpack:"last_exit" json:"last_exit"`
	PingRTTUs  int64    `msgpack:"ping_rtt_us" json:"ping_rtt_us"`
	PeriodMs   int64    `msgpack:"period_ms" json:"period_ms"`
	Depends    []string `msgpack:"depends" json:"depends"`
	Standby    bool     `msgpack:"standby" json:"standby"`         // a standby is wanted
	StandbyPid int      `msgpack:"standby_pid" json:"standby_pid"` // 0 when none runs
	// LogError says why its output cannot be written to its log file now
	// (the service blocks on its full pipe meanwhile); "" when it can.
	LogError string `msgpack:"log_error" json:"log_error"`
	// Type is the service's protocol: sef, notify or simple (config key type).
	Type string `msgpack:"type" json:"type"`
	// StatusText is what a notify service said last with STATUS= ("" if
	// nothing, or not a notify service).
	StatusText string `msgpack:"status_text" json:"status_text"`
	// Reloading: a notify service said RELOADING=1 and not READY=1 since.
	Reloading bool `msgpack:"reloading" json:"reloading"`
	// NotifyRejected counts the datagrams on its notify sockets that rs
	// ignored: from processes outside the service, oversized, malformed.
	NotifyRejected int64 `msgpack:"notify_rejected" json:"notify_rejected"`
	// StoredFDs is how many fds its fd store holds.
	StoredFDs int `msgpack:"stored_fds" json:"stored_fds"`
}

// LogLine is one line of a service's log file as the file holds it
// (`<RFC 3339 UTC time> <stream> <text>`, without its newline), and the
// service it is of. It is data: the text is the service's, and may hold
// anything but a newline.
type LogLine struct {
	Label string `msgpack:"label"`
	Line  string `msgpack:"line"`
}

// DefaultLogLines is how many of the last lines logs sends without
// Lines; MaxLogLines and MaxLogBytes bound what it sends before it
// follows (the latest lines are kept).
const (
	DefaultLogLines = 10
	MaxLogLines     = 100000
	MaxLogBytes     = 64 << 20
)

// MaxGroup is the most services one group update may hold.
const MaxGroup = 32

// MaxState is the largest update state: the wire to the services
// carries it in 32 bits.
const MaxState = math.MaxUint32

// MaxRequest bounds a request packet; MaxReply bounds what a client
// reassembles of one reply.
const (
	MaxRequest = 64 << 10
	MaxReply   = 256 << 20
)

// DecodeRequest parses a request packet; any input gives a request or an
// error wrapping ErrInvalid, never a panic.
func DecodeRequest(b []byte) (Request, error) {
	var r Request
	if len(b) > MaxRequest {
		return r, fmt.Errorf("%w: %d bytes", ErrInvalid, len(b))
	}
	// Scan first: the decoder must never see a length it would allocate
	// for that the packet does not hold.
	if err := msg.Scan(b); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := msgpack.NewDecoder(bytes.NewReader(b)).Decode(&r); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	// An integer that does not fit its field is not silently cut to it:
	// state 4294967297 is not state 1.
	if err := msg.CheckFit(b, &r); err != nil {
		return Request{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if r.State < 0 || r.State > MaxState {
		return Request{}, fmt.Errorf("%w: state %d out of range (1 to %d)", ErrInvalid, r.State, MaxState)
	}
	if r.MaxTime < 0 {
		return Request{}, fmt.Errorf("%w: maxtime %v: must be positive", ErrInvalid, r.MaxTime)
	}
	if len(r.Group) > 0 && r.Op != OpUpdate {
		return Request{}, fmt.Errorf("%w: only update takes several labels", ErrInvalid)
	}
	if len(r.Group)+1 > MaxGroup {
		return Request{}, fmt.Errorf("%w: update of %d services: at most %d at once", ErrInvalid, len(r.Group)+1, MaxGroup)
	}
	for _, l := range r.Group {
		if l == "" {
			return Request{}, fmt.Errorf("%w: update: an empty label", ErrInvalid)
		}
	}
	switch r.Op {
	case OpStatus, OpShutdown, OpReopenLogs, OpEvents, OpReload:
	case OpLogs:
		if r.Lines != nil && (*r.Lines < 0 || *r.Lines > MaxLogLines) {
			return Request{}, fmt.Errorf("%w: lines %d out of range (0 to %d)", ErrInvalid, *r.Lines, MaxLogLines)
		}
		if r.SinceUs < 0 {
			return Request{}, fmt.Errorf("%w: since %d: before 1970", ErrInvalid, r.SinceUs)
		}
	case OpUp, OpDown, OpRestart, OpUpdate, OpClone, OpUnclone, OpRemove:
		if r.Label == "" {
			return Request{}, fmt.Errorf("%w: %s needs a label", ErrInvalid, r.Op)
		}
	case OpUpdateSelf:
		if len(r.Token) > 64 {
			return Request{}, fmt.Errorf("%w: token too long", ErrInvalid)
		}
	case OpUpdateSelfResult:
		if r.Token == "" || len(r.Token) > 64 {
			return Request{}, fmt.Errorf("%w: update-self-result needs a token", ErrInvalid)
		}
	case OpSignal:
		if r.Label == "" || r.Signal == "" {
			return Request{}, fmt.Errorf("%w: signal needs a signal and a label", ErrInvalid)
		}
	default:
		return Request{}, fmt.Errorf("%w: unknown command %q", ErrInvalid, r.Op)
	}
	return r, nil
}

// Event is one step in a service's life, as `service events` shows it:
// what happened (Event, a lower-case word or words joined by '-'), to
// which service, when, and what a person or a hook needs to make sense
// of it. Its JSON form is one object per line of `service events --json`.
type Event struct {
	Time  time.Time `msgpack:"time" json:"time"`
	Label string    `msgpack:"label" json:"label"`
	Event string    `msgpack:"event" json:"event"`
	// Pid is the instance's process the event is about (0: none).
	Pid int `msgpack:"pid,omitempty" json:"pid,omitempty"`
	// Reason: why it exited or failed, as last_exit says it; an update's
	// rollback reason; what a reload changed.
	Reason string `msgpack:"reason,omitempty" json:"reason,omitempty"`
	// Kind is the reason's first word (terminated, no-heartbeat,
	// init-timeout, faulty, oom-killed, ...), for counting.
	Kind string `msgpack:"kind,omitempty" json:"kind,omitempty"`
	// State is the service's state just after the event; empty for
	// exited, whose next event says what comes of it.
	State    string `msgpack:"state,omitempty" json:"state,omitempty"`
	Restarts int    `msgpack:"restarts" json:"restarts"`
	// Detail is the rest, in words (the backoff delay, an update's pids).
	Detail string `msgpack:"detail,omitempty" json:"detail,omitempty"`
	// Missed counts events this watcher did not get just before this one
	// because it read too slowly (0: none).
	Missed int `msgpack:"missed,omitempty" json:"missed,omitempty"`
	// RTT is a ping's round trip, for rs's own watchers (metrics) of
	// pongs; never sent.
	RTT time.Duration `msgpack:"-" json:"-"`
}
