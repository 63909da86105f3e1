package tests

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reincarnation/rs/internal/resp"
	"github.com/reincarnation/rs/rs/control"
)

// Pre-copy hand-off (issue 15): kv streams a base of its map to the new
// instance while it serves, and hands over only the delta in the pause.

const precopyKeys = 50000

// precopyConfig is updateConfig with room for -race on a busy machine:
// these tests are about the state, not about pings.
func precopyConfig(addr string) string {
	c := strings.Replace(updateConfig(addr), `period = "200ms"`, `period = "1s"`, 1)
	return strings.Replace(c, `init_timeout = "1s"`, `init_timeout = "10s"`, 1)
}

// precopyWriter is a client that writes throughout: new keys of its
// own, and overwrites and deletes of the loaded keys it owns (those
// with j % clients == i), among them keys the base has already sent.
// want is what kv must hold for each key it touched ("" = deleted).
type precopyWriter struct {
	i, clients int
	c          *resp.Client
	want       map[string]string
	err        error
}

func (w *precopyWriter) run(stop <-chan struct{}) {
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		j := (n*7919)%precopyKeys/w.clients*w.clients + w.i // a loaded key of mine
		var ops [][]string
		switch n % 3 {
		case 0:
			ops = [][]string{{"SET", fmt.Sprintf("key:%d", j), fmt.Sprintf("new:%d:%d", w.i, n)}}
		case 1:
			ops = [][]string{{"DEL", fmt.Sprintf("key:%d", j)}}
		case 2:
			ops = [][]string{{"SET", fmt.Sprintf("w:%d:%d", w.i, n), fmt.Sprintf("v:%d", n)}}
		}
		for _, op := range ops {
			w.c.Send(op...)
		}
		if err := w.c.Flush(); err != nil {
			w.err = err
			return
		}
		for _, op := range ops {
			v, err := w.c.Read()
			if err != nil || v.Kind == resp.KindError {
				w.err = fmt.Errorf("client %d: %v: %v %v", w.i, op, v, err)
				return
			}
			if op[0] == "SET" {
				w.want[op[1]] = op[2]
			} else {
				w.want[op[1]] = ""
			}
		}
	}
}

// checkPrecopy checks every loaded key and every write of the clients.
func checkPrecopy(t *testing.T, c *resp.Client, writers []*precopyWriter) {
	t.Helper()
	want := map[string]string{}
	for j := 0; j < precopyKeys; j++ {
		want[fmt.Sprintf("key:%d", j)] = fmt.Sprintf("value:%d", j)
	}
	for _, w := range writers {
		for k, v := range w.want {
			want[k] = v
		}
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
		c.Send("GET", k)
	}
	c.Flush()
	bad := 0
	for _, k := range keys {
		v, err := c.Read()
		if err != nil {
			t.Fatalf("GET %s: %v", k, err)
		}
		got := v.Str
		if v.Null {
			got = ""
		}
		if got != want[k] && bad < 5 {
			bad++
			t.Errorf("%s = %q, want %q", k, got, want[k])
		}
	}
	if bad > 0 {
		t.FailNow()
	}
}

