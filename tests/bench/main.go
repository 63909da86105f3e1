// Command bench measures rs with real processes, beside runit's runsv,
// s6's s6-supervise and in-process floors, and prints tables (markdown)
// of figures all measured in the same run. `make bench` runs it; it is
// never part of `make test`.
//
//	go build -o bin/ ./cmd/rs ./cmd/service ./servers/kv ./servers/idle ./servers/httpcount
//	go run ./tests/bench [-bin DIR] [-n 20] [-notify-n 12] [-net tcp|unix] [-v]
//	                     [-scenario ping,control,crash,notify,update,redisbench,group,http,self,logs,scale]
//	                     [-keys 100000] [-big-keys 1000000] [-updates 10] [-paced-every 250us] [-kvb PATH] [-rb-n 200000]
//	                     [-scale 1000] [-window 20s] [-rss-window 1m] [-cpuprofile FILE]
//	                     [-timeout 15m]
//
// It writes a config with kv (period 1s, max_restarts -1 so that the
// kills never put it in `failed`), kvsb (the same with standby = true)
// kvping (period 10ms, ping_timeout 1s) and, for notify, sdn and sdnb
// (the go-systemd fixture, type = "notify", with and without listen)
// into a temp dir, starts bin/rs on it, and runs the scenarios asked for (default: all), in this order:
//
//   - ping (ping.go): rs's ping round trip through kvping's sef loop,
//     p50 and p99, against a raw SOCK_SEQPACKET socketpair ping-pong of
//     the same size in one process; kvping is then taken down.
//   - control (control.go): status by control.Client and by bin/service.
//   - crash (crash.go): SIGKILL → serving, rs with and without a standby
//     beside runsv, s6-supervise and an exec of kv, round by round.
//   - notify (notify.go): SIGKILL → serving of the go-systemd fixture
//     (tests/fixtures/sdnotify -serve) under rs as type = "notify" with
//     listen (the listener held), under rs binding its own port, and
//     standalone under runsv and s6-supervise; from rs's log, what
//     listen costs per start.
//   - update (update.go, s6update.go): live updates under load with
//     no extra keys, 100k keys and 1M keys in one run, beside s6-svc -r
//     of the same kv under s6 with 100k keys.
//   - redisbench (redisbench.go): redis-benchmark through live updates.
//   - group (group.go): three kv instances under an rs of their own,
//     one client each: a group update of the three (one atomic update)
//     beside updating them one by one, round by round; the gap each
//     client saw, the commands' times, failed requests.
//   - http (http.go, httpload.go): servers/httpcount (sef/sefhttp) under
//     an rs of its own, with 4 Go keep-alive clients that keep every
//     response's counter and, in turn, wrk and ab -k: -updates live
//     updates beside -updates `service restart`s of the same server,
//     and s6-svc -r of it standalone under s6-supervise, under the same
//     load: requests/s, failed requests, non-2xx, the longest wait,
//     responses lost or duplicated (the counter).
//   - self (self.go): service update-self of rs, 20 times, under load.
//   - logs (logs.go): a service's output into its log file, MB/s, under
//     rs --log-dir beside svlogd (runsv), s6-log (s6-supervise) and the
//     floor (flood | cat > file); then status and kv's crash → serving
//     under that rs, quiet and while one service floods. Without
//     --log-dir in bin/rs its rs columns say so and the rest runs.
//   - scale (scale.go): a second rs with -scale idle services pinged
//     every second: boot, rs CPU and memory, status time; runsv's and
//     s6-supervise's memory per service beside it.
//
// When bin/rs has --log-dir, every rs the bench starts keeps its
// services' logs in the temp dir.
//
// runsv, svlogd, s6-supervise, s6-svc, s6-log, redis-benchmark, wrk and ab are installed by
// install-peers.sh (Debian packages runit, s6, redis-tools, wrk, apache2-utils) when missing;
// what cannot be had is skipped with a note. Every wait has a deadline,
// and the whole run one (-timeout). At the end, even on failure, every
// process the bench started is stopped (rs: SIGTERM then SIGKILL; the
// peers: down and exit, then SIGKILL) and the temp dir is removed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/rs/control"
)

type row struct {
	name string
	d    []time.Duration
}

type bench struct {
	ctx      context.Context
	opts     options
	machine  machine
	tools    tools
	dir      string
	bin      string
	netw     string
	kvAddr   string // where the configured kv listens
	kvsbAddr string // where kvsb (standby = true) listens
	sdnotify string // notify: the fixture's binary
	sdnAddr  string // notify: rs's listen for sdn
	sdnbAddr string // notify: where sdnb binds itself
	ctl      control.Client
	rsLog    string   // the main rs's log (JSON)
	sections []table  // the report, in order
	targets  []target // goals met or missed
	rows     []row    // every timing, for the last table
	notes    []string
	verbose  bool
	bad      bool  // something rs should not have done: show its log
	killed   []int // kv pids this bench killed or saw, checked at the end
	// logCapture: whether bin/rs has --log-dir (nil: not asked yet).
	logCapture *bool
}

