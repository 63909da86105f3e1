// Package rs is the reincarnation server's policy: the service table, the
// loop that owns it, the config file and the control protocol.
//
// One goroutine (Server.Run) owns the table. Everything else reaches it
// as an event on one channel: a control request (control.go), a batch of
// packets from the services (below), a process's exit, a timer. Handlers
// never block; whatever waits (a stop's grace, a client's reply) waits in
// its own goroutine or as a timer and comes back as an event.
//
// Reading the services. One msg.Mux reads every instance's channel from
// one goroutine and posts what one pass found as one event, so a burst
// of a thousand pongs costs a few wake-ups, not a thousand. The channel's
// last event (EOF, or a malformed packet) closes the instance's readDone;
// the process's exit is posted only after it, so the loop always sees a
// service's last packets before its death.
//
// Pinging (ping.go). Instances with the same period share one timer; the
// period is cut into up to four slots and each instance joins the least
// filled. A round trip ends at the kernel's timestamp of the pong
// (SO_TIMESTAMPNS), so it measures the service, not rs's own queue.
//
// Crashes (server.go). An exit is judged (reason, restart policy,
// backoff, rate limit) and the service reincarnated: a new process with
// the restart init and the fd store, or the warm standby (standby.go).
// A standby takes over as soon as the dying instance's channel closes and
// /proc says the process is exiting, a few hundred microseconds before
// the reap could say so; the exit, once reaped, fills in last_exit.
//
// Live update (update.go). The new binary is started first and asked to
// init only once the old instance has reached its safe state and handed
// over its state and fds; any failure of the new one before it runs
// resumes the old one.
//
// rs runs on one P (cmd/rs): the loop is the work, and a second P only
// adds wake-ups between rs's own threads.
package rs
