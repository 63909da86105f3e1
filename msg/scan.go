package msg

import (
	"encoding/binary"
	"fmt"
)

// maxDepth bounds the nesting of a msgpack value read from outside.
const maxDepth = 16

// Scan checks that b holds exactly one well-formed msgpack value whose
// every declared length fits in the bytes that are really there. It runs
// before the msgpack decoder ever sees outside input: a header that
// announces a gigabyte string in a 10-byte packet would otherwise make
// the decoder allocate for it. Its cost is linear in len(b).
func Scan(b []byte) error {
	n, err := scanValue(b, 0)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if n != len(b) {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(b)-n)
	}
	return nil
}

// scanValue returns the length of the value at the start of b.
func scanValue(b []byte, depth int) (int, error) {
	if depth > maxDepth {
		return 0, fmt.Errorf("nested deeper than %d", maxDepth)
	}
	if len(b) == 0 {
		return 0, fmt.Errorf("cut short")
	}
	c := b[0]
	// size reads a big-endian length of w bytes after the code.
	size := func(w int) (int, int, error) {
		if len(b) < 1+w {
			return 0, 0, fmt.Errorf("cut short")
		}
		var v uint64
		switch w {
		case 1:
			v = uint64(b[1])
		case 2:
			v = uint64(binary.BigEndian.Uint16(b[1:]))
		case 4:
			v = uint64(binary.BigEndian.Uint32(b[1:]))
		}
		if v > uint64(len(b)) {
			return 0, 0, fmt.Errorf("length %d beyond the %d bytes there", v, len(b))
		}
		return int(v), 1 + w, nil
	}
	raw := func(n, hdr int) (int, error) { // n bytes of payload after hdr
		if len(b) < hdr+n {
			return 0, fmt.Errorf("cut short")
		}
		return hdr + n, nil
	}
	items := func(count, hdr int) (int, error) { // count values after hdr
		off := hdr
		for i := 0; i < count; i++ {
			n, err := scanValue(b[off:], depth+1)
			if err != nil {
				return 0, err
			}
			off += n
		}
		return off, nil
	}
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		return 1, nil
	case c >= 0x80 && c <= 0x8f:
		return items(2*int(c&0x0f), 1)
	case c >= 0x90 && c <= 0x9f:
		return items(int(c&0x0f), 1)
	case c >= 0xa0 && c <= 0xbf:
		return raw(int(c&0x1f), 1)
	}
	switch c {
	case 0xcc, 0xd0:
		return raw(1, 1)
	case 0xcd, 0xd1:
		return raw(2, 1)
	case 0xca, 0xce, 0xd2:
		return raw(4, 1)
	case 0xcb, 0xcf, 0xd3:
		return raw(8, 1)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext: type byte + 1..16 bytes
		return raw(1+1<<(c-0xd4), 1)
	case 0xc4, 0xd9: // bin8, str8
		n, hdr, err := size(1)
		if err != nil {
			return 0, err
		}
		return raw(n, hdr)
	case 0xc5, 0xda:
		n, hdr, err := size(2)
		if err != nil {
			return 0, err
		}
		return raw(n, hdr)
	case 0xc6, 0xdb:
		n, hdr, err := size(4)
		if err != nil {
			return 0, err
		}
		return raw(n, hdr)
	case 0xc7, 0xc8, 0xc9: // ext: length, type byte, data
		w := map[byte]int{0xc7: 1, 0xc8: 2, 0xc9: 4}[c]
		n, hdr, err := size(w)
		if err != nil {
			return 0, err
		}
		return raw(n+1, hdr)
	case 0xdc, 0xdd: // array16/32
		n, hdr, err := size(2 << (c - 0xdc))
		if err != nil {
			return 0, err
		}
		return items(n, hdr)
	case 0xde, 0xdf: // map16/32
		n, hdr, err := size(2 << (c - 0xde))
		if err != nil {
			return 0, err
		}
		return items(2*n, hdr)
	}
	return 0, fmt.Errorf("code 0x%02x is never used", c)
}
