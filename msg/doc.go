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
// Live update (rs keeps the old instance until the new one is running):
//
//	rs                  old instance                 new instance
//	 | -- lu-prepare {state, maxtime} --> |
//	 | <-- lu-ready {err} + state memfd,  |   (err set: update refused)
//	 |     fds {names} ------------------ |
//	 |                 (quiescent)        |
//	 | -- init {type: live-update, names} + state memfd, fds -----> |
//	 | <-- init-result {err} -------------------------------------- |
//	 | -- stop --> | (commit)      or    | -- lu-cancel --> | (rollback: the
//	 |                                     old instance resumes; the new one
//	 |                                     is killed)
//	 (not ready within maxtime: lu-cancel, the old instance resumes)
//
// lu-commit and standby are reserved for later exchanges (commit notice,
// warm standby take-over).
//
// Direction is part of validity: a service may send only init-result,
// pong, lu-ready and fd-store (Kind.FromService); the sequence itself is
// checked by rs.
package msg
