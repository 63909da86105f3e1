package main

// Beside the update scenario: what an operator of s6 does instead of a
// live update, `s6-svc -r` (SIGTERM, and s6-supervise starts the binary
// again), on the same kv binary running standalone under s6-supervise
// with readiness notification (without it s6 pauses a second before every
// respawn: see crash.go), with the same load: loadClients clients on persistent connections and
// -keys keys, loaded again before each restart since each restart loses
// them. -updates restarts, each at least crashSpacing after the instance
// first answered (s6 delays the respawn of a service that ran less than
// a second). For each: the gap (the longest a client went without its
// reply, through its redial), the time from s6-svc to a reply from the
// new pid, and DBSIZE before and after.

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/reincarnation/rs/internal/resp"
)

type s6Result struct {
	gaps, restarts               []time.Duration
	errs, wrong, redials, gaveUp int
	before, after                []int64 // DBSIZE around each restart
	left                         int64   // of the first and last loaded keys, how many were there after
	skipped                      string
}

func (b *bench) s6Restarts(ul updateLoad) (*s6Result, error) {
	res := &s6Result{}
	who := "update (s6" + ul.tag() + ")"
	for _, prog := range []string{"s6-supervise", "s6-svc", "s6-notifyoncheck"} {
		if b.tools.path[prog] == "" {
			res.skipped = b.tools.missing[prog]
			b.notes = append(b.notes, "update: s6-svc -r skipped: "+res.skipped)
			return res, nil
		}
	}
	name := "update-s6" + strings.ReplaceAll(ul.tag(), ", ", "-") // its socket and its service dir
	addr, err := b.addr(name)
	if err != nil {
		return nil, err
	}
	network, address := resp.SplitAddr(addr)
	dir := filepath.Join(b.dir, name)
	sup, err := b.superviseReady("s6-supervise", dir, addr, filepath.Join(b.bin, "kv"), "--listen", addr)
	if err != nil {
		res.skipped = err.Error()
		b.notes = append(b.notes, "update: s6-svc -r skipped: "+res.skipped)
		return res, nil
	}
	defer func() {
		for _, p := range sup.stop() {
			b.notes = append(b.notes, who+": "+p)
		}
	}()
	r, err := b.probe(network, address, 0, time.Now())
	if err != nil {
		res.skipped = "kv under s6-supervise did not serve: " + err.Error()
		b.notes = append(b.notes, "update: s6-svc -r skipped: "+res.skipped)
		return res, nil
	}
	pid, served := r.pid, time.Now()
	sup.saw(pid)

	c, err := resp.DialAddr(addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer func() { c.Close() }()
	l := startLoadN(addr, time.Now(), loadClients, ul.every)
	running := true
	defer func() {
		if running {
			l.stopAndWait()
		}
	}()
	if _, err := b.waitClients(c); err != nil {
		return nil, fmt.Errorf("%s: %w", who, err)
	}
	var ws []window
	for i := range b.opts.updates {
		if err := loadKeys(c, b.opts.keys); err != nil {
			return nil, fmt.Errorf("%s: loading %d keys: %w", who, b.opts.keys, err)
		}
		before, err := dbsize(c)
		if err != nil {
			return nil, err
		}
		if err := b.sleepUntil(served.Add(crashSpacing)); err != nil {
			return nil, err
		}
		if err := b.sleep(updateSpacing); err != nil {
			return nil, err
		}
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		out, err := exec.CommandContext(ctx, b.tools.path["s6-svc"], "-r", dir).CombinedOutput()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s: s6-svc -r: %v: %s", who, err, out)
		}
		r, err := b.probe(network, address, pid, t0)
		if err != nil {
			return nil, fmt.Errorf("%s: restart %d: %w", who, i+1, err)
		}
		t1 := time.Now()
		ws = append(ws, window{start: t0.Sub(l.base), end: t1.Sub(l.base)})
		res.restarts = append(res.restarts, t1.Sub(t0))
		pid, served = r.pid, t1
		sup.saw(pid)
		c.Close() // closed by the old instance as it stopped
		if c, err = resp.DialAddr(addr, time.Second); err != nil {
			return nil, err
		}
		after, err := dbsize(c)
		if err != nil {
			return nil, err
		}
		res.before, res.after = append(res.before, before), append(res.after, after)
		if b.opts.keys > 0 {
			v, err := kvDo(c, "EXISTS", "key:0000000", fmt.Sprintf("key:%07d", b.opts.keys-1))
			if err != nil {
				return nil, err
			}
			res.left += v.Int
		}
	}
	running = false
	if !l.stopAndWait() {
		return nil, fmt.Errorf("%s: a client did not stop within %v", who, loadRequestTimeout+5*time.Second)
	}
	for _, w := range ws {
		if g, n := l.gap(w); n > 0 {
			res.gaps = append(res.gaps, g)
		}
	}
	for _, lc := range l.clients {
		res.errs += lc.errs
		res.wrong += lc.wrong
		res.redials += lc.redials
		if lc.gaveUp {
			res.gaveUp++
		}
	}
	b.rows = append(b.rows, row{name: fmt.Sprintf("s6-svc -r gap (%d keys reloaded each time%s)", b.opts.keys, ul.tag()), d: res.gaps},
		row{name: "s6-svc -r → new pid serving" + ul.tag(), d: res.restarts})
	b.notes = append(b.notes, fmt.Sprintf("%s: %d restarts with s6-svc -r; %s: %d requests, %d failed, %d redial attempts, %d wrong replies, %d gave up",
		who, len(res.restarts), ul, l.requests(), res.errs, res.redials, res.wrong, res.gaveUp))
	return res, nil
}

