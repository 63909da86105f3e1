package main

// The http scenario's load: httpClients Go clients of our own, which keep
// every response's counter and its wait, and one of two HTTP load tools
// nobody here wrote, run without a script: wrk (its requests/s) or ab -k
// (its counts are exact, see below).
//
// The Go clients POST (an empty body): Go's transport silently sends a
// GET again when its reused connection breaks before the response, which
// would hide a response the server counted and never delivered; a POST it
// does not resend, so every failure is seen and counted.
//
// Counting: httpcount answers each request with the next number, so the
// responses of a phase are the numbers between a probe before it and a
// probe after. ab -k -n N sends exactly N requests and reads their N
// responses, so with ab the probes must differ by exactly the Go
// clients' responses plus ab's, plus one (the probe). wrk, stopped by
// SIGINT, drops the requests it has in flight: the server counted them and
// wrk did not, so with wrk the difference may exceed that sum by at most
// its connections (a response lost in wrk's stream would also show as a
// socket error).

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	httpClients = 4 // Go clients
	httpConns   = 8 // wrk's and ab's connections (-c)
	// abRunTime is how long each ab run is sized to last: ab runs back
	// to back through the updates, each with its keep-alive connections.
	abRunTime = time.Second
	// toolStopWait bounds wrk's exit after SIGINT and the wait for the
	// ab run under way.
	toolStopWait = 10 * time.Second
)

// httpClient is one Go client: a keep-alive connection of its own
// (MaxIdleConnsPerHost 1), in a tight request-response loop.
type httpClient struct {
	*loadClient          // spans, errs (failed requests), msgs
	counts      []uint64 // every 200 response's counter
	non2xx      int
	conns       int // connections it opened
}

type httpLoad struct {
	load    // spans of the Go clients, for gap and outside
	clients []*httpClient
	started time.Time
	stopped time.Time
}

// startHTTPLoad starts the Go clients on url; stopAndWait ends them.
func startHTTPLoad(url string, base time.Time) *httpLoad {
	h := &httpLoad{load: load{base: base, stop: make(chan struct{})}, started: time.Now()}
	for i := range httpClients {
		c := &httpClient{loadClient: &loadClient{id: i}}
		h.clients = append(h.clients, c)
		h.load.clients = append(h.load.clients, c.loadClient)
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			c.run(url, base, h.stop)
		}()
	}
	return h
}

func (h *httpLoad) stopAndWait() bool {
	ok := h.load.stopAndWait()
	h.stopped = time.Now()
	return ok
}

// responses is how many 200 responses the Go clients got.
func (h *httpLoad) responses() int {
	n := 0
	for _, c := range h.clients {
		n += len(c.counts)
	}
	return n
}

func (c *httpClient) run(url string, base time.Time, stop <-chan struct{}) {
	tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: loadRequestTimeout}
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if !i.Reused {
			c.conns++
		}
	}}
	ctx := httptrace.WithClientTrace(context.Background(), trace)
	for {
		select {
		case <-stop:
			return
		default:
		}
		s := span{start: time.Since(base)}
		n, status, err := httpPost(ctx, client, url)
		s.end = time.Since(base)
		s.ok = err == nil && status == http.StatusOK
		c.spans = append(c.spans, s)
		switch {
		case err != nil:
			c.errs++
			c.note(base, "POST: %v", err)
			select { // a server restarting: try again soon
			case <-stop:
				return
			case <-time.After(redialPause):
			}
		case status != http.StatusOK:
			c.non2xx++
			c.note(base, "POST: status %d", status)
		default:
			c.counts = append(c.counts, n)
		}
	}
}

// httpPost sends one request and returns the counter in its response.
func httpPost(ctx context.Context, client *http.Client, url string) (uint64, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64))
	if err != nil {
		return 0, resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, resp.StatusCode, nil
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, resp.StatusCode, fmt.Errorf("body %q: %w", b, err)
	}
	return n, resp.StatusCode, nil
}

// probeCount asks for one count on a connection of its own.
func probeCount(url string) (uint64, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, status, err := httpPost(ctx, &http.Client{Transport: tr}, url)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("status %d", status)
	}
	return n, err
}

// toolRun is what one load tool reported over a phase (ab: summed over
// its runs).
type toolRun struct {
	tool      string // "wrk" or "ab"
	requests  int    // responses it counted
	failed    int    // wrk: socket errors; ab: failed requests and aborted runs
	non2xx    int
	rps       float64
	longest   string // wrk: max latency; ab: its longest request
	runs      int    // ab: runs, aborted ones included
	aborted   int    // ab: runs that exited non-zero
	keepAlive int    // ab: Keep-Alive requests
	took      time.Duration
	problems  []string
}

func (r *toolRun) problem(s string) {
	if len(r.problems) < maxLoadMsgs {
		r.problems = append(r.problems, s)
	}
}

