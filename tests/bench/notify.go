package main

// The notify scenario: crash → serving of a daemon written against
// go-systemd only (tests/fixtures/sdnotify with -serve, which answers
// each line a client sends with "pid N"), as crash.go times kv: SIGKILL,
// then a client loops connect + one line from the kill until a reply
// names a new pid, counting refused connections. Columns, in the same
// rounds, order rotated:
//
//   - rs: type = "notify", listen = ["tcp:ADDR"]: rs holds the
//     listener across restarts and hands it over by LISTEN_FDS (the
//     fixture takes it with activation.Listeners);
//   - rs, no listen: the same service binding -listen ADDR itself, as
//     under the peers; beside rs's own column it shows what the held
//     listener buys, and from rs's log what it costs per start: rs sets
//     LISTEN_PID at the exec stop of the new process (proc/listenpid.go)
//     where systemd-less setups exec a shim, and that stop is part of
//     exited → spawned;
//     After the rounds, notifyStarts more kills of these two alone, with
//     no client, add to the breakdown's samples (backoff_reset = 50ms:
//     an instance killed notifyStartGap after it is running was
//     healthy, and is started again at once);
//   - runsv, s6-supervise, and s6-supervise with readiness notification
//     (crash.go: s6 pauses a second before respawning a service that
//     never said it was ready): the same binary standalone,
//     -serve -never-ready -listen ADDR (no NOTIFY_SOCKET there: without
//     -never-ready it would exit on its failed READY=1). s6-notifyoncheck
//     asks it a line (checkMain, lineCheck) to notify s6.
//
// The fixture binds TCP only: the scenario is on TCP loopback ports
// whatever -net says.

