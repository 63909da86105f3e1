package tests

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

func httpcountConfig(addr, period string) string {
	return fmt.Sprintf(`
[service.httpcount]
binary = "$BIN/httpcount"
args = ["--listen", %q]
period = %q
init_timeout = "2s"
`, addr, period)
}

// httpCount GETs one count over client; conns counts the new
// connections it opened.
func httpCount(ctx context.Context, client *http.Client, url string, conns *int) (int, error) {
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if !i.Reused {
			*conns++
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "GET", url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d: %q", resp.StatusCode, b)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// updateHTTPCount runs n live updates of httpcount, each to a new pid.
func updateHTTPCount(t *testing.T, r *rsProc, n int) {
	t.Helper()
	pid := r.status("httpcount").Pid
	for u := 0; u < n; u++ {
		if _, errOut, code := r.service("update", "httpcount"); code != 0 {
			t.Fatalf("update %d: exit %d: %s", u, code, errOut)
		}
		st := r.status("httpcount")
		if st.Pid == pid || st.State != control.StateRunning || st.Restarts != 0 {
			t.Fatalf("after update %d: %+v (old pid %d)", u, st, pid)
		}
		pid = st.Pid
	}
}

// TestHTTPUpdateKeepAlive: 10 live updates of a sefhttp service under
// Go keep-alive clients: no request fails, the counts the clients got
// are exactly 1..N (none lost, none twice), and each client kept its one
// connection throughout: the idle ones went to the new instance unclosed.
// Pings are off: the service's readiness (every connection idle and
// parked) reaches sef by Reached, not by a wake-up of its receive loop.
func TestHTTPUpdateKeepAlive(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, httpcountConfig(addr, "0s"))
	r.waitState("httpcount", control.StateRunning, 0)
	url := "http://" + addr + "/"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const clients = 4
	stop := make(chan struct{})
	var wg sync.WaitGroup
	got := make([][]int, clients)
	conns := make([]int, clients)
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer client.CloseIdleConnections()
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, err := httpCount(ctx, client, url, &conns[i])
				if err != nil {
					errs <- fmt.Errorf("client %d request %d: %w", i, len(got[i])+1, err)
					return
				}
				got[i] = append(got[i], n)
			}
		}()
	}
	updateHTTPCount(t, r, 10)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := map[int]bool{}
	total := 0
	for i := range clients {
		if len(got[i]) == 0 {
			t.Errorf("client %d made no request", i)
		}
		if conns[i] != 1 {
			t.Errorf("client %d opened %d connections, want 1 kept across the updates", i, conns[i])
		}
		for _, n := range got[i] {
			if seen[n] {
				t.Errorf("count %d answered twice", n)
			}
			seen[n] = true
		}
		total += len(got[i])
	}
	for n := 1; n <= total; n++ {
		if !seen[n] {
			t.Errorf("count %d never reached a client (lost)", n)
		}
	}
	var c int
	if n, err := httpCount(ctx, http.DefaultClient, url, &c); err != nil || n != total+1 {
		t.Errorf("after %d responses the next count is %d (%v), want %d", total, n, err, total+1)
	}
	t.Logf("%d requests by %d keep-alive clients across 10 updates", total, clients)
}

var abField = regexp.MustCompile(`(?m)^(Complete requests|Failed requests|Non-2xx responses|Keep-Alive requests):\s+(\d+)`)

// TestHTTPUpdateAB: 10 live updates under ab -k (Apache's benchmark
// tool, nobody's here): every ab run reports 0 failed requests and no
// non-2xx response, and the counter counted exactly the requests ab
// completed.
func TestHTTPUpdateAB(t *testing.T) {
	ab, err := exec.LookPath("ab")
	if err != nil {
		t.Skip("ab not installed (Debian's apache2-utils): skipping the ab -k update test")
	}
	addr := freeAddr(t)
	r := startRS(t, httpcountConfig(addr, "200ms"))
	r.waitState("httpcount", control.StateRunning, 0)
	url := "http://" + addr + "/"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	stop := make(chan struct{})
	done := make(chan struct{})
	first := make(chan struct{}) // ab works: from now on it runs back to back, across the updates
	var completed, runs int
	var abErr error
	go func() {
		defer close(done)
		for {
			if runs == 1 {
				close(first)
			}
			select {
			case <-stop:
				return
			default:
			}
			// -l: the counter's length varies, which is not a failure.
			out, err := exec.CommandContext(ctx, ab, "-k", "-l", "-q", "-c", "4", "-n", "1000", url).CombinedOutput()
			if err != nil {
				abErr = fmt.Errorf("ab run %d: %v\n%s", runs+1, err, out)
				return
			}
			fields := map[string]int{}
			for _, m := range abField.FindAllStringSubmatch(string(out), -1) {
				fields[m[1]], _ = strconv.Atoi(m[2])
			}
			if fields["Complete requests"] != 1000 || fields["Failed requests"] != 0 || fields["Non-2xx responses"] != 0 {
				abErr = fmt.Errorf("ab run %d: %v\n%s", runs+1, fields, out)
				return
			}
			if fields["Keep-Alive requests"] == 0 {
				abErr = fmt.Errorf("ab run %d used no keep-alive:\n%s", runs+1, out)
				return
			}
			completed += fields["Complete requests"]
			runs++
		}
	}()
	select {
	case <-first:
	case <-done:
		t.Fatal(abErr)
	}
	updateHTTPCount(t, r, 10)
	close(stop)
	<-done
	if abErr != nil {
		t.Fatal(abErr)
	}
	var c int
	if n, err := httpCount(ctx, http.DefaultClient, url, &c); err != nil || n != completed+1 {
		t.Errorf("after ab completed %d requests the next count is %d (%v), want %d", completed, n, err, completed+1)
	}
	t.Logf("%d ab -k runs, %d requests, across 10 updates", runs, completed)
}
