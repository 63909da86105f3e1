package campaign

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// Bounds of the waits on rs itself.
const (
	controlTimeout = 30 * time.Second // one whole control call (a restart waits for a graceful stop and an init)
	startTimeout   = 15 * time.Second // rs up and every service running
	exitTimeout    = 15 * time.Second // rs gone after SIGTERM
)

// rsProc is the rs under test.
type rsProc struct {
	cmd     *exec.Cmd
	pid     int
	sock    string
	logPath string
	logFile *os.File
	ctl     control.Client
	done    chan struct{} // closed once rs has exited and been reaped
	exitErr error         // valid once done is closed

	answered    atomic.Bool // rs has answered once: failures count from then
	statusCalls atomic.Int64
	statusFails atomic.Int64
	mu          sync.Mutex
	statusErrs  []string // the first few failures, for the report
}

// service is one kv under rs.
type service struct {
	i     int
	label string
	addr  string      // kv's --listen
	dead  atomic.Bool // could not be brought back: its faults are skipped
}

// config writes rs's TOML: n kv services, all starting as kv-a.
func writeConfig(dir, bin, network string, n int, pingTimeout time.Duration) (string, []*service, error) {
	var b strings.Builder
	svcs := make([]*service, n)
	for i := range svcs {
		s := &service{i: i, label: fmt.Sprintf("kv%d", i)}
		if network == "unix" {
			s.addr = "unix:" + filepath.Join(dir, s.label+".sock")
		} else {
			addr, err := freeTCP()
			if err != nil {
				return "", nil, err
			}
			s.addr = addr
		}
		svcs[i] = s
		fmt.Fprintf(&b, "[service.%s]\nbinary = %q\nargs = [\"--listen\", %q, \"--allow-faults\"]\n%s",
			s.label, filepath.Join(bin, "kv-a"), s.addr, serviceTuning)
		if pingTimeout > 0 {
			fmt.Fprintf(&b, "ping_timeout = %q\n", pingTimeout.String())
		}
		b.WriteString("\n")
	}
	path := filepath.Join(dir, "system.toml")
	return path, svcs, os.WriteFile(path, []byte(b.String()), 0o644)
}

// freeTCP returns a loopback address nobody listens on now.
func freeTCP() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func startRS(dir, bin, config, level string) (*rsProc, error) {
	r := &rsProc{
		sock:    filepath.Join(dir, "rs.sock"),
		logPath: filepath.Join(dir, "rs.log"),
		done:    make(chan struct{}),
	}
	r.ctl = control.Client{Socket: r.sock, Timeout: controlTimeout}
	f, err := os.Create(r.logPath)
	if err != nil {
		return nil, err
	}
	r.logFile = f
	r.cmd = exec.Command(filepath.Join(bin, "rs"), "--config", config, "--socket", r.sock, "--log-level", level,
		"--log-dir", filepath.Join(dir, "log"))
	r.cmd.Stdout, r.cmd.Stderr = f, f
	// rs (and with it its services) dies with the campaign, even killed.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	r.pid = r.cmd.Process.Pid
	go func() {
		r.exitErr = r.cmd.Wait()
		close(r.done)
	}()
	return r, nil
}

// exitState says how rs ended (once exited) and, from its log, whether a
// signal made it stop: a campaign's rs gets none but the final SIGTERM.
func (r *rsProc) exitState() string {
	st := "still running"
	if r.exited() {
		st = r.cmd.ProcessState.String()
	}
	for _, l := range strings.Split(r.logExcerpt(max(0, r.logSize()-256<<10), "", 1<<20), "\n") {
		if strings.Contains(l, `msg="signal`) {
			st += "; its log: " + l
		}
	}
	return st
}

func (r *rsProc) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// status asks rs for every service (label "") or one, counting failures:
// rs must always answer.
func (r *rsProc) status(label string) (control.Reply, error) {
	r.statusCalls.Add(1)
	rep, err := r.ctl.Do(control.Request{Op: control.OpStatus, Label: label}, nil)
	if err == nil && (len(rep.Services) == 0 || rep.Daemon == nil) {
		err = errors.New("status reply without services or daemon figures")
	}
	if err == nil {
		r.answered.Store(true)
	}
	if err != nil {
		if r.exited() {
			return rep, fmt.Errorf("%w: %v", ErrRSDied, err)
		}
		if !r.answered.Load() {
			return rep, err // still starting: not listening yet
		}
		r.statusFails.Add(1)
		r.mu.Lock()
		if len(r.statusErrs) < 5 {
			r.statusErrs = append(r.statusErrs, time.Now().Format("15:04:05.000")+" "+err.Error())
		}
		r.mu.Unlock()
	}
	return rep, err
}

// stop sends SIGTERM and waits for rs to exit.
func (r *rsProc) stop() (took time.Duration, err error) {
	defer r.logFile.Close()
	begin := time.Now()
	if r.exited() {
		return 0, fmt.Errorf("%w before SIGTERM: %v", ErrRSDied, r.exitErr)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(exitTimeout)
	defer t.Stop()
	select {
	case <-r.done:
	case <-t.C:
		r.cmd.Process.Kill()
		<-r.done
		return time.Since(begin), fmt.Errorf("rs did not exit within %v of SIGTERM; killed", exitTimeout)
	}
	took = time.Since(begin)
	if r.exitErr != nil {
		return took, fmt.Errorf("rs after SIGTERM: %v", r.exitErr)
	}
	return took, nil
}

// kill is the last resort when the campaign cannot go on.
func (r *rsProc) kill() {
	if !r.exited() {
		r.cmd.Process.Kill()
		<-r.done
	}
	r.logFile.Close()
}

// logSize is where the log ends now: what a fault's excerpt starts from.
func (r *rsProc) logSize() int64 {
	fi, err := os.Stat(r.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logContext is how much of the log before an injection goes into its
// excerpt.
const logContext = 2 << 10

// logExcerpt returns the log records from offset on that concern label
// (or no service at all; every one if label is ""), at most limit, the
// last ones kept.
func (r *rsProc) logExcerpt(from int64, label string, limit int) string {
	f, err := os.Open(r.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	// A little before, for context; the first (partial) line is skipped.
	start := max(0, from-logContext)
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return ""
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if start > 0 {
		sc.Scan()
	}
	for sc.Scan() {
		// Log records only: the services' stack dumps go to the same file.
		l := sc.Text()
		if !strings.HasPrefix(l, "time=") {
			continue
		}
		if label == "" || strings.Contains(l, "label="+label+" ") || strings.HasSuffix(l, "label="+label) || !strings.Contains(l, "label=") {
			lines = append(lines, l)
		}
	}
	if len(lines) > limit {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines)", len(lines)-limit)}, lines[len(lines)-limit:]...)
	}
	return strings.Join(lines, "\n")
}
