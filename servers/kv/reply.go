package main

import "strconv"

// Reply encoders. Each appends one RESP2 value to a reply buffer, so a
// whole batch of replies is built in one slice and written with one
// syscall.

func appendSimple(b []byte, s string) []byte {
	b = append(b, '+')
	b = append(b, s...)
	return append(b, '\r', '\n')
}

// maxErrorLen bounds error text, which may echo a client's command name.
const maxErrorLen = 256

// appendError appends -msg. msg usually starts with a code ("ERR"). CR and
// LF would end the line early and desynchronise the client, so they are
// replaced, and echoed client input is cut short.
func appendError(b []byte, msg string) []byte {
	if len(msg) > maxErrorLen {
		msg = msg[:maxErrorLen]
	}
	b = append(b, '-')
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return append(b, '\r', '\n')
}

func appendInt(b []byte, n int64) []byte {
	b = append(b, ':')
	b = strconv.AppendInt(b, n, 10)
	return append(b, '\r', '\n')
}

func appendBulk(b []byte, s string) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, '\r', '\n')
	b = append(b, s...)
	return append(b, '\r', '\n')
}

func appendNull(b []byte) []byte {
	return append(b, "$-1\r\n"...)
}

func appendArrayLen(b []byte, n int) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '\r', '\n')
}