// updateReport is the table of rs's live update beside s6-svc -r.
func (b *bench) updateReport(u *updateResult, s6 *s6Result, ul updateLoad) {
	who := "update" + ul.tag()
	t := table{title: fmt.Sprintf("Update under load (%s, %d keys; %d updates or restarts)", ul, b.opts.keys, b.opts.updates),
		head: []string{"how", "gap: median (min–max)", "command → new instance serving", "failed requests", "state after"}}
	state := fmt.Sprintf("kept: DBSIZE %d → %d", u.before, u.after)
	kept := u.before == u.after && u.before == u.want
	if !kept {
		state = fmt.Sprintf("**not kept**: DBSIZE %d → %d (want %d)", u.before, u.after, u.want)
	}
	// The state is checked after the last phase (the largest state).
	keyState, bigState := state, ""
	if len(u.bigGaps) > 0 {
		keyState, bigState = "(see below)", state
	}
	t.add("rs: service update, only the clients' keys", medRange(u.floorGaps), "(see Every timing)", "(same run)", "")
	t.add(fmt.Sprintf("rs: service update, %d keys", b.opts.keys), medRange(u.gaps), medRange(u.cmds),
		fmt.Sprintf("%d (%d wrong replies, %d updates failed)", u.errs, u.wrong, u.fails), keyState)
	if len(u.bigGaps) > 0 {
		t.add(fmt.Sprintf("rs: service update, %d keys", b.opts.bigKeys), medRange(u.bigGaps), medRange(u.bigCmds), "(same run)", bigState)
	}
	if s6.skipped != "" {
		t.add("s6-svc -r", "skipped: "+firstLine(s6.skipped), "-", "-", "-")
	} else {
		lost := "-"
		if n := len(s6.before); n > 0 {
			lost = fmt.Sprintf("**lost**: DBSIZE %d before, %d after (median)", medianI(s6.before), medianI(s6.after))
		}
		t.add(fmt.Sprintf("s6-svc -r (%s), %d keys", s6Ready, b.opts.keys), medRange(s6.gaps), medRange(s6.restarts),
			fmt.Sprintf("%d (%d redial attempts)", s6.errs, s6.redials), lost)
		t.foot = append(t.foot, fmt.Sprintf("Gap ratio rs update / s6-svc -r, update i over restart i: %s. "+
			"The gap is the longest a client waited for a reply among the requests under way during the update "+
			"(for s6, a failed request's wait runs on through the redial to the next reply). "+
			"After s6-svc -r, DBSIZE counts only the keys the clients wrote again since; the first and last of the %d loaded keys were found %d times in %d restarts.",
			ratioRange(pairRatios(u.gaps, s6.gaps)), b.opts.keys, s6.left, len(s6.restarts)))
	}
	if len(u.gaps) > 0 {
		g := sorted(u.gaps)
		b.judge(fmt.Sprintf("%s with %d keys: rs gap < 20 ms (median)", who, b.opts.keys), fmt.Sprintf("%s (max %s)", short(median(g)), short(g[len(g)-1])), median(g) < 20*time.Millisecond)
	}
	if len(u.bigGaps) > 0 && len(u.floorGaps) > 0 {
		big, floor := median(sorted(u.bigGaps)), median(sorted(u.floorGaps))
		b.judge(fmt.Sprintf("%s: gap at %d keys ≤ 2× the gap with no keys (medians, same run)", who, b.opts.bigKeys),
			fmt.Sprintf("%s / %s = %.2f×", short(big), short(floor), float64(big)/float64(floor)), big <= 2*floor)
		if len(u.quietGaps) > 0 {
			q := median(sorted(u.quietGaps))
			t.foot = append(t.foot, fmt.Sprintf("With no update at all, over windows as long as the median %d-key update (%s), under the same load and state, "+
				"the longest reply wait was %s (median, min–max, of %d windows): %.2f× the gap of an update with no keys, whose command takes a few tens of milliseconds. "+
				"The %d-key update's gap is %.2f× that floor.",
				b.opts.bigKeys, short(u.quietLen), medRange(u.quietGaps), len(u.quietGaps), float64(q)/float64(floor), b.opts.bigKeys, float64(big)/float64(q)))
		}
		if s6.skipped == "" && len(s6.gaps) > 0 {
			s6g := median(sorted(s6.gaps))
			b.judge(fmt.Sprintf("%s: gap at %d keys < s6-svc -r's at %d keys (medians)", who, b.opts.bigKeys, b.opts.keys),
				fmt.Sprintf("%s vs %s", short(big), short(s6g)), big < s6g)
		}
	}
	b.judge(who+": 0 failed requests under rs", fmt.Sprint(u.errs+u.wrong), u.errs+u.wrong == 0)
	b.judge(who+": state kept under rs", fmt.Sprintf("DBSIZE %d → %d", u.before, u.after), kept)
	b.sections = append(b.sections, t)
}

func medianI(v []int64) int64 {
	d := make([]time.Duration, len(v))
	for i, x := range v {
		d[i] = time.Duration(x)
	}
	return int64(median(d))
}
