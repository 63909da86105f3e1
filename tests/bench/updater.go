package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/reincarnation/rs/internal/resp"
	"github.com/reincarnation/rs/rs/control"
)

// updater does the live updates of kv, alternating two binaries, and
// checks each.
type updater struct {
	b        *bench
	ctl      control.Client
	bins     [2]string
	next     int               // index in bins of the next update's target
	versions map[string]string // binary → the version its INFO reports
	failed   int
}

func (b *bench) newUpdater(bins [2]string) (*updater, error) {
	u := &updater{b: b, bins: bins, versions: map[string]string{},
		ctl: control.Client{Socket: b.ctl.Socket, Timeout: updateTimeout}}
	st, err := b.waitRunning("kv", 0, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if st.Binary == bins[1] {
		u.next = 0
	} else {
		u.next = 1
	}
	info, err := infoServer(b.kvAddr)
	if err != nil {
		return nil, fmt.Errorf("kv INFO: %w", err)
	}
	u.versions[st.Binary] = info["version"]
	return u, nil
}

// update does one update and returns when the command was sent, when
// its reply came, and when its progress said a pre-copy base had
// streamed (zero without one). A failed update or check is a problem
// noted, not an error; the error is for a kv that does not run again at
// all.
func (u *updater) update(what string) (start, end, pause time.Time, err error) {
	b := u.b
	target := u.bins[u.next]
	before, err := b.status("kv")
	if err != nil {
		return start, end, pause, err
	}
	start = time.Now()
	r, uerr := u.ctl.Do(control.Request{Op: control.OpUpdate, Label: "kv", Binary: target}, func(p string) {
		if strings.HasPrefix(p, "pre-copy base streamed") {
			pause = time.Now()
		}
	})
	end = time.Now()
	if b.verbose {
		fmt.Fprintf(os.Stderr, "%s → %s: %v, %q, err %v\n", what, filepath.Base(target), end.Sub(start), r.Message, uerr)
	}
	st, err := b.waitRunning("kv", 0, 10*time.Second)
	if err != nil {
		return start, end, pause, fmt.Errorf("%s: after the update: %w", what, err)
	}
	if !slices.Contains(b.killed, st.Pid) {
		b.killed = append(b.killed, st.Pid)
	}
	if uerr != nil {
		u.failed++
		b.problem(fmt.Sprintf("%s → %s failed after %v: %v; kv now pid %d (was %d), binary %s",
			what, filepath.Base(target), short(end.Sub(start)), uerr, st.Pid, before.Pid, filepath.Base(st.Binary)))
		return start, end, pause, nil
	}
	u.next = 1 - u.next
	var bad []string
	if st.Pid == before.Pid {
		bad = append(bad, fmt.Sprintf("pid unchanged (%d)", st.Pid))
	}
	if st.Binary != target {
		bad = append(bad, "status binary "+st.Binary)
	}
	if st.Restarts != before.Restarts {
		bad = append(bad, fmt.Sprintf("restarts %d → %d (last_exit %q)", before.Restarts, st.Restarts, st.LastExit))
	}
	info, err := infoServer(b.kvAddr)
	switch {
	case err != nil:
		bad = append(bad, "INFO: "+err.Error())
	default:
		if info["process_id"] != strconv.Itoa(st.Pid) {
			bad = append(bad, fmt.Sprintf("INFO process_id %s, status pid %d", info["process_id"], st.Pid))
		}
		if info["init_type"] != "live-update" {
			bad = append(bad, "INFO init_type "+info["init_type"])
		}
		if v, ok := u.versions[target]; ok && v != info["version"] {
			bad = append(bad, fmt.Sprintf("INFO version %s, want %s", info["version"], v))
		}
		u.versions[target] = info["version"]
	}
	if len(bad) > 0 {
		b.problem(fmt.Sprintf("%s → %s succeeded but: %s", what, filepath.Base(target), strings.Join(bad, "; ")))
	}
	return start, end, pause, nil
}

// describe names the two binaries and their versions.
func (u *updater) describe() string {
	name := func(p string) string {
		v := u.versions[p]
		if v == "" {
			v = "?"
		}
		return fmt.Sprintf("%s (version %s)", filepath.Base(p), v)
	}
	s := name(u.bins[0]) + " and " + name(u.bins[1])
	if v := u.versions[u.bins[0]]; v != "" && v == u.versions[u.bins[1]] {
		s += ", which report the same version"
	}
	return s
}

// infoServer returns the fields of kv's INFO server.
func infoServer(addr string) (map[string]string, error) {
	c, err := resp.DialAddr(addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	v, err := c.Do("INFO", "server")
	if err != nil {
		return nil, err
	}
	if v.Kind != resp.KindBulk {
		return nil, fmt.Errorf("INFO: %v", v)
	}
	m := map[string]string{}
	for line := range strings.SplitSeq(v.Str, "\r\n") {
		if k, val, ok := strings.Cut(line, ":"); ok {
			m[k] = val
		}
	}
	return m, nil
}