import (
	"bufio"
	"fmt"
	"net"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

const (
	sdnLabel   = "sdn"  // rs, listen held
	sdnbLabel  = "sdnb" // rs, binds -listen itself
	noListen   = "rs, no listen (binds -listen itself)"
	lineCheck  = "line:" // checkEnv's prefix for linePid
	sdnotifyPk = "./tests/fixtures/sdnotify"

	notifyStarts   = 16 // kills of each rs column after the rounds
	notifyStartGap = 100 * time.Millisecond
)

// linePid connects, sends a line and returns the pid the fixture
// answers with.
func linePid(network, address string) (int, error) {
	c, err := net.DialTimeout(network, address, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("pid?\n")); err != nil {
		return 0, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, err
	}
	var pid int
	if _, err := fmt.Sscanf(line, "pid %d\n", &pid); err != nil {
		return 0, fmt.Errorf("answer %q: %w", line, err)
	}
	return pid, nil
}

// notifyConfig builds the fixture and returns the main rs's services for
// the scenario.
func (b *bench) notifyConfig() (string, error) {
	bin, err := b.buildTool(sdnotifyPk)
	if err != nil {
		return "", err
	}
	b.sdnotify = bin
	if b.sdnAddr, err = tcpAddr(sdnLabel); err != nil {
		return "", err
	}
	if b.sdnbAddr, err = tcpAddr(sdnbLabel); err != nil {
		return "", err
	}
	return fmt.Sprintf(`
[service.%s]
type = "notify"
binary = %q
args = ["-serve"]
listen = ["tcp:%s"]
max_restarts = -1
backoff_reset = "50ms"

[service.%s]
type = "notify"
binary = %q
args = ["-serve", "-listen", %q]
max_restarts = -1
backoff_reset = "50ms"
`, sdnLabel, bin, b.sdnAddr, sdnbLabel, bin, b.sdnbAddr), nil
}

// notify runs n rounds over the scenario's columns.
func (b *bench) notify(n int) error {
	targets := []*crashTarget{
		{name: "rs", kind: underRS, label: sdnLabel, network: "tcp", address: b.sdnAddr, ask: linePid},
		{name: noListen, kind: underRS, label: sdnbLabel, network: "tcp", address: b.sdnbAddr, ask: linePid},
	}
	peers, stop, err := b.crashPeers("notify", peerService{addr: tcpAddr, ask: linePid, checkPrefix: lineCheck,
		argv: func(addr string) []string { return []string{b.sdnotify, "-serve", "-never-ready", "-listen", addr} }})
	defer stop()
	if err != nil {
		return err
	}
	targets = append(targets, peers...)
	for _, t := range targets {
		if t.failed != "" {
			b.notes = append(b.notes, fmt.Sprintf("notify: %s skipped: %s", t.name, t.failed))
		}
	}
	rounds := 0
	defer func() { b.notifyReport(rounds, targets) }()
	if err := b.crashRounds("notify", n, targets, &rounds); err != nil {
		return err
	}
	return b.notifyKills(targets[:2])
}

// notifyKills kills each of the rs columns notifyStarts times more,
// alternating, notifyStartGap after the last instance was running, for
// the breakdown from rs's log.
func (b *bench) notifyKills(targets []*crashTarget) error {
	for _, t := range targets {
		if t.failed != "" {
			return nil // the breakdown pairs the columns' kills
		}
	}
	for range notifyStarts {
		for _, t := range targets {
			st, err := b.waitRunning(t.label, t.pid, 10*time.Second)
			if err != nil {
				b.problem(fmt.Sprintf("notify: %s: %v", t.name, err))
				return err
			}
			if k := len(t.kills); k > 0 && t.kills[k-1].new == 0 {
				t.kills[k-1].new = st.Pid
			}
			if err := b.sleep(notifyStartGap); err != nil {
				return err
			}
			b.killed = append(b.killed, st.Pid)
			at := time.Now()
			if err := unix.Kill(st.Pid, unix.SIGKILL); err != nil {
				return fmt.Errorf("kill %d: %w", st.Pid, err)
			}
			t.pid = st.Pid
			t.kills = append(t.kills, killRec{at: at, old: st.Pid})
		}
	}
	for _, t := range targets {
		st, err := b.waitRunning(t.label, t.pid, 10*time.Second)
		if err != nil {
			b.problem(fmt.Sprintf("notify: %s: %v", t.name, err))
			return err
		}
		t.kills[len(t.kills)-1].new = st.Pid
	}
	return nil
}

func (b *bench) notifyReport(n int, targets []*crashTarget) {
	tab, col := b.crashTable(fmt.Sprintf("Notify: crash → serving of the go-systemd fixture (SIGKILL, then connect + a line until a new pid answers; %d rounds)", n),
		"notify crash → serving: ", targets)
	tab.foot = append(tab.foot, b.notifyBreakdown(targets[0], targets[1])...)
	b.sections = append(b.sections, tab)

	rt := table{title: "Notify crash → serving: ratios, pair by pair (round i of one column over round i of the other)",
		head: []string{"ratio", "median (min–max)"}}
	rsMed := measured(col["rs"])
	for _, peer := range []string{"runsv", "s6-supervise", s6Ready, noListen} {
		rt.add("rs / "+peer, ratioRange(pairRatios(col["rs"], col[peer])))
		if peer == noListen {
			continue
		}
		what := fmt.Sprintf("notify crash → serving: rs median ≤ %s median", peer)
		pm := measured(col[peer])
		if len(rsMed) == 0 || len(pm) == 0 {
			b.unjudged(what, "not measured")
			continue
		}
		b.judge(what, short(median(rsMed))+" vs "+short(median(pm)), median(rsMed) <= median(pm))
	}
	b.sections = append(b.sections, rt)

	refused := 0
	for _, k := range targets[0].refused {
		refused += k
	}
	what := "notify crash → serving: 0 connections refused under rs (listen held)"
	if len(rsMed) == 0 {
		b.unjudged(what, "not measured")
		return
	}
	b.judge(what, fmt.Sprint(refused), refused == 0)
	if refused > 0 {
		b.bad = true
	}
}

// notifyBreakdown splits the kills of the two rs columns with rs's JSON
// log: SIGKILL → rs logs the exit; exited → spawned (rs's decision, the
// fork and exec, and with listen the exec stop that sets LISTEN_PID);
// spawned → ready (the fixture's own start, to READY=1). The per-start
// cost of listen is exited → spawned of rs minus that of rs without
// listen, kill by kill (the i-th of one column with the i-th of the
// other: in the rounds, the same round; then notifyKills alternates).
func (b *bench) notifyBreakdown(held, plain *crashTarget) []string {
	evs := logEvents(b.rsLog)
	split := func(t *crashTarget) (toExit, toSpawn, toReady []time.Duration) {
		for _, k := range t.kills {
			var exited, spawned, ready time.Time
			at := k.at.Round(0)
			for _, e := range evs {
				if e.Label != t.label || e.Time.Before(at.Add(-time.Millisecond)) {
					continue
				}
				switch {
				case exited.IsZero() && e.Msg == "exited" && e.Pid == k.old:
					exited = e.Time
				case !exited.IsZero() && spawned.IsZero() && e.Msg == "spawned" && e.Pid == k.new:
					spawned = e.Time
				case !spawned.IsZero() && ready.IsZero() && e.Msg == "ready" && e.Pid == k.new:
					ready = e.Time
				}
			}
			if ready.IsZero() {
				// Not every kill named in the log: no pairs from here on.
				return nil, nil, nil
			}
			toExit = append(toExit, exited.Sub(at))
			toSpawn = append(toSpawn, spawned.Sub(exited))
			toReady = append(toReady, ready.Sub(spawned))
		}
		return toExit, toSpawn, toReady
	}
	var foot []string
	spawns := map[string][]time.Duration{}
	for _, t := range []*crashTarget{held, plain} {
		toExit, toSpawn, toReady := split(t)
		if len(toExit) == 0 {
			foot = append(foot, fmt.Sprintf("%s: no breakdown (rs's log did not name every kill)", t.name))
			continue
		}
		spawns[t.name] = toSpawn
		b.rows = append(b.rows, row{name: "notify " + t.name + ": SIGKILL → rs logs the exit", d: toExit},
			row{name: "notify " + t.name + ": exited → spawned", d: toSpawn},
			row{name: "notify " + t.name + ": spawned → ready (READY=1)", d: toReady})
		foot = append(foot, fmt.Sprintf("%s, from rs's log (%d kills: the rounds', then %d more without a client): SIGKILL → exit logged %s; exited → spawned %s; spawned → ready %s.",
			t.name, len(toExit), notifyStarts, medRange(toExit), medRange(toSpawn), medRange(toReady)))
	}
	a, p := spawns[held.name], spawns[plain.name]
	if len(a) > 0 && len(a) == len(p) && len(held.d) == len(plain.d) && !slices.Contains(held.d, -1) && !slices.Contains(plain.d, -1) {
		diff := make([]time.Duration, len(a))
		for i := range a {
			diff[i] = a[i] - p[i]
		}
		b.rows = append(b.rows, row{name: "notify: what listen adds to exited → spawned (kill by kill)", d: diff})
		foot = append(foot, fmt.Sprintf("Per start, what listen costs (the exec stop that sets LISTEN_PID, in place of a shim's second exec, "+
			"and the listener handed over): exited → spawned of rs minus that of rs without listen, kill by kill: %s over %d kills.",
			medRange(diff), len(diff)))
	}
	return foot
}
