package main

// The self scenario: 20 (-self-n) `service update-self` of the main rs
// while loadClients checking clients hammer kv on persistent
// connections and redis-benchmark (if installed) drives it too. For each
// update-self the bench times the command (bin/service until it printed
// what came of it: the new rs answered on the same socket) and the gap:
// the longest any client waited for one reply among the requests under
// way during the command. Every reply is checked; there must be no error,
// kv's pid and rs's pid must not change, DBSIZE must be the same after,
// and kv's ping round trip must be measured anew by the last rs.

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/reincarnation/rs/internal/resp"
	"github.com/reincarnation/rs/rs/control"
)

const selfSpacing = 200 * time.Millisecond

func (b *bench) selfUpdates() error {
	k := b.opts.selfN
	c, err := resp.DialAddr(b.kvAddr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := kvDo(c, "FLUSHALL"); err != nil {
		return err
	}
	st, err := b.waitRunning("kv", 0, 10*time.Second)
	if err != nil {
		return err
	}
	kvPid := st.Pid
	rsPid, err := b.rsPid()
	if err != nil {
		return err
	}
	dropped, err := b.dropStandbys()
	if err != nil {
		return err
	}
	l := startLoad(b.kvAddr, time.Now())
	running := true
	defer func() {
		if running {
			l.stopAndWait()
		}
	}()
	own, err := b.waitClients(c)
	if err != nil {
		return err
	}
	var ws []window
	var rtts []int64
	failed := 0
	updates := func() error {
		for i := range k {
			if err := b.sleep(selfSpacing); err != nil {
				return err
			}
			start := time.Since(l.base)
			out, err := b.updateSelfCmd()
			end := time.Since(l.base)
			if err != nil || !strings.Contains(out, "rs updated") {
				failed++
				b.problem(fmt.Sprintf("self: update-self %d/%d: %v %s", i+1, k, err, out))
				continue
			}
			ws = append(ws, window{start: start, end: end})
			if s, err := b.status("kv"); err == nil {
				rtts = append(rtts, s.PingRTTUs)
			}
		}
		return nil
	}
	rbNote := "redis-benchmark not installed: the checking clients only"
	want := own // DBSIZE after: the clients' keys, and redis-benchmark's two
	if path := b.tools.path["redis-benchmark"]; path != "" {
		var uerr error
		r := b.runRB(path, b.opts.rbN, 5*time.Minute, func(done <-chan struct{}, _ *rbOutput) {
			uerr = updates()
			// The updates are done: redis-benchmark need not go on.
		})
		if uerr != nil {
			return uerr
		}
		if r.err != nil || len(r.errLines) > 0 {
			b.problem(fmt.Sprintf("self: redis-benchmark: exit %v, %d error lines %q", r.err, len(r.errLines), r.errLines))
		} else {
			want += 2 // key:__rand_int__ and counter:__rand_int__ (no -r)
			rbNote = fmt.Sprintf("redis-benchmark -t %s -c %d -n %d ran through them: exit 0, no error line, %d tests", rbTests, rbClients, b.opts.rbN, len(r.tests))
		}
	} else if err := updates(); err != nil {
		return err
	}
	running = false
	if !l.stopAndWait() {
		return fmt.Errorf("self: a client did not stop within %v", loadRequestTimeout+5*time.Second)
	}
	after, err := dbsize(c)
	if err != nil {
		return fmt.Errorf("self: DBSIZE on the connection opened before the updates: %w", err)
	}
	// The last rs pings kv: its round trip is measured anew.
	last := int64(-1)
	if len(rtts) > 0 {
		last = rtts[len(rtts)-1]
	}
	pinged := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if s, err := b.status("kv"); err == nil && s.PingRTTUs != last && s.PingRTTUs > 0 {
			pinged = true
			last = s.PingRTTUs
			break
		}
		if err := b.sleep(20 * time.Millisecond); err != nil {
			return err
		}
	}
	st, err = b.waitRunning("kv", 0, 10*time.Second)
	if err != nil {
		return err
	}
	rsAfter, _ := b.rsPid()

	gap := row{name: "update-self gap (a client's longest wait)"}
	cmd := row{name: "update-self command"}
	for _, w := range ws {
		cmd.d = append(cmd.d, w.end-w.start)
		if g, n := l.gap(w); n > 0 {
			gap.d = append(gap.d, g)
		}
	}
	b.rows = append(b.rows, gap, cmd)
	errs, wrong, gaveUp := 0, 0, 0
	for _, lc := range l.clients {
		errs += lc.errs
		wrong += lc.wrong
		if lc.gaveUp {
			gaveUp++
		}
		for _, m := range lc.msgs {
			b.problem("self: " + m)
		}
	}
	t := table{title: fmt.Sprintf("update-self: %d execs in place of rs under load", k),
		head: []string{"figure", "value"}}
	t.add("update-self done", fmt.Sprintf("%d of %d", len(ws), k))
	t.add("failed requests (errors + wrong replies)", fmt.Sprintf("%d + %d of %d, %d clients gave up", errs, wrong, l.requests(), gaveUp))
	if len(gap.d) > 0 {
		d := sorted(gap.d)
		t.add("gap a client saw: median / max", short(median(d))+" / "+short(d[len(d)-1]))
	}
	if len(cmd.d) > 0 {
		d := sorted(cmd.d)
		t.add("update-self command: median / max", short(median(d))+" / "+short(d[len(d)-1]))
	}
	t.add("kv pid", fmt.Sprintf("%d before, %d after", kvPid, st.Pid))
	t.add("rs pid", fmt.Sprintf("%d before, %d after", rsPid, rsAfter))
	t.add("kv restarts", fmt.Sprint(st.Restarts))
	t.add("DBSIZE", fmt.Sprintf("%d after (want %d: the clients' keys and redis-benchmark's)", after, want))
	t.add("ping round trip after the last", fmt.Sprintf("measured anew: %v (%dµs)", pinged, last))
	t.foot = append(t.foot, rbNote)
	if len(dropped) > 0 {
		t.foot = append(t.foot, fmt.Sprintf("standbys dropped first (service unclone), as update-self refuses while one runs: %s", strings.Join(dropped, ", ")))
	}
	bad := errs+wrong+gaveUp+failed > 0 || st.Pid != kvPid || rsAfter != rsPid || after != want || !pinged
	b.judge(fmt.Sprintf("self: every update-self done (%d), 0 failed requests, pids and DBSIZE kept, kv pinged anew", k),
		fmt.Sprintf("%d of %d, %d failed", len(ws), k, errs+wrong+gaveUp), !bad)
	b.sections = append(b.sections, t)
	if bad {
		b.bad = true
		b.problem(fmt.Sprintf("self: errors %d, wrong %d, gave up %d, failed updates %d, kv pid %d -> %d, rs pid %d -> %d, DBSIZE want %d got %d, pinged %v",
			errs, wrong, gaveUp, failed, kvPid, st.Pid, rsPid, rsAfter, want, after, pinged))
	}
	return nil
}

