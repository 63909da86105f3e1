package main

// The logs scenario: a service's output on its way to its log file.
//
// Throughput. flood (tests/bench/flood, built by the bench) writes
// logsBytes in lines of one size (logsLineSizes: short lines, where a
// logger's cost per line shows, and 4 KiB ones, where its copies do), as
// fast as it can, whole lines per write(2), then idles. Four columns, the
// same binary and the same bytes, each round in an order rotated by one:
//
//   - floor: flood | cat > file, a pipe into a file, no supervisor;
//   - svlogd: runsv on a directory with run (exec flood) and log/run
//     (exec svlogd -tt DIR), runit's usual pair;
//   - s6-log: two s6-supervise, one for flood and one for
//     s6-log t DIR, joined by a pipe the bench holds as s6-svscan holds
//     it for a service and its log/ (the bench never runs a scanner);
//   - rs: rs --log-dir DIR, flood added with `up` (LOGDIR/<label>.log).
//
// Each logger rotates at 10 MiB (svlogd's s, s6-log's s; rs's default
// log_max_size) and keeps enough files that nothing is removed: logsBytes
// with every prefix fits in rs's default log_keep. flood waits on a FIFO
// until the logger is up; the clock starts when the bench opens that FIFO
// and stops when the last line is in a file (polled every
// logsPoll). Counted: the bytes of the lines as flood wrote them (text and
// newline), found behind whatever prefix the logger adds, each line once;
// MB/s is those bytes / that time (MB = 10⁶ bytes). Lines missing, doubled
// or cut are counted too, after the clock stopped. svlogd and s6-log
// fsync a file when they rotate it: on a slow disk their wall time is
// mostly that wait, and it is what their users get.
//
// While flooding. The same rs runs kv; in phases alternating quiet and
// flooding (flood with -bytes 0, added with up and taken down with down),
// the bench times logsStatusRuns `status` round trips (control.Client)
// and logsCrashes kills of kv (crash.go's crash → serving), in the same
// run, so that each figure has its quiet twin.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/internal/resp"
	"github.com/reincarnation/rs/rs/control"
)

const (
	logsBytes      = 48 << 20
	logsRounds     = 3
	logsRotate     = 10 << 20 // each logger's rotation size
	logsKeep       = 20       // rs's log_keep: more files than one flood makes
	logsPoll       = time.Millisecond
	logsLimit      = 30 * time.Second // one flood, at most
	logsPhases     = 3                // quiet + flooding pairs
	logsStatusRuns = 70               // status round trips per phase
	logsCrashes    = 4                // kills of kv per phase
	floodPrefix    = "flood:"         // what tests/bench/flood begins each line with
	floodDigits    = 10
	noLogCapture   = "rs: no log capture in this build"
)

var logsLineSizes = []int{100, 4096}

// logCol is one column of the throughput table.
type logCol struct {
	name   string
	failed string
	mbps   []float64       // per round; < 0: not measured
	took   []time.Duration // per round
	bad    []string        // rounds whose lines were not all there, once each
}

// floodCount is what one flood left in the files.
type floodCount struct {
	good, missing, doubled, broken int64
}

func (c floodCount) String() string {
	return fmt.Sprintf("%d lines, %d missing, %d doubled, %d cut or garbled", c.good, c.missing, c.doubled, c.broken)
}

// rsLogCapture tells whether bin/rs has --log-dir.
func (b *bench) rsLogCapture() bool {
	if b.logCapture == nil {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, filepath.Join(b.bin, "rs"), "--help").CombinedOutput()
		has := bytes.Contains(out, []byte("--log-dir"))
		b.logCapture = &has
	}
	return *b.logCapture
}

// logDirFlags are the flags that keep an rs's service logs in the temp
// dir (none if rs has no log capture).
func (b *bench) logDirFlags(name string) []string {
	if !b.rsLogCapture() {
		return nil
	}
	return []string{"--log-dir", filepath.Join(b.dir, name)}
}

// buildFlood builds tests/bench/flood into the temp dir.
func (b *bench) buildFlood() (string, error) { return b.buildTool("./tests/bench/flood") }