// TestPreCopyUpdateKeepsEveryWrite: updates at 50k keys under clients
// that write throughout (during the base stream too, over keys already
// sent): afterwards every key and every write is there.
func TestPreCopyUpdateKeepsEveryWrite(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, precopyConfig(addr))
	r.waitState("kv", control.StateRunning, 0)
	admin := dialKV(t, addr)
	admin.SetDeadline(time.Now().Add(time.Minute))
	loadKeys(t, admin, precopyKeys)

	const clients = 3
	stop := make(chan struct{})
	var wg sync.WaitGroup
	writers := make([]*precopyWriter, clients)
	for i := range writers {
		c := dialKV(t, addr)
		c.SetDeadline(time.Now().Add(time.Minute))
		writers[i] = &precopyWriter{i: i, clients: clients, c: c, want: map[string]string{}}
		wg.Add(1)
		go func(w *precopyWriter) {
			defer wg.Done()
			w.run(stop)
		}(writers[i])
	}
	for u, next := range []string{"kv-b", "kv-a", "kv-b"} {
		_, errOut, code := r.service("update", "--binary", bin(next), "kv")
		if code != 0 {
			close(stop)
			t.Fatalf("update %d to %s: exit %d: %s", u, next, code, errOut)
		}
		if !strings.Contains(errOut, "pre-copy base streamed") || !strings.Contains(errOut, "the delta since the") {
			t.Errorf("update %d: progress %q says no pre-copy", u, errOut)
		}
	}
	close(stop)
	wg.Wait()
	for _, w := range writers {
		if w.err != nil {
			t.Fatal(w.err)
		}
		if len(w.want) == 0 {
			t.Fatalf("client %d wrote nothing", w.i)
		}
	}
	checkPrecopy(t, dialKV(t, addr), writers)
}

// TestPreCopyRollbackDuringTheBase: the new binary refuses the base as
// it streams; the old instance carries on with every key and write.
func TestPreCopyRollbackDuringTheBase(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, precopyConfig(addr))
	st := r.waitState("kv", control.StateRunning, 0)
	admin := dialKV(t, addr)
	admin.SetDeadline(time.Now().Add(time.Minute))
	loadKeys(t, admin, precopyKeys)
	w := &precopyWriter{i: 0, clients: 1, c: dialKV(t, addr), want: map[string]string{}}
	w.c.SetDeadline(time.Now().Add(time.Minute))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(stop)
	}()
	_, errOut, code := r.service("update", "--binary", bin("kv-lubase"), "kv")
	close(stop)
	<-done
	if code == 0 || !strings.Contains(errOut, "rolled back") || !strings.Contains(errOut, "base") {
		t.Fatalf("update: exit %d, stderr %q, want a rollback over the base", code, errOut)
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
	if now := r.status("kv"); now.Pid != st.Pid || now.State != control.StateRunning {
		t.Fatalf("after the rollback: %+v, want pid %d running", now, st.Pid)
	}
	checkPrecopy(t, admin, []*precopyWriter{w})
	// And a later update still streams a base: nothing was left behind.
	_, errOut, code = r.service("update", "--binary", bin("kv-b"), "kv")
	if code != 0 || !strings.Contains(errOut, "pre-copy base streamed") {
		t.Fatalf("update after the rollback: exit %d: %s", code, errOut)
	}
	checkPrecopy(t, dialKV(t, addr), []*precopyWriter{w})
}

// TestPreCopyWithAnOldKV: a kv without pre-copy (built as before it)
// updates to one with it and back, with the whole state in the pause.
func TestPreCopyWithAnOldKV(t *testing.T) {
	addr := freeAddr(t)
	r := startRS(t, strings.Replace(precopyConfig(addr), "$BIN/kv-a", "$BIN/kv-nopre", 1))
	r.waitState("kv", control.StateRunning, 0)
	admin := dialKV(t, addr)
	admin.SetDeadline(time.Now().Add(time.Minute))
	loadKeys(t, admin, 1000)
	for _, next := range []string{"kv-a", "kv-nopre", "kv-nopre"} {
		_, errOut, code := r.service("update", "--binary", bin(next), "kv")
		if code != 0 {
			t.Fatalf("update to %s: exit %d: %s", next, code, errOut)
		}
		if strings.Contains(errOut, "pre-copy base") {
			t.Errorf("update to %s: progress %q: a pre-copy with a side that has none", next, errOut)
		}
		c := dialKV(t, addr)
		if v := kvInfo(t, c, "version"); v != next[len("kv-"):] {
			t.Fatalf("version %q after the update to %s", v, next)
		}
		checkKeys(t, c, 1000)
		c.Close()
	}
}
