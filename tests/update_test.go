package tests

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reincarnation/rs/internal/resp"
	"github.com/reincarnation/rs/rs/control"
)

// kvInfo returns one INFO field.
func kvInfo(t *testing.T, c *resp.Client, field string) string {
	t.Helper()
	v, err := c.Do("INFO")
	if err != nil {
		t.Fatalf("INFO: %v", err)
	}
	for _, line := range strings.Split(v.Str, "\n") {
		if val, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return val
		}
	}
	t.Fatalf("INFO has no %s: %q", field, v.Str)
	return ""
}

func mustDo(t *testing.T, c *resp.Client, want string, args ...string) {
	t.Helper()
	v, err := c.Do(args...)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	if got := v.String(); got != want && v.Str != want {
		t.Fatalf("%v: %q, want %q", args, got, want)
	}
}

// loadKeys puts n keys into kv over c, pipelined.
func loadKeys(t *testing.T, c *resp.Client, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		c.Send("SET", fmt.Sprintf("key:%d", i), fmt.Sprintf("value:%d", i))
	}
	c.Flush()
	for i := 0; i < n; i++ {
		if v, err := c.Read(); err != nil || v.Str != "OK" {
			t.Fatalf("SET key:%d: %v %v", i, v, err)
		}
	}
}

func checkKeys(t *testing.T, c *resp.Client, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		c.Send("GET", fmt.Sprintf("key:%d", i))
	}
	c.Flush()
	for i := 0; i < n; i++ {
		v, err := c.Read()
		if err != nil || v.Str != fmt.Sprintf("value:%d", i) {
			t.Fatalf("GET key:%d: %v %v", i, v, err)
		}
	}
}

func updateConfig(addr string) string {
	return fmt.Sprintf(`
[service.kv]
binary = "$BIN/kv-a"
args = ["--listen", %q]
period = "200ms"
init_timeout = "1s"
`, addr)
}

// TestUpdateUnderLoad: 20 updates alternating two builds while clients on
// persistent connections write and read in a loop. No client may see an
// error or a wrong reply, each INCR counts exactly once, INFO's version
// alternates and every key survives.
func TestUpdateUnderLoad(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, updateConfig(addr))
	r.waitState("kv", control.StateRunning, 0)
	admin := dialKV(t, addr)
	const keys = 2000
	loadKeys(t, admin, keys)

	const clients = 4
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	counts := make([]int64, clients)
	for i := 0; i < clients; i++ {
		c := dialKV(t, addr)
		c.SetDeadline(time.Now().Add(time.Minute))
		wg.Add(1)
		go func(i int, c *resp.Client) {
			defer wg.Done()
			counter := fmt.Sprintf("counter:%d", i)
			for n := int64(1); ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				val := fmt.Sprintf("%d-%d", i, n)
				mine := fmt.Sprintf("client:%d", i)
				// A pipeline of three, so that updates land between
				// requests of one round trip too.
				c.Send("SET", mine, val)
				c.Send("GET", mine)
				c.Send("INCR", counter)
				if err := c.Flush(); err != nil {
					errs <- fmt.Errorf("client %d: flush: %w", i, err)
					return
				}
				want := []string{"OK", val, strconv.FormatInt(n, 10)}
				for j, w := range want {
					v, err := c.Read()
					got := v.Str
					if v.Kind == resp.KindInt {
						got = strconv.FormatInt(v.Int, 10)
					}
					if err != nil || got != w {
						errs <- fmt.Errorf("client %d request %d.%d: got %v (%v), want %q", i, n, j, v, err, w)
						return
					}
				}
				counts[i] = n
			}
		}(i, c)
	}
	pid := r.status("kv").Pid
	for u := 0; u < 20; u++ {
		next := []string{"kv-b", "kv-a"}[u%2]
		out, errOut, code := r.service("update", "--binary", bin(next), "kv")
		if code != 0 {
			t.Fatalf("update %d to %s: exit %d: %s", u, next, code, errOut)
		}
		if !strings.Contains(out, "updated") || !strings.Contains(errOut, "committed") {
			t.Errorf("update %d: stdout %q stderr %q", u, out, errOut)
		}
		c := dialKV(t, addr)
		if v := kvInfo(t, c, "version"); v != next[len("kv-"):] {
			t.Fatalf("after update %d: version %q, want %q", u, v, next[3:])
		}
		st := r.status("kv")
		if st.Pid == pid || st.State != control.StateRunning || st.Restarts != 0 {
			t.Fatalf("after update %d: %+v (old pid %d)", u, st, pid)
		}
		pid = st.Pid
		c.Close()
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkKeys(t, dialKV(t, addr), keys)
	check := dialKV(t, addr)
	for i := 0; i < clients; i++ {
		if counts[i] == 0 {
			t.Errorf("client %d made no request", i)
		}
		v, err := check.Do("GET", fmt.Sprintf("counter:%d", i))
		if err != nil || v.Str != strconv.FormatInt(counts[i], 10) {
			t.Errorf("counter:%d = %v (%v), client counted %d", i, v, err, counts[i])
		}
	}
}

