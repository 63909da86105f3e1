// Command bench measures rs with real processes and prints a table.
//
//	go build -o bin/ ./cmd/... ./servers/...
//	go run ./tests/bench [-n 20] [-bin DIR] [-net tcp|unix] [-v]
//	                     [-scenario crash,ping,control,update,redisbench]
//	                     [-keys 100000] [-updates 10] [-kvb PATH] [-rb-n 200000]
//
// It writes a config with one kv (period 1s, max_restarts -1 so that the
// kills below never put it in `failed`) into a temp dir, starts bin/rs on
// it and waits until kv is running. Then it runs the scenarios asked for
// (default: all), in this order:
//
//   - crash → serving: n times, SIGKILL kv and, from the moment of the
//     kill, connect and send INFO server until a reply names a new
//     process_id. Connections refused meanwhile are counted; there should
//     be none, since rs keeps kv's listening socket in its fd store. Each
//     instance is killed 1.1 s after it first answered, so every restart
//     is the immediate first one of the backoff (rs resets it after an
//     instance ran 1 s).
//   - ping round trip: a second kv added with `up` and period 10ms;
//     ping_rtt_us is sampled from status 200 times, 15 ms apart. Its floor
//     is a ping/pong over a SOCK_SEQPACKET socketpair inside this process,
//     the same messages through package msg, 10000 times.
//   - control round trip: rs.Client.Do(status), 200 times.
//   - update: live updates of kv under load (update.go).
//   - redisbench: redis-benchmark through live updates (redisbench.go).
//
// Every wait has a deadline. At the end, even on failure, rs gets SIGTERM
// (then SIGKILL) and the temp dir is removed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"rs/internal/resp"
	"rs/msg"
	"rs/rs"
)

type row struct {
	name string
	d    []time.Duration
}

type bench struct {
	ctx     context.Context
	opts    options
	dir     string
	bin     string
	netw    string
	kvAddr  string // where the configured kv listens
	ctl     rs.Client
	rows    []row
	tables  []string // further tables, printed as they are after the main one
	notes   []string
	verbose bool
	bad     bool  // something rs should not have done: show its log
	killed  []int // kv pids this bench killed or saw, checked at the end
}

// options are the command's flags.
type options struct {
	n         int
	bin       string
	netw      string
	logPath   string
	verbose   bool
	scenarios map[string]bool
	keys      int    // update: keys loaded before the measured updates
	updates   int    // update, redisbench: updates per phase
	kvb       string // update, redisbench: the second kv binary ("" builds one)
	rbN       int    // redisbench: -n
}