// buildTool builds the command at pkg (a path in the module) into the
// temp dir and returns the binary.
func (b *bench) buildTool(pkg string) (string, error) {
	root, err := moduleRoot(b.ctx)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(b.ctx, 3*time.Minute)
	defer cancel()
	out := filepath.Join(b.dir, filepath.Base(pkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	if o, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v\n%s", pkg, err, o)
	}
	return out, nil
}

func (b *bench) logs() error {
	flood, err := b.buildFlood()
	if err != nil {
		return err
	}
	var rsc *logsRS
	if b.rsLogCapture() {
		if rsc, err = b.startLogsRS(); err != nil {
			return err
		}
		defer rsc.stop()
	} else {
		fmt.Fprintln(os.Stderr, "bench: logs:", noLogCapture)
	}
	for _, size := range logsLineSizes {
		if err := b.logsThroughput(flood, size, rsc); err != nil {
			return err
		}
	}
	return b.logsWhileFlooding(flood, rsc)
}

// logsRS is the scenario's rs, with kv, and its log dir.
type logsRS struct {
	b      *bench
	p      *rsProc
	ctl    control.Client
	logDir string
	kvAddr string
	pids   []int // flood pids seen, killed at the end if left
}

func (b *bench) startLogsRS() (*logsRS, error) {
	dir := filepath.Join(b.dir, "logs-rs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	kvAddr, err := b.addr("logs-kv")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "logs.toml")
	text := fmt.Sprintf("[service.kv]\nbinary = %q\nargs = [\"--listen\", %q]\nperiod = \"1s\"\nmax_restarts = -1\n",
		filepath.Join(b.bin, "kv"), kvAddr)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		return nil, err
	}
	r := &logsRS{b: b, ctl: control.Client{Socket: filepath.Join(dir, "rs.sock"), Timeout: 5 * time.Second},
		logDir: filepath.Join(dir, "log"), kvAddr: kvAddr}
	if r.p, err = b.startRS(cfg, r.ctl.Socket, filepath.Join(dir, "rs.log"), nil,
		"--log-format", "json", "--log-dir", r.logDir); err != nil {
		return nil, err
	}
	saved := b.ctl
	b.ctl = r.ctl
	_, err = b.waitRunning("kv", 0, 10*time.Second)
	b.ctl = saved
	if err != nil {
		r.stop()
		return nil, fmt.Errorf("logs: %w\n%s", err, tail(r.p.logPath, 20))
	}
	return r, nil
}

func (r *logsRS) stop() {
	if err := r.p.stop(10 * time.Second); err != nil {
		r.b.problem("logs: " + err.Error())
	}
	for _, pid := range r.pids {
		if alive(pid, "") && filepath.Base(exeOf(pid)) == "flood" {
			r.b.problem(fmt.Sprintf("logs: flood pid %d outlived rs; killed it", pid))
			unix.Kill(pid, unix.SIGKILL)
		}
	}
	if r.b.bad {
		fmt.Fprintf(os.Stderr, "\n--- logs rs log (last lines) ---\n%s", tail(r.p.logPath, 30))
	}
}

// up adds (or starts again) label running flood with args.
func (r *logsRS) up(label, flood string, args ...string) (int, error) {
	return r.upLog(label, flood, "file", args...)
}

// upLog is up with the service's log mode.
func (r *logsRS) upLog(label, flood, log string, args ...string) (int, error) {
	keep := logsKeep
	spec := &control.Patch{Binary: &flood, Args: &args, LogKeep: &keep, Log: &log}
	if _, err := r.ctl.Do(control.Request{Op: control.OpUp, Label: label, Spec: spec}, nil); err != nil {
		return 0, fmt.Errorf("up %s: %w", label, err)
	}
	rep, err := r.ctl.Do(control.Request{Op: control.OpStatus, Label: label}, nil)
	if err != nil || len(rep.Services) != 1 || rep.Services[0].Pid == 0 {
		return 0, fmt.Errorf("up %s: no pid in status (%v)", label, err)
	}
	pid := rep.Services[0].Pid
	r.pids = append(r.pids, pid)
	return pid, nil
}

func (r *logsRS) down(label string) error {
	if _, err := r.ctl.Do(control.Request{Op: control.OpDown, Label: label}, nil); err != nil {
		return fmt.Errorf("down %s: %w", label, err)
	}
	return nil
}

// logsThroughput runs logsRounds rounds of the four columns with lines
// of size bytes.
func (b *bench) logsThroughput(flood string, size int, rsc *logsRS) error {
	cols := []*logCol{{name: "floor: flood | cat > file"}, {name: "svlogd (runsv)"}, {name: "s6-log (s6-supervise)"}, {name: "rs"}}
	switch {
	case b.tools.path["runsv"] == "" || b.tools.path["svlogd"] == "":
		cols[1].failed = b.tools.missing["runsv"] + b.tools.missing["svlogd"]
	}
	if b.tools.path["s6-supervise"] == "" || b.tools.path["s6-log"] == "" {
		cols[2].failed = b.tools.missing["s6-supervise"] + b.tools.missing["s6-log"]
	}
	if rsc == nil {
		cols[3].failed = noLogCapture
	}
	lines := int64(logsBytes / size)
	defer func() { b.logsReport(size, lines, cols) }()
	for i := range logsRounds {
		for j := range cols {
			c := cols[(i+j)%len(cols)]
			if c.failed != "" {
				c.mbps = append(c.mbps, -1)
				continue
			}
			dir := filepath.Join(b.dir, fmt.Sprintf("logs-%d-%d-%d", size, i, (i+j)%len(cols)))
			run := logRun{b: b, flood: flood, size: size, lines: lines, dir: dir,
				fifo: filepath.Join(b.dir, fmt.Sprintf("logs-go-%d-%d-%d", size, i, j))}
			var took time.Duration
			var cnt floodCount
			var err error
			switch c.name {
			case cols[0].name:
				took, cnt, err = run.floor()
			case cols[1].name:
				took, cnt, err = run.svlogd()
			case cols[2].name:
				took, cnt, err = run.s6log()
			default:
				took, cnt, err = run.rs(rsc, fmt.Sprintf("flood%d-%d", size, i))
			}
			os.RemoveAll(dir)
			os.Remove(run.fifo)
			if b.ctx.Err() != nil {
				return b.ctx.Err()
			}
			if err != nil {
				c.failed = fmt.Sprintf("round %d: %v", i+1, err)
				msg := fmt.Sprintf("logs: %s: %s; left out of the later rounds", c.name, c.failed)
				if c.name == "rs" {
					b.problem(msg)
				} else {
					b.notes = append(b.notes, msg)
				}
				c.mbps = append(c.mbps, -1)
				continue
			}
			if cnt.missing+cnt.doubled+cnt.broken > 0 {
				c.bad = append(c.bad, fmt.Sprintf("round %d: %v", i+1, cnt))
				if c.name == "rs" {
					b.bad = true
				}
			}
			c.took = append(c.took, took)
			c.mbps = append(c.mbps, float64(cnt.good*int64(size))/took.Seconds()/1e6)
			if b.verbose {
				fmt.Fprintf(os.Stderr, "logs %d B round %d %s: %v, %.0f MB/s, %v\n", size, i+1, c.name, took, c.mbps[len(c.mbps)-1], cnt)
			}
		}
	}
	return nil
}

// logRun is one flood of one column.
type logRun struct {
	b           *bench
	flood       string
	size        int
	lines       int64
	dir         string // the log dir (the floor's file is in it)
	fifo        string
	prefixMatch string // only files whose name starts so (rs's dir holds every service's)
}

func (r *logRun) args(total int64) []string {
	return []string{"-line", strconv.Itoa(r.size), "-bytes", strconv.FormatInt(total, 10), "-go", r.fifo}
}

// floor: flood | cat > dir/out.
func (r *logRun) floor() (time.Duration, floodCount, error) {
	if err := r.prepare(); err != nil {
		return 0, floodCount{}, err
	}
	out, err := os.Create(filepath.Join(r.dir, "out"))
	if err != nil {
		return 0, floodCount{}, err
	}
	defer out.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, floodCount{}, err
	}
	fl := exec.Command(r.flood, r.args(r.lines*int64(r.size))...)
	fl.Stdout, fl.Env = pw, withoutEnv(os.Environ(), "RS_CHANNEL_FD")
	fl.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cat := exec.Command("cat")
	cat.Stdin, cat.Stdout = pr, out
	cat.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	errF, errC := fl.Start(), cat.Start()
	pr.Close()
	pw.Close()
	defer func() {
		for _, c := range []*exec.Cmd{fl, cat} {
			if c.Process != nil {
				c.Process.Kill()
				c.Wait()
			}
		}
	}()
	if err := errors.Join(errF, errC); err != nil {
		return 0, floodCount{}, err
	}
	return r.measure()
}

