package rs

import (
	"fmt"
	"testing"
)

func TestGroupLevels(t *testing.T) {
	deps := map[string][]string{
		"web":   {"cache"},
		"cache": {"db"},
		"db":    nil,
		"a":     {"x"}, // through a service outside the group
		"x":     {"b"},
		"b":     nil,
		"p":     {"q"}, // a cycle: the order given, one each
		"q":     {"p"},
		"api":   {"db"},
	}
	depends := func(l string) []string { return deps[l] }
	cases := []struct {
		in   []string
		want string
	}{
		{[]string{"db", "cache", "web"}, "[[web] [cache] [db]]"},
		{[]string{"web", "db", "cache"}, "[[web] [cache] [db]]"},
		{[]string{"db", "web"}, "[[web] [db]]"},
		{[]string{"b", "a"}, "[[a] [b]]"},
		{[]string{"db", "b", "web"}, "[[b web] [db]]"},
		{[]string{"db", "api", "cache", "web"}, "[[api web] [cache] [db]]"},
		{[]string{"q", "p"}, "[[q] [p]]"},
		{[]string{"kv1", "kv2", "kv3"}, "[[kv1 kv2 kv3]]"},
	}
	for _, c := range cases {
		if got := fmt.Sprint(groupLevels(c.in, depends)); got != c.want {
			t.Errorf("groupLevels(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