// scenarioNames are the scenarios, in the order they run.
var scenarioNames = []string{"crash", "ping", "control", "update", "redisbench"}

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
	n := flag.Int("n", 20, "crash → serving: number of kills")
	bin := flag.String("bin", "bin", "directory holding rs and kv")
	netw := flag.String("net", "tcp", "kv listens on tcp (127.0.0.1) or unix")
	logPath := flag.String("log", "", "write rs's log to this file (default: in the temp dir, shown on trouble)")
	verbose := flag.Bool("v", false, "print every crash → serving and update sample")
	scen := flag.String("scenario", "all", "comma-separated: "+strings.Join(scenarioNames, ",")+", or all")
	keys := flag.Int("keys", 100000, "update: keys in kv during the measured updates")
	updates := flag.Int("updates", 10, "update, redisbench: live updates per phase")
	kvb := flag.String("kvb", "", "update, redisbench: second kv binary to alternate with bin/kv (default: build one with version b)")
	rbN := flag.Int("rb-n", 200000, "redisbench: requests per test (-n), raised if too few to last through the updates")
	flag.Parse()
	if *netw != "tcp" && *netw != "unix" {
		fmt.Fprintln(os.Stderr, "bench: -net: want tcp or unix")
		os.Exit(2)
	}
	scenarios, err := parseScenarios(*scen)
	if err == nil && (*keys < 0 || *updates < 1 || *rbN < 1) {
		err = errors.New("-keys must be >= 0, -updates and -rb-n >= 1")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = run(ctx, options{n: *n, bin: *bin, netw: *netw, logPath: *logPath, verbose: *verbose,
		scenarios: scenarios, keys: *keys, updates: *updates, kvb: *kvb, rbN: *rbN})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) (err error) {
	bin, logPath := o.bin, o.logPath
	if bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "rsbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{ctx: ctx, opts: o, dir: dir, bin: bin, netw: o.netw, verbose: o.verbose,
		ctl: rs.Client{Socket: filepath.Join(dir, "rs.sock"), Timeout: 2 * time.Second}}

	addr, err := b.addr("kv")
	if err != nil {
		return err
	}
	b.kvAddr = addr
	cfg := filepath.Join(dir, "system.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`[service.kv]
binary = %q
args = ["--listen", %q]
period = "1s"
max_restarts = -1
`, filepath.Join(bin, "kv"), addr)), 0o644); err != nil {
		return err
	}
	if logPath == "" {
		logPath = filepath.Join(dir, "rs.log")
	}
	stopRS, err := b.startRS(cfg, logPath)
	if err != nil {
		return err
	}
	defer func() {
		if serr := stopRS(); serr != nil {
			b.problem(serr.Error())
		}
		b.reapLeftovers()
		b.print()
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
	if o.scenarios["crash"] {
		if err := b.crash(o.n, addr); err != nil {
			return err
		}
	}
	if o.scenarios["ping"] {
		if err := b.pings(); err != nil {
			return err
		}
		b.floor(10000)
	}
	if o.scenarios["control"] {
		if err := b.control(200); err != nil {
			return err
		}
	}
	if o.scenarios["update"] || o.scenarios["redisbench"] {
		if err := b.liveUpdates(); err != nil {
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startRS starts rs and returns the function that stops it: SIGTERM, then
// SIGKILL if it has not exited within 10 s.
func (b *bench) startRS(cfg, logPath string) (func() error, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(b.bin, "rs"), "--config", cfg, "--socket", b.ctl.Socket)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a ^C reaches only us, and we stop rs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); logf.Close() }()
	return func() error {
		select {
		case err := <-done:
			return fmt.Errorf("rs had exited before the bench stopped it (%v)%s", err, strangeSignals(logPath, time.Now()))
		default:
		}
		sent := time.Now()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if s := strangeSignals(logPath, sent); s != "" {
				return fmt.Errorf("rs exited (%v)%s", err, s)
			}
			if err != nil {
				return fmt.Errorf("rs after SIGTERM: %v", err)
			}
			return nil
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			return errors.New("rs did not exit within 10s of SIGTERM; killed it")
		}
	}, nil
}

// strangeSignals reports the signals rs logged before the bench sent its
// SIGTERM at sent: some other process on the machine signalled it.
func strangeSignals(logPath string, sent time.Time) string {
	b, _ := os.ReadFile(logPath)
	var s string
	for line := range strings.SplitSeq(string(b), "\n") {
		if !strings.Contains(line, `msg="signal, stopping every service"`) {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		t, err := time.Parse(time.RFC3339Nano, ts)
		// The log has milliseconds: allow for the rounding.
		if err == nil && t.Before(sent.Add(-time.Millisecond)) {
			s += fmt.Sprintf("; rs logged %q %v before the bench sent SIGTERM: another process signalled it", line, sent.Sub(t).Round(time.Millisecond))
		}
	}
	return s
}

// status returns the row of label.
func (b *bench) status(label string) (rs.Status, error) {
	r, err := b.ctl.Do(rs.Request{Op: rs.OpStatus}, nil)
	if err != nil {
		return rs.Status{}, err
	}
	for _, s := range r.Services {
		if s.Label == label {
			return s, nil
		}
	}
	return rs.Status{}, fmt.Errorf("status: no service %q", label)
}

// waitRunning polls status until label is running with a pid other than
// notPid.
func (b *bench) waitRunning(label string, notPid int, limit time.Duration) (rs.Status, error) {
	deadline := time.Now().Add(limit)
	var last rs.Status
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

// crash kills kv n times and times kill → first reply from a new instance.
func (b *bench) crash(n int, addr string) error {
	network, address := resp.SplitAddr(addr)
	r := row{name: "crash → serving (" + network + ")"}
	defer func() { b.rows = append(b.rows, r) }()
	var refused, lost, attempts int
	defer func() {
		if refused > 0 {
			b.bad = true
		}
		b.notes = append(b.notes, fmt.Sprintf("crash → serving: %d kills, %d connection attempts, %d refused, %d other failed attempts (connection reset or closed before a reply)",
			len(r.d), attempts, refused, lost))
	}()
	var served time.Time // when the current instance first answered
	pid := 0
	for i := range n {
		// Spaced from the new instance's start, not from the last kill:
		// one that ran less than 1 s would leave the backoff raised.
		time.Sleep(time.Until(served.Add(1100 * time.Millisecond)))
		st, err := b.waitRunning("kv", pid, 10*time.Second)
		if err != nil {
			return fmt.Errorf("kill %d: %w", i+1, err)
		}
		pid = st.Pid
		b.killed = append(b.killed, pid)
		last := time.Now()
		if err := unix.Kill(pid, unix.SIGKILL); err != nil {
			return fmt.Errorf("kill %d: pid %d: %w", i+1, pid, err)
		}
		var lastErr error
		for {
			if time.Since(last) > 5*time.Second || b.ctx.Err() != nil {
				return fmt.Errorf("kill %d (pid %d): no reply from a new kv within 5s; %d refused so far, last error: %v",
					i+1, pid, refused, lastErr)
			}
			attempts++
			got, err := infoPid(network, address)
			if err == nil && got != pid {
				served = time.Now()
				r.d = append(r.d, served.Sub(last))
				if b.verbose {
					fmt.Fprintf(os.Stderr, "kill %d at %s: pid %d → %d in %v\n", i+1, last.UTC().Format("15:04:05.000"), pid, got, r.d[len(r.d)-1])
				}
				break
			}
			switch {
			case errors.Is(err, syscall.ECONNREFUSED):
				refused++
			case err != nil:
				lost++
			}
			lastErr = err
			if b.verbose && err != nil {
				fmt.Fprintf(os.Stderr, "kill %d: after %v: %v\n", i+1, time.Since(last), err)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	return nil
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

// pings adds a kv pinged every 10 ms and samples its ping round trip.
func (b *bench) pings() error {
	addr, err := b.addr("kvping")
	if err != nil {
		return err
	}
	_, err = b.ctl.Do(rs.Request{Op: rs.OpUp, Label: "kvping", Binary: filepath.Join(b.bin, "kv"),
		Args: []string{"--listen", addr}, HasArgs: true, Period: 10 * time.Millisecond, HasPeriod: true}, nil)
	if err != nil {
		return fmt.Errorf("up kvping: %w", err)
	}
	st, err := b.waitRunning("kvping", 0, 5*time.Second)
	if err != nil {
		return err
	}
	b.killed = append(b.killed, st.Pid)
	r := row{name: "ping round trip (rs status)"}
	defer func() { b.rows = append(b.rows, r) }()
	// A 10 ms period is also a 10 ms ping deadline, which a busy machine
	// may miss: count reincarnations instead of giving up on them.
	pids := map[int]bool{st.Pid: true}
	reasons := map[string]int{}
	notRunning, zero := 0, 0
	for range 200 {
		if b.ctx.Err() != nil {
			return b.ctx.Err()
		}
		time.Sleep(15 * time.Millisecond)
		cur, err := b.status("kvping")
		if err != nil {
			return err
		}
		if cur.Restarts != st.Restarts {
			reasons[cur.LastExit] += cur.Restarts - st.Restarts
		}
		st = cur
		if !pids[st.Pid] && st.Pid != 0 {
			pids[st.Pid] = true
			b.killed = append(b.killed, st.Pid)
		}
		switch {
		case st.State != "running":
			notRunning++
		case st.PingRTTUs == 0:
			zero++
		default:
			r.d = append(r.d, time.Duration(st.PingRTTUs)*time.Microsecond)
		}
	}
	if notRunning+zero > 0 {
		b.notes = append(b.notes, fmt.Sprintf("ping round trip: of 200 samples %d found kvping not running, %d had no answered ping yet", notRunning, zero))
	}
	for reason, k := range reasons {
		b.problem(fmt.Sprintf("ping round trip: kvping (period 10ms) reincarnated %d time(s) while sampled, last_exit %q; state at the end %q", k, reason, st.State))
	}
	return nil
}

// floor times ping/pong over a socketpair in this process.
func (b *bench) floor(n int) {
	r := row{name: "ping floor (socketpair, in-process)"}
	defer func() { b.rows = append(b.rows, r) }()
	fail := func(err error) { b.notes = append(b.notes, "ping floor: "+err.Error()) }
	fa, fb, err := msg.Pair()
	if err != nil {
		fail(err)
		return
	}
	a, err := msg.NewConn(fa)
	if err != nil {
		fb.Close()
		fail(err)
		return
	}
	defer a.Close()
	e, err := msg.NewConn(fb)
	if err != nil {
		fail(err)
		return
	}
	go func() { // the echoing "service"; ends when a is closed
		defer e.Close()
		for {
			m, _, err := e.Recv()
			if err != nil {
				return
			}
			if e.Send(&msg.Message{Kind: msg.KindPong, Seq: m.Seq}) != nil {
				return
			}
		}
	}()
	a.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := range n + 100 { // the first 100 warm up
		t := time.Now()
		if err := a.Send(&msg.Message{Kind: msg.KindPing, Seq: uint64(i + 1)}); err != nil {
			fail(err)
			return
		}
		m, _, err := a.Recv()
		if err != nil || m.Kind != msg.KindPong || m.Seq != uint64(i+1) {
			fail(fmt.Errorf("round trip %d: %v %v", i, m.Kind, err))
			return
		}
		if i >= 100 {
			r.d = append(r.d, time.Since(t))
		}
	}
}

// control times status requests on the control socket.
func (b *bench) control(n int) error {
	r := row{name: "control round trip (status)"}
	defer func() { b.rows = append(b.rows, r) }()
	for range n {
		t := time.Now()
		if _, err := b.ctl.Do(rs.Request{Op: rs.OpStatus}, nil); err != nil {
			return err
		}
		r.d = append(r.d, time.Since(t))
	}
	return nil
}

// reapLeftovers reports kv instances still alive after rs exited (there
// should be none) and kills them.
func (b *bench) reapLeftovers() {
	for _, pid := range b.killed {
		if unix.Kill(pid, 0) == nil && !isZombie(pid) {
			b.problem(fmt.Sprintf("kv pid %d outlived rs; killed it", pid))
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}

func (b *bench) problem(s string) {
	b.bad = true
	b.notes = append(b.notes, s)
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}

func (b *bench) print() {
	var u unix.Utsname
	unix.Uname(&u)
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("machine: nproc %d, kernel %s, %s, loadavg %s\n\n", runtime.NumCPU(),
		unix.ByteSliceToString(u.Release[:]), runtime.Version(), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Printf("%-38s %10s %10s %10s %10s %6s\n", "figure", "median", "min", "max", "p90", "n")
	for _, r := range b.rows {
		if len(r.d) == 0 {
			fmt.Printf("%-38s %10s %10s %10s %10s %6d\n", r.name, "-", "-", "-", "-", 0)
			continue
		}
		d := slices.Clone(r.d)
		slices.Sort(d)
		p90 := d[(len(d)*9+9)/10-1]
		med := (d[(len(d)-1)/2] + d[len(d)/2]) / 2
		fmt.Printf("%-38s %10s %10s %10s %10s %6d\n", r.name, short(med), short(d[0]), short(d[len(d)-1]), short(p90), len(d))
	}
	for _, t := range b.tables {
		fmt.Printf("\n%s", t)
	}
	if len(b.notes) > 0 {
		fmt.Println()
		for _, n := range b.notes {
			fmt.Println(n)
		}
	}
}

// short prints a duration with three significant figures or so.
func short(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.3fs", d.Seconds())
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
