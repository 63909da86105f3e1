package main

// The redisbench scenario: redis-benchmark, a client nobody here wrote,
// drives kv through live updates. It runs twice with the same tests: once
// without updates (the baseline, which also sizes the second run so that
// each test lasts long enough), then while the bench does -updates
// updates spread over its tests: the bench follows redis-benchmark's
// progress lines and does update i during test i*tests/updates, at least
// updateSpacing after the test began and after the previous update. The
// run through updates must exit 0, print no error line and report every
// test. redis-benchmark exits on any -ERR
// reply, hence only tests whose commands kv knows; its warning that
// CONFIG GET returned nothing is not an error.
//
// If redis-benchmark is not installed and install-peers.sh (Debian's
// redis-tools) could not install it, the scenario is skipped with a note.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/reincarnation/rs/internal/resp"
)

const (
	rbTests   = "set,get,incr,ping"
	rbClients = 8
	// rbConfigWarning starts the line redis-benchmark prints because kv's
	// CONFIG GET returns an empty array.
	rbConfigWarning = "WARNING: Could not fetch server CONFIG"
)

// rbWant are the tests -t set,get,incr,ping runs.
var rbWant = []string{"PING_INLINE", "PING_MBULK", "SET", "GET", "INCR"}

var rbResultLine = regexp.MustCompile(`^(\S+): ([0-9.]+) requests per second(?:, p50=([0-9.]+) msec)?`)

type rbTest struct{ name, rps, p50 string }

type rbResult struct {
	n        int
	tests    []rbTest
	errLines []string // anything it printed that is neither a result, progress nor the CONFIG warning
	warnings []string
	err      error // how it exited
	took     time.Duration
}

// rbAddrArgs are redis-benchmark's flags for kv's address.
func rbAddrArgs(addr string) ([]string, error) {
	network, address := resp.SplitAddr(addr)
	if network == "unix" {
		return []string{"-s", address}, nil
	}
	host, port, err := net.SplitHostPort(address)
	return []string{"-h", host, "-p", port}, err
}

// rbOutput collects redis-benchmark's stdout and counts the tests it has
// finished as their result lines arrive.
type rbOutput struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	line     []byte // since the last \r or \n
	finished int
}

func (o *rbOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	for _, c := range p {
		if c != '\r' && c != '\n' {
			o.line = append(o.line, c)
			continue
		}
		if rbResultLine.Match(bytes.TrimSpace(o.line)) {
			o.finished++
		}
		o.line = o.line[:0]
	}
	return len(p), nil
}

// testsFinished is how many tests have printed their result.
func (o *rbOutput) testsFinished() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.finished
}

// runRB runs redis-benchmark once with -n n, killing it after timeout,
// and calls during (if not nil) while it runs, with a channel closed when
// it has exited and its output so far.
func (b *bench) runRB(path string, n int, timeout time.Duration, during func(done <-chan struct{}, out *rbOutput)) rbResult {
	res := rbResult{n: n}
	args, err := rbAddrArgs(b.kvAddr)
	if err != nil {
		res.err = err
		return res
	}
	args = append(args, "-t", rbTests, "-n", strconv.Itoa(n), "-c", strconv.Itoa(rbClients), "-q")
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	var stdout rbOutput
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		res.err = err
		return res
	}
	done := make(chan struct{})
	var werr error
	go func() { werr = cmd.Wait(); close(done) }()
	if during != nil {
		during(done, &stdout)
	}
	<-done // bounded: the context kills it after timeout
	res.took = time.Since(start)
	res.err = werr
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		res.err = fmt.Errorf("killed after %v: %v", timeout, werr)
	}
	for _, out := range []string{stdout.buf.String(), stderr.String()} {
		for _, line := range strings.FieldsFunc(out, func(r rune) bool { return r == '\r' || r == '\n' }) {
			line = strings.TrimSpace(line)
			switch m := rbResultLine.FindStringSubmatch(line); {
			case line == "" || strings.Contains(line, " rps="): // progress
			case m != nil:
				res.tests = append(res.tests, rbTest{m[1], m[2], m[3]})
			case strings.HasPrefix(line, rbConfigWarning):
				res.warnings = append(res.warnings, line)
			default:
				res.errLines = append(res.errLines, line)
			}
		}
	}
	return res
}

