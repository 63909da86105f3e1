// Package campaign is a long fault-injection run against a real rs: the
// evidence behind "rs never falls over".
//
// Run starts its own rs (a temp directory, a unix control socket, its log
// in a file there) supervising N kv services built with --allow-faults and
// tuned to come back fast (period 100ms, backoff 1ms, unlimited restarts).
// It then injects F faults drawn from a seeded PRNG: which service, which
// kind, and each fault's own random choices (delays, variants) come from
// the seed, so the same seed replays the same sequence of faults (not the
// same timing: processes race as they will).
//
// Each service has one worker that injects its faults one at a time:
// inject, then wait (bounded by Config.RecoverTimeout) until status shows
// the service running with the pid the kind calls for (a new one after a
// crash, the same one after a rolled-back update) and that pid answers a
// SET then GET of a fresh key on a new connection, with INFO naming it.
// The recovery time runs from the injection to that reply. Services are
// faulted concurrently unless Config.Sequential says otherwise.
//
// The kinds (Kind) are every kv DEBUG FAULT, a plain SIGKILL at a random
// moment, and the awkward moments: a kill while a new instance is still
// starting, a kill of the old instance while an update waits in prepare,
// a kill of the new instance during an update, a kill while the instance
// stops for a restart, updates that must roll back and updates that must
// succeed. The awkward ones are best effort: what actually happened (the
// moment hit or missed) is recorded and shown with the report.
//
// Processes are signalled through pidfds opened while the pid is checked
// to be a child of this rs, so a reused pid is never hit.
//
// The run has two phases: the first tenth of the faults is the warm-up;
// rs's own figures (fds, goroutines, RSS, heap) read at the end of it are
// compared with those at the end, when rs must also have no zombie and no
// stray child. Finally rs gets SIGTERM and must exit 0 leaving no process
// behind. The Report renders all of it as markdown.
package campaign
