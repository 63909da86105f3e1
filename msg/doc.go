// Package msg is the wire between rs and the services it supervises: the
// message kinds, their msgpack encoding and the SOCK_SEQPACKET channel
// that carries them, with fds passed beside them by SCM_RIGHTS.
//
// Each service instance gets one socketpair. One packet is one msgpack
// map (a Message), at most MaxPacket bytes; a packet's fds are named, in
// order, by Message.Names. Large payloads, such as a service's state
// during a live update, travel as a memfd, never as a large packet.
// Anything that does not decode, is too large, of an unknown kind, or
// whose fds do not match its names is an error here; rs treats the sender
// as faulty. Decode never panics, whatever the bytes (see FuzzDecode).
//
// Start-up (every instance, first exchange on the channel):
//
//	rs                                   service (sef.Startup)
//	 | <-- hello {version} --------------- |  exec and runtime start-up done
//	 | -- init {version, type, label,  --> |  type: fresh | restart | live-update
//	 |          restarts, names} + fds     |  fds: the service's fd store
//	 | <-- fd-store {names:[n]} + fd ----- |  zero or more, from the init callback
//	 | <-- init-result {err} ------------- |  err empty: the instance is running
//
// Liveness (every period while running; answered from sef.Receive):
//
//	| -- ping {seq} --------------------> |
//	| <-- pong {seq} -------------------- |  same seq, before the deadline
//
// Graceful stop:
//
//	| -- stop --------------------------> |  sef.Receive returns ErrStopped
//	|                                     |  the service exits 0
//	(no exit within the grace period: SIGTERM to the group, then SIGKILL)
//
// rs sends init right after the spawn, without waiting; hello must still
// be the first thing a service sends.
//
// Live update. The new instance is spawned first, so exec and runtime
// start-up are not part of the pause clients see; rs keeps the old
// instance until the new one runs:
//
//	rs                  old instance                 new instance
//	 | (spawn) --------------------------------------------------> |
//	 | <-- hello ------------------------------------------------- |
//	 | -- lu-prepare {state, maxtime} --> |
//	 | <-- lu-ready {err} + "state" memfd |  (err set: update refused,
//	 |     and handed-over fds {names} -- |   the old one carries on)
//	 |                   (quiescent)      |
//	 | -- init {type: live-update} + fd store, "lu:state", --------> |
//	 |    "lu:<name>" for each handed-over fd                        |
//	 | <-- init-result {err, nottaken} ------------------------------ |
//	 | -- stop --> |  commit: the old instance exits
//	 | -- lu-cancel --> |  or rollback: the new one is killed, the old
//	 |                     one resumes with its state and fds untouched
//	 (not ready within maxtime: lu-cancel, the old instance resumes)
//
// Pre-copy. When both instances said {precopy} in their hello, rs makes
// a pipe and hands its ends out (and closes its own); the old instance
// streams a base of its state into it while it still serves, the new
// one loads it meanwhile, and lu-ready's memfd then holds only the
// delta. rs never reads the pipe:
//
//	rs                  old instance                 new instance
//	 | (spawn) --------------------------------------------------> |
//	 | <-- hello {precopy} --------------------------------------- |
//	 | -- lu-base + "base" (read end) ---------------------------> |  loads it
//	 | -- lu-prepare {state, maxtime} --> |                        |
//	 |    + "base" (write end)            |==== base stream ====>  |
//	 |                (serving meanwhile) |                        |
//	 | <-- lu-base-done {base bytes} ---- |  maxtime starts here   |
//	 | <-- lu-ready + "state" (delta) --- |                        |
//	 | -- init {type: live-update} ... (as above; its init waits   |
//	 |    for the load to end)  -------------------------------->  |
//
// A service says {precopy} in hello only when it can do both sides; an
// rs that predates the field finds an unknown field in hello and fails
// the instance, so rs must be updated (update-self) before services
// built with pre-copy; the other way round, an rs with pre-copy and a
// sef without it simply never sends the pipe. A sef given a pipe it has
// no use for closes it and answers lu-base-done {0}.
//
// nottaken lists what the new instance was handed and did not take:
// "state" when the old instance handed a state (bytes or fds) and no
// restore ran (neither an InitLiveUpdate nor an LUStateRestore callback),
// "fds" when the fd store was not empty and no init callback ran at all.
// Unless the update was asked to discard the state, rs rolls it back
// then: a new binary that never reads the old one's state must not
// commit and lose it. Compatibility: the field is sent only when not
// empty; a sef that predates it never sends it, which rs reads as
// everything taken (as before); an rs that predates it finds an unknown
// field, a malformed message, and rolls the update back, the safe side.
//
// Held init (a group update's members, `service update a b c`): rs sets
// hold in a live update's init; the new instance answers init-result
// {hold} once its init succeeded and then holds: it accepts no
// connection, reads none handed over to it, and its sef delivers no
// work (pings are answered), so the bytes clients send meanwhile wait in
// the kernel for whichever instance wins. When every member's init
// succeeded rs sends each new instance lu-commit (and the old ones
// stop); on a rollback the held ones are killed, having answered
// nothing. A held instance that loses its channel stops, as any does.
//
//	| -- init {type: live-update, hold} --> |
//	| <-- init-result {hold} -------------- |  held
//	| -- lu-commit -----------------------> |  it serves from here
//
// A sef that predates hold finds an unknown field in that init, a
// malformed message, and fails its init: the group rolls back, nothing
// lost. An init-result without hold to a held init (a sef that ignored
// it) makes rs roll the group back at once.
//
// standby is reserved for a later exchange (warm standby take-over).
//
// Reading. A Conn keeps its socket out of the Go runtime's poller, which
// would also watch it for writability and wake the process each time the
// peer reads. Recv waits on a private epoll set that reports readability
// only; a Mux reads many Conns from one goroutine, one packet per ready
// channel per pass, and with EnableTimestamps stamps each delivery with
// the time the peer sent it. Non-blocking calls go to the kernel as raw
// system calls (sys.go), and pings and pongs skip msgpack's reflection.
//
// Direction is part of validity: a service may send only hello,
// init-result, pong, lu-ready, lu-base-done and fd-store
// (Kind.FromService); the sequence itself is
// checked by rs.
package msg
