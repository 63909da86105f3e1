package control

// Streamed replies. Most requests get their answer in one Reply, after
// progress lines and keepalives. A streamed one (logs, events) gets its answer in
// pieces: any number of Replies that are not done, each with some of it
// (Logs), then a final one; with logs -f the pieces go on until the
// client goes away, and the server tells the handler so (Stream.Gone),
// as it watches the connection for its end while the handler works.

// StreamHandler answers a request whose reply is streamed (Streams): it
// sends the pieces with out.Send and returns the final reply. Like a
// Handler it runs on the connection's goroutine, and may wait; it must
// return soon after out.Gone is closed.
type StreamHandler func(req Request, peer Peer, out *Stream) Reply

// Streams tells whether op's reply is streamed.
func Streams(op string) bool { return op == OpLogs || op == OpEvents }

// Stream is the sending side of a streamed reply.
type Stream struct {
	send func(Reply) error
	gone <-chan struct{}
}

// NewStream makes a Stream that sends with send and whose client is gone
// once gone is closed: for callers in the same process (tests, rs's own).
func NewStream(send func(Reply) error, gone <-chan struct{}) *Stream {
	return &Stream{send: send, gone: gone}
}

// Send sends one piece (never the final reply: Done is cleared). An error
// means the client will see no more: the handler should return.
func (st *Stream) Send(r Reply) error {
	r.Done = false
	return st.send(r)
}

// Gone is closed when the client has gone away (closed its end, or sent
// something after its request, which no client does).
func (st *Stream) Gone() <-chan struct{} { return st.gone }
