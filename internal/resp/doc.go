// Package resp is a small RESP2 (Redis protocol) client for the project's
// tests and benchmarks. It talks to servers/kv, or to anything else that
// speaks RESP2, over TCP or a unix socket.
//
// A Client is one connection and is not safe for concurrent use. Do sends
// one command and reads its reply. For pipelining, Send queues commands in
// a write buffer, Flush writes them in one go, and Read returns the replies
// one at a time, in order:
//
//	c, err := resp.Dial("tcp", "127.0.0.1:7070", time.Second)
//	...
//	c.Send("SET", "k", "v")
//	c.Send("GET", "k")
//	c.Flush()
//	ok, _ := c.Read()  // +OK
//	v, _ := c.Read()   // $1 v
//
// A reply that is a RESP error (-ERR ...) is returned as a Value of kind
// KindError with its text in Value.Err, not as a Go error: the exchange
// itself worked. Go errors mean the connection or the framing failed, and
// the Client should then be closed.
//
// ParseValue reads one reply from a bufio.Reader. It bounds what it
// accepts (bulk length, array length, nesting, line length) so that a
// broken or hostile peer cannot make it allocate without limit; anything
// out of bounds or malformed is an error wrapping ErrProtocol.
package resp
