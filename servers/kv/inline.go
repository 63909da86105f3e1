package main

// splitArgs splits an inline request line into arguments with the rules of
// Redis's sdssplitargs, so what works in `redis-cli` typed by hand or in
// `nc` works here: arguments are separated by white space; "double quotes"
// take the escapes \n \r \t \b \a \xHH and \<any>; 'single quotes' take
// only \'. A closing quote must be followed by white space or the end of
// the line. An unterminated quote is a protocol error.
func splitArgs(line []byte) ([]string, error) {
	var args []string
	i := 0
	for {
		for i < len(line) && isSpace(line[i]) {
			i++
		}
		if i == len(line) {
			return args, nil
		}
		arg, n, err := nextArg(line[i:])
		if err != nil {
			return nil, err
		}
		args = append(args, arg)
		i += n
	}
}

const errUnbalanced = protocolError("unbalanced quotes in request")

// nextArg reads one argument from the start of b, which is not white
// space, and returns it with the number of bytes it spans.
func nextArg(b []byte) (string, int, error) {
	var arg []byte
	inDouble, inSingle := false, false
	i := 0
	for {
		switch {
		case inDouble:
			if i == len(b) {
				return "", 0, errUnbalanced
			}
			c := b[i]
			switch {
			case c == '\\' && i+3 < len(b) && b[i+1] == 'x' && isHex(b[i+2]) && isHex(b[i+3]):
				arg = append(arg, hexVal(b[i+2])<<4|hexVal(b[i+3]))
				i += 4
			case c == '\\' && i+1 < len(b):
				arg = append(arg, unescape(b[i+1]))
				i += 2
			case c == '"':
				if i+1 < len(b) && !isSpace(b[i+1]) {
					return "", 0, errUnbalanced
				}
				return string(arg), i + 1, nil
			default:
				arg = append(arg, c)
				i++
			}
		case inSingle:
			if i == len(b) {
				return "", 0, errUnbalanced
			}
			c := b[i]
			switch {
			case c == '\\' && i+1 < len(b) && b[i+1] == '\'':
				arg = append(arg, '\'')
				i += 2
			case c == '\'':
				if i+1 < len(b) && !isSpace(b[i+1]) {
					return "", 0, errUnbalanced
				}
				return string(arg), i + 1, nil
			default:
				arg = append(arg, c)
				i++
			}
		default:
			if i == len(b) || isSpace(b[i]) {
				return string(arg), i, nil
			}
			// As in Redis, a quote inside a bare word opens a quoted part.
			switch b[i] {
			case '"':
				inDouble = true
			case '\'':
				inSingle = true
			default:
				arg = append(arg, b[i])
			}
			i++
		}
	}
}

func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\r', '\n', '\v', '\f', 0:
		return true
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func hexVal(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

func unescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	case 'b':
		return '\b'
	case 'a':
		return '\a'
	}
	return c
}
