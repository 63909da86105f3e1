package campaign

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/reincarnation/rs/internal/resp"
)

// kvTimeout bounds one exchange with kv: only a service that status shows
// running is asked, so a slow answer is a failure, not a wait.
const kvTimeout = 2 * time.Second

func dialKV(addr string) (*resp.Client, error) {
	c, err := resp.DialAddr(addr, kvTimeout)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(kvTimeout))
	return c, nil
}

// kvDo runs one command on a new connection.
func kvDo(addr string, args ...string) (resp.Value, error) {
	c, err := dialKV(addr)
	if err != nil {
		return resp.Value{}, err
	}
	defer c.Close()
	return c.Do(args...)
}

// info is what the probe learns from INFO.
type info struct {
	pid     int
	version string
	blocked int
}

func parseInfo(s string) info {
	var in info
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch k {
		case "process_id":
			in.pid, _ = strconv.Atoi(v)
		case "version":
			in.version = v
		case "blocked_clients":
			in.blocked, _ = strconv.Atoi(v)
		}
	}
	return in
}

// probe is the recovery test: on a new connection, SET a fresh key, GET
// it back, and ask INFO which process answered. marker, when set, must
// still hold markerVal.
func probe(addr, key, marker, markerVal string) (info, error) {
	c, err := dialKV(addr)
	if err != nil {
		return info{}, err
	}
	defer c.Close()
	val := "v-" + key
	c.Send("SET", key, val)
	c.Send("GET", key)
	c.Send("INFO", "server")
	if marker != "" {
		c.Send("GET", marker)
	}
	if err := c.Flush(); err != nil {
		return info{}, err
	}
	var got [4]resp.Value
	n := 3
	if marker != "" {
		n = 4
	}
	for i := 0; i < n; i++ {
		if got[i], err = c.Read(); err != nil {
			return info{}, err
		}
	}
	if got[0].Kind != resp.KindSimple || got[0].Str != "OK" {
		return info{}, fmt.Errorf("SET %s: %v", key, got[0])
	}
	if got[1].Kind != resp.KindBulk || got[1].Null || got[1].Str != val {
		return info{}, fmt.Errorf("GET %s: %v, want %q", key, got[1], val)
	}
	in := parseInfo(got[2].Str)
	if in.pid == 0 {
		return info{}, fmt.Errorf("INFO without process_id: %v", got[2])
	}
	if marker != "" && (got[3].Null || got[3].Str != markerVal) {
		return in, fmt.Errorf("%w: GET %s = %v, want %q", errStateLost, marker, got[3], markerVal)
	}
	return in, nil
}

// setMarker stores a key that an update must carry over.
func setMarker(addr, key, val string) error {
	v, err := kvDo(addr, "SET", key, val)
	if err == nil && v.Str != "OK" {
		err = fmt.Errorf("SET %s: %v", key, v)
	}
	return err
}

// debugFault makes kv commit a fault; +OK comes first.
func debugFault(addr string, kind Kind) error {
	v, err := kvDo(addr, "DEBUG", "FAULT", string(kind))
	if err == nil && v.Str != "OK" {
		err = fmt.Errorf("DEBUG FAULT %s: %v", kind, v)
	}
	return err
}

// sleeper holds a DEBUG SLEEP in flight on its own connection: kv is then
// not request-free until it answers.
func sleeper(addr string, secs float64) (*resp.Client, error) {
	c, err := resp.DialAddr(addr, kvTimeout)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(kvTimeout + time.Duration(secs*float64(time.Second))))
	c.Send("DEBUG", "SLEEP", strconv.FormatFloat(secs, 'f', -1, 64))
	if err := c.Flush(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// blocked asks kv how many requests sleep.
func blocked(addr string) (int, error) {
	v, err := kvDo(addr, "INFO", "clients")
	if err != nil {
		return 0, err
	}
	return parseInfo(v.Str).blocked, nil
}
