package main

import (
	"math"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// faultKinds are DEBUG FAULT's kinds; true marks those that act on the rs
// channel and so mean nothing when kv runs standalone.
var faultKinds = map[string]bool{
	"panic":     false,
	"exit":      false,
	"kill":      false,
	"abort":     false,
	"hang":      false,
	"spin":      false,
	"stop":      false,
	"garbage":   true,
	"closechan": true,
}

// maxSleepSeconds keeps DEBUG SLEEP's seconds convertible to a Duration.
const maxSleepSeconds = float64(math.MaxInt64 / int64(time.Second))

func (e *engine) debug(args []string, out []byte) ([]byte, effect) {
	switch strings.ToLower(args[1]) {
	case "sleep":
		return e.debugSleep(args, out)
	case "fault":
		return e.debugFault(args, out)
	}
	return appendError(out, "ERR unknown subcommand '"+args[1]+"'. Try DEBUG SLEEP or DEBUG FAULT."), effect{}
}

// debugSleep parses DEBUG SLEEP <seconds>. The sleep itself is the main
// loop's business: it must go on serving other clients meanwhile.
func (e *engine) debugSleep(args []string, out []byte) ([]byte, effect) {
	if len(args) != 3 {
		return wrongArgs(out, "debug|sleep"), effect{}
	}
	secs, err := strconv.ParseFloat(args[2], 64)
	if err != nil || math.IsNaN(secs) || secs < 0 || secs > maxSleepSeconds {
		return appendError(out, "ERR value is not a valid number of seconds"), effect{}
	}
	d := time.Duration(secs * float64(time.Second))
	if d <= 0 {
		return appendSimple(out, "OK"), effect{}
	}
	return out, effect{kind: effSleep, sleep: d}
}

func (e *engine) debugFault(args []string, out []byte) ([]byte, effect) {
	if !e.allowFaults {
		return appendError(out, "ERR DEBUG FAULT is disabled; start kv with --allow-faults"), effect{}
	}
	if len(args) != 3 {
		return wrongArgs(out, "debug|fault"), effect{}
	}
	kind := strings.ToLower(args[2])
	needsChannel, ok := faultKinds[kind]
	if !ok {
		return appendError(out, "ERR unknown fault kind '"+args[2]+"' (want one of "+faultList()+")"), effect{}
	}
	if needsChannel && e.standalone {
		return appendError(out, "ERR fault '"+kind+"' needs an rs channel; kv runs standalone"), effect{}
	}
	return out, effect{kind: effFault, fault: kind}
}

func faultList() string {
	kinds := make([]string, 0, len(faultKinds))
	for k := range faultKinds {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	return strings.Join(kinds, ", ")
}

// commitFault makes kv fail the way kind says. It runs on the main loop,
// after the +OK has reached the client, so a test sees the reply and
// then the failure. The kinds that can return (stop once continued,
// garbage, closechan) leave kv running; rs is expected to notice.
func (srv *server) commitFault(kind string) {
	srv.log.Warn("committing injected fault", "kind", kind)
	self := os.Getpid()
	switch kind {
	case "panic":
		panic("kv: DEBUG FAULT panic")
	case "exit":
		os.Exit(3)
	case "kill":
		syscall.Kill(self, syscall.SIGKILL)
		select {} // the signal is on its way; do not run another command
	case "abort":
		// With traceback "crash" the runtime, after printing the stacks,
		// re-raises SIGABRT with the default action, so the process dies
		// by the signal instead of exiting with status 2.
		debug.SetTraceback("crash")
		syscall.Kill(self, syscall.SIGABRT)
		select {}
	case "hang":
		// Other goroutines (acceptor, connections, sef) stay alive, so the
		// runtime does not call this a deadlock: the main loop just stops
		// receiving, and with it the answers to pings.
		select {}
	case "spin":
		// Busy on purpose: a live but useless main loop. Async preemption
		// keeps the other goroutines running.
		//lint:ignore SA5002 the empty loop is the fault
		for {
		}
	case "stop":
		syscall.Kill(self, syscall.SIGSTOP)
	case "garbage":
		if err := srv.svc.DebugGarbage(); err != nil {
			srv.log.Error("injecting garbage", "err", err)
		}
	case "closechan":
		if err := srv.svc.DebugCloseChannel(); err != nil {
			srv.log.Error("closing the rs channel", "err", err)
		}
	}
}
