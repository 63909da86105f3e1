package main

// The update scenario: live updates of kv (`service update`) while
// loadClients clients hammer it on persistent connections.
//
// Updates alternate two kv binaries: bin/kv and a second one, built with
// -ldflags "-X main.version=b" into the temp dir (or -kvb). They run in
// phases, each of -updates updates spaced updateSpacing apart: first
// with only the clients' own keys in kv (the floor of the mechanism), then
// with -keys more, loaded pipelined, then (unless -big-keys is 0) with
// -big-keys: does the pause clients see grow with the state? For each update the bench times the
// command (rs.Client.Do until rs's final reply) and the gap: the longest
// any client waited for one reply among the requests under way during the
// command. Every reply is checked; errors and wrong replies are counted
// (there should be none), and DBSIZE must be the same after the updates
// as before. After the last phase, as many windows with no update, each
// as long as that phase's median update, measure the same longest wait
// for the load alone: the floor under a long update's gap on this
// machine. After each update the bench checks that kv runs the binary it
// asked for, with a new pid, the same restart count and INFO init_type
// live-update.
//
// All of it, s6-svc -r included, runs twice: with the clients back to
// back, which saturates the CPUs, then with the clients paced
// (-paced-every; see updateLoad), each pass with its own table and
// targets.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/reincarnation/rs/internal/resp"
)

const (
	updateSpacing = 300 * time.Millisecond
	// updateTimeout bounds one update command: rs's own bound on a
	// pre-copy base (rs.MinBaseTime, 60 s, at the bench's 2 s maxtime), then
	// maxtime and the new instance's init timeout (5 s), and a margin.
	// Below rs's bound, a slow base failed the bench's update (at 20 s)
	// while rs would still have finished it.
	updateTimeout = 75 * time.Second
)

// liveUpdates runs the update and redisbench scenarios, which share the
// second kv binary.
func (b *bench) liveUpdates() error {
	bins, err := b.kvBinaries()
	if err != nil {
		return err
	}
	var cmdMedian time.Duration
	if b.opts.scenarios["update"] {
		loads := []updateLoad{{}}
		if e := b.opts.pacedEvery; e > 0 {
			loads = append(loads, updateLoad{every: e})
		}
		for i, ul := range loads {
			res, err := b.updateGap(bins, ul)
			if err != nil {
				return err
			}
			if i == 0 { // redis-benchmark runs back to back too
				cmdMedian = median(res.cmds)
			}
			s6, err := b.s6Restarts(ul)
			if err != nil {
				return err
			}
			b.updateReport(res, s6, ul)
		}
	}
	if b.opts.scenarios["redisbench"] {
		return b.redisBench(bins, cmdMedian)
	}
	return nil
}

// updateLoad is the pace of the update scenario's clients. Back to back
// (every 0), the 4 clients and kv keep both CPUs of this machine busy,
// so that a window of 2 s with no update at all shows a longest wait of
// 7-45 ms (medians over such windows, runs of 2026-12-03), up to 237 ms: an update that takes seconds (the base of 1M keys) is
// measured against the scheduler as much as against itself. Paced, each
// client sends one request every every, on a fixed schedule, and the
// CPUs have room: the gap is then what the update itself costs.
type updateLoad struct {
	every time.Duration
}

// tag names the load in rows, notes and targets: "" back to back.
func (ul updateLoad) tag() string {
	if ul.every == 0 {
		return ""
	}
	return ", paced"
}

// String describes the load.
func (ul updateLoad) String() string {
	if ul.every == 0 {
		return fmt.Sprintf("%d clients back to back on persistent connections", loadClients)
	}
	return fmt.Sprintf("%d clients on persistent connections, paced: one request each every %v (at most %.0f/s in all)",
		loadClients, ul.every, float64(loadClients)*float64(time.Second)/float64(ul.every))
}