// TestUpdateRollback: whatever goes wrong with the new binary, the old
// instance resumes with the same pid, state and connections.
func TestUpdateRollback(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, updateConfig(addr))
	st := r.waitState("kv", control.StateRunning, 0)
	persistent := dialKV(t, addr)
	loadKeys(t, persistent, 100)
	cases := []struct {
		binary, want string
	}{
		{"/nonexistent/kv", "no such file or directory (nothing changed)"},
		{bin("kv-luexit"), "rolled back: new instance terminated: exit 1"},
		{bin("kv-luhang"), "rolled back: new instance init-timeout"},
		{bin("kv-lurestore"), "rolled back: new instance init failed: restore: refusing the state"},
		{bin("roles"), "rolled back: new instance"}, // not even a sef service
	}
	for i, c := range cases {
		t.Run(c.binary, func(t *testing.T) {
			mustDo(t, persistent, "OK", "SET", "round", strconv.Itoa(i))
			_, errOut, code := r.service("update", "--binary", c.binary, "kv")
			if code == 0 || !strings.Contains(errOut, c.want) {
				t.Fatalf("update: exit %d, stderr %q, want %q", code, errOut, c.want)
			}
			now := r.status("kv")
			if now.Pid != st.Pid || now.State != control.StateRunning {
				t.Fatalf("after a failed update: %+v, want pid %d running", now, st.Pid)
			}
			// The same connection, the same process, the same state.
			mustDo(t, persistent, strconv.Itoa(i), "GET", "round")
			if pid := kvInfo(t, persistent, "process_id"); pid != strconv.Itoa(st.Pid) {
				t.Fatalf("served by pid %s, want %d", pid, st.Pid)
			}
			checkKeys(t, persistent, 100)
		})
	}
}

// TestUpdatePrepareTimeout: a long request keeps kv from being
// request-free; the update gives up after maxtime and the request still
// completes.
func TestUpdatePrepareTimeout(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, updateConfig(addr))
	st := r.waitState("kv", control.StateRunning, 0)
	sleeper := dialKV(t, addr)
	slept := make(chan error, 1)
	go func() {
		v, err := sleeper.Do("DEBUG", "SLEEP", "4")
		if err == nil && v.Str != "OK" {
			err = fmt.Errorf("DEBUG SLEEP: %v", v)
		}
		slept <- err
	}()
	admin := dialKV(t, addr)
	r.waitFor("the sleep to be in flight", func() bool { return kvInfo(t, admin, "blocked_clients") == "1" })

	begin := time.Now()
	_, errOut, code := r.service("update", "--state", "2", "--maxtime", "500ms", "kv")
	took := time.Since(begin)
	if code == 0 || !strings.Contains(errOut, "prepare timed out after 500ms") {
		t.Fatalf("update: exit %d, %q", code, errOut)
	}
	select {
	case err := <-slept:
		t.Fatalf("the update waited for the long request (%v) instead of timing out; took %v", err, took)
	default:
	}
	if err := <-slept; err != nil {
		t.Fatalf("the long request failed after the cancelled update: %v", err)
	}
	if now := r.status("kv"); now.Pid != st.Pid || now.State != control.StateRunning {
		t.Fatalf("after the timeout: %+v", now)
	}
	mustDo(t, sleeper, "PONG", "PING")
}

