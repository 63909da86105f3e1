package rs

import (
	"slices"
	"testing"
)

func TestGroupOrder(t *testing.T) {
	deps := map[string][]string{
		"web":   {"cache"},
		"cache": {"db"},
		"db":    nil,
		"a":     {"x"}, // through a service outside the group
		"x":     {"b"},
		"b":     nil,
		"p":     {"q"}, // a cycle: the order given
		"q":     {"p"},
	}
	depends := func(l string) []string { return deps[l] }
	cases := []struct{ in, want []string }{
		{[]string{"db", "cache", "web"}, []string{"web", "cache", "db"}},
		{[]string{"web", "db", "cache"}, []string{"web", "cache", "db"}},
		{[]string{"db", "web"}, []string{"web", "db"}},
		{[]string{"b", "a"}, []string{"a", "b"}},
		{[]string{"db", "b", "web"}, []string{"b", "web", "db"}},
		{[]string{"q", "p"}, []string{"q", "p"}},
		{[]string{"kv1", "kv2", "kv3"}, []string{"kv1", "kv2", "kv3"}},
	}
	for _, c := range cases {
		if got := groupOrder(c.in, depends); !slices.Equal(got, c.want) {
			t.Errorf("groupOrder(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
