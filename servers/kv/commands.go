package main

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// engine is the store and the commands that act on it. Only the main loop
// touches it, so the map needs no lock: that single owner is what lets
// sef's pings measure whether kv is really serving.
type engine struct {
	data        *store
	allowFaults bool // DEBUG FAULT is refused without --allow-faults
	standalone  bool // no rs channel: the channel faults cannot work
	meta        *meta
	processed   int64 // commands run, for INFO
}

// meta is what INFO reports about the process rather than the data.
type meta struct {
	version  string
	label    string
	initType string // fresh, restart or live-update
	restarts int
	pid      int
	started  time.Time
	now      func() time.Time // injected so tests control uptime
	conns    *connStats
	blocked  func() int // requests parked in DEBUG SLEEP (main loop only)
}

func newEngine(allowFaults, standalone bool, m *meta) *engine {
	return &engine{data: newStore(), allowFaults: allowFaults, standalone: standalone, meta: m}
}

// effectKind says what the main loop must do after a command that cannot
// complete inside exec.
type effectKind int

const (
	effNone  effectKind = iota // the reply is in the buffer
	effSleep                   // DEBUG SLEEP: reply +OK after effect.sleep
	effFault                   // DEBUG FAULT: reply +OK, then commit effect.fault
)

type effect struct {
	kind  effectKind
	sleep time.Duration
	fault string
}

// command is one entry of the table. arity counts the command name, as
// Redis does: n means exactly n arguments, -n at least n.
type command struct {
	arity int
	run   func(e *engine, args []string, out []byte) ([]byte, effect)
}

var commands = map[string]command{
	"ping":     {-1, (*engine).ping},
	"echo":     {2, (*engine).echo},
	"set":      {-3, (*engine).set},
	"get":      {2, (*engine).get},
	"del":      {-2, (*engine).del},
	"exists":   {-2, (*engine).exists},
	"incr":     {2, (*engine).incr},
	"dbsize":   {1, (*engine).dbsize},
	"flushall": {-1, (*engine).flushall},
	"info":     {-1, (*engine).info},
	"config":   {-2, (*engine).config},
	"debug":    {-2, (*engine).debug},
}

// maxNameLen is the longest command name; longer names are unknown
// without a lookup.
const maxNameLen = 16

// exec runs one request and appends its reply to out, unless it returns
// an effect other than effNone, in which case the main loop finishes it.
func (e *engine) exec(args []string, out []byte) ([]byte, effect) {
	e.processed++
	name := args[0]
	// Case-insensitive lookup without allocating: fold into a small array;
	// a map index by string(bytes) does not copy.
	var lower [maxNameLen]byte
	if len(name) > maxNameLen {
		return unknownCommand(out, name), effect{}
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	cmd, ok := commands[string(lower[:len(name)])]
	if !ok {
		return unknownCommand(out, name), effect{}
	}
	if cmd.arity > 0 && len(args) != cmd.arity || cmd.arity < 0 && len(args) < -cmd.arity {
		return wrongArgs(out, string(lower[:len(name)])), effect{}
	}
	return cmd.run(e, args, out)
}

func unknownCommand(out []byte, name string) []byte {
	const max = 64
	if len(name) > max {
		name = name[:max] + "..."
	}
	return appendError(out, "ERR unknown command '"+name+"'")
}

func wrongArgs(out []byte, name string) []byte {
	return appendError(out, "ERR wrong number of arguments for '"+name+"' command")
}

const errSyntax = "ERR syntax error"

func (e *engine) ping(args []string, out []byte) ([]byte, effect) {
	switch len(args) {
	case 1:
		return appendSimple(out, "PONG"), effect{}
	case 2:
		return appendBulk(out, args[1]), effect{}
	}
	return wrongArgs(out, "ping"), effect{}
}

func (e *engine) echo(args []string, out []byte) ([]byte, effect) {
	return appendBulk(out, args[1]), effect{}
}

func (e *engine) set(args []string, out []byte) ([]byte, effect) {
	// Redis's options (EX, NX, ...) are not supported; saying so beats
	// silently ignoring them.
	if len(args) > 3 {
		return appendError(out, errSyntax), effect{}
	}
	e.data.set(args[1], args[2])
	return appendSimple(out, "OK"), effect{}
}

func (e *engine) get(args []string, out []byte) ([]byte, effect) {
	v, ok := e.data.get(args[1])
	if !ok {
		return appendNull(out), effect{}
	}
	return appendBulk(out, v), effect{}
}

func (e *engine) del(args []string, out []byte) ([]byte, effect) {
	var n int64
	for _, k := range args[1:] {
		if e.data.del(k) {
			n++
		}
	}
	return appendInt(out, n), effect{}
}

func (e *engine) exists(args []string, out []byte) ([]byte, effect) {
	// A key named twice counts twice, as in Redis.
	var n int64
	for _, k := range args[1:] {
		if _, ok := e.data.get(k); ok {
			n++
		}
	}
	return appendInt(out, n), effect{}
}

func (e *engine) incr(args []string, out []byte) ([]byte, effect) {
	var n int64
	if v, ok := e.data.get(args[1]); ok {
		var valid bool
		n, valid = parseInt([]byte(v))
		// Only the canonical spelling counts as an integer ("007" and
		// "-0" do not), so INCR never rewrites a value's form silently.
		if !valid || strconv.FormatInt(n, 10) != v {
			return appendError(out, "ERR value is not an integer or out of range"), effect{}
		}
	}
	if n == math.MaxInt64 {
		return appendError(out, "ERR increment or decrement would overflow"), effect{}
	}
	n++
	e.data.set(args[1], strconv.FormatInt(n, 10))
	return appendInt(out, n), effect{}
}

func (e *engine) dbsize(args []string, out []byte) ([]byte, effect) {
	return appendInt(out, int64(e.data.len())), effect{}
}

func (e *engine) flushall(args []string, out []byte) ([]byte, effect) {
	// ASYNC and SYNC are accepted for compatibility; both are immediate.
	if len(args) > 2 || len(args) == 2 && !strings.EqualFold(args[1], "async") && !strings.EqualFold(args[1], "sync") {
		return appendError(out, errSyntax), effect{}
	}
	e.data.clear()
	return appendSimple(out, "OK"), effect{}
}

func (e *engine) config(args []string, out []byte) ([]byte, effect) {
	// kv has no settings; an empty answer is what redis-benchmark needs
	// for its start-up CONFIG GET save / appendonly.
	if !strings.EqualFold(args[1], "get") {
		return appendError(out, "ERR unknown subcommand '"+args[1]+"'. Try CONFIG GET."), effect{}
	}
	if len(args) < 3 {
		return wrongArgs(out, "config|get"), effect{}
	}
	return appendArrayLen(out, 0), effect{}
}