func TestUpdateUnsupportedStateAndConcurrent(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, updateConfig(addr))
	st := r.waitState("kv", control.StateRunning, 0)
	_, errOut, code := r.service("update", "--state", "7", "kv")
	if code == 0 || !strings.Contains(errOut, "state 7 not supported") {
		t.Fatalf("state 7: exit %d, %q", code, errOut)
	}

	// Hold an update in prepare with a long request, then try others.
	sleeper := dialKV(t, addr)
	slept := make(chan error, 1)
	go func() { _, err := sleeper.Do("DEBUG", "SLEEP", "1.5"); slept <- err }()
	admin := dialKV(t, addr)
	r.waitFor("the sleep to be in flight", func() bool { return kvInfo(t, admin, "blocked_clients") == "1" })
	first := make(chan string, 1)
	go func() {
		_, errOut, code := runService(t, r.sock, nil, "update", "--quiet", "--state", "2", "--maxtime", "20s", "kv")
		first <- fmt.Sprintf("%d %s", code, errOut)
	}()
	r.waitFor("the update to start", func() bool { return r.status("kv").State == control.StateUpdating })
	for _, args := range [][]string{{"update", "kv"}, {"restart", "kv"}, {"down", "kv"}} {
		_, errOut, code := r.service(args...)
		if code == 0 || !strings.Contains(errOut, "busy") {
			t.Errorf("%v during an update: exit %d, %q", args, code, errOut)
		}
	}
	// A client tells busy from the rest by its code, not its text.
	for _, op := range []string{control.OpUpdate, control.OpRestart, control.OpDown} {
		_, err := r.client().Do(control.Request{Op: op, Label: "kv"}, nil)
		if !errors.Is(err, control.ErrBusy) || errors.Is(err, control.ErrUnknown) {
			t.Errorf("%s during an update: %v, want control.ErrBusy", op, err)
		}
	}
	if _, err := r.client().Do(control.Request{Op: control.OpDown, Label: "nosuch"}, nil); !errors.Is(err, control.ErrUnknown) {
		t.Errorf("down nosuch: %v, want control.ErrUnknown", err)
	}
	if got := <-first; got != "0 " {
		t.Fatalf("the held update: %q, want success with no output (--quiet)", got)
	}
	if err := <-slept; err != nil {
		t.Fatalf("long request: %v", err)
	}
	if now := r.status("kv"); now.Pid == st.Pid || now.State != control.StateRunning {
		t.Fatalf("after the update: %+v", now)
	}
}

// TestUpdateMustNotLoseTheState: a new binary that never reads the old
// one's state (idle, for kv) is rolled back, kv keeps its data and its
// port; only --discard-state lets such an update commit. A state that
// does not fit the wire's 32 bits is refused, not cut to state 1.
func TestUpdateMustNotLoseTheState(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, updateConfig(addr))
	st := r.waitState("kv", control.StateRunning, 0)
	persistent := dialKV(t, addr)
	loadKeys(t, persistent, 100)

	_, errOut, code := r.service("update", "--state", "4294967297", "kv")
	if code == 0 || !strings.Contains(errOut, "out of range") {
		t.Fatalf("update --state 4294967297: exit %d, stderr %q", code, errOut)
	}

	_, errOut, code = r.service("update", "--binary", bin("idle"), "kv")
	want := "rolled back: new instance did not take the state (use --discard-state to drop it)"
	if code == 0 || !strings.Contains(errOut, want) {
		t.Fatalf("update to idle: exit %d, stderr %q, want %q", code, errOut, want)
	}
	if now := r.status("kv"); now.Pid != st.Pid || now.State != control.StateRunning || now.Binary != bin("kv-a") {
		t.Fatalf("after the rolled-back update: %+v, want pid %d running %s", now, st.Pid, bin("kv-a"))
	}
	checkKeys(t, persistent, 100)
	fresh := dialKV(t, addr) // the port answers: the listener is kv's again
	checkKeys(t, fresh, 100)
	if pid := kvInfo(t, fresh, "process_id"); pid != strconv.Itoa(st.Pid) {
		t.Fatalf("served by pid %s, want %d", pid, st.Pid)
	}
	// A later restart still runs kv, not idle.
	r.mustService("restart", "kv")
	st = r.waitState("kv", control.StateRunning, st.Pid)
	if st.Binary != bin("kv-a") {
		t.Fatalf("after a restart: binary %s, want %s", st.Binary, bin("kv-a"))
	}

	if _, errOut, code = r.service("update", "--discard-state", "--binary", bin("idle"), "kv"); code != 0 {
		t.Fatalf("update --discard-state to idle: exit %d, stderr %q", code, errOut)
	}
	if now := r.status("kv"); now.Pid == st.Pid || now.State != control.StateRunning || now.Binary != bin("idle") {
		t.Fatalf("after update --discard-state: %+v, want idle running under a new pid", now)
	}
}

// TestUpdateWithPingsOff: with pings off (period 0s) nothing but the
// update itself wakes kv's receive loop, and it still reaches its state
// at once: idle connections parked, five updates in a row, the
// connections and the keys kept.
func TestUpdateWithPingsOff(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, strings.Replace(updateConfig(addr), `period = "200ms"`, `period = "0s"`, 1))
	r.waitState("kv", control.StateRunning, 0)
	admin := dialKV(t, addr)
	loadKeys(t, admin, 100)
	idle := dialKV(t, addr) // open, silent: parked at every update
	for u := 0; u < 5; u++ {
		next := []string{"kv-b", "kv-a"}[u%2]
		if _, errOut, code := r.service("update", "--binary", bin(next), "kv"); code != 0 {
			t.Fatalf("update %d with pings off: exit %d: %s", u, code, errOut)
		}
		if v := kvInfo(t, idle, "version"); v != next[len("kv-"):] {
			t.Fatalf("after update %d: version %q on the idle connection", u, v)
		}
	}
	checkKeys(t, admin, 100)
}
