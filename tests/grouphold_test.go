package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reincarnation/rs/internal/resp"
)

// incrClient is a client that INCRs a key of its own, one at a time, until
// stopped, and checks every reply: the first is 1, each next one the one
// before plus 1. A write that a rollback lost would show as a reply that
// goes back (the old instance never saw it); a write counted twice, as
// one that jumps. last is the last value acknowledged; sent counts the
// INCRs sent.
type incrClient struct {
	addr, key string
	perOp     bool // a new connection for each INCR (the listener's path)
	sent      atomic.Int64
	last      atomic.Int64
	ended     atomic.Bool // run returned: err is set if it failed
	err       error
}

func (c *incrClient) run(stop <-chan struct{}) {
	var conn *resp.Client
	defer c.ended.Store(true)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for {
		select {
		case <-stop:
			return
		default:
		}
		if conn == nil {
			var err error
			if conn, err = resp.Dial("tcp", c.addr, waitTimeout); err != nil {
				c.err = fmt.Errorf("%s: dial: %w", c.key, err)
				return
			}
			conn.SetDeadline(time.Now().Add(waitTimeout))
		}
		c.sent.Add(1)
		v, err := conn.Do("INCR", c.key)
		if err != nil {
			c.err = fmt.Errorf("%s: INCR after %d: %w", c.key, c.last.Load(), err)
			return
		}
		if want := c.last.Load() + 1; v.Int != want {
			c.err = fmt.Errorf("%s: INCR answered %d (%v), want %d: an acknowledged write was lost or doubled", c.key, v.Int, v, want)
			return
		}
		c.last.Store(v.Int)
		if c.perOp {
			conn.Close()
			conn = nil
		}
	}
}

// counters starts two counters on each member, one on a connection it
// keeps (handed over by an update), one dialing for each INCR; stop ends
// them and checks each: no reply out of sequence, and the key holds
// exactly the last value acknowledged.
func (g *groupKV) counters(t *testing.T) (cs []*incrClient, stop func()) {
	t.Helper()
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for _, l := range groupLabels {
		for _, perOp := range []bool{false, true} {
			c := &incrClient{addr: g.addrs[l], key: fmt.Sprintf("ctr:%s:%v", l, perOp), perOp: perOp}
			cs = append(cs, c)
			wg.Add(1)
			go func() { defer wg.Done(); c.run(quit) }()
		}
	}
	g.r.waitFor("every incrClient to be acknowledged", func() bool {
		for _, c := range cs {
			if c.last.Load() < 10 {
				return c.ended.Load()
			}
		}
		return true
	})
	return cs, func() {
		t.Helper()
		close(quit)
		wg.Wait()
		for _, c := range cs {
			if c.err != nil {
				t.Fatal(c.err)
			}
			v := kvDo(t, c.addr, "GET", c.key)
			if v.Str != fmt.Sprint(c.last.Load()) {
				t.Fatalf("%s holds %v, the last INCR acknowledged was %d", c.key, v, c.last.Load())
			}
		}
	}
}

// memberLog is label's log: its instances' lines.
func (g *groupKV) memberLog(label string) string {
	b, _ := os.ReadFile(filepath.Join(g.r.logDir, label+".log"))
	return string(b)
}

// TestGroupUpdateHeldRollback: kv3's and kv2's new instances init (with
// the connections and state handed over) and are held while kv1's new
// instance hangs in its init until its init_timeout; clients INCR their
// own counters on every member all along, on kept connections and on
// new ones. The group rolls back: no reply is out of sequence and every
// incrClient holds its last acknowledged value, so nothing a held instance
// could have answered was lost; the held ones never served.
func TestGroupUpdateHeldRollback(t *testing.T) {
	g := startGroupKV(t, "")
	g.replaceBinary(t, "kv1", "kv-luhang")
	cs, stop := g.counters(t)
	res := make(chan string, 1)
	go func() {
		_, errOut, code := runService(t, g.r.sock, nil, "update", "kv1", "kv2", "kv3")
		res <- fmt.Sprintf("%d %s", code, errOut)
	}()
	// kv3's and kv2's new instances restored the state: held from here.
	g.r.waitFor("kv3's and kv2's new instances to init", func() bool {
		return strings.Contains(g.memberLog("kv3"), "live update: state restored") &&
			strings.Contains(g.memberLog("kv2"), "live update: state restored")
	})
	// Every client sends at least one more INCR, which a held instance
	// would have answered, had it served.
	sent := make([]int64, len(cs))
	for i, c := range cs {
		sent[i] = c.sent.Load()
	}
	g.r.waitFor("every client to send while kv2 and kv3 are held", func() bool {
		for i, c := range cs {
			if c.sent.Load() <= sent[i]+1 && !c.ended.Load() {
				return false
			}
		}
		return true
	})
	got := <-res
	if !strings.HasPrefix(got, "1 ") || !strings.Contains(got, "rolled back: kv1: new instance init-timeout") {
		t.Fatalf("the group update: %q", got)
	}
	stop()
	for _, l := range []string{"kv2", "kv3"} {
		if strings.Contains(g.memberLog(l), "live update committed; serving") {
			t.Errorf("%s's held instance was released although the group rolled back", l)
		}
	}
	g.check(t, false)
}

// TestGroupUpdateHeldCommit: the same clients through a group update
// that commits: the held instances serve right after the commit, each
// incrClient going on in sequence from where the old instance left it.
func TestGroupUpdateHeldCommit(t *testing.T) {
	g := startGroupKV(t, "")
	cs, stop := g.counters(t)
	out, errOut, code := g.r.service("update", "--binary", bin("kv-b"), "kv1", "kv2", "kv3")
	if code != 0 || !strings.Contains(out, "updated as one") {
		t.Fatalf("group update: exit %d, %q, %q", code, out, errOut)
	}
	inOrder(t, errOut, "kv3: committed", "kv3: pid", "released: it serves", "kv2: committed", "kv1: committed")
	acked := make([]int64, len(cs))
	for i, c := range cs {
		acked[i] = c.last.Load()
	}
	g.r.waitFor("every client to be answered by the new instances", func() bool {
		for i, c := range cs {
			if c.last.Load() < acked[i]+5 && !c.ended.Load() {
				return false
			}
		}
		return true
	})
	stop()
	for _, l := range groupLabels {
		if !strings.Contains(g.memberLog(l), "live update committed; serving") {
			t.Errorf("%s's new instance logged no release", l)
		}
		if v := kvInfo(t, g.conns[l], "version"); v != "b" {
			t.Errorf("%s runs version %q after the commit, want b", l, v)
		}
	}
	g.check(t, true)
}