// svlogd: runsv dir/sv, run = flood, log/run = svlogd -tt dir.
func (r *logRun) svlogd() (time.Duration, floodCount, error) {
	if err := r.prepare(); err != nil {
		return 0, floodCount{}, err
	}
	logDir := filepath.Join(r.dir, "log")
	sv := r.dir + "-sv"
	defer os.RemoveAll(sv)
	if err := os.MkdirAll(filepath.Join(sv, "log"), 0o755); err != nil {
		return 0, floodCount{}, err
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return 0, floodCount{}, err
	}
	// Rotate at the same size as the others; keep every file.
	if err := os.WriteFile(filepath.Join(logDir, "config"), fmt.Appendf(nil, "s%d\nn0\n", logsRotate), 0o644); err != nil {
		return 0, floodCount{}, err
	}
	logRun := fmt.Sprintf("#!/bin/sh\nexec %s -tt %s\n", shellQuote(r.b.tools.path["svlogd"]), shellQuote(logDir))
	if err := os.WriteFile(filepath.Join(sv, "log", "run"), []byte(logRun), 0o755); err != nil {
		return 0, floodCount{}, err
	}
	s, err := r.b.supervise("runsv", sv, append([]string{r.flood}, r.args(r.lines*int64(r.size))...)...)
	if err != nil {
		return 0, floodCount{}, err
	}
	defer r.stopSup(s)
	if err := r.waitFile(filepath.Join(logDir, "lock")); err != nil {
		return 0, floodCount{}, fmt.Errorf("svlogd: %w", err)
	}
	r.dir = logDir
	return r.measure()
}

