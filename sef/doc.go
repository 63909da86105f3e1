// Package sef is the System Event Framework: the part of rs that lives in
// every service. A service registers callbacks, calls Startup, and then
// loops on Receive, which returns the service's own work and handles
// system events (pings, stop, signals, a live update's steps) in
// between, as MINIX's sef_receive does. Because pings are answered from
// that one receive point, a service whose main loop is stuck stops
// answering, and rs reincarnates it.
//
// A service's own goroutines (acceptors, connection readers, timers) hand
// work to the main loop with Post; only the main loop touches the
// service's state, so the state needs no locks and a live update can find
// it quiescent.
//
//	func main() {
//		ctx := context.Background()
//		s, err := sef.Startup(ctx, sef.Callbacks{}, sef.WithLogger(logger))
//		if err != nil {
//			log.Fatal(err) // rs has been told; exit non-zero
//		}
//		ln, err := s.Listen("tcp", ":7070") // rs's copy if it holds one
//		if err != nil {
//			log.Fatal(err)
//		}
//		go acceptLoop(ctx, s, ln) // posts each request with s.Post
//		for {
//			w, err := s.Receive(ctx)
//			if errors.Is(err, sef.ErrStopped) {
//				return // graceful stop: exit 0 (errors.As gives the cause)
//			}
//			serve(w.(request))
//		}
//	}
//
// Waits take a context.Context: Startup's wait for rs's init, Receive,
// and Post (which blocks while the queue is full). Once the instance
// stops, Receive and Post return a *StopError that says why (CauseRS:
// rs's stop; CauseSignal; CauseStop: the service called Stop;
// CauseChannelLost: rs died) and satisfies errors.Is(err, ErrStopped);
// Done is closed then. A failed init makes Startup return an error
// wrapping ErrInit. sef logs through slog.Default() with the label
// added, or through the WithLogger option's logger.
//
// # Files
//
// One rule for every fd across sef's API: files sef hands you are yours,
// and files you hand sef are duplicated, so you keep yours. Init.FDs and
// Init.State.FDs are the callee's to close; StoreFD, StateWriter.AddFD
// and AddConn send copies and leave the caller's file or connection
// open (close it when you like: on a rollback you go on using it); the
// listener Listen returns is the caller's, and closing it leaves rs's
// copy, with its backlog, open.
//
// Listen(network, addr) is the common case of the fd store: it returns
// the listener rs holds for this service (stored by an earlier
// instance's Listen, or one of the config's `listen` sockets bound to
// addr) or opens one and stores it, so that clients wait in the
// backlog, never refused, across crashes, restarts and updates. The
// sockets Listen manages are not in Init.FDs.
//
// Callbacks and their defaults (nil field = default), after MINIX's SEF:
//
//	InitFresh       nothing to do, success
//	InitRestart     InitFresh (the fd store comes back in Init.FDs)
//	InitLiveUpdate  InitFresh, then LUStateRestore (restore the saved state)
//	LUStateRestore  nothing
//	Ping            answer pong
//	Signal          SIGTERM, SIGINT and rs's stop: Receive returns ErrStopped
//	LUStateIsValid  the standard states 1 to 3
//	LUStateChanged  nothing
//	LUPrepare       always ready (work-free holds at the top of the loop)
//	LUStateDump     nothing
//	LUReadyPre      no veto
//	LUStateSave     nothing to save
//	LUBaseStart     none: no pre-copy (both it and LUBaseLoad, or neither)
//	LUBaseLoad      none
//
// # Live update
//
// `service update` starts the new binary first; its sef says hello and
// waits for init. Then rs sends the running instance lu-prepare with a
// state and a maxtime. sef checks the state with LUStateIsValid (an
// unsupported state fails the update at once), tells LUStateChanged(0, N),
// calls LUStateDump, and from then on asks LUPrepare on the main loop
// whether the state is reached: at once, then at the top of every pass of
// Receive (after each work item and each system event), and whenever a
// goroutine calls s.Reached. The service keeps working meanwhile, as
// MINIX's processes do until they can check in. Readiness that changes
// outside the main loop (a connection goroutine parked, a counter of
// requests in flight fell to zero) must be pushed with s.Reached: with
// pings off (`period = "0s"`) nothing else may wake the loop, and the
// update would fail with "prepare timed out". States: 1 work-free (the
// top of the receive loop itself), 2 request-free (no request accepted
// and not yet answered), 3 protocol-free (no multi-message exchange
// open), 4 and up the service's own.
//
// Once ready, LUReadyPre may veto; otherwise LUStateSave writes the state
// into a memfd (a *StateWriter, an io.Writer that can also carry copies
// of fds: open client connections, say, with AddConn) and sef hands both
// to rs. The instance is then quiescent: Receive returns no work, only
// rs's verdict is awaited. On
// commit rs stops it (Receive returns ErrStopped; the new instance has its
// own copies of every fd, so closing them here disturbs nothing). On
// rollback (the new version failed, or maxtime passed) rs sends lu-cancel:
// LUStateChanged(N, 0) is called and work resumes exactly where it
// stopped. In the new instance, Init.State reads the saved bytes and
// Init.State.FDs holds the handed-over fds. A new version with neither
// InitLiveUpdate nor LUStateRestore does not take the state: its
// init-result says so, and rs rolls the update back rather than lose the
// state, unless `service update --discard-state` was given (then sef
// closes the handed-over fds nobody took). The same holds for a non-empty
// fd store and a new version with no init callback at all (the sockets
// Listen manages do not count: Listen takes them after Startup). A
// sketch:
//
//	sef.Callbacks{
//		LUStateChanged: func(s *sef.Service, old, state int) {
//			if old == 0 { pauseReaders() } else if state == 0 { resumeReaders() }
//		},
//		LUPrepare:   func(*sef.Service, int) bool { return allReadersPaused() },
//		LUStateSave: func(_ *sef.Service, w *sef.StateWriter) error {
//			return gob.NewEncoder(w).Encode(state)
//		},
//		InitLiveUpdate: func(s *sef.Service, in sef.Init) error {
//			return gob.NewDecoder(in.State).Decode(&state)
//		},
//	}
//
// Held until the commit: in a group update (`service update a b c`) rs
// asks each member's new instance, in its init, to hold until every
// member's init succeeded. sef's init-result says it holds; then, until
// rs's lu-commit, Receive delivers no work (pings and signals are
// handled), the listeners Listen returns accept nothing and s.Committed()
// stays open. If the group rolls back, rs kills the held instance: it has
// answered nothing, and what clients sent meanwhile waits in the kernel
// for the old instance, which kept its own copies of every socket. At
// lu-commit Committed is closed and all of it serves. A service with
// readers of its own (connections handed over in the state, a socket
// from Init.FDs) waits on Committed (and Done) before it reads them;
// sef/handoff does it with HoldUntil. If the channel to rs ends while
// held (rs died), the service stops as ever, Committed still open. A
// single-service update, a restart and a fresh start are not held:
// Committed is closed from the start.
//
// Network services need not write the parking themselves: package
// sef/handoff parks the acceptor and the connection goroutines at the
// safe point and hands the open connections, with the bytes read and not
// yet used, to the new instance; sef/sefhttp does all of it for an
// http.Server.
//
// # Pre-copy: a hand-off whose pause does not grow with the state
//
// The one-shot save above runs while clients wait: a state of a million
// keys is saved and loaded in the pause. Pre-copy (after the live
// migration of virtual machines, Clark et al., NSDI 2005) moves the bulk
// before the pause. A service that sets LUBaseStart and LUBaseLoad (both;
// its hello says so) gets, when both instances of an update have them,
// a pipe from rs: the write end with lu-prepare in the old instance, the
// read end in the new one while it waits in hello for its init.
//
//   - Old instance: LUBaseStart(state) begins a snapshot; from then on
//     the service records every change (for kv: each key written or
//     deleted, and FLUSHALL as a reset). sef calls the returned BaseStep
//     on the main loop between work items (work goes first: a step runs
//     when no work waits, or once the loop has spent twice the last step
//     on work since), and queues what it writes for a goroutine that
//     writes the pipe, so the main loop never blocks on it. Once the
//     step says done and the new instance has read the pipe empty, sef
//     closes its end, sends lu-base-done and only then calls
//     LUStateChanged(0, state) and asks LUPrepare, as without pre-copy.
//     LUStateSave then finds w.Delta() true and writes only what changed
//     since LUBaseStart.
//   - New instance: sef runs LUBaseLoad in a goroutine on the stream as
//     soon as it comes, while the old instance serves: on one CPU, and
//     paced to half of it (before each read that waits on the pipe it
//     sleeps as long as it worked), so that the old instance and its
//     clients keep the rest; what is already read is loaded at once, so
//     the end of the load, which falls in the pause, is never paced. The
//     load runs at a GC percent of 400 (unless the service's is off or
//     higher), put back once the init has answered: at the default 100 a
//     load that grows the heap from nothing collects each time it doubles,
//     the last time just before the pause. If the heap is by then near
//     the goal the old percent gives (no collection since the load grew
//     it), the old percent comes back only after the next collection, so
//     that putting it back does not start one as the new instance begins
//     to serve. At a
//     live-update init sef waits for the load to end, then runs the init
//     with the delta in Init.State (Init.State.Delta set). A load that
//     fails, or a stream that is malformed, fails the init.
//   - A rollback at any point (lu-cancel, a step's error, the new
//     instance gone: the pipe breaks) ends the stream and calls
//     LUStateChanged(state, 0): drop the snapshot and the record of
//     changes there, and work goes on where it was.
//
// The stream is framed by sef ("sefbase", a version byte, frames of at
// most 1 MiB, an end marker with the byte count) and is hostile: a bad
// header, version, frame size, count, an early end or bytes after the
// end are errors, never a panic. A service without the callbacks behaves
// exactly as before: it never says it can, so rs sends no pipe (and a sef
// given one anyway closes it and saves the whole state). maxtime counts
// from lu-base-done: it bounds the pause, not the base; rs bounds the
// base by itself (rs.MinBaseTime, or 30 maxtimes if longer).
//
// The fd store: StoreFD hands rs a copy of an fd (a listening socket,
// say) once; rs keeps it across crashes and restarts and gives it back in
// Init.FDs, so clients wait in the socket's backlog while the service is
// reincarnated instead of being refused.
//
// # Testing
//
// Package seftest is a fake rs: it runs a Service in the test's process
// and drives its callbacks (init fresh, restart or live update with a
// state, held until Commit or not; ping; prepare to a state, with a
// pre-copy base or without; cancel, stop) with no processes
// (Example_preCopy). The
// fault-injection helpers rs's own tests use live in internal/sefdebug,
// out of this API.
//
// Standalone: with no channel in the environment ($RS_CHANNEL_FD unset),
// Startup runs the fresh init callback and the service works alone, with
// no pings and no updates; SIGTERM and SIGINT still stop it gracefully.
//
// If the channel to rs breaks (rs died), Receive returns ErrStopped
// (ErrChannelLost too): a service never runs unsupervised.
package sef
