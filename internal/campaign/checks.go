package campaign

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/reincarnation/rs/rs/control"
)

// Check is one end-of-run check.
type Check struct {
	Name   string
	OK     bool
	Detail string
}

// What "not grown" allows. fds and goroutines come and go with the
// instant (a ping timer firing, a control connection closing): a leak
// over thousands of faults is far beyond the slack. RSS moves with the
// Go heap's growth; a leak per fault would still dwarf the allowance.
const (
	settleTimeout  = 5 * time.Second
	fdSlack        = 2
	goroutineSlack = 2
	rssGrowthPct   = 20
	rssSlackKiB    = 4 << 10
)

// settle polls cond until it holds or settleTimeout passes: a state that
// is briefly off (a child exited and not yet reaped) is not a fault.
func settle(cond func() bool) bool {
	deadline := time.Now().Add(settleTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// endChecks: rs answered, no zombie or stray child, nothing grown.
func (c *campaign) endChecks(rep *Report) []Check {
	var checks []Check
	calls, fails := c.rs.statusCalls.Load(), c.rs.statusFails.Load()
	detail := fmt.Sprintf("%d status requests, %d unanswered", calls, fails)
	if fails > 0 {
		c.rs.mu.Lock()
		detail += ": " + strings.Join(c.rs.statusErrs, "; ")
		c.rs.mu.Unlock()
	}
	checks = append(checks, Check{Name: "rs answers status", OK: fails == 0, Detail: detail})

	var zombies []int
	ok := settle(func() bool {
		_, zombies = children(c.rs.pid)
		return len(zombies) == 0
	})
	detail = "none"
	if !ok {
		detail = fmt.Sprintf("%d after %v: %v", len(zombies), settleTimeout, zombies)
	}
	checks = append(checks, Check{Name: "zombie children of rs", OK: ok, Detail: detail})

	var stray, live, want []int
	var statusErr error
	ok = settle(func() bool {
		r, err := c.rs.status("")
		if statusErr = err; err != nil {
			return false
		}
		want = want[:0]
		for _, st := range r.Services {
			if st.Pid != 0 {
				want = append(want, st.Pid)
			}
		}
		live, _ = children(c.rs.pid)
		stray = stray[:0]
		for _, pid := range live {
			c.pids.add(pid)
			if !slices.Contains(want, pid) {
				stray = append(stray, pid)
			}
		}
		for _, pid := range want {
			if !slices.Contains(live, pid) {
				return false // status names a pid that is not rs's child
			}
		}
		return len(stray) == 0
	})
	switch {
	case statusErr != nil:
		detail = "status: " + statusErr.Error()
	case ok:
		detail = fmt.Sprintf("none: %d live children, the services' %d pids", len(live), len(want))
	default:
		detail = fmt.Sprintf("%d live children %v, services' pids %v, stray %v", len(live), live, want, stray)
		for _, pid := range stray {
			detail += fmt.Sprintf("; %d: %q", pid, strings.ReplaceAll(cmdline(pid), "\x00", " "))
		}
	}
	checks = append(checks, Check{Name: "stray children of rs", OK: ok, Detail: detail})
	return append(checks, c.growthChecks(rep)...)
}

// growthChecks compares rs's figures at the end with those after the
// warm-up.
func (c *campaign) growthChecks(rep *Report) []Check {
	base := rep.Base
	if base == nil {
		return []Check{{Name: "rs resources", Detail: "no figures after the warm-up (status failed)"}}
	}
	var end *control.Daemon
	ok := settle(func() bool {
		d, err := c.daemon()
		if err != nil {
			return false
		}
		end = d
		return d.FDs <= base.FDs+fdSlack && d.Goroutines <= base.Goroutines+goroutineSlack
	})
	if end == nil {
		return []Check{{Name: "rs resources", Detail: "no figures at the end (status failed)"}}
	}
	rep.End = end
	rssLimit := base.RSSKiB*(100+rssGrowthPct)/100 + rssSlackKiB
	after := fmt.Sprintf("after the warm-up (%d %s)", rep.Warmup, plural(rep.Warmup, "fault"))
	return []Check{
		{Name: "rs fds", OK: ok || end.FDs <= base.FDs+fdSlack,
			Detail: fmt.Sprintf("%d %s, %d at the end", base.FDs, after, end.FDs)},
		{Name: "rs goroutines", OK: ok || end.Goroutines <= base.Goroutines+goroutineSlack,
			Detail: fmt.Sprintf("%d %s, %d at the end", base.Goroutines, after, end.Goroutines)},
		{Name: "rs RSS", OK: end.RSSKiB <= rssLimit,
			Detail: fmt.Sprintf("%s %s, %s at the end (allowed %s); heap %s → %s",
				kib(base.RSSKiB), after, kib(end.RSSKiB), kib(rssLimit), kib(base.HeapKiB), kib(end.HeapKiB))},
	}
}

func kib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/1024) }

// shutdown: SIGTERM, exit 0, and no process of this campaign left.
func (c *campaign) shutdown() []Check {
	took, err := c.rs.stop()
	sig := Check{Name: "SIGTERM", OK: err == nil, Detail: fmt.Sprintf("rs exited 0 in %v", took.Round(time.Millisecond))}
	if err != nil {
		sig.Detail = err.Error()
	}
	return []Check{sig, c.leftovers()}
}

// leftovers checks that no process of the campaign is left: every pid
// seen is gone (or a stranger's now).
func (c *campaign) leftovers() Check {
	seen := c.pids.list()
	var left []int
	ok := settle(func() bool {
		left = left[:0]
		for _, pid := range seen {
			if st, alive := readStat(pid); alive && st.state != 'Z' && c.ours(pid) {
				left = append(left, pid)
			}
		}
		return len(left) == 0
	})
	detail := fmt.Sprintf("none of the %d pids seen", len(seen))
	if !ok {
		detail = fmt.Sprintf("%d of the %d pids seen still run: %v", len(left), len(seen), left)
	}
	return Check{Name: "processes left", OK: ok, Detail: detail}
}

// ours tells a process of this campaign from a stranger that got a pid
// we saw: its command line names the work directory or a service address.
func (c *campaign) ours(pid int) bool {
	cl := cmdline(pid)
	if strings.Contains(cl, c.dir) {
		return true
	}
	for _, s := range c.svcs {
		if strings.Contains(cl, "--listen\x00"+s.addr+"\x00") {
			return true
		}
	}
	return false
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