// check notes how a run went; false if it did not go well.
func (b *bench) checkRB(what string, r rbResult) bool {
	ok := r.err == nil && len(r.errLines) == 0
	s := fmt.Sprintf("redisbench %s: -n %d, ", what, r.n)
	if r.err != nil {
		s += "exit: " + r.err.Error()
	} else {
		s += "exit 0"
	}
	s += fmt.Sprintf(" after %s, %d error lines", short(r.took), len(r.errLines))
	var missing []string
	for _, w := range rbWant {
		found := false
		for _, t := range r.tests {
			found = found || t.name == w
		}
		if !found {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		ok = false
		s += ", no result for " + strings.Join(missing, " ")
	}
	if ok {
		b.notes = append(b.notes, s)
		return true
	}
	b.problem(s)
	for i, l := range r.errLines {
		if i == 10 {
			b.problem(fmt.Sprintf("redisbench %s: ... %d more error lines", what, len(r.errLines)-i))
			break
		}
		b.problem(fmt.Sprintf("redisbench %s: redis-benchmark: %s", what, l))
	}
	return false
}

// redisBench is the redisbench scenario. cmdMedian, the median update
// command time of the update scenario (0 if it did not run), sizes the
// run through updates.
func (b *bench) redisBench(bins [2]string, cmdMedian time.Duration) error {
	path := b.tools.path["redis-benchmark"]
	if path == "" {
		b.notes = append(b.notes, "redisbench: skipped: "+b.tools.missing["redis-benchmark"])
		return nil
	}
	u, err := b.newUpdater(bins)
	if err != nil {
		return err
	}
	k, n := b.opts.updates, b.opts.rbN
	// The same map whether or not the update scenario ran before.
	c, err := resp.DialAddr(b.kvAddr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := kvDo(c, "FLUSHALL"); err != nil {
		return err
	}
	if err := loadKeys(c, b.opts.keys); err != nil {
		return fmt.Errorf("redisbench: loading %d keys: %w", b.opts.keys, err)
	}
	before, err := b.status("kv")
	if err != nil {
		return err
	}
	base := b.runRB(path, n, 10*time.Minute, nil)
	if b.ctx.Err() != nil {
		return b.ctx.Err()
	}
	b.checkRB("without updates", base)

	// Each test must last long enough for its share of the updates
	// twice over, at the rate of the baseline's fastest test.
	if cmdMedian == 0 {
		cmdMedian = 100 * time.Millisecond
	}
	perTest := (k + len(rbWant) - 1) / len(rbWant)
	need := 2 * time.Duration(perTest) * (updateSpacing + cmdMedian)
	fastest := 0.0
	for _, t := range base.tests {
		if r, err := strconv.ParseFloat(t.rps, 64); err == nil {
			fastest = max(fastest, r)
		}
	}
	n2 := n
	if fastest > 0 {
		n2 = min(50*n, max(n, int(fastest*need.Seconds())+1))
	}
	est := time.Duration(float64(base.took) * float64(n2) / float64(n))

	cmdRow := row{name: "update command (redis-benchmark)"}
	overlapped := 0
	var fatal error
	thr := b.runRB(path, n2, 3*est+time.Duration(k)*updateTimeout+time.Minute, func(done <-chan struct{}, out *rbOutput) {
		var last time.Time // end of the previous update
		reached, reachedAt := -1, time.Time{}
		for i := range k {
			test := i * len(rbWant) / k
			for {
				if f := out.testsFinished(); f > reached {
					reached, reachedAt = f, time.Now()
				}
				if reached >= test && time.Since(reachedAt) >= updateSpacing && time.Since(last) >= updateSpacing {
					break
				}
				select {
				case <-done:
					return
				case <-b.ctx.Done():
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			start, end, _, err := u.update(fmt.Sprintf("update %d/%d (redis-benchmark, test %d)", i+1, k, reached+1))
			if err != nil {
				fatal = err
				return
			}
			last = end
			cmdRow.d = append(cmdRow.d, end.Sub(start))
			select {
			case <-done:
			default:
				overlapped++
			}
		}
	})
	b.rows = append(b.rows, cmdRow)
	if fatal != nil {
		return fatal
	}
	if b.ctx.Err() != nil {
		return b.ctx.Err()
	}
	b.checkRB(fmt.Sprintf("through %d updates", k), thr)
	s := fmt.Sprintf("redisbench: %d of %d updates done while redis-benchmark ran (about %d per test, alternating %s, %d keys loaded first), %d failed",
		overlapped, k, perTest, u.describe(), b.opts.keys, u.failed)
	if overlapped < k {
		b.problem(s + "; it ended too soon: raise -rb-n")
	} else {
		b.notes = append(b.notes, s)
	}
	if after, err := b.status("kv"); err != nil {
		return err
	} else if after.Restarts != before.Restarts {
		b.problem(fmt.Sprintf("redisbench: kv restarted %d time(s) meanwhile, last_exit %q", after.Restarts-before.Restarts, after.LastExit))
	}
	if len(base.warnings)+len(thr.warnings) > 0 {
		b.notes = append(b.notes, "redisbench: redis-benchmark warned (kv's CONFIG GET is an empty array; not an error): "+rbConfigWarning)
	}
	b.sections = append(b.sections, rbTable(base, thr, k))
	return nil
}

// rbTable is requests per second (and p50) of both runs side by side.
func rbTable(base, thr rbResult, k int) table {
	cell := func(r rbResult, name string) string {
		for _, t := range r.tests {
			if t.name == name {
				if t.p50 == "" {
					return t.rps + "/s"
				}
				return fmt.Sprintf("%s/s, p50 %sms", t.rps, t.p50)
			}
		}
		return "-"
	}
	t := table{title: fmt.Sprintf("redis-benchmark -c %d -q through live updates (one run each)", rbClients),
		head: []string{"test", fmt.Sprintf("no update, -n %d", base.n), fmt.Sprintf("%d updates, -n %d", k, thr.n)}}
	for _, name := range rbWant {
		t.add(name, cell(base, name), cell(thr, name))
	}
	return t
}
