package control

import (
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/reincarnation/rs/msg"
)

// A Reply goes out as packets of at most maxPiece bytes of its encoding,
// each after one byte that says whether more of it follow.
const (
	pieceLast byte = 0
	pieceMore byte = 1
	maxPiece       = 64 << 10
)

// writeReply sends r on w, one packet per Write.
func writeReply(w io.Writer, r *Reply) error {
	b, err := msgpack.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode reply: %w", err)
	}
	pkt := make([]byte, 1+min(len(b), maxPiece))
	for {
		n := copy(pkt[1:], b)
		b = b[n:]
		pkt[0] = pieceLast
		if len(b) > 0 {
			pkt[0] = pieceMore
		}
		if _, err := w.Write(pkt[:1+n]); err != nil {
			return err
		}
		if len(b) == 0 {
			return nil
		}
	}
}

// replyReader reassembles replies from packets read one per Read.
type replyReader struct {
	r   io.Reader
	pkt []byte
	acc []byte
}

func newReplyReader(r io.Reader) *replyReader {
	return &replyReader{r: r, pkt: make([]byte, 1+maxPiece+1)}
}

// next returns the next whole reply.
func (rr *replyReader) next() (Reply, error) {
	rr.acc = rr.acc[:0]
	for {
		n, err := rr.r.Read(rr.pkt)
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return Reply{}, ErrClosed
		}
		if err != nil {
			return Reply{}, err
		}
		switch {
		case n == 0:
			return Reply{}, ErrClosed
		case n > 1+maxPiece:
			return Reply{}, fmt.Errorf("reply from rs: a packet of more than %d bytes", 1+maxPiece)
		case len(rr.acc)+n-1 > MaxReply:
			return Reply{}, fmt.Errorf("reply from rs: longer than %d bytes", MaxReply)
		}
		rr.acc = append(rr.acc, rr.pkt[1:n]...)
		switch rr.pkt[0] {
		case pieceMore:
			continue
		case pieceLast:
		default:
			return Reply{}, fmt.Errorf("reply from rs: bad packet header %#x", rr.pkt[0])
		}
		var r Reply
		if err := msg.Scan(rr.acc); err != nil {
			return Reply{}, fmt.Errorf("reply from rs: %w", err)
		}
		if err := msgpack.Unmarshal(rr.acc, &r); err != nil {
			return Reply{}, fmt.Errorf("reply from rs: %w", err)
		}
		return r, nil
	}
}