var (
	wrkRequests = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkRPS      = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkNon2xx   = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses: (\d+)`)
	wrkSockErr  = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkLatency  = regexp.MustCompile(`(?m)^\s*Latency\s+\S+\s+\S+\s+(\S+)`)
	abFields    = regexp.MustCompile(`(?m)^(Complete requests|Failed requests|Non-2xx responses|Keep-Alive requests):\s+(\d+)`)
	abTaken     = regexp.MustCompile(`(?m)^Time taken for tests:\s+([0-9.]+) seconds`)
	abLongest   = regexp.MustCompile(`(?m)^\s*100%\s+(\d+) \(longest request\)`)
)

// runningTool is a load tool running through a phase.
type runningTool struct {
	stop func() toolRun
}

// startWrk starts wrk on url (-d long enough, ended by SIGINT, which
// makes it print its summary); stop sends the SIGINT and parses it.
func (b *bench) startWrk(path, url string) (*runningTool, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Minute)
	cmd := exec.CommandContext(ctx, path, "-t", "2", "-c", strconv.Itoa(httpConns), "-d", "10m", "--timeout", "10s", "--latency", url)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return &runningTool{stop: func() toolRun {
		defer cancel()
		r := toolRun{tool: "wrk"}
		cmd.Process.Signal(os.Interrupt)
		var err error
		select {
		case err = <-done:
		case <-time.After(toolStopWait):
			cancel()
			err = fmt.Errorf("no exit within %v of SIGINT: killed: %v", toolStopWait, <-done)
		}
		r.took = time.Since(start)
		s := out.String()
		if err != nil {
			r.problem(fmt.Sprintf("wrk: %v: %s", err, firstLine(s)))
		}
		m := wrkRequests.FindStringSubmatch(s)
		if m == nil {
			r.problem("wrk printed no summary: " + firstLine(s))
			r.failed = -1
			return r
		}
		r.requests, _ = strconv.Atoi(m[1])
		if m := wrkRPS.FindStringSubmatch(s); m != nil {
			r.rps, _ = strconv.ParseFloat(m[1], 64)
		}
		if m := wrkNon2xx.FindStringSubmatch(s); m != nil {
			r.non2xx, _ = strconv.Atoi(m[1])
		}
		if m := wrkSockErr.FindStringSubmatch(s); m != nil {
			for _, f := range m[1:] {
				n, _ := strconv.Atoi(f)
				r.failed += n
			}
			r.problem("wrk: " + strings.TrimSpace(m[0]))
		}
		if m := wrkLatency.FindStringSubmatch(s); m != nil {
			r.longest = m[1]
		}
		return r
	}}, nil
}

// startAB runs ab -k on url back to back until stop: a first run of 2000
// requests sizes the others to last about abRunTime each. first is closed
// when the first run has ended.
func (b *bench) startAB(path, url string) (*runningTool, <-chan struct{}) {
	stopc := make(chan struct{})
	first := make(chan struct{})
	var mu sync.Mutex
	r := toolRun{tool: "ab"}
	var longest int
	var busy time.Duration // summed "Time taken for tests"
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		n := 2000
		for {
			// -l: the counter's length varies, which is not a failure;
			// -r: a receive error is counted, not the end of the run.
			ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
			out, err := exec.CommandContext(ctx, path, "-k", "-r", "-l", "-q", "-c", strconv.Itoa(httpConns), "-n", strconv.Itoa(n), url).CombinedOutput()
			cancel()
			mu.Lock()
			r.runs++
			if err != nil {
				r.aborted++
				r.failed++
				r.problem(fmt.Sprintf("ab run %d: %v: %s", r.runs, err, lastLine(string(out))))
			}
			f := map[string]int{}
			for _, m := range abFields.FindAllStringSubmatch(string(out), -1) {
				f[m[1]], _ = strconv.Atoi(m[2])
			}
			if err == nil {
				r.requests += f["Complete requests"]
				r.failed += f["Failed requests"]
				r.non2xx += f["Non-2xx responses"]
				r.keepAlive += f["Keep-Alive requests"]
				if f["Complete requests"] != n {
					r.problem(fmt.Sprintf("ab run %d: %d of -n %d complete", r.runs, f["Complete requests"], n))
				}
			}
			var took float64
			if m := abTaken.FindStringSubmatch(string(out)); m != nil {
				took, _ = strconv.ParseFloat(m[1], 64)
				busy += time.Duration(took * float64(time.Second))
			}
			if m := abLongest.FindStringSubmatch(string(out)); m != nil {
				l, _ := strconv.Atoi(m[1])
				longest = max(longest, l)
			}
			runs := r.runs
			mu.Unlock()
			if runs == 1 {
				if err == nil && took > 0 {
					n = min(200000, max(2000, int(float64(n)*abRunTime.Seconds()/took)))
				}
				close(first)
			}
			select {
			case <-stopc:
				return
			case <-b.ctx.Done():
				return
			default:
			}
		}
	}()
	return &runningTool{stop: func() toolRun {
		close(stopc)
		select {
		case <-done:
		case <-time.After(time.Minute + toolStopWait): // an ab run is bounded by a minute
		}
		mu.Lock()
		defer mu.Unlock()
		res := r
		res.took = time.Since(start)
		if busy > 0 {
			res.rps = float64(res.requests) / busy.Seconds()
		}
		if longest > 0 {
			res.longest = fmt.Sprintf("%dms", longest)
		}
		return res
	}}, first
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
