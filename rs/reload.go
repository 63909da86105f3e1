package rs

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reincarnation/rs/rs/control"
)

// Reloading the config file (`service reload`, SIGHUP to rs). The file
// rs was started with is read, parsed and checked off the loop (in
// Handle, on the control connection's goroutine; cmd/rs's SIGHUP
// goroutine goes through it too); an invalid file changes nothing and
// the error names its file and line. The loop gets the specs (evReload)
// and applies the difference without waiting for anything:
//
//   - a label the table does not have is added and started, in depends
//     order (startWaiting);
//   - a configured service the file no longer has is removed (remove.go);
//   - a service added with `service up` that the file does not have is
//     left alone: it is the operator's;
//   - a service in both has each changed setting handled by its class
//     (reloadClass, one table): a policy setting is applied at once, to
//     the service and its live instances, with no new process; a launch
//     setting needs a new process: a service with an instance is
//     restarted, or live-updated when its reload_action is "update" and
//     it is a sef service (update.go); one without an instance (down,
//     failed, in backoff, waiting for a dependency) keeps the settings
//     for its next start, so a service the operator took down stays down;
//   - an unchanged service is not touched: it keeps its pid.
//
// The table the reload makes (the file's services with the operator's)
// must pass Validate, or nothing changes. What the loop decided for each
// service is one reloadOutcome, made in one place (Server.outcome);
// what came of it (started, restarted, updated, stopped) the
// connection's goroutine waits for on the channels the existing paths
// answer (up's, restart's, update's, remove's), for reloadWait at most,
// and the reply has one line per service.

// reloadWait bounds how long a reload's reply waits for what it started
// (less than the client's default minute); the work goes on after it.
const reloadWait = 45 * time.Second

// changeClass is what a changed setting of a service needs.
type changeClass uint8

const (
	classPolicy changeClass = iota // applied at once: no new process
	classLaunch                    // a new process: restart, or live update
)

func (c changeClass) String() string { return [...]string{"policy", "launch"}[c] }

// classRule says a setting's class by the service's type.
type classRule uint8

const (
	rulePolicy       classRule = iota // policy whatever the type
	ruleSefPolicy                     // policy for sef; launch for notify and simple
	ruleSimpleLaunch                  // launch for simple; policy (and moot) for the others
)

// reloadRules is the classification, setting by setting. A setting that
// is not here (a new one) is a launch setting: restarting is never wrong.
//
// Policy: what the loop reads from the service's spec (or its live
// instances' copies, which reload updates too) when it decides, never
// what the process got at its exec. Why the exceptions:
//   - period, ping_timeout: a notify service gets its watchdog in its
//     environment (WATCHDOG_USEC), and a simple service's driver holds
//     its probe's timeout, which falls back on them;
//   - stop_signal: the notify and simple drivers hold their own copy;
//   - probe_timeout: a simple service's driver holds it (no other type
//     has a probe).
//
// Launch (every other setting): the program, its arguments and
// environment, its credentials, workdir and umask, its limits (set at
// its exec, or on its cgroup at its spawn), its type, its listen
// sockets, its ready and probe checks (parsed by its driver at its
// spawn), and log, the mode of its output (other pipes).
var reloadRules = map[string]classRule{
	"restart":        rulePolicy,
	"depends":        rulePolicy, // the order of starts and stops
	"standby":        rulePolicy,
	"init_timeout":   rulePolicy, // the next init's
	"stop_grace":     rulePolicy,
	"backoff_base":   rulePolicy,
	"backoff_cap":    rulePolicy,
	"backoff_reset":  rulePolicy,
	"max_restarts":   rulePolicy,
	"restart_window": rulePolicy,
	"failed_retry":   rulePolicy,
	"control":        rulePolicy,
	"log_max_size":   rulePolicy, // the log writer's, for the same pipes
	"log_keep":       rulePolicy,
	"log_compress":   rulePolicy,
	"probe_period":   rulePolicy, // the loop's ping pace
	"reload_action":  rulePolicy,
	"on_failure":     rulePolicy, // hooks read the service's spec when they are due
	"on_exit":        rulePolicy,
	"hook_timeout":   rulePolicy,
	"period":         ruleSefPolicy,
	"ping_timeout":   ruleSefPolicy,
	"stop_signal":    ruleSefPolicy,
	"probe_timeout":  ruleSimpleLaunch,
}