// dropStandbys unclones every service of the main rs that keeps a
// standby (kvsb): update-self refuses while a standby runs, and
// self is the last scenario on that rs. It returns their labels.
func (b *bench) dropStandbys() ([]string, error) {
	r, err := b.ctl.Do(control.Request{Op: control.OpStatus}, nil)
	if err != nil {
		return nil, err
	}
	var labels []string
	for _, s := range r.Services {
		if !s.Standby && s.StandbyPid == 0 {
			continue
		}
		if _, err := b.ctl.Do(control.Request{Op: control.OpUnclone, Label: s.Label}, nil); err != nil {
			return labels, fmt.Errorf("self: unclone %s: %w", s.Label, err)
		}
		labels = append(labels, s.Label)
	}
	return labels, nil
}

// rsPid is the pid of the main rs, as it says.
func (b *bench) rsPid() (int, error) {
	r, err := b.ctl.Do(control.Request{Op: control.OpStatus}, nil)
	if err != nil {
		return 0, err
	}
	if r.Daemon == nil {
		return 0, fmt.Errorf("status without rs's own row")
	}
	return r.Daemon.Pid, nil
}

// updateSelfCmd runs bin/service update-self against the main rs.
func (b *bench) updateSelfCmd() (string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(b.bin, "service"), "--socket", b.ctl.Socket, "update-self").CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
