package resp

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"time"
)

// Client is one RESP2 connection. It is not safe for concurrent use: a
// test that wants parallel clients dials one per goroutine.
type Client struct {
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
}

// Dial connects to a RESP2 server. network is "tcp" (addr host:port) or
// "unix" (addr a socket path); timeout bounds the connect only.
func Dial(network, addr string, timeout time.Duration) (*Client, error) {
	conn, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return nil, fmt.Errorf("resp: dial %s %s: %w", network, addr, err)
	}
	return NewClient(conn), nil
}

// DialAddr is Dial for an address spelled the way kv's --listen takes it:
// "host:port" or "unix:/path".
func DialAddr(addr string, timeout time.Duration) (*Client, error) {
	network, address := SplitAddr(addr)
	return Dial(network, address, timeout)
}

// SplitAddr splits a kv-style address into a network and an address for
// net.Dial: "unix:/p" is ("unix", "/p"), anything else is TCP.
func SplitAddr(addr string) (network, address string) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return "unix", p
	}
	return "tcp", addr
}

// NewClient wraps an established connection; the Client owns it from now
// on.
func NewClient(conn net.Conn) *Client {
	return &Client{
		conn: conn,
		br:   bufio.NewReaderSize(conn, 32<<10),
		bw:   bufio.NewWriterSize(conn, 32<<10),
	}
}

// Do sends one command and returns its reply. A RESP error reply is a
// Value with Kind KindError, not a Go error.
func (c *Client) Do(args ...string) (Value, error) {
	if err := c.Send(args...); err != nil {
		return Value{}, err
	}
	if err := c.Flush(); err != nil {
		return Value{}, err
	}
	return c.Read()
}

// Send queues one command in the write buffer without waiting for its
// reply. The buffer may write itself out early when it fills; Flush
// writes the rest.
func (c *Client) Send(args ...string) error {
	if len(args) == 0 {
		return fmt.Errorf("resp: send: no command")
	}
	// Encode into the bufio.Writer's spare room when it fits, so a
	// pipelined benchmark does not allocate per command.
	buf := c.bw.AvailableBuffer()
	buf = AppendCommand(buf, args...)
	if _, err := c.bw.Write(buf); err != nil {
		return fmt.Errorf("resp: send: %w", err)
	}
	return nil
}

// WriteRaw queues bytes as they are, for inline commands and for tests
// that need to send malformed frames.
func (c *Client) WriteRaw(p []byte) error {
	if _, err := c.bw.Write(p); err != nil {
		return fmt.Errorf("resp: write: %w", err)
	}
	return nil
}

// Flush writes every queued command to the connection.
func (c *Client) Flush() error {
	if err := c.bw.Flush(); err != nil {
		return fmt.Errorf("resp: flush: %w", err)
	}
	return nil
}

// Read returns the next reply. Replies come in the order the commands
// were sent.
func (c *Client) Read() (Value, error) {
	return ParseValue(c.br)
}

// SetDeadline bounds every later read and write on the connection, as
// net.Conn.SetDeadline does; the zero time removes the bound.
func (c *Client) SetDeadline(t time.Time) error {
	return c.conn.SetDeadline(t)
}

// Close closes the connection. Queued, unflushed commands are dropped.
func (c *Client) Close() error {
	return c.conn.Close()
}
