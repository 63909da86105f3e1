// Package rs is the reincarnation server's policy: the service table, the
// loop that owns it, and the config file. The control protocol is package
// rs/control; the wire to the services is package msg.
//
// # The loop
//
// One goroutine (Server.Run) owns the table. Everything else reaches it
// as an event (events.go, a sealed interface): a control request, a
// process started or reaped, a pass of the Mux over every channel, a
// timer. Handlers never block: a process is started by its instance's own
// goroutine (spawn.go), an fd a service handed over is closed off the
// loop, rs's own log lines go through a LogQueue, /proc is read by the
// Mux's goroutine or the control connection's, and so are the services'
// log files for `service logs` (logread.go: the loop only says which
// labels and where). Every timer goes through
// one mechanism with one staleness check (timer.go).
//
// # An instance's life (lifecycle.go)
//
// An instance is one process of a service. Its role says what it is to
// the service; its phase how far it has come. Each event has one function
// that moves them:
//
//	                 spawnInstance
//	                       |
//	                   spawning --(could not start)-----------------.
//	                       | onSpawned                              |
//	                    spawned --(giveInit: a primary at once)--.  |
//	                       | hello                               |  |
//	                     hello ---(giveInit: a standby taking    |  |
//	                       |       over, an update's new one     |  |
//	                       |       once the state is ready)      v  |
//	                       '--------------------------------> initing
//	                                                             | init succeeded
//	                                                          running
//	   stopInstance / dropInstance (from any phase) -> stopping     |
//	   fault (from any phase): reason set, process killed           |
//	                                                                v
//	   channel ended + process reaped (or one and its grace) ---> gone
//
//	roles:  primary   the service's instance; its phase gives the state
//	        standby   exec'd, waits in hello for a restart init (standby.go)
//	        incoming  an update's new instance, until commit or rollback (update.go)
//	        retired   replaced (commit, a standby's take-over) or dropped; only its end is left
//
// At gone, exitOutcome (policy.go, a pure function with a table test)
// says what the end means from the role, the phase it ended in, whether
// rs killed it, the exit and the restart policy: roll the update back,
// start another standby, fill in last_exit, answer a stop, fail a first
// start, stay down, or reincarnate with the backoff.
//
// The end of an instance is two events: its channel ended (from the Mux)
// and its process reaped (from its goroutine). It is gone when both came,
// so the loop always sees a service's last packets before its death; or
// when one came and its grace passed: a channel that closed while the
// process lives is a fault after 100ms, a reaped process whose channel
// does not end is gone after a second. When the channel ends first and
// /proc shows the process exiting, a ready standby takes over at once.
//
// A service's state (service.go) is derived, not stored: updating while
// an update runs, else from its primary's phase (starting, running,
// stopping), else from the policy's memory (failed, backoff, waiting for
// its dependencies, down).
//
// # Watching (observe.go)
//
// The loop tells its watchers (`service events`, metrics, hooks) of each
// step in a service's life as a control.Event, with s.emit, next to the
// step's log line. emit never waits: each watcher has a buffer, and one
// that reads too slowly misses events, counted in the next it gets.
//
// # Hooks (hooks.go)
//
// on_failure and on_exit are decided on the loop where the failure and
// the exit are (markFailed, primaryGone, once the policy has decided)
// and run by a goroutine per run: the fork (startHook, through proc),
// the wait within hook_timeout, the kill of its group past it, and the
// close of its dups of the log pipes. One runs per service, one more
// waits; the service keeps its log pipes meanwhile, and Run returns only
// once every running hook has ended.
//
// # The protocol seam (driver.go)
//
// The lifecycle speaks of hello, ready, alive, fds stored, state handed
// over; a driver turns that into one protocol. The sef driver
// (sefdriver.go) is the msg channel; the notify driver (notifydriver.go,
// `type = "notify"`) is systemd's sd_notify: a datagram socket per
// instance read by a goroutine of its own, which checks each sender's
// credentials (and reads /proc for them) off the loop and posts what is
// the service's as evNotify; its lifecycle side is notifylife.go. The
// simple driver (simpledriver.go, type simple) has no wire: its
// goroutine makes up hello at once, ready when the `ready` check
// (check.go) succeeds, and answers each ping with one try of the
// `probe`, posting them to the loop as evSignal; every check runs in
// that goroutine, never on the loop, one at a time. Pinging (ping.go): instances with the same period share one
// timer cut into up to four slots; a round trip ends at the kernel's
// timestamp of the pong.
//
// # Live update (update.go, precopy.go)
//
// `service update` spawns the new instance first (role incoming); on its
// hello the old one is asked to prepare (lu-prepare, with maxtime on
// tUpdate); at its lu-ready the new one gets its init with the old
// one's state and fds; its init result commits (the old one is stopped)
// or rolls back (the new one is killed, the old one resumes). With
// pre-copy (both hellos said so), updateHello makes a pipe (pipe2,
// O_CLOEXEC, grown to 1 MiB with F_SETPIPE_SZ: cheap syscalls on the
// loop), hands the read end to the new instance (lu-base) and the write
// end to the old one with lu-prepare, and closes its own ends off the
// loop. rs never reads the pipe. While the base streams, tUpdate is the
// base's bound (baseTime: MinBaseTime, 60s, or 30 maxtimes); at
// lu-base-done it is re-armed with maxtime, which bounds the pause, and
// the progress lines say how much base went across. Failures are the
// same rollbacks as without it: the new instance dying breaks the pipe
// and the old one refuses the update, and a rollback's lu-cancel ends
// the old one's stream. The commit's log line splits the time into
// start, base, prepare and init.
//
// # Fds a service hands rs (lifecycle.go)
//
// One budget holds on every path. A service's fd store keeps at most
// msg.MaxStoredFDs (64) names, whether its instance stores them or an
// update's new one does (its store is the one it was given in its init
// with what it stores on top, each name counted once; it replaces the old
// store at the commit). Everything rs holds for a service at once (its
// store, an update's new entries, the state and fds handed over at
// lu-ready, and its fds still being closed off the loop) stays within
// fdBudget, msg.MaxFDs (253): what one init can carry, so the store and a
// hand-over always fit the new instance's init. A packet that would take
// a service over either bound makes its sender faulty, with the reason in
// last_exit; its fds are closed. sef refuses the same on its side
// (StoreFD, StateWriter.AddFD), so a service built on it is told by an
// error, not a kill.
//
// rs's own soft RLIMIT_NOFILE: Go's runtime raises it to the hard limit
// (less one) before main, and gives the processes it starts the soft
// limit rs was started with (syscall.StartProcess, proc's path). rs must
// not call setrlimit(RLIMIT_NOFILE) itself, or its services would inherit
// the raised limit (TestNofileLimits).
//
// # What a process gets at its exec (launch.go)
//
// For every type: the sockets of `listen`, made by a service's first
// spawn in its goroutine and adopted by the loop with evSpawned, held in
// service.listeners (in rs's fd budget) until `down` or an `up` that
// changes them, paused like the fd store's listeners while the service
// is failed or down (listeners.go); each spawn gets its own dups (made on
// the loop, one fcntl each) at fd 3, 4, ... with LISTEN_FDS,
// LISTEN_FDNAMES and LISTEN_PID (written by proc at the exec stop), and
// a sef instance's init carries them too, under their names, after its
// fd store; its channel is the fd after them. The credentials (the user
// database), env_file and the workdir are read in the spawn's goroutine.
// The environment's order is in launch.go. `service signal` sends to the
// primary's main process alone.
//
// # One Spec path (validate.go)
//
// The config file (config.go) and `service up` both make a Spec with
// Spec.Apply of a control.Patch, and both check the table it would make
// with Validate. down and shutdown stop in dependency order (stop.go).
//
// # Reload and removal (reload.go, remove.go)
//
// `service reload` and SIGHUP read the config file off the loop; the
// loop gets the specs and applies the difference at once, each changed
// setting by its class (reloadClass, one table): policy settings are
// set in the service's spec and its live instances', launch settings
// restart it (or live-update it, reload_action = "update"). One
// reloadOutcome per service is made in one place (Server.outcome); the
// reply waits on the connection's goroutine. `service remove` takes a
// service down and forgets it once none of its instances is left.
//
// # Service output (package logs)
//
// Each service's stdout and stderr are pipes of package logs, made at
// its first spawn (setLog) and handed to every instance it starts: the
// same pipes across restarts, standbys and updates. A service left down
// or failed with no instance at all gives them back (releaseLog: what
// they hold is written first), so a down service holds no fds. logs' one goroutine reads
// them into LOGDIR/<label>.log; the loop only sends it messages (Add,
// Ended when an instance is reaped and no other of its service lives,
// Reopen) and reads its Status for log_error, none of which waits on
// I/O. No service gets rs's own fds 0-2.
//
// rs runs on one P (cmd/rs): the loop is the work, and a second P only
// adds wake-ups between rs's own threads.
package rs