// kvBinaries returns bin/kv and the second binary, building it if -kvb
// did not name one.
func (b *bench) kvBinaries() ([2]string, error) {
	bins := [2]string{filepath.Join(b.bin, "kv"), b.opts.kvb}
	if bins[1] != "" {
		p, err := filepath.Abs(bins[1])
		bins[1] = p
		return bins, err
	}
	root, err := moduleRoot(b.ctx)
	if err != nil {
		return bins, err
	}
	bins[1] = filepath.Join(b.dir, "kv-b")
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bins[1], "-ldflags", "-X main.version=b", "./servers/kv")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return bins, fmt.Errorf("build kv version b: %v\n%s", err, out)
	}
	return bins, nil
}

// moduleRoot is the directory of the go.mod of the current directory.
func moduleRoot(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("cannot find module rs from the current directory (run from the repository, or pass -kvb): %v", err)
	}
	return filepath.Dir(gomod), nil
}

// sleep waits d, or less if the bench is interrupted.
func (b *bench) sleep(d time.Duration) error {
	select {
	case <-b.ctx.Done():
		return b.ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// updatePhase does k updates spaced updateSpacing apart and returns each
// command's window.
func (b *bench) updatePhase(u *updater, l *load, name string, k int) ([]window, error) {
	var ws []window
	for i := range k {
		if err := b.sleep(updateSpacing); err != nil {
			return ws, err
		}
		start, end, pause, err := u.update(fmt.Sprintf("update %d/%d (%s)", i+1, k, name))
		if err != nil {
			return ws, err
		}
		w := window{start: start.Sub(l.base), end: end.Sub(l.base)}
		if !pause.IsZero() {
			w.pause = pause.Sub(l.base)
		}
		ws = append(ws, w)
	}
	return ws, nil
}

// quietPhase waits through k windows with no update, each as long as
// the median update in ws, under the same load and with the same state:
// the longest reply wait a window that long shows without any update is
// the floor under the gap of those updates, which a short update (the
// one with no keys) does not have to reach. None if ws is empty.
func (b *bench) quietPhase(l *load, ws []window, k int) ([]window, error) {
	if len(ws) == 0 {
		return nil, nil
	}
	d := make([]time.Duration, len(ws))
	for i, w := range ws {
		d[i] = w.end - w.start
	}
	length := median(sorted(d))
	var quiet []window
	for range k {
		if err := b.sleep(updateSpacing); err != nil {
			return quiet, err
		}
		start := time.Since(l.base)
		if err := b.sleep(length); err != nil {
			return quiet, err
		}
		quiet = append(quiet, window{start: start, end: time.Since(l.base)})
	}
	return quiet, nil
}

// kvDo sends one command on c, with a deadline.
func kvDo(c *resp.Client, args ...string) (resp.Value, error) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	v, err := c.Do(args...)
	if err == nil && v.IsError() {
		err = fmt.Errorf("%s: %s", args[0], v.Err)
	}
	return v, err
}

func dbsize(c *resp.Client) (int64, error) {
	v, err := kvDo(c, "DBSIZE")
	if err == nil && v.Kind != resp.KindInt {
		err = fmt.Errorf("DBSIZE: %v", v)
	}
	return v.Int, err
}

// loadKeys sets n keys, pipelined 1000 at a time.
func loadKeys(c *resp.Client, n int) error { return loadKeysFrom(c, 0, n) }

// loadKeysFrom sets keys from to n-1 (the names loadKeys gives them).
func loadKeysFrom(c *resp.Client, from, n int) error {
	const batch = 1000
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	for i := from; i < n; i += batch {
		m := min(batch, n-i)
		for j := range m {
			key := fmt.Sprintf("key:%07d", i+j)
			if err := c.Send("SET", key, "value-of-"+key); err != nil {
				return err
			}
		}
		if err := c.Flush(); err != nil {
			return err
		}
		for range m {
			v, err := c.Read()
			if err != nil {
				return err
			}
			if v.Kind != resp.KindSimple || v.Str != "OK" {
				return fmt.Errorf("SET: %v", v)
			}
		}
	}
	return nil
}

// updateResult is what the update scenario measured, for the table
// beside s6's restarts.
type updateResult struct {
	gaps, cmds       []time.Duration // with the keys, per update
	floorGaps        []time.Duration // with only the clients' keys
	bigGaps, bigCmds []time.Duration // with -big-keys keys (none if not asked)
	// The load alone, in windows with no update as long as the median
	// -big-keys update (quietLen): how long clients wait anyway over
	// such a window, on this machine, under this load.
	quietGaps           []time.Duration
	quietLen            time.Duration
	errs, wrong, fails  int   // failed requests, wrong replies, failed updates
	before, after, want int64 // DBSIZE
}

// updateGap is the update scenario. The median command time of the
// updates with keys sizes the redisbench scenario.
func (b *bench) updateGap(bins [2]string, ul updateLoad) (*updateResult, error) {
	k := b.opts.updates
	u, err := b.newUpdater(bins)
	if err != nil {
		return nil, err
	}
	// A persistent connection of our own, idle during the updates.
	c, err := resp.DialAddr(b.kvAddr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := kvDo(c, "FLUSHALL"); err != nil {
		return nil, err
	}
	l := startLoadN(b.kvAddr, time.Now(), loadClients, ul.every)
	tag, who := ul.tag(), "update"+ul.tag()
	running := true
	defer func() {
		if running {
			l.stopAndWait()
		}
	}()
	own, err := b.waitClients(c)
	if err != nil {
		return nil, err
	}

	floorWs, err := b.updatePhase(u, l, "0 extra keys"+tag, k)
	if err != nil {
		return nil, err
	}
	t := time.Now()
	if err := loadKeys(c, b.opts.keys); err != nil {
		return nil, fmt.Errorf("%s: loading %d keys: %w", who, b.opts.keys, err)
	}
	loadTook := time.Since(t)
	before, err := dbsize(c)
	if err != nil {
		return nil, err
	}
	keyWs, err := b.updatePhase(u, l, fmt.Sprintf("%d keys%s", b.opts.keys, tag), k)
	if err != nil {
		return nil, err
	}
	var bigWs []window
	want := int64(b.opts.keys)
	if big := b.opts.bigKeys; big > b.opts.keys {
		// The state so far must be whole before it grows.
		mid, err := dbsize(c)
		if err != nil {
			return nil, err
		}
		if mid != before {
			b.problem(fmt.Sprintf("%s: DBSIZE %d before the updates with %d keys, %d after", who, before, b.opts.keys, mid))
		}
		t := time.Now()
		if err := loadKeysFrom(c, b.opts.keys, big); err != nil {
			return nil, fmt.Errorf("%s: loading %d keys: %w", who, big, err)
		}
		b.notes = append(b.notes, fmt.Sprintf("%s: %d more keys loaded (pipelined) in %v", who, big-b.opts.keys, short(time.Since(t))))
		if before, err = dbsize(c); err != nil {
			return nil, err
		}
		if bigWs, err = b.updatePhase(u, l, fmt.Sprintf("%d keys%s", big, tag), k); err != nil {
			return nil, err
		}
		want = int64(big)
	}
	quietWs, err := b.quietPhase(l, bigWs, k)
	if err != nil {
		return nil, err
	}
	running = false
	if !l.stopAndWait() {
		return nil, fmt.Errorf("%s: a client did not stop within %v", who, loadRequestTimeout+5*time.Second)
	}
	after, err := dbsize(c)
	if err != nil {
		return nil, fmt.Errorf("%s: DBSIZE on the connection opened before the updates: %w", who, err)
	}

	res := &updateResult{before: before, after: after, want: want + own, fails: u.failed}
	res.gaps, res.cmds = b.updateRows(l, keyWs, fmt.Sprintf("%d keys%s", b.opts.keys, tag))
	res.floorGaps, _ = b.updateRows(l, floorWs, "0 extra keys"+tag)
	if len(bigWs) > 0 {
		res.bigGaps, res.bigCmds = b.updateRows(l, bigWs, fmt.Sprintf("%d keys%s", b.opts.bigKeys, tag))
	}
	quiet := row{name: fmt.Sprintf("gap with no update, over windows as long as the %d-key updates%s", b.opts.bigKeys, tag)}
	for _, w := range quietWs {
		if g, n := l.gap(w); n > 0 {
			quiet.d = append(quiet.d, g)
		}
	}
	if len(quiet.d) > 0 {
		b.rows = append(b.rows, quiet)
		res.quietGaps, res.quietLen = quiet.d, quietWs[0].end-quietWs[0].start
	}
	b.notes = append(b.notes, fmt.Sprintf("%s: %d updates per phase (%d phases) alternating %s, %v apart, %d failed; %d keys loaded (pipelined) in %v", who,
		k, 2+min(len(bigWs), 1), u.describe(), updateSpacing, u.failed, b.opts.keys, short(loadTook)))
	redials, gaveUp := 0, 0
	for _, lc := range l.clients {
		res.errs += lc.errs
		res.wrong += lc.wrong
		redials += lc.redials
		if lc.gaveUp {
			gaveUp++
		}
		for _, m := range lc.msgs {
			b.problem(who + ": " + m)
		}
	}
	b.notes = append(b.notes, fmt.Sprintf("%s: %s (INCR, SET, GET): %d requests (%.0f/s), %d errors, %d wrong replies, %d redials, %d gave up",
		who, ul, l.requests(), l.rate(), res.errs, res.wrong, redials, gaveUp))
	if res.errs+res.wrong+gaveUp > 0 {
		b.bad = true
	}
	if d := l.outside(slices.Concat(floorWs, keyWs, bigWs)); len(d) > 0 {
		slices.Sort(d)
		b.notes = append(b.notes, fmt.Sprintf("%s: reply wait outside the updates (the quiet windows included): median %s, p99 %s, max %s over %d requests", who,
			short(d[len(d)/2]), short(d[len(d)*99/100]), short(d[len(d)-1]), len(d)))
	}
	dbNote := fmt.Sprintf("%s: DBSIZE %d before the last phase of updates, %d after (want %d)", who, before, after, res.want)
	if before != after || before != res.want {
		b.problem(dbNote)
	} else {
		b.notes = append(b.notes, dbNote)
	}
	return res, nil
}

// waitClients waits until every load client has its two keys, hence is
// connected, and returns how many keys that is.
func (b *bench) waitClients(c *resp.Client) (int64, error) {
	own := int64(2 * loadClients)
	for deadline := time.Now().Add(5 * time.Second); ; {
		n, err := dbsize(c)
		if err != nil {
			return own, err
		}
		if n >= own {
			return own, nil
		}
		if time.Now().After(deadline) {
			return own, fmt.Errorf("the load clients made %d of their %d keys within 5s", n, own)
		}
		if err := b.sleep(10 * time.Millisecond); err != nil {
			return own, err
		}
	}
}

// updateRows adds the gap and command rows of one phase and returns
// them.
func (b *bench) updateRows(l *load, ws []window, name string) (gaps, cmds []time.Duration) {
	gap := row{name: "update gap (" + name + ")"}
	cmd := row{name: "update command (" + name + ")"}
	// With pre-copy, the gap after the base: the pause proper, apart
	// from the wait of requests while the base streamed.
	pause := row{name: "update gap after the pre-copy base (" + name + ")"}
	for i, w := range ws {
		cmd.d = append(cmd.d, w.end-w.start)
		g, n := l.gap(w)
		if n == 0 {
			b.notes = append(b.notes, fmt.Sprintf("update %d (%s): no client request under way during it", i+1, name))
			continue
		}
		gap.d = append(gap.d, g)
		var pg time.Duration
		if w.pause > 0 {
			pg, _ = l.gap(window{start: w.pause, end: w.end})
			pause.d = append(pause.d, pg)
		}
		if b.verbose {
			fmt.Fprintf(os.Stderr, "update %d (%s): command %v, gap %v over %d requests, after the base %v\n", i+1, name, w.end-w.start, g, n, pg)
		}
	}
	b.rows = append(b.rows, gap, cmd)
	if len(pause.d) > 0 {
		b.rows = append(b.rows, pause)
	}
	return gap.d, cmd.d
}