// s6log: s6-supervise dir/flood (stdout: a pipe) and s6-supervise
// dir/log running s6-log t on the pipe's other end.
func (r *logRun) s6log() (time.Duration, floodCount, error) {
	if err := r.prepare(); err != nil {
		return 0, floodCount{}, err
	}
	logDir := filepath.Join(r.dir, "log")
	svF, svL := r.dir+"-s6", r.dir+"-s6log"
	defer os.RemoveAll(svF)
	defer os.RemoveAll(svL)
	for _, d := range []string{svF, svL, logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return 0, floodCount{}, err
		}
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, floodCount{}, err
	}
	defer pr.Close()
	defer pw.Close()
	// n0 would keep nothing: keep far more files than a flood makes.
	logRun := fmt.Sprintf("#!/bin/sh\nexec %s n1000 s%d t %s\n", shellQuote(r.b.tools.path["s6-log"]), logsRotate, shellQuote(logDir))
	if err := os.WriteFile(filepath.Join(svL, "run"), []byte(logRun), 0o755); err != nil {
		return 0, floodCount{}, err
	}
	lg, err := r.b.startSupervisor("s6-supervise", svL, pr, nil)
	if err != nil {
		return 0, floodCount{}, err
	}
	defer r.stopSup(lg)
	var q []string
	for _, a := range append([]string{r.flood}, r.args(r.lines*int64(r.size))...) {
		q = append(q, shellQuote(a))
	}
	if err := os.WriteFile(filepath.Join(svF, "run"), []byte("#!/bin/sh\nexec "+strings.Join(q, " ")+"\n"), 0o755); err != nil {
		return 0, floodCount{}, err
	}
	fl, err := r.b.startSupervisor("s6-supervise", svF, nil, pw)
	if err != nil {
		return 0, floodCount{}, err
	}
	defer r.stopSup(fl) // runs first: the flood goes down before its logger
	pr.Close()
	pw.Close()
	if err := r.waitFile(filepath.Join(logDir, "lock")); err != nil {
		return 0, floodCount{}, fmt.Errorf("s6-log: %w", err)
	}
	r.dir = logDir
	return r.measure()
}