// options are the command's flags.
type options struct {
	n          int
	notifyN    int // notify: rounds
	bin        string
	netw       string
	logPath    string
	verbose    bool
	scenarios  map[string]bool
	keys       int           // update: keys loaded before the measured updates
	bigKeys    int           // update: keys for a last phase of updates (0 or <= keys: none)
	pacedEvery time.Duration // update: a client's pace in the paced pass (0: no such pass)
	updates    int           // update, redisbench: updates per phase
	kvb        string        // update, redisbench: the second kv binary ("" builds one)
	rbN        int           // redisbench: -n
	scaleN     int           // scale: idle services
	window     time.Duration
	rssWindow  time.Duration
	cpuprofile string // scale: RS_CPUPROFILE for its rs
	selfN      int    // self: update-selfs
}

// scenarioNames are the scenarios, in the order they run.
var scenarioNames = []string{"ping", "control", "crash", "notify", "update", "redisbench", "group", "http", "self", "logs", "scale"}

func parseScenarios(s string) (map[string]bool, error) {
	m := map[string]bool{}
	for name := range strings.SplitSeq(s, ",") {
		name = strings.TrimSpace(name)
		switch {
		case name == "all":
			for _, n := range scenarioNames {
				m[n] = true
			}
		case slices.Contains(scenarioNames, name):
			m[name] = true
		case name != "":
			return nil, fmt.Errorf("-scenario: unknown %q (want some of %s, or all)", name, strings.Join(scenarioNames, ","))
		}
	}
	if len(m) == 0 {
		return nil, errors.New("-scenario: none given")
	}
	return m, nil
}

