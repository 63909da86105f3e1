// Package control is the protocol between rs and the programs that drive
// it (`service`, tests, scripts): requests, replies, their errors, the
// client, and the serving side of the socket. It knows nothing of the
// supervisor: cmd/service links it without rs.
//
// The socket is a SOCK_SEQPACKET unix socket, mode 0600, by default in a
// directory of rs's own, mode 0700 (RuntimeDir, checked by PrivateDir),
// so no other local user can take its name first. The server answers only
// peers of its own uid or root (SO_PEERCRED) and hands the handler the
// Peer (pid, process group, cgroup) so rs can tell a service's own
// processes; the client, before it sends anything, checks that the
// server is of its own uid or root. The server holds at most MaxConns
// connections: the oldest one that has sent nothing makes room for a new
// one. Every client call is bounded: by its timeout in all, and by
// DefaultSilence for each packet, while the server sends an empty
// keepalive reply every DefaultKeepalive until the real one. One
// connection carries one exchange:
//
//	client                                   rs
//	  | -- Request (one packet, msgpack) ---> |
//	  | <-- Reply {progress} ----------------- |  zero or more (update's steps, keepalives)
//	  | <-- Reply {done, ...} ---------------- |  the answer; the server closes
//
// A streamed reply (logs, stream.go) is the same exchange with pieces
// (Reply {logs}) before the answer; with logs -f they go on, between
// keepalives, until the client closes its end, which the server watches.
//
// Each Reply travels as one or more packets: the first byte of a packet
// says whether more of the same Reply follow, the rest is a piece of its
// msgpack encoding. A reply of any size (the status of ten thousand
// services) gets through; the client bounds what it will reassemble with
// MaxReply.
//
// Errors cross the wire as a Code and a one-line message. The client
// returns them as an *Error that matches this package's sentinels with
// errors.Is, so a caller can tell "busy" from "unknown service" without
// reading the text.
//
// Patch is the one shape of a change to a service's settings: `service
// up` sends one, and rs's config file is read into one per service, so
// both paths go through the same validation in rs. Its fields double as
// the key table: Fields lists them with their config key, flag name and
// kind, and SetFlag fills one from a command-line string.
package control