// rs: up label (flood), then its files LOGDIR/label.log*.
func (r *logRun) rs(rsc *logsRS, label string) (time.Duration, floodCount, error) {
	if err := r.prepare(); err != nil {
		return 0, floodCount{}, err
	}
	if _, err := rsc.up(label, r.flood, r.args(r.lines*int64(r.size))...); err != nil {
		return 0, floodCount{}, err
	}
	defer func() {
		if err := rsc.down(label); err != nil {
			r.b.problem("logs: " + err.Error())
		}
		files, _ := filepath.Glob(filepath.Join(rsc.logDir, label+".log*"))
		for _, f := range files {
			os.Remove(f)
		}
	}()
	r.dir, r.prefixMatch = rsc.logDir, label+".log"
	return r.measure()
}

func (r *logRun) stopSup(s *supervised) {
	for _, p := range s.stop() {
		r.b.notes = append(r.b.notes, "logs: "+p)
	}
}

// prepare makes the dir and the FIFO flood waits on.
func (r *logRun) prepare() error {
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return err
	}
	return unix.Mkfifo(r.fifo, 0o600)
}

// waitFile waits for path to exist (a logger's lock file: it is up).
func (r *logRun) waitFile(path string) error {
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s within 10s", path)
		}
		if err := r.b.sleep(logsPoll); err != nil {
			return err
		}
	}
}

// measure lets flood go (opens its FIFO), waits for the last line in
// the files, and counts them.
func (r *logRun) measure() (time.Duration, floodCount, error) {
	var t0 time.Time
	for deadline := time.Now().Add(10 * time.Second); ; {
		fd, err := unix.Open(r.fifo, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			t0 = time.Now()
			unix.Close(fd)
			break
		}
		if !errors.Is(err, unix.ENXIO) {
			return 0, floodCount{}, fmt.Errorf("open %s: %w", r.fifo, err)
		}
		if time.Now().After(deadline) {
			return 0, floodCount{}, errors.New("flood did not open its FIFO within 10s")
		}
		if err := r.b.sleep(logsPoll); err != nil {
			return 0, floodCount{}, err
		}
	}
	last := floodLine(r.size, r.lines-1)
	least := r.lines * int64(r.size)
	var tail []byte
	for {
		files := r.files()
		var sum int64
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil {
				sum += fi.Size()
			}
		}
		if sum >= least && anyTail(files, last, &tail) {
			break
		}
		if time.Since(t0) > logsLimit {
			return 0, floodCount{}, fmt.Errorf("the last line was not in %s within %v (%d bytes there, %d at least expected)", r.dir, logsLimit, sum, least)
		}
		if err := r.b.sleep(logsPoll); err != nil {
			return 0, floodCount{}, err
		}
	}
	took := time.Since(t0)
	cnt, err := countFlood(r.files(), r.size, r.lines)
	return took, cnt, err
}

// files are the log files of the run (rotated ones too).
func (r *logRun) files() []string {
	ents, _ := os.ReadDir(r.dir)
	var fs []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), r.prefixMatch) && e.Name() != "lock" && e.Name() != "state" && e.Name() != "config" {
			fs = append(fs, filepath.Join(r.dir, e.Name()))
		}
	}
	return fs
}

// floodLine is line seq of a flood of size-byte lines, newline included.
func floodLine(size int, seq int64) []byte {
	l := bytes.Repeat([]byte{'x'}, size)
	copy(l, fmt.Sprintf("%s%0*d ", floodPrefix, floodDigits, seq))
	l[size-1] = '\n'
	return l
}