// reloadClass is the class of a change of the setting key in a service
// of type typ.
func reloadClass(key, typ string) changeClass {
	rule, ok := reloadRules[key]
	switch {
	case !ok:
		return classLaunch
	case rule == ruleSefPolicy && typ != TypeSef:
		return classLaunch
	case rule == ruleSimpleLaunch && typ == TypeSimple:
		return classLaunch
	}
	return classPolicy
}

// change is one setting that differs between two specs.
type change struct {
	key      string
	name     string // the Spec field
	class    changeClass
	from, to string // shown values, for a policy setting
}

// specChanges lists the settings that differ from old to next (both with
// their defaults), in Patch's order, classed for a service of old's type.
func specChanges(old, next Spec) []change {
	ov, nv := reflect.ValueOf(old), reflect.ValueOf(next)
	var out []change
	for _, f := range control.Fields() {
		a, b := ov.FieldByName(f.Name), nv.FieldByName(f.Name)
		if sameValue(a, b) {
			continue
		}
		c := change{key: f.Key, name: f.Name, class: reloadClass(f.Key, old.Type)}
		if c.class == classPolicy {
			c.from, c.to = showValue(f.Key, a.Interface()), showValue(f.Key, b.Interface())
		}
		out = append(out, c)
	}
	return out
}

