// Package sefdebug holds sef's fault-injection helpers, out of sef's
// public API: only this module's services (kv's DEBUG FAULT) and tests
// use them. sef fills the hooks in at init, so importing sef is enough.
package sefdebug

// Hooks sef installs; each takes a *sef.Service as its argument. A
// standalone service has no channel, so both do nothing and return nil.
var (
	// Garbage sends rs a malformed packet: rs must treat the service as
	// faulty and reincarnate it.
	Garbage func(s any) error
	// CloseChannel closes the channel to rs from the main loop. The
	// service carries on, unsupervised; rs reincarnates it.
	CloseChannel func(s any) error
)
