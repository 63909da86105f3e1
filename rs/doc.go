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
//	        incoming  an update's new instance, until commit or rollback (update.go, group.go)
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
// # Group updates (group.go)
//
// `service update a b c` is one update struct per member, as for one
// service, joined by a group that decides for them all: every new
// instance is spawned, the members are prepared level by level
// (dependents first), each ready one held quiescent with its state, then
// the new instances are inited level by level in the other order, and
// the members commit together once every init succeeded. A member's new
// instance is held from its init to the commit (the init asks it, its
// init-result confirms it, lu-commit releases it: holder in driver.go),
// so that a rollback loses nothing it could have answered. Whatever ends
// one member's update (a timeout, a failed or crashed instance, an old
// one's death, a shutdown) calls rollback, which for a member rolls the
// whole group back. Each member still logs, emits and counts its own
// commit or rollback; its progress lines carry its label.
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
// # Updating rs itself (selfupdate.go, selfadopt.go, selftable.go)
//
// `service update-self [--binary P]` replaces rs's binary in place:
// execve keeps the pid, so the services stay rs's children and run on
// untouched. PR_SET_PDEATHSIG fires when the thread that forked a child
// ends, and execve ends every thread but its caller: so cmd/rs runs
// proc's spawner on the main thread (proc.Main), every fork and the exec
// go to it, and the main thread of every image is the parent of every
// service (TestUpdateSelf: 20 update-selfs, every pid the same).
//
// The steps: the loop checks that nothing under way would be cut in two
// (selfBlocker) and makes a first table; off the loop the new binary is
// run as `rs --check-table FD` on it (a binary that does not run, or
// cannot read this table's version, fails here: nothing changed, the
// command says why); the loop then freezes: the Mux, every notify
// reader and the log writer stop reading once what they read has reached
// the loop (the log writer writes out what it holds; the rest waits in
// the sockets and pipes), no ping goes out, requests but status are
// refused; the loop makes the final table from its own data, and the
// connection's goroutine writes it to a memfd and execs on the spawner
// thread with every fd it names kept open (FD_CLOEXEC cleared in the
// exec path only, forks held off meanwhile). A failed exec thaws.
//
// The table (Table, msgpack, version TableVersion; another version is
// refused) holds each service's spec and the policy's memory (failed,
// restarts, history, last_exit), its fd store, its listen sockets, its
// log pipes (both ends of stdout and stderr), and its running primary:
// pid and cgroups (proc.Held), its channel and the sef driver's sequence
// (ping seq, a ping out), or its notify socket; and rs's own control
// socket and metrics listener (Options.Carry), the notify sockets' seq,
// rs's start time, the client's token. The new rs (Adopt, before its
// Run and its orphan reaper) takes each instance over by pidfd_open and
// waits on it with waitid(P_PIDFD) in its own goroutine as a spawn does,
// adds its channel to the Mux, reads on its log pipes, and pings it; an
// instance that is no child any more (it ended in the exec's window)
// starts again as after a crash. The client's connection ends with the
// exec; `service update-self` asks the rs on the same socket what came
// of its token (OpUpdateSelfResult) and prints it.
//
// Refused before the exec, nothing changed (one line, CodeBusy): a live
// update, a standby (unclone it), an instance starting, stopping,
// reloading or killed, a service in backoff, one failed or down whose
// listeners are paused, a command waiting on a service (up, down,
// restart, clone), a hook running, a removal, a shutdown, a notify
// service's MAINPID=, a log whose mode changed and is still read.
//
// Rollback: a binary that fails --check-table changes nothing. A new rs
// that passes it but then cannot read or adopt the table execs the old
// binary (an fd of it crossed the exec: whatever is at its path now)
// with the same table and $RS_SELF_ROLLBACK; the old rs adopts it and
// the command fails with the reason. Not protected: a new binary that
// passes --check-table and then dies or hangs before it adopts (its
// exit is the process's: the services die by PDEATHSIG, or wait for
// it); an old binary that cannot take its own table back. What is lost
// at the exec: the `service events` and `logs -f` connections (the
// command asks the new rs again, control.ErrClosed; events meanwhile
// are not sent, log lines are, from the files), a probe of a simple
// service under way (the next ping probes again), hooks' and checks'
// os/exec children.
//
// A panic in the loop (panic.go): handleSafe recovers it, logs it with
// its stack, and rs re-execs its own binary (through its fd of it) with
// the table, as update-self does but without --check-table; refused (as
// above) or failed, rs goes on with the loop. The fault hook that tests
// it (SIGUSR2 panics the loop) is compiled only with -tags rsfault.
//
// rs runs on one P (cmd/rs): the loop is the work, and a second P only
// adds wake-ups between rs's own threads.
package rs