// sameValue: equal, an empty list or table being the same as none.
func sameValue(a, b reflect.Value) bool {
	if k := a.Kind(); (k == reflect.Slice || k == reflect.Map) && a.Len() == 0 && b.Len() == 0 {
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// showValue is a policy setting's value as a reload line shows it.
func showValue(key string, v any) string {
	switch v := v.(type) {
	case time.Duration:
		if key == "failed_retry" && v == FailedRetryNever {
			return "never"
		}
		return v.String()
	case []string:
		return "[" + strings.Join(v, ",") + "]"
	case syscall.Signal:
		return unix.SignalName(v)
	}
	return fmt.Sprint(v)
}

// Reload outcomes, the action of a reloadOutcome.
const (
	reloadAdded     = "added"
	reloadRemoved   = "removed"
	reloadUnchanged = "unchanged"
	reloadApplied   = "applied"    // policy settings only, applied at once
	reloadRestarted = "restarted"  // launch settings: restarted with them
	reloadUpdated   = "updated"    // launch settings: live-updated to them
	reloadKept      = "kept"       // launch settings kept for its next start (no instance now)
	reloadLeftAlone = "left-alone" // added with `service up`, not in the file
	reloadBusy      = "busy"       // an update or a removal holds it: not applied
)

// reloadOutcome is what a reload did to one service: its label, the
// action (reloadAdded, ...) and the detail (what changed, as its line
// shows it). One value per service, made by Server.outcome.
type reloadOutcome struct {
	Label  string
	Action string
	Detail string
}

// reloadItem is an outcome with what its line waits for.
type reloadItem struct {
	out  reloadOutcome
	wait <-chan control.Reply // nil: nothing
	pid  int                  // its instance's pid before (restart, update)
}

// reloadPlan is the loop's answer to evReload.
type reloadPlan struct {
	err   error
	items []reloadItem
}

// outcome records one service's outcome of a reload: the one place each
// of them is made.
func (s *Server) outcome(plan *reloadPlan, o reloadOutcome, wait <-chan control.Reply, pid int) {
	s.log.Info("reload", "label", o.Label, "action", o.Action, "detail", o.Detail)
	s.emit(control.Event{Label: o.Label, Event: EventReloadPrefix + o.Action, Pid: pid, Detail: o.Detail})
	plan.items = append(plan.items, reloadItem{out: o, wait: wait, pid: pid})
}

// loadForReload reads and checks the config file, off the loop: the
// parser's checks, and each binary (and, for root, each user and group)
// as `service up` checks them before the loop sees them.
func (s *Server) loadForReload() ([]Spec, error) {
	if s.config == "" {
		return nil, control.Errorf(control.CodeRefused, "rs was started without --config: there is no config file to reload")
	}
	specs, err := LoadConfig(s.config)
	if err == nil {
		for _, sp := range specs {
			if err = checkBinary(sp.Binary); err == nil && own.root && sp.User != "" {
				_, err = lookupUser(sp.User)
			}
			if err == nil && own.root && sp.Group != "" {
				_, err = lookupGroup(sp.Group)
			}
			if err != nil {
				err = &ConfigError{File: sp.File, Line: sp.Line, Err: fmt.Errorf("service %q: %w", sp.Label, err)}
				break
			}
		}
	}
	if err != nil {
		return nil, control.Errorf(control.CodeInvalid, "reload: %w; nothing changed", err)
	}
	return specs, nil
}

// handleReload answers `service reload`, on the connection's goroutine:
// the file is read here, the loop applies it, and the reply waits here
// for what the loop started.
func (s *Server) handleReload(peer control.Peer) control.Reply {
	specs, err := s.loadForReload()
	reply := make(chan reloadPlan, 1)
	s.post(evReload{specs: specs, err: err, peer: peer, reply: reply})
	var plan reloadPlan
	select {
	case plan = <-reply:
	case <-s.done:
		return control.Failure(control.ErrShutdown)
	}
	if plan.err != nil {
		s.log.Warn("reload refused", "err", plan.err)
		return control.Failure(plan.err)
	}
	results := make([]*control.Reply, len(plan.items))
	deadline := time.NewTimer(reloadWait)
	defer deadline.Stop()
wait:
	for i, it := range plan.items {
		if it.wait == nil {
			continue
		}
		select {
		case r := <-it.wait:
			results[i] = &r
		case <-deadline.C:
			break wait
		case <-s.done:
			break wait
		}
	}
	pids := s.pids()
	lines := make([]string, len(plan.items))
	for i, it := range plan.items {
		lines[i] = oneLineError(it.out.Label + ": " + it.out.Detail + completion(it, results[i], pids[it.out.Label]))
		s.log.Info("reloaded", "label", it.out.Label, "result", lines[i])
	}
	if len(lines) == 0 {
		lines = append(lines, "no services in the config file, none added with service up")
	}
	return control.Reply{Message: strings.Join(lines, "\n")}
}

// pids asks the loop for every service's pid (0: none).
func (s *Server) pids() map[string]int {
	reply := make(chan control.Reply, 1)
	s.post(evRequest{req: control.Request{Op: control.OpStatus}, reply: reply, prog: make(chan string, 1)})
	out := map[string]int{}
	select {
	case r := <-reply:
		for _, st := range r.Services {
			out[st.Label] = st.Pid
		}
	case <-s.done:
	}
	return out
}

// completion is what came of an item, after its detail: r is the answer
// it waited for (nil: none came within reloadWait, or it waits for
// nothing), pid its service's pid now.
func completion(it reloadItem, r *control.Reply, pid int) string {
	if it.wait == nil {
		return ""
	}
	if r == nil {
		return fmt.Sprintf(", still under way after %v (see service status)", reloadWait)
	}
	failed := r.Err != ""
	switch it.out.Action {
	case reloadAdded:
		if failed {
			return ", not started: " + r.Err
		}
		return fmt.Sprintf(", started (pid %d)", pid)
	case reloadRemoved:
		if it.pid > 0 {
			return fmt.Sprintf(", stopped (was pid %d)", it.pid)
		}
		return ""
	case reloadRestarted:
		if failed {
			return ", restart failed: " + r.Err
		}
		if it.pid > 0 {
			return fmt.Sprintf(", restarted (pid %d -> %d)", it.pid, pid)
		}
		return fmt.Sprintf(", restarted (pid %d)", pid)
	case reloadUpdated:
		if failed {
			return "; the live update failed, it runs on with its old launch settings: " + r.Err
		}
		return fmt.Sprintf(", updated live (pid %d -> %d)", it.pid, pid)
	}
	if failed {
		return ": " + r.Err
	}
	return ""
}

// reload applies the config file's specs, on the loop (see above).
func (s *Server) reload(ev evReload) {
	answerPlan := func(p reloadPlan) { ev.reply <- p } // buffered: never blocks
	if err := s.refused(control.OpReload, ev.peer); err != nil {
		answerPlan(reloadPlan{err: err})
		return
	}
	if s.shutdown != nil {
		answerPlan(reloadPlan{err: control.ErrShutdown})
		return
	}
	if ev.err != nil {
		answerPlan(reloadPlan{err: ev.err})
		return
	}
	inFile := make(map[string]bool, len(ev.specs))
	for _, sp := range ev.specs {
		inFile[sp.Label] = true
	}
	// The table the reload makes: the file's services and the
	// operator's (added with `service up`), which stay.
	table := slices.Clone(ev.specs)
	for _, l := range s.order {
		if svc := s.services[l]; !inFile[l] && svc.spec.File == "" && s.removing[svc] == nil {
			table = append(table, svc.spec)
		}
	}
	if err := Validate(table); err != nil {
		answerPlan(reloadPlan{err: control.Errorf(control.CodeInvalid,
			"reload: %s: %w (with the services added by service up); nothing changed", s.config, err)})
		return
	}
	var plan reloadPlan
	for _, sp := range ev.specs {
		svc, ok := s.services[sp.Label]
		if !ok {
			svc = s.add(sp)
			svc.waiting = true // started by startWaiting once its dependencies run
			ch := make(chan control.Reply, 1)
			svc.upWaiters = append(svc.upWaiters, ch)
			s.outcome(&plan, reloadOutcome{Label: sp.Label, Action: reloadAdded, Detail: "added"}, ch, 0)
			continue
		}
		s.reloadService(&plan, svc, sp.withDefaults())
	}
	for _, l := range slices.Clone(s.order) {
		svc := s.services[l]
		if inFile[l] {
			continue
		}
		switch rm := s.removing[svc]; {
		case rm != nil:
			ch := make(chan control.Reply, 1)
			rm.waiters = append(rm.waiters, ch)
			s.outcome(&plan, reloadOutcome{Label: l, Action: reloadRemoved, Detail: "being removed already"}, ch, 0)
		case svc.spec.File == "":
			s.outcome(&plan, reloadOutcome{Label: l, Action: reloadLeftAlone,
				Detail: "added with service up, not in the config file: left alone"}, nil, 0)
		default:
			ch := make(chan control.Reply, 1)
			pid := 0
			if svc.primary != nil {
				pid = svc.primary.pid()
			}
			s.outcome(&plan, reloadOutcome{Label: l, Action: reloadRemoved, Detail: "removed (not in the config file)"}, ch, pid)
			s.beginRemove(svc, ch, l+" removed")
		}
	}
	s.startWaiting()
	s.stopStep()
	answerPlan(plan)
}

// reloadService applies next (with its defaults) to svc, a service the
// table and the file both have.
func (s *Server) reloadService(plan *reloadPlan, svc *service, next Spec) {
	label := svc.spec.Label
	changes := specChanges(svc.spec, next)
	adopted := svc.spec.File == "" // added with `service up`; the file has it now
	out := reloadOutcome{Label: label}
	if len(changes) == 0 {
		svc.spec.File, svc.spec.Line = next.File, next.Line
		out.Action, out.Detail = reloadUnchanged, "unchanged"
		if adopted {
			out.Detail = "unchanged; it is in the config file now"
		}
		s.outcome(plan, out, nil, 0)
		return
	}
	var policy, launch []change
	for _, c := range changes {
		if c.class == classPolicy {
			policy = append(policy, c)
		} else {
			launch = append(launch, c)
		}
	}
	var parts []string
	if len(policy) > 0 {
		parts = append(parts, policyText(policy)+" applied")
	}
	if len(launch) > 0 {
		parts = append(parts, launchText(launch))
	}
	out.Detail = strings.Join(parts, "; ")
	if adopted {
		out.Detail += " (it is in the config file now)"
	}
	// Busy: an update's commit would put back the spec it started
	// with; a service being removed is on its way out.
	var busy string
	switch {
	case svc.update != nil:
		busy = "an update is in progress; reload again once it is done"
	case s.removing[svc] != nil:
		busy = "it is being removed; it comes back at the next reload"
	}
	if busy != "" {
		out.Action, out.Detail = reloadBusy, out.Detail+": not applied: "+busy
		s.outcome(plan, out, nil, 0)
		return
	}
	svc.spec.File, svc.spec.Line = next.File, next.Line
	s.applyPolicy(svc, next, policy)
	if len(launch) == 0 {
		out.Action = reloadApplied
		s.outcome(plan, out, nil, 0)
		return
	}
	p := svc.primary
	if p == nil || svc.stopWant {
		// Down, failed, in backoff, waiting, or being taken down: the
		// next start, if any, is of the new settings; nothing starts now.
		if listenersChanged(svc.spec, next) {
			s.closeListeners(svc) // the next spawn makes the new ones
		}
		svc.spec = next
		out.Action = reloadKept
		out.Detail += fmt.Sprintf("; it is %s: they apply at its next start", svc.state())
		s.outcome(plan, out, nil, 0)
		return
	}
	pid := p.pid()
	ch := make(chan control.Reply, 1)
	why := s.noLiveUpdate(svc, next)
	if next.ReloadAction == ReloadUpdate && why == "" {
		out.Action = reloadUpdated
		s.outcome(plan, out, ch, pid)
		s.beginUpdate(svc, next, 1, DefaultMaxTime, false, ch, nil)
		return
	}
	if next.ReloadAction == ReloadUpdate {
		out.Detail += " (reload_action update: " + why + ")"
	}
	out.Action = reloadRestarted
	s.outcome(plan, out, ch, pid)
	if listenersChanged(svc.spec, next) {
		s.closeListeners(svc) // its instance has its own; the next spawn makes the new ones
	}
	svc.spec = next
	// As `service restart` does; a restart already under way starts
	// with the new settings.
	s.replyUp(svc, control.Failure(fmt.Errorf("%w: %s: restarted by reload", control.ErrFailed, label)))
	s.dropStandby(svc)
	svc.restartWaiters = append(svc.restartWaiters, ch)
	if !svc.restartWant {
		svc.restartWant = true
		s.stopInstance(p)
	}
}

// noLiveUpdate says why svc cannot be live-updated to next ("": it can).
func (s *Server) noLiveUpdate(svc *service, next Spec) string {
	switch {
	case svc.spec.Type != TypeSef || next.Type != TypeSef:
		return "a live update needs type sef"
	case svc.state() != control.StateRunning:
		return "it is " + svc.state() + ", not running"
	case listenersChanged(svc.spec, next) && (len(svc.spec.Listen) > 0 || len(next.Listen) > 0):
		return "its listen sockets change, and both instances cannot hold them"
	}
	return ""
}

// applyPolicy sets svc's policy settings that changed to next's, in its
// spec and its live instances' (their deadlines, pings and stops read
// them), with what each needs at once.
func (s *Server) applyPolicy(svc *service, next Spec, policy []change) {
	if len(policy) == 0 {
		return
	}
	nv := reflect.ValueOf(next)
	insts := []*instance{svc.primary, svc.standby}
	changed := map[string]bool{}
	for _, c := range policy {
		changed[c.key] = true
		v := nv.FieldByName(c.name)
		reflect.ValueOf(&svc.spec).Elem().FieldByName(c.name).Set(v)
		for _, inst := range insts {
			if inst != nil {
				reflect.ValueOf(&inst.spec).Elem().FieldByName(c.name).Set(v)
			}
		}
	}
	if changed["period"] || changed["ping_timeout"] || changed["probe_period"] {
		if p := svc.primary; p != nil {
			s.pingRejoin(p)
		}
	}
	if changed["standby"] {
		svc.wantStandby = next.Standby
		if next.Standby {
			s.ensureStandby(svc)
		} else {
			s.dropStandby(svc)
		}
	}
	if (changed["log_max_size"] || changed["log_keep"] || changed["log_compress"]) && svc.logFiles.Stdout != nil {
		s.setLog(svc) // the same pipes, the new rotation
	}
	if changed["failed_retry"] && svc.failed && svc.primary == nil && !svc.stopWant {
		s.disarm(svc, tRetry)
		if d := svc.spec.FailedRetry; d > 0 {
			s.arm(svc, tRetry, d)
		}
	}
}

// pingRejoin paces a running instance's pings by its new period. A ping
// it owes an answer to stays owed (its driver waits for that pong), and
// is judged by the new deadline.
func (s *Server) pingRejoin(inst *instance) {
	if inst.phase != phaseRunning || inst.reason != "" || inst.ended {
		return // not pinged now; ready() joins it later
	}
	s.pingLeave(inst)
	s.pingJoin(inst)
	if inst.pingOut && inst.pingGroup != nil {
		if d := inst.spec.pingDeadline(); d < inst.spec.pingPeriod() {
			s.arm(inst, tPing, max(0, d-s.clock.Now().Sub(inst.pingAt)))
		}
	}
}

// policyText: "period 1s -> 2s, max_restarts 10 -> 3".
func policyText(cs []change) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = fmt.Sprintf("%s %s -> %s", c.key, c.from, c.to)
	}
	return strings.Join(parts, ", ")
}

// launchText: "binary, args changed" (no values: env may hold secrets).
func launchText(cs []change) string {
	keys := make([]string, len(cs))
	for i, c := range cs {
		keys[i] = c.key
	}
	return strings.Join(keys, ", ") + " changed"
}