// anyTail: does one of files end with line (a logger may add no more
// after it; a rotation may leave it at the end of the older file)?
func anyTail(files []string, line []byte, buf *[]byte) bool {
	for _, name := range files {
		if strings.HasSuffix(name, ".gz") {
			continue // rotated before the last line came
		}
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		fi, err := f.Stat()
		if err == nil && fi.Size() >= int64(len(line)) {
			*buf = append((*buf)[:0], make([]byte, len(line))...)
			_, err = f.ReadAt(*buf, fi.Size()-int64(len(line)))
			if err == nil && bytes.Equal(*buf, line) {
				f.Close()
				return true
			}
		}
		f.Close()
	}
	return false
}

// countFlood reads the files and counts flood's lines: found behind any
// prefix, each line's text and newline exactly as flood wrote it.
func countFlood(files []string, size int, lines int64) (floodCount, error) {
	var c floodCount
	seen := make([]bool, lines)
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return c, err
		}
		var rd io.Reader = f
		if strings.HasSuffix(name, ".gz") {
			z, err := gzip.NewReader(f)
			if err != nil {
				f.Close()
				return c, fmt.Errorf("%s: %w", name, err)
			}
			rd = z
		}
		sc := bufio.NewScanner(rd)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			l := sc.Bytes()
			i := bytes.Index(l, []byte(floodPrefix))
			if i < 0 {
				continue // a line of the logger's or the service's own
			}
			text := l[i:]
			seq, err := strconv.ParseInt(string(text[len(floodPrefix):min(len(text), len(floodPrefix)+floodDigits)]), 10, 64)
			if err != nil || seq < 0 || seq >= lines || len(text)+1 != size || !bytes.Equal(append(text, '\n'), floodLine(size, seq)) {
				c.broken++
				continue
			}
			if seen[seq] {
				c.doubled++
				continue
			}
			seen[seq] = true
			c.good++
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return c, fmt.Errorf("%s: %w", name, err)
		}
	}
	c.missing = lines - c.good
	return c, nil
}

// logsWhileFlooding times status and kv's crash → serving under rsc in
// quiet phases, phases where one service floods its log, and phases
// where it floods with log = "null" (its writes go to /dev/null, rs's
// log writer has nothing to do): what the flooder's own CPU costs kv on
// this machine, beside what rs's capture adds.
func (b *bench) logsWhileFlooding(flood string, rsc *logsRS) error {
	t := table{title: "Logs: rs while one service floods (status by control.Client; kv's crash → serving)",
		head: []string{"figure", "quiet", "one service flooding", "flooding, log = null", "target"}}
	const statusWhat = "logs: status p99 while a service floods < 5 ms"
	const crashWhat = "logs: kv's crash → serving while a service floods ≤ 1.25× quiet (medians)"
	if rsc == nil {
		t.add("status p99, crash → serving", noLogCapture, noLogCapture, noLogCapture, "")
		b.sections = append(b.sections, t)
		b.unjudged(statusWhat, noLogCapture)
		b.unjudged(crashWhat, noLogCapture)
		return nil
	}
	saved := b.ctl
	b.ctl = rsc.ctl
	defer func() { b.ctl = saved }()
	kv := &crashTarget{name: "rs", kind: underRS, label: "kv"}
	kv.network, kv.address = resp.SplitAddr(rsc.kvAddr)
	var status, crash [3][]time.Duration // [0] quiet, [1] flooding, [2] flooding into /dev/null
	var rates []float64
	size := logsLineSizes[0]
	args := []string{"-line", strconv.Itoa(size), "-bytes", "0"}
	var err error
	defer func() {
		b.logsFloodReport(&t, status, crash, rates, statusWhat, crashWhat, err)
	}()
	for i := range 3 * logsPhases {
		kind := i % 3
		flooding := kind > 0
		var pid int
		var w0 int64
		var t0 time.Time
		if flooding {
			mode := map[int]string{1: "file", 2: "null"}[kind]
			if pid, err = rsc.upLog("floodbg", flood, mode, args...); err != nil {
				return err
			}
			// Measure once the flood is under way.
			if w0, t0, err = b.waitWriting(pid); err != nil {
				return err
			}
		}
		var d []time.Duration
		if d, err = clientStatus(rsc.ctl, logsStatusRuns); err != nil {
			return err
		}
		status[kind] = append(status[kind], d...)
		for range logsCrashes {
			var r probeResult
			if r, err = b.crashRound(kv); err != nil {
				return fmt.Errorf("logs: kv: %w", err)
			}
			crash[kind] = append(crash[kind], r.d)
		}
		if kind == 1 {
			if w1, err := wchar(pid); err == nil {
				rates = append(rates, float64(w1-w0)/time.Since(t0).Seconds()/1e6)
			}
		}
		if flooding {
			if err = rsc.down("floodbg"); err != nil {
				return err
			}
		}
	}
	return nil
}

