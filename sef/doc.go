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
// Callbacks and their defaults (nil field = default):
//
//	InitFresh       nothing to do, success
//	InitRestart     InitFresh (the fd store comes back in Init.FDs)
//	InitLiveUpdate  InitFresh (reserved: state transfer comes with live update)
//	Ping            answer pong
//	Signal          SIGTERM, SIGINT and rs's stop: Receive returns ErrStopped
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