func main() {
	switch {
	case os.Getenv(echoEnv) != "":
		echoMain()
		return
	case os.Getenv(checkEnv) != "":
		checkMain()
		return
	}
	n := flag.Int("n", 20, "crash → serving: rounds (one kill of each column per round)")
	notifyN := flag.Int("notify-n", 12, "notify: crash → serving rounds (one kill of each column per round)")
	bin := flag.String("bin", "bin", "directory holding rs, service, kv, idle and httpcount")
	netw := flag.String("net", "tcp", "kv listens on tcp (127.0.0.1) or unix")
	logPath := flag.String("log", "", "write rs's log to this file (default: in the temp dir, shown on trouble)")
	verbose := flag.Bool("v", false, "print every crash → serving and update sample")
	scen := flag.String("scenario", "all", "comma-separated: "+strings.Join(scenarioNames, ",")+", or all")
	keys := flag.Int("keys", 100000, "update: keys in kv during the measured updates")
	bigKeys := flag.Int("big-keys", 1000000, "update: keys in kv during a last phase of updates (0: no such phase)")
	pacedEvery := flag.Duration("paced-every", 250*time.Microsecond, "update: after the pass with back-to-back clients, a second with each client sending one request this often (0: no second pass)")
	updates := flag.Int("updates", 10, "update, redisbench, http: live updates (and restarts) per phase")
	kvb := flag.String("kvb", "", "update, redisbench: second kv binary to alternate with bin/kv (default: build one with version b)")
	rbN := flag.Int("rb-n", 200000, "redisbench: requests per test (-n), raised if too few to last through the updates")
	scaleN := flag.Int("scale", 1000, "scale: idle services under one rs")
	window := flag.Duration("window", 20*time.Second, "scale: window over which rs's CPU is measured")
	rssWindow := flag.Duration("rss-window", time.Minute, "scale: how long rs's RSS is sampled, from the start of -window")
	cpuprofile := flag.String("cpuprofile", "", "scale: write the scale rs's CPU profile (RS_CPUPROFILE) to this file")
	selfN := flag.Int("self-n", 20, "self: update-selfs of rs under load")
	timeout := flag.Duration("timeout", 15*time.Minute, "stop the scenarios after this long, print what was measured")
	flag.Parse()
	if *netw != "tcp" && *netw != "unix" {
		fmt.Fprintln(os.Stderr, "bench: -net: want tcp or unix")
		os.Exit(2)
	}
	scenarios, err := parseScenarios(*scen)
	if err == nil && (*keys < 0 || *bigKeys < 0 || *updates < 1 || *pacedEvery < 0 || *rbN < 1 || *n < 1 || *notifyN < 1 || *scaleN < 1 || *window < time.Second) {
		err = errors.New("-keys, -big-keys and -paced-every must be >= 0, -n, -notify-n, -updates, -rb-n and -scale >= 1, -window >= 1s")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeoutCause(ctx, *timeout, fmt.Errorf("-timeout %v reached", *timeout))
	defer cancel()
	if *cpuprofile != "" {
		if *cpuprofile, err = filepath.Abs(*cpuprofile); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
	}
	err = run(ctx, options{n: *n, notifyN: *notifyN, bin: *bin, netw: *netw, logPath: *logPath, verbose: *verbose,
		scenarios: scenarios, keys: *keys, bigKeys: *bigKeys, pacedEvery: *pacedEvery, updates: *updates, kvb: *kvb, rbN: *rbN,
		scaleN: *scaleN, window: *window, rssWindow: *rssWindow, cpuprofile: *cpuprofile, selfN: max(*selfN, 1)})
	if err != nil {
		if c := context.Cause(ctx); c != nil && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (%v)", err, c)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) (err error) {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "rsbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{ctx: ctx, opts: o, dir: dir, bin: bin, netw: o.netw, verbose: o.verbose, machine: readMachine(),
		ctl: control.Client{Socket: filepath.Join(dir, "rs.sock"), Timeout: 2 * time.Second}}
	defer b.print()
	b.findTools()
	if o.scenarios["ping"] || o.scenarios["control"] || o.scenarios["crash"] || o.scenarios["notify"] || o.scenarios["update"] || o.scenarios["redisbench"] || o.scenarios["self"] {
		if err := b.mainRS(); err != nil {
			return err
		}
	}
	if o.scenarios["group"] {
		if err := b.groupScenario(); err != nil {
			return err
		}
	}
	if o.scenarios["http"] {
		if err := b.httpScenario(); err != nil {
			return err
		}
	}
	if o.scenarios["logs"] {
		if err := b.logs(); err != nil {
			return err
		}
	}
	if o.scenarios["scale"] {
		return b.scale()
	}
	return nil
}

// mainRS starts rs with kv, kvsb, kvping, sdn and sdnb, runs every scenario but
// scale on it, and stops it.
func (b *bench) mainRS() (err error) {
	o := b.opts
	if b.kvAddr, err = b.addr("kv"); err != nil {
		return err
	}
	if b.kvsbAddr, err = b.addr("kvsb"); err != nil {
		return err
	}
	pingAddr, err := b.addr("kvping")
	if err != nil {
		return err
	}
	kvBin := filepath.Join(b.bin, "kv")
	cfgText := fmt.Sprintf(`[service.kv]
binary = %q
args = ["--listen", %q]
period = "1s"
max_restarts = -1
`, kvBin, b.kvAddr)
	if o.scenarios["crash"] {
		cfgText += fmt.Sprintf(`
[service.kvsb]
binary = %q
args = ["--listen", %q]
period = "1s"
max_restarts = -1
standby = true
`, kvBin, b.kvsbAddr)
	}
	if o.scenarios["ping"] {
		// A 10 ms deadline would be missed on a loaded machine: the
		// round trip is what is measured here, not the deadline.
		cfgText += fmt.Sprintf(`
[service.kvping]
binary = %q
args = ["--listen", %q]
period = "10ms"
ping_timeout = "1s"
max_restarts = -1
`, kvBin, pingAddr)
	}
	if o.scenarios["notify"] {
		text, err := b.notifyConfig()
		if err != nil {
			return err
		}
		cfgText += text
	}
	cfg := filepath.Join(b.dir, "system.toml")
	if err := os.WriteFile(cfg, []byte(cfgText), 0o644); err != nil {
		return err
	}
	logPath := o.logPath
	if logPath == "" {
		logPath = filepath.Join(b.dir, "rs.log")
	}
	b.rsLog = logPath
	p, err := b.startRS(cfg, b.ctl.Socket, logPath, nil, append([]string{"--log-format", "json"}, b.logDirFlags("main-logs")...)...)
	if err != nil {
		return err
	}
	defer func() {
		if serr := p.stop(10 * time.Second); serr != nil {
			b.problem(serr.Error())
		}
		b.reapLeftovers()
		if err != nil || b.bad {
			if w := warnings(logPath, 40); w != "" {
				fmt.Fprintf(os.Stderr, "\n--- rs log (warnings and errors) ---\n%s", w)
			}
			fmt.Fprintf(os.Stderr, "\n--- rs log (last lines) ---\n%s", tail(logPath, 30))
		}
	}()

	st, err := b.waitRunning("kv", 0, 10*time.Second)
	if err != nil {
		return err
	}
	b.killed = append(b.killed, st.Pid)
	if o.scenarios["ping"] {
		if err := b.pings(); err != nil {
			return err
		}
	}
	if o.scenarios["control"] {
		if err := b.control(); err != nil {
			return err
		}
	}
	if o.scenarios["crash"] {
		if err := b.crash(o.n); err != nil {
			return err
		}
	}
	if o.scenarios["notify"] {
		if err := b.notify(o.notifyN); err != nil {
			return err
		}
	}
	if o.scenarios["update"] || o.scenarios["redisbench"] {
		if err := b.liveUpdates(); err != nil {
			return err
		}
	}
	if o.scenarios["self"] {
		if err := b.selfUpdates(); err != nil {
			return err
		}
	}
	return nil
}

// addr returns where a kv should listen: a loopback port that was free a
// moment ago, or a socket path in the temp dir.
func (b *bench) addr(name string) (string, error) {
	if b.netw == "unix" {
		return "unix:" + filepath.Join(b.dir, name+".sock"), nil
	}
	return tcpAddr(name)
}

// tcpAddr returns a loopback port that was free a moment ago, whatever
// -net says.
func tcpAddr(string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// strangeSignals reports the signals rs logged before the bench sent its
// SIGTERM at sent: some other process on the machine signalled it.
func strangeSignals(logPath string, sent time.Time) string {
	var s string
	for _, e := range logEvents(logPath) {
		// A text log has milliseconds: allow for the rounding.
		if e.Msg == "signal, stopping every service" && e.Time.Before(sent.Add(-time.Millisecond)) {
			s += fmt.Sprintf("; rs logged %q %v before the bench sent SIGTERM: another process signalled it", e.line, sent.Sub(e.Time).Round(time.Millisecond))
		}
	}
	return s
}

// logEvent is one line of rs's log, text or JSON.
type logEvent struct {
	Time  time.Time `json:"time"`
	Msg   string    `json:"msg"`
	Label string    `json:"label"`
	Pid   int       `json:"pid"`
	line  string
}

// logEvents reads rs's log. JSON lines (--log-format json, which the
// bench's main rs uses for its nanosecond times) are decoded; text lines
// give their time and msg only.
func logEvents(path string) []logEvent {
	b, _ := os.ReadFile(path)
	var evs []logEvent
	for line := range strings.SplitSeq(string(b), "\n") {
		var e logEvent
		if strings.HasPrefix(line, "{") {
			if json.Unmarshal([]byte(line), &e) != nil {
				continue
			}
		} else {
			ts, rest, ok := strings.Cut(strings.TrimPrefix(line, "time="), " ")
			t, err := time.Parse(time.RFC3339Nano, ts)
			if !ok || err != nil {
				continue
			}
			e.Time = t
			if _, m, ok := strings.Cut(rest, "msg="); ok {
				if strings.HasPrefix(m, `"`) {
					m, _, _ = strings.Cut(m[1:], `"`)
				} else {
					m, _, _ = strings.Cut(m, " ")
				}
				e.Msg = m
			}
		}
		e.line = line
		evs = append(evs, e)
	}
	return evs
}

// status returns the row of label.
func (b *bench) status(label string) (control.Status, error) {
	r, err := b.ctl.Do(control.Request{Op: control.OpStatus}, nil)
	if err != nil {
		return control.Status{}, err
	}
	for _, s := range r.Services {
		if s.Label == label {
			return s, nil
		}
	}
	return control.Status{}, fmt.Errorf("status: no service %q", label)
}

// waitRunning polls status until label is running with a pid other than
// notPid.
func (b *bench) waitRunning(label string, notPid int, limit time.Duration) (control.Status, error) {
	deadline := time.Now().Add(limit)
	var last control.Status
	var lastErr error
	for time.Now().Before(deadline) && b.ctx.Err() == nil {
		last, lastErr = b.status(label)
		if lastErr == nil && last.State == "running" && last.Pid != 0 && last.Pid != notPid {
			return last, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := b.ctx.Err(); err != nil {
		return last, err
	}
	return last, fmt.Errorf("%s not running within %v (last: state %q pid %d last_exit %q, err %v)",
		label, limit, last.State, last.Pid, last.LastExit, lastErr)
}

// reapLeftovers reports kv and httpcount instances still alive after rs
// exited (there should be none) and kills them.
func (b *bench) reapLeftovers() {
	for _, pid := range b.killed {
		if exe := filepath.Base(exeOf(pid)); alive(pid, "") && (strings.HasPrefix(exe, "kv") || exe == "sdnotify" || strings.HasPrefix(exe, "httpcount")) {
			b.problem(fmt.Sprintf("%s pid %d outlived rs; killed it", exe, pid))
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}

func (b *bench) problem(s string) {
	b.bad = true
	b.notes = append(b.notes, s)
}

// warnings returns the last n lines of rs's log at level WARN or ERROR.
func warnings(path string, n int) string {
	b, _ := os.ReadFile(path)
	var keep []string
	for line := range strings.SplitAfterSeq(string(b), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") ||
			strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep[max(0, len(keep)-n):], "")
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(b), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "")
}