// waitWriting waits until pid has written 1 MB and returns its wchar
// then.
func (b *bench) waitWriting(pid int) (int64, time.Time, error) {
	for deadline := time.Now().Add(10 * time.Second); ; {
		w, err := wchar(pid)
		if err == nil && w >= 1e6 {
			return w, time.Now(), nil
		}
		if time.Now().After(deadline) {
			return 0, time.Time{}, fmt.Errorf("logs: flood pid %d wrote %d bytes in 10s (%v)", pid, w, err)
		}
		if err := b.sleep(logsPoll); err != nil {
			return 0, time.Time{}, err
		}
	}
}

// wchar is the bytes pid has written (/proc/pid/io).
func wchar(pid int) (int64, error) {
	out, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("pid %d: no wchar in /proc/%d/io", pid, pid)
}

// logsReport adds the throughput table of one line size, its ratios and
// the targets.
func (b *bench) logsReport(size int, lines int64, cols []*logCol) {
	t := table{title: fmt.Sprintf("Logs: %d-byte lines to a log file (%d MiB, %d lines, per flood; MB/s of the lines as written; %d rounds)",
		size, logsBytes>>20, lines, logsRounds),
		head: []string{"logger", "MB/s median (min–max)", "time median (min–max)", "rounds with lines missing, doubled or cut", "n"}}
	col := map[string][]float64{}
	for _, c := range cols {
		col[c.name] = c.mbps
		var m []float64
		for _, x := range c.mbps {
			if x >= 0 {
				m = append(m, x)
			}
		}
		b.rows = append(b.rows, row{name: fmt.Sprintf("logs: %d B lines, %s: %d MiB into its file", size, c.name, logsBytes>>20), d: c.took})
		if len(m) == 0 {
			why := c.failed
			if why == "" {
				why = "not measured"
			}
			if why != noLogCapture {
				why = "skipped: " + firstLine(why)
			}
			t.add(c.name, why, "-", "-", "0")
			continue
		}
		t.add(c.name, mbRange(m), medRange(c.took), fmt.Sprint(len(c.bad)), fmt.Sprint(len(m)))
		for _, s := range c.bad {
			b.notes = append(b.notes, fmt.Sprintf("logs: %d B lines, %s: %s", size, c.name, s))
		}
	}
	t.foot = append(t.foot, "Counted: each line's text and newline as flood wrote them, found behind the logger's prefix (svlogd -tt, s6-log t, "+
		"rs's time and stream), each line once; the clock runs from the bench letting flood go to the last line being in a file (polled every ms). "+
		"Each logger rotates at 10 MiB and keeps every file.")
	b.sections = append(b.sections, t)

	rt := table{title: fmt.Sprintf("Logs: %d-byte lines, ratios of MB/s, pair by pair (round i of one column over round i of the other)", size),
		head: []string{"ratio", "median (min–max)", "target"}}
	fl, sv, s6 := cols[0].name, cols[1].name, cols[2].name
	for _, c := range []struct {
		a, b, target string
		limit        float64
	}{
		{"rs", fl, "≥ 0.8×", 0.8},
		{"rs", sv, "≥ 1×", 1},
		{"rs", s6, "≥ 1×", 1},
		{sv, fl, "", 0},
		{s6, fl, "", 0},
	} {
		r := pairRatiosF(col[c.a], col[c.b])
		name := c.a + " / " + c.b
		if c.a == "rs" && cols[3].failed == noLogCapture {
			rt.add(name, noLogCapture, c.target)
		} else {
			rt.add(name, ratioRange(r), c.target)
		}
		if c.limit == 0 {
			continue
		}
		what := fmt.Sprintf("logs: %d B lines: MB/s rs ≥ %v× %s (median of pairwise ratios)", size, c.limit, c.b)
		switch {
		case cols[3].failed == noLogCapture:
			b.unjudged(what, noLogCapture)
		case len(r) == 0:
			b.unjudged(what, "not measured")
		default:
			b.judge(what, fmt.Sprintf("%s×", ratio(medianF(r))), medianF(r) >= c.limit)
		}
	}
	b.sections = append(b.sections, rt)
}

