// Package sef is the System Event Framework: the part of rs that lives in
// every service. A service registers callbacks, calls Startup, and then
// loops on Receive, which returns the service's own work and handles
// system events (pings, stop, signals) in between, as MINIX's sef_receive
// does. Because pings are answered from that one receive point, a service
// whose main loop is stuck stops answering, and rs reincarnates it.
//
// A service's own goroutines (acceptors, connection readers, timers) hand
// work to the main loop with Post; only the main loop touches the
// service's state, so the state needs no locks and a live update can find
// it quiescent.
//
//	func main() {
//		s, err := sef.Startup(sef.Callbacks{
//			InitFresh: func(s *sef.Service, in sef.Init) error {
//				ln, err := listen(in.FDs["listener"]) // reuse the stored listener
//				if err != nil {
//					return err
//				}
//				go acceptLoop(s, ln) // posts each request with s.Post
//				return nil
//			},
//		})
//		if err != nil {
//			log.Fatal(err) // rs has been told; exit non-zero
//		}
//		for {
//			w, err := s.Receive()
//			if errors.Is(err, sef.ErrStopped) {
//				return // graceful stop: exit 0
//			}
//			serve(w.(request))
//		}
//	}
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
//
// # Live update
//
// `service update` starts the new binary first; its sef says hello and
// waits for init. Then rs sends the running instance lu-prepare with a
// state and a maxtime. sef checks the state with LUStateIsValid (an
// unsupported state fails the update at once), tells LUStateChanged(0, N),
// calls LUStateDump, and from then on asks LUPrepare at the top of every
// Receive whether the state is reached; the service keeps working
// meanwhile, as MINIX's processes do until they can check in. States: 1
// work-free (the top of the receive loop itself), 2 request-free (no
// request accepted and not yet answered), 3 protocol-free (no
// multi-message exchange open), 4 and up the service's own.
//
// Once ready, LUReadyPre may veto; otherwise LUStateSave writes the state
// into a memfd (a *StateWriter, which can also carry fds: open client
// connections, say) and sef hands both to rs. The instance is then
// quiescent: Receive returns no work, only rs's verdict is awaited. On
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
// fd store and a new version with no init callback at all. A sketch:
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
// The fd store: StoreFD hands rs a copy of an fd (a listening socket,
// say) once; rs keeps it across crashes and restarts and gives it back in
// Init.FDs, so clients wait in the socket's backlog while the service is
// reincarnated instead of being refused.
//
// Standalone: with no channel in the environment ($RS_CHANNEL_FD unset),
// Startup runs the fresh init callback and the service works alone, with
// no pings and no updates; SIGTERM and SIGINT still stop it gracefully.
//
// If the channel to rs breaks (rs died), Receive returns ErrStopped: a
// service never runs unsupervised.
package sef