// logsFloodReport fills t with the quiet and flooding figures and judges
// them.
func (b *bench) logsFloodReport(t *table, status, crash [3][]time.Duration, rates []float64, statusWhat, crashWhat string, err error) {
	b.rows = append(b.rows,
		row{name: "logs: status round trip, quiet", d: status[0]},
		row{name: "logs: status round trip, one service flooding", d: status[1]},
		row{name: "logs: kv crash → serving, quiet", d: crash[0]},
		row{name: "logs: kv crash → serving, one service flooding", d: crash[1]},
		row{name: "logs: kv crash → serving, one service flooding into /dev/null", d: crash[2]})
	p99 := func(d []time.Duration) string {
		if len(d) == 0 {
			return "-"
		}
		return fmt.Sprintf("%s (n %d)", short(quantile(sorted(d), 0.99)), len(d))
	}
	t.add("status p99", p99(status[0]), p99(status[1]), p99(status[2]), "flooding < 5 ms")
	t.add("status median (min–max)", medRange(status[0]), medRange(status[1]), medRange(status[2]), "")
	t.add("kv crash → serving, median (min–max)", medRange(crash[0]), medRange(crash[1]), medRange(crash[2]), "flooding ≤ 1.25× quiet")
	if len(rates) > 0 {
		t.add("the flood's writes (wchar), MB/s", "-", fmt.Sprintf("%.0f (%.0f–%.0f)", medianF(rates), minF(rates), maxF(rates)), "-", "")
	}
	t.foot = append(t.foot, fmt.Sprintf("%d phases each of quiet, flooding its log file and flooding with log = null, in turn, each %d status round trips and %d kills of kv; "+
		"the flood (%d-byte lines, no end) is added with up and taken down with down, and timed once it has written 1 MB.",
		logsPhases, logsStatusRuns, logsCrashes, logsLineSizes[0]))
	if len(crash[0]) > 0 && len(crash[2]) > 0 {
		t.foot = append(t.foot, fmt.Sprintf("With log = null the flooder alone (its own CPU, no capture by rs) takes kv's crash → serving to %s× quiet.",
			ratio(float64(median(crash[2]))/float64(median(crash[0])))))
	}
	if err != nil {
		t.foot = append(t.foot, "Stopped early: "+firstLine(err.Error()))
	}
	b.sections = append(b.sections, *t)
	if len(status[1]) == 0 {
		b.unjudged(statusWhat, "not measured")
	} else {
		p := quantile(sorted(status[1]), 0.99)
		b.judge(statusWhat, short(p), p < 5*time.Millisecond)
	}
	if len(crash[0]) == 0 || len(crash[1]) == 0 {
		b.unjudged(crashWhat, "not measured")
	} else {
		r := float64(median(crash[1])) / float64(median(crash[0]))
		b.judge(crashWhat, fmt.Sprintf("%s → %s, %s×", short(median(crash[0])), short(median(crash[1])), ratio(r)), r <= 1.25)
	}
}

// pairRatiosF divides a[i] by b[i] where both were measured (≥ 0, b > 0).
func pairRatiosF(a, b []float64) []float64 {
	var r []float64
	for i := range min(len(a), len(b)) {
		if a[i] >= 0 && b[i] > 0 {
			r = append(r, a[i]/b[i])
		}
	}
	return r
}

// mbRange is "median (min–max)" of MB/s figures.
func mbRange(m []float64) string {
	return fmt.Sprintf("%.0f (%.0f–%.0f)", medianF(m), minF(m), maxF(m))
}

func minF(m []float64) float64 { return slices.Min(m) }
func maxF(m []float64) float64 { return slices.Max(m) }
